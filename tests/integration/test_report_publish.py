"""The reporter's publish pass reads what is left to publish, never the whole chain.

Its query once joined every report record with the published positions and filtered:
each pass scanned the whole of ``report_records``, so the reporter's cost grew with the
trail until it was PostgreSQL's busiest client. Now each jurisdiction is read from its
published position by the primary key.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest

from config.settings import Settings
from schemas.reports import ReportEnvelope
from sinks.postgres.reports import _UNPUBLISHED_SQL, ReportSink
from tests.integration.helpers import query

pytestmark = pytest.mark.integration

SIG, KEY = bytes(64), bytes(32)


def chain(s: Settings, jurisdiction: str, n: int, published: int) -> None:
    """``n`` records in ``jurisdiction``'s chain (as its owner: only the shapes matter
    here), the first ``published`` of them published."""
    query(s, """INSERT INTO report_records (jurisdiction, seq, entity_id, record_json,
                    prev_signature, signature, public_key, audit_chain, audit_seq)
                SELECT %s, g, 'e-' || g, '{"seq":' || g || '}', %s, %s, %s, 'bets/0', g
                  FROM generate_series(1, %s) g RETURNING 1""",
          (jurisdiction, SIG, SIG, KEY, n))  # fmt: skip
    query(s, "INSERT INTO report_heads (jurisdiction, seq, signature) VALUES (%s, %s, %s) "
             "RETURNING 1", (jurisdiction, n, SIG))  # fmt: skip
    query(s, "INSERT INTO report_published (jurisdiction, seq) VALUES (%s, %s) RETURNING 1",
          (jurisdiction, published))  # fmt: skip


def rows_read(plan: dict[str, Any]) -> int:
    """Rows every scan of report_records in ``plan`` produced or filtered out."""
    node = plan.get("Plan", plan)
    own = 0
    if node.get("Relation Name") == "report_records":
        own = int(node.get("Actual Rows", 0) * node.get("Actual Loops", 1))
        own += int(node.get("Rows Removed by Filter", 0))
    return own + sum(rows_read(child) for child in node.get("Plans", []))


def test_a_pass_reads_only_the_unpublished_records(settings: Settings) -> None:
    s = settings
    chain(s, "UK", 20_000, 19_997)  # three left to publish
    chain(s, "DK", 5_000, 5_000)  # nothing left
    chain(s, "ES", 10, 0)  # all ten left
    with psycopg.connect(s.migration_dsn, options=f"-c search_path={s.pg_schema}") as conn:
        conn.execute("ANALYZE report_records")
    (plan,) = query(s, f"EXPLAIN (ANALYZE, FORMAT JSON) {_UNPUBLISHED_SQL}", (2000, 2000))[0]
    assert rows_read(plan[0]) == 13

    sent: dict[str, list[tuple[bytes, bytes]]] = {}

    async def send(jurisdiction: str, items: list[tuple[bytes, bytes]]) -> None:
        sent.setdefault(jurisdiction, []).extend(items)

    async def publish() -> int:
        sink = ReportSink(s.pg_dsn.get_secret_value(), s.pg_schema, consumer_group="t",
                          max_connections=1)  # fmt: skip
        await sink.open()
        try:
            return await sink.publish(send)
        finally:
            await sink.close()

    assert asyncio.run(publish()) == 13
    assert sorted(sent) == ["ES", "UK"]
    uk = [ReportEnvelope.model_validate_json(value) for _, value in sent["UK"]]
    assert [e.seq for e in uk] == [19_998, 19_999, 20_000]
    assert [json.loads(e.record_json) for e in uk] == [{"seq": 19_998}, {"seq": 19_999},
                                                       {"seq": 20_000}]  # fmt: skip
    assert [k for k, _ in sent["ES"]] == [f"e-{n}".encode() for n in range(1, 11)]
    assert query(s, "SELECT jurisdiction, seq FROM report_published ORDER BY 1") == [
        ("DK", 5_000), ("ES", 10), ("UK", 20_000),
    ]  # fmt: skip
    assert asyncio.run(publish()) == 0  # and the next pass has nothing to read
