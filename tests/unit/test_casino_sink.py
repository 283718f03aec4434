"""The casino sink's pure parts, with no database (``sinks/postgres/casino.py``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from rules.casino import Verdict
from rules.decimals import MONEY_CONTEXT
from schemas.base import ID_MAX_LENGTH, ID_PATTERN
from schemas.casino import CASINO_CALL
from schemas.money import MINOR_UNITS, minor_unit
from schemas.outbound import CasinoResult, ReasonCode
from schemas.records import SourcePosition
from sinks.postgres.casino import _TIME, _ids, _runs, answer_json

ids = st.from_regex(ID_PATTERN, fullmatch=True).filter(lambda s: len(s) <= ID_MAX_LENGTH)
verdicts = st.one_of(
    st.just(Verdict("ok", moves="debit")),
    st.just(Verdict("ok")),
    st.sampled_from(list(ReasonCode)).map(lambda r: Verdict("rejected", r)),
)
times = st.datetimes(
    # naive bounds: hypothesis adds the zones itself
    min_value=datetime(1971, 1, 1), max_value=datetime(9998, 1, 1),  # noqa: DTZ001
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5))]),
)  # fmt: skip


@given(
    tx=ids, rnd=ids, player=ids, verdict=verdicts, at=times,
    currency=st.sampled_from([*sorted(MINOR_UNITS), "XYZ"]),
    balance=st.decimals(min_value=0, max_value=Decimal("1e15"), places=3),
)  # fmt: skip
def test_the_answer_is_the_models_json_byte_for_byte(
    tx: str, rnd: str, player: str, verdict: Verdict, at: datetime, currency: str,
    balance: Decimal,
) -> None:  # fmt: skip
    call = CASINO_CALL.validate_python({
        "type": "debit", "transaction_id": tx, "round_id": rnd, "game_id": "g-1",
        "player_id": player, "amount": "1", "currency": "EUR",
        "timestamp": "2026-11-30T12:00:00Z",
    })  # fmt: skip
    shown = balance.quantize(minor_unit(currency), context=MONEY_CONTEXT)
    model = CasinoResult(
        transaction_id=tx, round_id=rnd, player_id=player, status=verdict.status,
        balance=shown, currency=currency, error=verdict.error, decided_at=at,
    )  # fmt: skip
    got = answer_json(call, verdict, shown, currency, _TIME.dump_json(at).decode())
    assert got == model.model_dump_json()


def test_positions_are_asked_as_runs_of_offsets() -> None:
    def at(p: int, o: int) -> SourcePosition:
        return SourcePosition(topic="casino", partition=p, offset=o)

    sources = [at(1, 7), at(0, 3), at(0, 4), at(0, 5), at(0, 9), at(1, 8), at(0, 4)]
    assert _runs(sources) == ([0, 0, 1], [3, 9, 7], [5, 9, 8])
    assert _runs([]) == ([], [], [])


def test_ids_are_one_sorted_parameter() -> None:
    assert _ids({"r-2", "r-10", "a:b.c_d"}) == "a:b.c_d,r-10,r-2"
    assert _ids([]) == ""  # string_to_array('', ',') is the empty array
