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
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from config.games import load_catalogue
from config.policies import load_policies
from config.settings import POLICY_DIR, Settings
from croupier.gateway.store import Store
from rules import ledger
from schemas.payments import Deposit
from schemas.records import SourcePosition
from sinks.postgres.casino import CasinoSink
from sinks.postgres.ledger import Ledger
from sinks.postgres.payments import PaymentBatch, PaymentInput, PaymentsSink
from sinks.postgres.players import PlayerBatch, PostgresPlayerSink
from sinks.postgres.sportsbook import BetBatch, SportsbookSink
from tests.integration.helpers import ledger_reconciles, query
from tests.integration.test_bets_placement import NOW, TOPIC, item, standing
from tests.integration.test_casino_sink import GROUP as CASINO_GROUP
from tests.integration.test_casino_sink import _batch as casino_batch
from tests.integration.test_casino_sink import _sink as casino_sink

pytestmark = pytest.mark.integration

BIG = ("ledger_transactions", "ledger_entries", "ledger_accounts", "bets", "bet_legs",
       "audit_records")  # fmt: skip
PLAYERS = 300
# Small batches before the tables grow, enough for a plan cached on small tables: psycopg
# prepares a statement sent from Python on its sixth execution, and PostgreSQL then plans
# it for five more calls before it may keep a generic plan (about the eleventh call). A
# plpgsql function's statements are prepared on their first call, so five suffice there.
SMALL = 16


def rows_scanned(settings: Settings, tables: tuple[str, ...] = BIG) -> dict[str, int]:
    """Per table, the rows sequential scans have read from it."""
    rows = query(settings, "SELECT relname, seq_tup_read FROM pg_stat_user_tables "
                 "WHERE schemaname = %s AND relname = ANY(%s)",
                 (settings.pg_schema, list(tables)))  # fmt: skip
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


async def small_big_small(
    settings: Settings,
    tables: tuple[str, ...],
    run: Callable[[int], Awaitable[None]],
    connections: list[Any],
    *,
    small: int,
    big: int,
) -> dict[str, int]:
    """``SMALL`` batches of ``small``, one of ``big``, ``SMALL`` of ``small`` again; the rows
    scanned from ``tables`` as the second small batches begin (``connections``: the pools
    whose backends' counters are published first)."""
    for _ in range(SMALL):
        await run(small)
    await run(big)
    for pool in connections:
        async with pool.connection() as conn:  # this backend's counters, published now
            await conn.execute("SELECT pg_stat_force_next_flush()")
    await asyncio.sleep(0.5)
    grown = rows_scanned(settings, tables)
    for _ in range(SMALL):
        await run(small)
    return grown


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
        grown = await small_big_small(settings, BIG, place, [sink], small=2, big=1500)
    finally:
        await sink.close()  # a backend flushes its statistics as it exits
    return statuses, grown


def test_placement_scans_no_grown_table(settings: Settings) -> None:
    asyncio.run(setup(settings))
    statuses, before = asyncio.run(place_session(settings))
    assert set(before) == set(BIG)

    assert len(statuses) == 2 * SMALL * 2 + 1500
    assert statuses.count("accepted") == len(statuses)  # every stake went through the ledger
    after = rows_scanned(settings)
    scanned = {name: after[name] - before[name] for name in BIG if after[name] != before[name]}
    assert scanned == {}, f"rows read by sequential scans once the tables grew: {scanned}"
    assert query(settings, "SELECT count(*) FROM bets") == [(len(statuses),)]
    ledger_reconciles(settings)


CASINO_BIG = ("ledger_transactions", "ledger_entries", "ledger_accounts", "casino_calls",
              "casino_transactions", "casino_rounds", "audit_records")  # fmt: skip


def test_casino_calls_scan_no_grown_table(settings: Settings) -> None:
    """The same for the casino's wallet calls: stored answers by position range, balances,
    transactions and rounds by key, the ledger's entries read back by key; and the
    gateway's read of a transaction's stored call (``Store.casino_call``), on its own
    read-only connection."""
    now = datetime.now(UTC)

    async def session() -> tuple[list[str], dict[str, int], dict[str, int], list[Any]]:
        setup_sink = await casino_sink(settings, now)  # p-1 registered, in session, funded
        await setup_sink.close()
        policies = load_policies(POLICY_DIR)
        games = load_catalogue(jurisdictions=policies.jurisdictions)
        sink = CasinoSink(settings.pg_dsn.get_secret_value(), settings.pg_schema,
                          consumer_group=CASINO_GROUP, max_connections=1, policies=policies,
                          catalogue=games)  # fmt: skip
        await sink.open()
        store = Store(settings.pg_dsn.get_secret_value(), settings.pg_schema, size=1)
        await store.open()
        statuses: list[str] = []
        offset = 0

        async def rounds(n: int) -> None:
            nonlocal offset
            calls: list[tuple[int, dict[str, Any]]] = []
            for i in range(n):
                r = f"r-{offset + i}"
                calls += [(2 * (offset + i), {"type": "debit", "transaction_id": f"d-{r}",
                                              "round_id": r, "amount": "0.01"}),
                          (2 * (offset + i) + 1, {"type": "credit", "transaction_id": f"c-{r}",
                                                  "round_id": r, "amount": "0.00",
                                                  "round_closed": True})]  # fmt: skip
            offset += n
            answered = await sink.decide(casino_batch(calls, now), now)
            statuses.extend(json.loads(v)["status"] for _, v in answered.outputs)
            await gateway_reads(f"d-r-{offset - 1}")

        async def gateway_reads(debit: str) -> None:
            """One read of many ids, as the gateway's concurrent calls make (``Batched``)."""
            ids = [debit, *(f"d-nobody-{k}" for k in range(39))]
            found = await asyncio.gather(*(store.casino_call(i) for i in ids))
            assert found[0] is not None and found[0].type == "debit" and found[1:] == [None] * 39

        try:
            grown = await small_big_small(settings, CASINO_BIG, rounds, [sink, store.pool],
                                          small=1, big=600)  # fmt: skip
            # The gateway plans each read for its own keys, never from a plan cached while
            # the table was small (bench/gateway.py on a fresh schema: 209 full scans).
            async with store.pool.connection() as conn:
                plans = await (await conn.execute(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                    "WHERE statement LIKE '%%FROM casino_transactions%%'")).fetchall()  # fmt: skip
        finally:
            await sink.close()
            await store.close()
        return statuses, grown, rows_scanned(settings, CASINO_BIG), plans

    statuses, before, after, plans = asyncio.run(session())
    assert statuses == ["ok"] * 2 * (2 * SMALL + 600)
    assert set(before) == set(CASINO_BIG)
    scanned = {n: after[n] - before[n] for n in CASINO_BIG if after[n] != before[n]}
    assert scanned == {}, f"rows read by sequential scans once the tables grew: {scanned}"
    assert plans and all(generic == 0 and custom > 0 for generic, custom in plans), plans
    ledger_reconciles(settings)


PAYMENTS_BIG = ("ledger_transactions", "ledger_entries", "ledger_accounts",
                "payment_decisions", "audit_records")  # fmt: skip


def test_payments_scan_no_grown_table(settings: Settings) -> None:
    """The same for deposits: the payment ids decided before, the ledger, the trail."""
    asyncio.run(setup(settings))  # registered and funded players (the first deposits)

    async def session() -> tuple[list[str], dict[str, int], dict[str, int]]:
        sink = PaymentsSink(settings.pg_dsn.get_secret_value(), settings.pg_schema,
                            consumer_group="probe-payments", max_connections=1,
                            policies=load_policies(POLICY_DIR))  # fmt: skip
        await sink.open()
        statuses: list[str] = []
        offset = 0

        async def deposits(n: int) -> None:
            nonlocal offset
            batch = PaymentBatch(inputs=[PaymentInput(
                source=SourcePosition(topic="payments", partition=0, offset=offset + i),
                event=Deposit(type="deposit", payment_id=f"pay-{offset + i}",
                              player_id=f"p-{(offset + i) % PLAYERS}", amount=Decimal("1.00"),
                              currency="EUR", timestamp=NOW),
            ) for i in range(n)])  # fmt: skip
            offset += n
            batch.progress = {("payments", 0): offset}
            decided = await sink.decide(batch, NOW)
            statuses.extend(json.loads(v)["status"] for _, v in decided.outputs)

        try:
            grown = await small_big_small(settings, PAYMENTS_BIG, deposits, [sink], small=2,
                                          big=1500)  # fmt: skip
        finally:
            await sink.close()
        return statuses, grown, rows_scanned(settings, PAYMENTS_BIG)

    statuses, before, after = asyncio.run(session())
    assert len(statuses) == 2 * SMALL * 2 + 1500
    assert set(statuses) == {"accepted"}, set(statuses)
    assert set(before) == set(PAYMENTS_BIG)
    scanned = {n: after[n] - before[n] for n in PAYMENTS_BIG if after[n] != before[n]}
    assert scanned == {}, f"rows read by sequential scans once the tables grew: {scanned}"
    ledger_reconciles(settings)


def test_gateway_claims_scan_no_grown_table(settings: Settings) -> None:
    """The gateway's ticket and transaction claims, on one connection: small batches, one
    large one, small ones again."""
    tables = ("gateway_tickets", "gateway_transactions")
    with psycopg.connect(settings.pg_dsn.get_secret_value(), autocommit=True,
                         options=f"-c search_path={settings.pg_schema}") as conn:  # fmt: skip
        n = 0

        def claim(count: int) -> None:
            nonlocal n
            tickets = [[f"b-{n + i}", "front", f"p-{i}"] for i in range(count)]
            txs = [[f"t-{n + i}", "hub88", f"p-{i}", f"r-{n + i}", None] for i in range(count)]
            n += count
            held = conn.execute("SELECT bet, holder FROM gateway_tickets_claim(%s::jsonb)",
                                (json.dumps(tickets),)).fetchall()  # fmt: skip
            assert sorted(held) == sorted((t[0], "front") for t in tickets)
            fresh = conn.execute("SELECT fresh FROM gateway_transactions_claim(%s::jsonb)",
                                 (json.dumps(txs),)).fetchall()  # fmt: skip
            assert fresh == [(True,)] * count

        for _ in range(SMALL):
            claim(2)
        claim(3000)
        conn.execute("SELECT pg_stat_force_next_flush()")
        time.sleep(0.5)
        before = rows_scanned(settings, tables)
        for _ in range(SMALL):
            claim(2)
        conn.execute("SELECT pg_stat_force_next_flush()")
        time.sleep(0.5)
    after = rows_scanned(settings, tables)
    assert set(before) == set(tables)
    scanned = {t: after[t] - before[t] for t in tables if after[t] != before[t]}
    assert scanned == {}, f"rows read by sequential scans once the tables grew: {scanned}"
