"""The casino sink driven directly against the real PostgreSQL, no Kafka, no worker.

One transaction a batch: a replayed position answers its stored bytes, the batch's
progress is written with its rows, and a ledger that refuses what the rules allowed
leaves nothing behind (``LedgerDisagrees``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from config.games import load_catalogue
from config.policies import load_policies
from config.settings import POLICY_DIR, Settings
from rules.ledger import deposit
from schemas.casino import CASINO_CALL
from schemas.players import OpenSession, PlayerState
from schemas.records import SourcePosition
from sinks.postgres import ledger
from sinks.postgres.casino import CasinoBatch, CasinoInput, CasinoSink, LedgerDisagrees
from sinks.postgres.players import PlayerBatch, PostgresPlayerSink
from tests.integration.helpers import query

pytestmark = pytest.mark.integration

GAME = "croupier-dice"
GROUP = "casino-sink"


def _batch(calls: Sequence[tuple[int, dict[str, Any]]], now: datetime) -> CasinoBatch:
    batch = CasinoBatch()
    for offset, body in calls:
        doc = {"round_id": "r-1", "game_id": GAME, "player_id": "p-1", "currency": "EUR",
               "timestamp": now.isoformat(), **body}  # fmt: skip
        value = json.dumps(doc).encode()
        source = SourcePosition(topic="casino", partition=2, offset=offset)
        batch.inputs.append(CasinoInput(source, CASINO_CALL.validate_json(value), b"p-1", value))
        batch.progress[("casino", 2)] = offset + 1
    return batch


async def _sink(settings: Settings, now: datetime) -> CasinoSink:
    dsn, schema = settings.pg_dsn.get_secret_value(), settings.pg_schema
    policies = load_policies(POLICY_DIR)
    state = PlayerState(
        player_id="p-1", jurisdiction="UK", currency="EUR", birth_date="1990-05-01",
        registered_at=now, version=2, last_event="session_started", updated_at=now,
        source_partition=0, source_offset=1,
        session=OpenSession(session_id="s-1", started_at=now),
    )  # fmt: skip
    players = PostgresPlayerSink(dsn, schema, consumer_group=GROUP)
    await players.open()
    await players.write(PlayerBatch(states={"p-1": state}))
    await players.close()
    book = ledger.Ledger.connect(dsn, schema)
    try:
        book.post(deposit("d-1", "p-1", Decimal("100.00"), "EUR", now))
    finally:
        book.close()
    sink = CasinoSink(dsn, schema, consumer_group=GROUP, policies=policies,
                      catalogue=load_catalogue(jurisdictions=policies.jurisdictions))  # fmt: skip
    await sink.open()
    return sink


def test_a_replayed_position_answers_its_stored_bytes_and_progress_is_in_the_transaction(
    settings: Settings,
) -> None:
    now = datetime.now(UTC)
    calls: list[tuple[int, dict[str, Any]]] = [
        (10, {"type": "debit", "transaction_id": "t-1", "amount": "4.00"}),
        (11, {"type": "debit", "transaction_id": "t-1", "amount": "4.00"}),  # a retry
        (12, {"type": "credit", "transaction_id": "t-2", "amount": "0.00", "round_closed": True}),
    ]

    async def scenario() -> tuple[list[Any], list[Any]]:
        sink = await _sink(settings, now)
        try:
            first = await sink.decide(_batch(calls, now), now)
            # Positions 10-12 again (a crash before Kafka heard of them) and a new one.
            later = datetime.now(UTC)
            more: tuple[int, dict[str, Any]] = (13, {
                "type": "debit", "transaction_id": "t-3", "round_id": "r-2", "amount": "1.00",
            })  # fmt: skip
            again = await sink.decide(_batch([*calls, more], later), later)
            return first.outputs, again.outputs
        finally:
            await sink.close()

    first, again = asyncio.run(scenario())
    assert first[0] == first[1]  # the retry: the first answer, byte for byte
    assert again[:3] == first  # the replay: the stored answers, byte for byte
    assert [json.loads(v)["balance"] for _, v in again] == ["96.00", "96.00", "96.00", "95.00"]
    assert query(settings, "SELECT partition, next_offset FROM consumer_progress "
                 "WHERE consumer_group = %s", (GROUP,)) == [(2, 14)]  # fmt: skip
    assert query(settings, "SELECT outcome, count(*) FROM casino_calls GROUP BY 1 "
                 "ORDER BY 1") == [("decided", 3), ("duplicate", 1)]  # fmt: skip
    assert query(settings, "SELECT round_id, credited_at IS NOT NULL, closed_at IS NOT NULL "
                 "FROM casino_rounds ORDER BY 1") == [("r-1", True, True),
                                                      ("r-2", False, False)]  # fmt: skip
    # Every decided call and every move recorded in the partition's chain, once.
    assert query(settings, "SELECT action, count(*) FROM audit_records GROUP BY 1 "
                 "ORDER BY 1") == [("casino.credit", 1), ("casino.debit", 2),
                                   ("ledger.casino_credit", 1),
                                   ("ledger.casino_debit", 2)]  # fmt: skip


def test_a_ledger_refusing_what_the_rules_allowed_fails_the_batch_and_leaves_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    real = ledger.post_on

    async def refusing(conn: Any, ops: Any, *args: Any, **kwargs: Any) -> Any:
        results = await real(conn, ops, *args, **kwargs)
        return [dataclasses.replace(results[0], status="rejected", reason="insufficient_funds"),
                *results[1:]]  # fmt: skip

    monkeypatch.setattr(ledger, "post_on", refusing)

    async def scenario() -> None:
        sink = await _sink(settings, now)
        try:
            with pytest.raises(LedgerDisagrees, match="casino-debit:t-1"):
                await sink.decide(_batch([(0, {"type": "debit", "transaction_id": "t-1",
                                               "amount": "4.00"})], now), now)  # fmt: skip
        finally:
            await sink.close()

    asyncio.run(scenario())
    for table in ("casino_calls", "casino_transactions", "casino_rounds", "audit_records",
                  "consumer_progress"):  # fmt: skip
        assert query(settings, f"SELECT count(*) FROM {table}") == [(0,)], table
    assert query(settings, "SELECT count(*) FROM ledger_transactions "
                 "WHERE operation = 'casino_debit'") == [(0,)]  # fmt: skip
