"""``audit_json`` writes exactly what ``AuditRecord.model_dump_json`` writes.

The trail's hashes cover the bodies byte for byte and ``audit rebuild`` compares what it
derives with what is stored, so the fast writer may never differ from the model's: these
records are arbitrary, down to the free-form ``before`` and ``after``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.records import AuditRecord, SourcePosition, audit_json


class Colour(StrEnum):
    RED = "red"


zones = st.sampled_from([
    UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-3, minutes=-30)),
    ZoneInfo("Europe/London"), ZoneInfo("Europe/Malta"), ZoneInfo("America/St_Johns"),
])  # fmt: skip
aware = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),  # noqa: DTZ001
                     timezones=zones)  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(),
    st.decimals(allow_nan=False), aware, st.datetimes(), st.dates(),
    st.just(Colour.RED), st.binary(max_size=8),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
        st.tuples(inner, inner),
    ),
    max_leaves=12,
)
maps = st.one_of(st.none(), st.dictionaries(st.text(max_size=8), values, max_size=5))


def dump(record: AuditRecord, how: Any) -> tuple[str, str]:
    try:
        return "ok", how(record)
    except Exception as exc:  # both must refuse alike
        return "error", type(exc).__name__


@settings(max_examples=400, deadline=None)
@given(
    entity=st.text(), entity_id=st.text(), action=st.text(),
    topic=st.text(), partition=st.integers(0, 2**31), offset=st.integers(0, 2**62),
    occurred=aware, recorded=aware, before=maps, after=maps,
)  # fmt: skip
def test_arbitrary_records_are_written_as_the_model_writes_them(
    entity: str, entity_id: str, action: str, topic: str, partition: int, offset: int,
    occurred: datetime, recorded: datetime, before: Any, after: Any,
) -> None:  # fmt: skip
    record = AuditRecord(
        entity=entity, entity_id=entity_id, action=action,
        source=SourcePosition(topic=topic, partition=partition, offset=offset),
        occurred_at=occurred, recorded_at=recorded, before=before, after=after,
    )  # fmt: skip
    assert dump(record, audit_json) == dump(record, AuditRecord.model_dump_json)


def test_a_bet_record_as_the_flow_writes_it() -> None:
    now = datetime(2026, 12, 7, 3, 4, 5, 678, tzinfo=UTC)
    record = AuditRecord(
        entity="bet", entity_id="b-1", action="bet.accepted",
        source=SourcePosition(topic="bets", partition=3, offset=7),
        occurred_at=now, recorded_at=now, before=None,
        after={"bet_id": "b-1", "odds": "2.15", "stake": "1.00", "reason": None,
               "selections": [{"event_id": "e-1", "outcome_id": "1"}], "standing_version": 3,
               "amount": Decimal("1.50"), "day": date(2026, 12, 7)},
    )  # fmt: skip
    assert audit_json(record) == record.model_dump_json()
    assert '"occurred_at":"2026-12-07T03:04:05.000678Z"' in audit_json(record)
