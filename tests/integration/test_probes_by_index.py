"""The placement probes the big tables by key, never by scanning them (migration 0027).

A plan cached while the tables were small (a fresh database, the first minutes of a
stack) once hashed the whole of ``ledger_transactions`` for every batch, so a batch of
two bets cost more the more the ledger held. Here one sink's connection places small
batches while the tables are small (PostgreSQL caches its plans after a few calls), the
ledger then grows by a large batch, and small batches follow on the same connection:
PostgreSQL's own counters must show that, once the tables have grown, no sequential scan
read a row of the ledger's, the bets' or the trail's tables (while they are small, a scan
can be the right plan).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from config.policies import load_policies
from config.settings import POLICY_DIR, Settings
from rules import ledger
from sinks.postgres.ledger import Ledger
from sinks.postgres.players import PlayerBatch, PostgresPlayerSink
from sinks.postgres.sportsbook import BetBatch, SportsbookSink
from tests.integration.helpers import ledger_reconciles, query
from tests.integration.test_bets_placement import NOW, TOPIC, item, standing

pytestmark = pytest.mark.integration

BIG = ("ledger_transactions", "ledger_entries", "ledger_accounts", "bets", "bet_legs",
       "audit_records")  # fmt: skip
PLAYERS = 300


def rows_scanned(settings: Settings) -> dict[str, int]:
    """Per big table, the rows sequential scans have read from it."""
    rows = query(settings, "SELECT relname, seq_tup_read FROM pg_stat_user_tables "
                 "WHERE schemaname = %s AND relname = ANY(%s)",
                 (settings.pg_schema, list(BIG)))  # fmt: skip
    return {name: n for name, n in rows}


async def setup(settings: Settings) -> None:
    dsn, schema = settings.pg_dsn.get_secret_value(), settings.pg_schema
    players = PostgresPlayerSink(dsn, schema, consumer_group="probe")
    await players.open()
    await players.write(PlayerBatch(states={f"p-{i}": standing(f"p-{i}")
                                            for i in range(PLAYERS)}))  # fmt: skip
    await players.close()
    book = Ledger.connect(dsn, schema)
    try:
        book.post_batch([ledger.deposit(f"d-{i}", f"p-{i}", Decimal("50.00"), "EUR", NOW)
                         for i in range(PLAYERS)])  # fmt: skip
    finally:
        book.close()


async def place_session(settings: Settings) -> tuple[list[str], dict[str, int]]:
    """Small batches, one large one, small batches again, on one sink's one connection;
    every status, and the rows scanned as the small batches after the large one begin."""
    sink = SportsbookSink(settings.pg_dsn.get_secret_value(), settings.pg_schema,
                          consumer_group="probe", max_connections=1,
                          policies=load_policies(POLICY_DIR))  # fmt: skip
    await sink.open()
    statuses: list[str] = []
    offset = 0

    async def place(n: int) -> None:
        nonlocal offset
        batch = BetBatch(inputs=[item(f"b-{offset + i}", f"p-{(offset + i) % PLAYERS}",
                                      "1.00", [("m-1", "1x2")], offset + i)
                                 for i in range(n)])  # fmt: skip
        offset += n
        batch.progress = {(TOPIC, 0): offset}
        placed = await sink.decide(batch, NOW)
        statuses.extend(v.decode().split('"status":"')[1].split('"')[0]
                        for _, v in placed.outputs)  # fmt: skip

    try:
        for _ in range(8):  # more than the five custom plans before a generic one
            await place(2)
        await place(1500)
        async with sink.connection() as conn:  # this backend's counters, published now
            await conn.execute("SELECT pg_stat_force_next_flush()")
        await asyncio.sleep(0.5)
        grown = rows_scanned(settings)
        for _ in range(8):
            await place(2)
    finally:
        await sink.close()  # a backend flushes its statistics as it exits
    return statuses, grown


def test_placement_scans_no_grown_table(settings: Settings) -> None:
    asyncio.run(setup(settings))
    statuses, before = asyncio.run(place_session(settings))
    assert set(before) == set(BIG)

    assert len(statuses) == 16 * 2 + 1500
    assert statuses.count("accepted") == len(statuses)  # every stake went through the ledger
    after = rows_scanned(settings)
    scanned = {name: after[name] - before[name] for name in BIG if after[name] != before[name]}
    assert scanned == {}, f"rows read by sequential scans once the tables grew: {scanned}"
    assert query(settings, "SELECT count(*) FROM bets") == [(len(statuses),)]
    ledger_reconciles(settings)
