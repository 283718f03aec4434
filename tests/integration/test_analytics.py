"""The ClickHouse fan-out on the real engine: mapping, crashes, an outage, and the ledger's
numbers.

Each test has its own ClickHouse database (beside its own topics, group and schema); the
sink runs as ``croupier analytics run`` processes (SIGKILLed where the test says so) or in
this process. The outage test runs its own engine process, to stop and start it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Context, Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from config.settings import Settings
from croupier import analytics
from croupier.analytics import AnalyticsSink
from croupier.cli import main as croupier_main
from schemas.records import AuditRecord, SourcePosition
from sinks.clickhouse.client import ClickHouse, connect
from sinks.clickhouse.sink import AuditLogWriter, Fetched
from tests.conftest import ROOT, StartWorker, settings_env
from tests.integration.clickhouse_server import EngineProcess, free_port
from tests.integration.helpers import (
    bet,
    done,
    feed,
    joined,
    odds_change,
    payment,
    produce,
    query,
    settlement,
    wait_for,
)
from tests.integration.test_casino import GAME, call

pytestmark = pytest.mark.integration

D = Decimal
T = "2026-11-24T19:00:00+00:00"
DAY = dt.date(2026, 11, 24)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def asettings(settings: Settings) -> Settings:
    """The test's settings with a ClickHouse database of its own and small, quick batches."""
    return settings.model_copy(
        update={
            "clickhouse_database": f"t_{uuid.uuid4().hex[:10]}",
            "analytics_batch_max": 2000,
            "analytics_batch_wait": 0.1,
            "analytics_retry_max": 0.5,
        }
    )


@dataclass
class SinkProcess:
    proc: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def sink_process(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Start ``croupier analytics run`` for some settings; all are killed at teardown."""
    started: list[SinkProcess] = []
    logs = ROOT / ".stack" / "test" / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def start(s: Settings) -> SinkProcess:
        log = logs / f"{request.node.name}-analytics-{len(started)}.log"
        env = {**os.environ, **settings_env(s), "PYTHONUNBUFFERED": "1"}
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "croupier", "analytics", "run"],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            )  # fmt: skip
        started.append(SinkProcess(proc, log))
        return started[-1]

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(30)


@pytest.fixture
def ch(asettings: Settings) -> Iterator[ClickHouse]:
    client = connect(asettings.clickhouse_url)
    yield client
    client.command(f"DROP DATABASE IF EXISTS {asettings.clickhouse_database}")
    client.close()


def scalar(ch: ClickHouse, sql: str) -> Any:
    return ch.query(sql)[0][0]


def count_final(ch: ClickHouse, s: Settings, table: str = "audit_log") -> int:
    try:
        return int(scalar(ch, f"SELECT count() FROM {s.clickhouse_database}.{table} FINAL"))
    except Exception:  # the sink has not created the schema yet
        return -1


# -- audit-shaped records -------------------------------------------------------------------


def record(entity: str, entity_id: str, action: str, offset: int, after: dict[str, Any], *,
           topic: str = "bets", before: dict[str, Any] | None = None) -> bytes:  # fmt: skip
    return AuditRecord(
        entity=entity, entity_id=entity_id, action=action,
        source=SourcePosition(topic=topic, partition=0, offset=offset),
        occurred_at=T, recorded_at=T, before=before, after=after,
    ).model_dump_json().encode()  # fmt: skip


def ledger_record(key: str, op: str, offset: int, *, player: str = "p-1", amount: str = "0",
                  entries: list[tuple[str, str, str]], **extra: Any) -> bytes:  # fmt: skip
    after = {
        "txn_id": offset, "key": key, "operation": op, "player_id": player, "currency": "EUR",
        "amount": amount, "payout": None, "result": None, "reference": None,
        "status": "applied", "reason": None, "cash_after": "0", "pending_after": "0",
        "entries": [{"owner": o, "account": a, "amount": m} for o, a, m in entries], **extra,
    }  # fmt: skip
    return record("ledger_transaction", key, f"ledger.{op}", offset, after)


def stakes(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    """``n`` distinct stake records (ledger.stake), keyed as the relay keys them."""
    out = []
    for i in range(start, start + n):
        key = f"bet:b-{i}"
        entries = [("p-1", "cash", "-1.00"), ("p-1", "pending", "1.00")]
        out.append((key, ledger_record(key, "stake", i, amount="1.00", entries=entries)))
    return out


# -- the mapping ----------------------------------------------------------------------------


def test_every_kind_of_record_lands_in_its_table(asettings: Settings, ch: ClickHouse) -> None:
    s, db = asettings, asettings.clickhouse_database
    single = {"event_id": "m-1", "market_id": "1x2", "outcome_id": "home", "odds": "2.10"}
    acca = [single, {"event_id": "m-2", "market_id": "ou", "outcome_id": "over", "odds": "2.00"}]
    bet_after = {"player_id": "p-1", "reason": None, "decided_at": T, "currency": "EUR",
                 "standing_version": 1}  # fmt: skip
    market = {"status": "active", "odds": {"home": "2.10", "away": "3.60"}, "updated_at": T,
              "version": 2}  # fmt: skip
    items = [
        record("player", "p-1", "player.registered", 1,
               {"player_id": "p-1", "jurisdiction": "UK", "currency": "EUR", "version": 1},
               topic="players"),
        record("bet", "b-1", "bet.accepted", 2, {**bet_after, "bet_id": "b-1",
               "status": "accepted", "odds": "2.10", "stake": "10.00", "selections": [single]}),
        record("bet", "b-2", "bet.accepted", 3, {**bet_after, "bet_id": "b-2",
               "status": "accepted", "odds": "4.20", "stake": "5.00", "selections": acca}),
        record("bet", "b-3", "bet.rejected", 4, {**bet_after, "bet_id": "b-3",
               "status": "rejected", "reason": "odds_changed", "odds": None, "stake": "3.00",
               "selections": [single]}),
        ledger_record("bet:b-1", "stake", 2, amount="10.00",
                      entries=[("p-1", "cash", "-10.00"), ("p-1", "pending", "10.00")]),
        ledger_record("bet:b-2", "stake", 3, amount="5.00",
                      entries=[("p-1", "cash", "-5.00"), ("p-1", "pending", "5.00")]),
        ledger_record("settlement:b-1/1", "settle", 5, payout="21.00", reference="bet:b-1",
                      result="win", entries=[("p-1", "pending", "-10.00"),
                      ("house", "house_stakes", "10.00"), ("house", "house_payouts", "-21.00"),
                      ("p-1", "cash", "21.00")]),
        ledger_record("settlement:b-1/2", "unsettle", 6, reference="settlement:b-1/1",
                      entries=[("p-1", "cash", "-21.00"), ("house", "house_payouts", "21.00"),
                      ("house", "house_stakes", "-10.00"), ("p-1", "pending", "10.00")]),
        ledger_record("settlement:b-1/3", "settle", 7, payout="0.00", reference="bet:b-1",
                      result="lose", entries=[("p-1", "pending", "-10.00"),
                      ("house", "house_stakes", "10.00")]),
        ledger_record("deposit:d-1", "deposit", 8, amount="100.00",
                      entries=[("p-1", "cash", "100.00"), ("house", "house_payments", "-100.00")]),
        ledger_record("withdrawal:w-1", "withdrawal_reserve", 9, amount="30.00",
                      entries=[("p-1", "cash", "-30.00"), ("p-1", "withdrawal_reserve", "30.00")]),
        ledger_record("withdrawal-close:w-1", "withdrawal_confirm", 10, reference="withdrawal:w-1",
                      entries=[("p-1", "withdrawal_reserve", "-30.00"),
                               ("house", "house_payments", "30.00")]),
        ledger_record("casino-debit:tx-1", "casino_debit", 11, amount="2.00",
                      entries=[("p-1", "cash", "-2.00"), ("house", "house_casino", "2.00")]),
        ledger_record("casino-credit:tx-2", "casino_credit", 12, amount="0.50",
                      entries=[("house", "house_casino", "-0.50"), ("p-1", "cash", "0.50")]),
        record("casino_transaction", "tx-1", "casino.debit", 11,
               {"type": "debit", "player_id": "p-1", "round_id": "r-1", "game_id": GAME,
                "amount": "2.00", "currency": "EUR", "reference_transaction_id": None,
                "rng_build": None, "request_hash": "h", "status": "ok", "error": None,
                "moved": True, "ledger_key": "casino-debit:tx-1", "balance": "68.00"},
               before={"balance": "70.00", "currency": "EUR"}, topic="casino"),
        record("payment", "d-1", "payment.accepted", 8,
               {"payment_id": "d-1", "player_id": "p-1", "status": "accepted", "reason": None,
                "decided_at": T, "type": "deposit", "amount": "100.00", "currency": "EUR"},
               topic="payments"),
        record("odds", "m-1", "odds.changed", 13, {"producer": "live", "markets": {"1x2": market}},
               topic="odds"),
        record("odds", "m-1", "odds.stopped", 14, {"producer": "live", "markets": {"1x2": {
               **market, "status": "suspended", "odds": {}, "version": 3}}}, topic="odds"),
        record("dead_letter", "bets/0/99", "dead_letter.recorded", 99,
               {"reason": "malformed_json", "error": "bad", "key_base64": None,
                "value_base64": "e30="}),
    ]  # fmt: skip
    # Every record twice (a redelivery), in two batches.
    writer = AuditLogWriter(s.clickhouse_url, db)
    try:
        for _ in range(2):
            writer.write([Fetched(0, i, 1_764_000_000_000, v) for i, v in enumerate(items)])
    finally:
        writer.close()

    assert scalar(ch, f"SELECT count() FROM {db}.audit_log") == 2 * len(items)
    assert count_final(ch, s) == len(items)
    assert ch.query(
        f"SELECT bet_id, status, reason, stake, odds, legs, leg_markets FROM {db}.bets FINAL "
        "ORDER BY bet_id"
    ) == [
        ("b-1", "accepted", None, D("10"), D("2.1"), 1, ["1x2"]),
        ("b-2", "accepted", None, D("5"), D("4.2"), 2, ["1x2", "ou"]),
        ("b-3", "rejected", "odds_changed", D("3"), None, 1, ["1x2"]),
    ]
    assert ch.query(
        f"SELECT settlement_id, bet_id, kind, result, stake, payout, ggr FROM {db}.settlements "
        "ORDER BY settlement_id"
    ) == [
        ("b-1/1", "b-1", "settle", "win", D(10), D(21), D(-11)),
        ("b-1/2", "b-1", "unsettle", None, D(10), D(21), D(11)),
        ("b-1/3", "b-1", "settle", "lose", D(10), D(0), D(10)),
    ]
    assert scalar(ch, f"SELECT count() FROM {db}.ledger_entries") == 24
    assert ch.query(
        f"SELECT day, product, jurisdiction, handle, ggr, bets FROM {db}.ggr_daily ORDER BY product"
    ) == [
        (DAY, "casino", "UK", D("2"), D("1.5"), 1),
        (DAY, "sportsbook", "UK", D("15"), D("10"), 2),
    ]
    assert ch.query(
        f"SELECT event_id, market_id, bets, handle, ggr, settled_bets FROM {db}.ggr_by_market "
        "ORDER BY market_id"
    ) == [("", "(accumulator)", 1, D(5), D(0), 0), ("m-1", "1x2", 1, D(10), D(10), 1)]
    # b-2 is open: an accumulator at 4.20, counted on each leg.
    assert ch.query(
        f"SELECT event_id, outcome_id, open_bets, open_stake, potential_payout, liability "
        f"FROM {db}.market_liability ORDER BY event_id"
    ) == [("m-1", "home", 1, D(5), D(21), D(16)), ("m-2", "over", 1, D(5), D(21), D(16))]
    assert ch.query(
        f"SELECT market_id, outcome_id, action, status, odds FROM {db}.odds_history "
        "ORDER BY changed_at, action, outcome_id"
    ) == [
        ("1x2", "away", "odds.changed", "active", D("3.6")),
        ("1x2", "home", "odds.changed", "active", D("2.1")),
        ("1x2", "", "odds.stopped", "suspended", None),
    ]
    assert ch.query(
        f"SELECT transaction_id, type, amount, balance_before, balance_after, moved "
        f"FROM {db}.casino_transactions FINAL"
    ) == [("tx-1", "debit", D(2), D(70), D(68), True)]
    assert ch.query(f"SELECT payment_id, type, status, amount FROM {db}.payments FINAL") == [
        ("d-1", "deposit", "accepted", D(100))
    ]
    assert ch.query(
        f"SELECT period, deposits, withdrawals_requested, withdrawals_paid "
        f"FROM {db}.payment_totals WHERE player_id = 'p-1' ORDER BY period"
    ) == [(p, D(100), D(30), D(30)) for p in ("day", "month", "week")]
    kinds = [r[0] for r in ch.query(
        f"SELECT kind FROM {db}.player_history WHERE player_id = 'p-1' ORDER BY kind")]  # fmt: skip
    assert kinds == ["bet.accepted", "bet.accepted", "bet.rejected", "bet.settled",
                     "bet.settled", "bet.settlement_rolled_back", "casino.debit",
                     "payment.deposit"]  # fmt: skip
    assert ch.query(f"SELECT letter_id, reason FROM {db}.dead_letters FINAL") == [
        ("bets/0/99", "malformed_json")
    ]


# -- crashes and outages --------------------------------------------------------------------


def committed(s: Settings, partitions: int) -> dict[int, int]:
    """The analytics group's committed offsets of ``audit``."""
    consumer = Consumer({"bootstrap.servers": s.kafka_bootstrap_servers,
                         "group.id": f"{s.app_id}-analytics"})  # fmt: skip
    try:
        tps = [TopicPartition(s.topic("audit"), p) for p in range(partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
    finally:
        consumer.close()


def test_rows_exactly_once_after_sigkill_of_the_sink_mid_batch(
    asettings: Settings, ch: ClickHouse, sink_process: Any
) -> None:
    s, n = asettings, 30_000
    produce(s, "audit", stakes(n))
    first = sink_process(s)
    db = s.clickhouse_database

    def raw() -> int:
        try:
            return int(scalar(ch, f"SELECT count() FROM {db}.audit_log"))
        except Exception:
            return 0

    wait_for(lambda: raw() >= 4000, timeout=60, what="the first batches")
    first.kill()  # somewhere in the stream of insert, commit, insert, ...
    assert raw() < n, "the sink finished before it was killed; make the test bigger"

    sink_process(s)
    wait_for(lambda: count_final(ch, s) == n, timeout=90, what="every record")
    time.sleep(1.0)  # anything more would arrive now
    assert count_final(ch, s) == n
    assert count_final(ch, s, "ledger_transactions") == n
    assert scalar(ch, f"SELECT uniqExact(entity_id) FROM {db}.audit_log") == n
    assert scalar(ch, f"SELECT sum(amount) FROM {db}.ledger_transactions FINAL") == D(n)
    assert sum(committed(s, s.topic_partitions).values()) == n
    assert analytics.lag(s) == 0


def test_a_crash_between_insert_and_commit_repeats_rows_that_collapse(
    asettings: Settings, ch: ClickHouse
) -> None:
    """The worst moment, made certain: the batch is in ClickHouse, its offsets are not."""
    s = asettings.model_copy(update={"analytics_batch_max": 100_000, "analytics_batch_wait": 1.0})
    produce(s, "audit", stakes(500))

    class Crash(BaseException):
        pass

    class CrashAfterInsert(AuditLogWriter):
        def write_encoded(self, data: bytes) -> None:
            super().write_encoded(data)
            raise Crash  # before the commit

    with pytest.raises(Crash):
        AnalyticsSink(s, writer=CrashAfterInsert(s.clickhouse_url, s.clickhouse_database)).run()
    assert count_final(ch, s) == 500
    assert all(o < 0 for o in committed(s, s.topic_partitions).values())  # nothing committed

    sink = AnalyticsSink(s)
    thread = threading.Thread(target=sink.run)
    thread.start()
    try:
        wait_for(lambda: sink.stats.rows >= 500, timeout=60, what="the records again")
    finally:
        sink.stop.set()
        thread.join(30)
    db = s.clickhouse_database
    assert scalar(ch, f"SELECT count() FROM {db}.audit_log") == 1000  # in twice ...
    assert count_final(ch, s) == 500  # ... counted once
    assert scalar(ch, f"SELECT count() FROM {db}.ledger_transactions FINAL") == 500
    assert ch.query(f"SELECT sum(handle) FROM {db}.ggr_daily") == [(D(500),)]


def test_a_clickhouse_outage_loses_nothing(
    settings: Settings, sink_process: Any, tmp_path: Path
) -> None:
    engine = EngineProcess(tmp_path / "data", free_port(), tmp_path / "server.log")
    engine.start()
    s = settings.model_copy(update={
        "clickhouse_url": engine.url, "clickhouse_database": "analytics",
        "analytics_batch_max": 500, "analytics_batch_wait": 0.05, "analytics_retry_max": 0.5,
    })  # fmt: skip
    sink = sink_process(s)
    try:
        produce(s, "audit", stakes(1000))
        ch = connect(engine.url)
        wait_for(lambda: count_final(ch, s) == 1000, timeout=60, what="the first records")
        ch.close()
        before = committed(s, s.topic_partitions)
        assert sum(before.values()) == 1000

        assert engine.stop() == 0  # ClickHouse goes away; the records keep coming
        produce(s, "audit", stakes(3000, start=1000))
        wait_for(lambda: "paused" in sink.text(), timeout=30, what="the sink to pause")
        time.sleep(2.0)
        assert committed(s, s.topic_partitions) == before  # the offsets wait
        assert sink.proc.poll() is None

        engine.start()  # same data directory, same port
        ch = connect(engine.url)
        wait_for(lambda: count_final(ch, s) == 4000, timeout=60, what="every record")
        assert scalar(ch, "SELECT uniqExact(entity_id) FROM analytics.audit_log") == 4000
        assert scalar(ch, "SELECT sum(amount) FROM analytics.ledger_transactions FINAL") == D(4000)
        ch.close()
        wait_for(lambda: sum(committed(s, s.topic_partitions).values()) == 4000, timeout=30,
                 what="the offsets to move on")  # fmt: skip
        assert "resumed" in sink.text()
    finally:
        sink.kill()
        if engine.proc is not None:
            engine.stop()


# -- the ledger's numbers -------------------------------------------------------------------


def test_the_views_return_the_numbers_the_ledger_holds(
    asettings: Settings,
    ch: ClickHouse,
    worker_factory: StartWorker,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s, db = asettings, asettings.clickhouse_database
    worker = worker_factory(s)
    worker.wait_ready()
    produce(s, "players", [*joined("p-1"), *joined("p-2")])
    wait_for(lambda: done(s, "players") == 4, timeout=60, what="registrations")
    produce(s, "payments", [
        ("p-1", payment("deposit", "pay-1", "p-1", "100.00")),
        ("p-2", payment("deposit", "pay-2", "p-2", "50.00")),
        ("p-2", payment("withdrawal", "pay-3", "p-2", "20.00")),
        ("p-2", payment("withdrawal_completed", "pay-3", "p-2")),
    ])  # fmt: skip
    wait_for(lambda: done(s, "payments") == 4, timeout=60, what="payments")
    produce(s, "odds", [
        ("m-1", odds_change("m-1", {"1x2": {"home": "2.10", "draw": "3.40", "away": "3.60"}})),
        ("m-2", odds_change("m-2", {"1x2": {"home": "1.50", "draw": "4.00", "away": "6.00"}})),
        ("m-3", odds_change("m-3", {"ou": {"over": "1.90", "under": "1.90"}})),
    ])  # fmt: skip
    wait_for(lambda: done(s, "odds") == 3, timeout=30, what="odds")
    home = ("m-1", "1x2", "home", "2.10")
    produce(s, "bets", [
        ("p-1", bet("b-1", "p-1", "10.00", [home])),
        ("p-1", bet("b-2", "p-1", "5.00", [("m-1", "1x2", "draw", "3.40")])),
        ("p-2", bet("b-3", "p-2", "10.00", [("m-1", "1x2", "draw", "3.40"),
                                            ("m-2", "1x2", "home", "1.50")])),
        ("p-1", bet("b-4", "p-1", "4.00", [("m-3", "ou", "over", "1.90")])),  # stays open
        ("p-1", bet("b-5", "p-1", "5.00", [("m-1", "1x2", "home", "2.00")])),  # price moved
    ])  # fmt: skip
    wait_for(lambda: done(s, "bets") == 5, timeout=60, what="bets")
    produce(s, "odds", [
        ("m-1", settlement("m-1", {"1x2": {"home": "win", "draw": "lose", "away": "lose"}},
                           at="2026-11-24T21:00:00Z")),
        ("m-2", settlement("m-2", {"1x2": {"home": "win", "draw": "lose", "away": "lose"}},
                           at="2026-11-24T21:01:00Z")),
        # The feed got m-1 wrong: roll back and settle again, the draw winning.
        ("m-1", feed("rollback_bet_settlement", "m-1", at="2026-11-24T21:10:00Z")),
        ("m-1", settlement("m-1", {"1x2": {"home": "lose", "draw": "win", "away": "lose"}},
                           at="2026-11-24T21:11:00Z")),
    ])  # fmt: skip
    wait_for(lambda: done(s, "odds") == 7, timeout=60, what="settlements")
    produce(s, "casino", [
        ("p-1", call("debit", "tx-1", "p-1", "r-1", "2.00")),
        ("p-1", call("credit", "tx-2", "p-1", "r-1", "5.00")),
        ("p-2", call("debit", "tx-3", "p-2", "r-2", "3.00")),
        ("p-2", call("rollback", "tx-4", "p-2", "r-2", "3.00", reference_transaction_id="tx-3")),
        ("p-2", call("debit", "tx-5", "p-2", "r-3", "4.00")),
    ])  # fmt: skip
    wait_for(lambda: done(s, "casino") == 5, timeout=60, what="casino calls")

    def trail() -> int:
        return int(query(s, "SELECT count(*) FROM audit_records")[0][0])

    wait_for(lambda: int(query(s, "SELECT coalesce(sum(seq), 0) FROM audit_published")[0][0])
             == trail(), timeout=30, what="the relay")  # fmt: skip
    sink = AnalyticsSink(s)
    thread = threading.Thread(target=sink.run)
    thread.start()
    try:
        wait_for(lambda: count_final(ch, s) == trail(), timeout=60, what="the trail in ClickHouse")
        assert analytics.wait_caught_up(s, timeout=30)  # what `make demo` waits for
    finally:
        sink.stop.set()
        thread.join(30)

    # What the ledger says: the house's accounts, and stakes minus payouts from the requests.
    house = dict(query(s, """
        SELECT a.kind, sum(e.amount) FROM ledger_entries e JOIN ledger_accounts a USING (account_id)
         WHERE a.owner = 'house' GROUP BY a.kind"""))  # fmt: skip
    sportsbook = query(
        s,
        """
        SELECT sum(CASE t.operation WHEN 'settle' THEN t.amount - t.payout
                                    ELSE t.payout - t.amount END)
          FROM ledger_transactions t
         WHERE t.status = 'applied' AND t.operation IN ('settle', 'unsettle')""",
    )[0][0]
    assert sportsbook == house["house_stakes"] + house["house_payouts"]
    casino = house["house_casino"]
    handle = query(s, "SELECT sum(amount) FROM ledger_transactions WHERE status = 'applied' "
                   "AND operation = 'stake'")[0][0]  # fmt: skip
    # Settled stakes 10 + 5 + 10, paid 0 + 17 + 51 after the resettlement; casino 2 - 5 + 4.
    assert (sportsbook, casino, handle) == (D("-43.00"), D("1.00"), D("29.00"))

    assert dict(ch.query(f"SELECT product, sum(ggr) FROM {db}.ggr_daily GROUP BY product")) == {
        "sportsbook": sportsbook, "casino": casino
    }  # fmt: skip
    assert ch.query(f"SELECT sum(handle) FROM {db}.ggr_daily WHERE product = 'sportsbook'") == [
        (handle,)
    ]
    assert ch.query(f"SELECT DISTINCT jurisdiction FROM {db}.ggr_daily") == [("UK",)]
    assert ch.query(f"SELECT sum(ggr), sum(handle) FROM {db}.ggr_by_market") == [
        (sportsbook, handle)
    ]
    assert ch.query(
        f"SELECT open_bets, open_stake, potential_payout FROM {db}.market_liability"
    ) == [(1, D(4), D("7.6"))]
    assert ch.query(
        f"SELECT deposits, withdrawals_paid FROM {db}.payment_totals "
        "WHERE player_id = 'p-2' AND period = 'month'"
    ) == [(D(50), D(20))]
    pg_bets = query(s, "SELECT count(*) FROM bets WHERE player_id = 'p-1'")[0][0]
    assert pg_bets == 4
    assert scalar(ch, f"SELECT count() FROM {db}.player_history WHERE player_id = 'p-1' "
                  "AND kind IN ('bet.accepted', 'bet.rejected')") == pg_bets  # fmt: skip
    assert scalar(ch, f"SELECT count() FROM {db}.odds_history WHERE event_id = 'm-1'") >= 3

    # The analyst's view of it, through the command line, as `make demo` ends.
    monkeypatch.setenv("CROUPIER_CLICKHOUSE_URL", s.clickhouse_url)
    monkeypatch.setenv("CROUPIER_CLICKHOUSE_DATABASE", db)
    monkeypatch.setenv("CROUPIER_STACK_DIR", "/nonexistent")
    code = croupier_main(["sql", "SELECT market_id, ggr, hold FROM ggr_by_market "
                          "ORDER BY market_id", "--format", "json"])  # fmt: skip
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert sum(D(r["ggr"]) for r in rows) == sportsbook
    worker.terminate()


def test_the_readme_queries_run(asettings: Settings, ch: ClickHouse) -> None:
    """Every ```sql block of the README's analytics section runs against the schema."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Analytics", 1)[1].split("\n## ", 1)[0]
    queries = re.findall(r"```sql\n(.*?)```", section, flags=re.S)
    assert len(queries) >= 6
    writer = AuditLogWriter(asettings.clickhouse_url, asettings.clickhouse_database)
    writer.open()
    writer.close()
    db_client = connect(f"{asettings.clickhouse_url}/{asettings.clickhouse_database}")
    try:
        for q in queries:
            db_client.query(q)
    finally:
        db_client.close()


def test_croupier_sql_answers_refuses_and_says_when_clickhouse_is_away(
    asettings: Settings,
    ch: ClickHouse,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CROUPIER_CLICKHOUSE_DATABASE", asettings.clickhouse_database)
    monkeypatch.setenv("CROUPIER_STACK_DIR", "/nonexistent")
    monkeypatch.setenv("CROUPIER_CLICKHOUSE_URL", asettings.clickhouse_url)
    assert croupier_main(["analytics", "schema"]) == 0
    capsys.readouterr()

    assert croupier_main(["sql", "SELECT count() AS n, toDecimal64(1.5, 2) AS m FROM bets",
                          "--format", "csv"]) == 0  # fmt: skip
    assert capsys.readouterr().out == '"n","m"\n0,1.5\n'
    assert croupier_main(["sql", "SELECT * FROM no_such_view"]) == 1
    assert "UNKNOWN_TABLE" in capsys.readouterr().err

    monkeypatch.setenv("CROUPIER_CLICKHOUSE_URL", f"http://127.0.0.1:{free_port()}")
    assert croupier_main(["sql", "SELECT 1"]) == 3
    assert "cannot reach ClickHouse" in capsys.readouterr().err


_IN_PROCESS = """
import json, sys
from sinks.clickhouse.client import connect
from sinks.clickhouse.sink import AuditLogWriter, encode_row

url, rows = sys.argv[1], json.loads(sys.stdin.read())
writer = AuditLogWriter(url, "analytics", connector=connect)
writer.write_encoded(b"".join(encode_row(p, o, 0, v.encode()) for p, o, v in rows))
writer.close()
ch = connect(url)
out = ch.query("SELECT key, ggr FROM analytics.ledger_transactions FINAL ORDER BY key")
print(json.dumps([[k, str(g)] for k, g in out]))
"""


def test_the_same_schema_maps_alike_in_embedded_chdb_in_process(
    asettings: Settings, ch: ClickHouse, tmp_path: Path
) -> None:
    """``chdb:///path`` (the engine in the process itself) takes the same DDL and gives the
    same rows as the engine behind HTTP. A child process: chdb opens one directory per
    process, and this test session may hold another."""
    items = [v.decode() for _, v in stakes(3)]
    settle = ledger_record("settlement:b-0/1", "settle", 9, payout="2.50", reference="bet:b-0",
                           entries=[("p-1", "pending", "-1.00"), ("house", "house_stakes", "1.00"),
                                    ("house", "house_payouts", "-2.50"),
                                    ("p-1", "cash", "2.50")])  # fmt: skip
    items.append(settle.decode())
    rows = [(0, i, v) for i, v in enumerate(items)]
    child = subprocess.run(
        [sys.executable, "-c", _IN_PROCESS, f"chdb://{tmp_path / 'chdb'}"],
        input=json.dumps(rows), capture_output=True, text=True, cwd=ROOT, timeout=120,
        check=False,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    embedded = json.loads(child.stdout.strip().splitlines()[-1])

    db = asettings.clickhouse_database
    writer = AuditLogWriter(asettings.clickhouse_url, db)
    writer.write([Fetched(p, o, 0, v.encode()) for p, o, v in rows])
    writer.close()
    served = ch.query(f"SELECT key, ggr FROM {db}.ledger_transactions FINAL ORDER BY key")
    assert embedded == [[k, str(g)] for k, g in served]
    assert [g for _, g in served] == [D(0), D(0), D(0), D("-1.5")]


def test_an_older_schema_is_upgraded_and_accumulator_odds_stay_exact(
    asettings: Settings, ch: ClickHouse
) -> None:
    """A database made by schema 1 (odds to 6 places, its mappings marked so): applying the
    current schema widens the columns and replaces the mappings, after which a four-leg
    accumulator's price (8 places) arrives exactly as the ledger holds it."""
    db = asettings.clickhouse_database
    from sinks.clickhouse import schema

    old = [s.replace(schema.ODDS, "Decimal(38, 6)").replace(
        f"OrNull(nullIf(price, ''), {schema.ODDS_SCALE})", "OrNull(nullIf(price, ''), 6)")
        .replace(f"COMMENT '{schema._version()}'", "COMMENT 'croupier schema 1'")
        for s in schema.statements(db) if not s.startswith("ALTER")]  # fmt: skip
    for statement in old:
        ch.command(statement)
    column = f"SELECT type FROM system.columns WHERE database = '{db}' AND table = 'bets' "
    assert scalar(ch, column + "AND name = 'odds'") == "Nullable(Decimal(38, 6))"
    schema.apply(ch, db)
    schema.apply(ch, db)  # idempotent: nothing is replaced twice
    comments = {c for (c,) in ch.query(f"SELECT comment FROM system.tables WHERE database = "
                                       f"'{db}' AND engine = 'MaterializedView'")}  # fmt: skip
    assert comments == {schema._version()}
    legs = [{"event_id": f"m-{i}", "market_id": "1x2", "outcome_id": "home", "odds": o}
            for i, o in enumerate(["1.37", "2.13", "1.91", "3.07"])]  # fmt: skip
    price = Decimal("1.37") * Decimal("2.13") * Decimal("1.91") * Decimal("3.07")
    assert price.as_tuple().exponent == -8
    body = record("bet", "b-acca", "bet.accepted", 1, {
        "player_id": "p-1", "reason": None, "decided_at": T, "currency": "EUR",
        "standing_version": 1, "bet_id": "b-acca", "status": "accepted", "odds": str(price),
        "stake": "10.00", "selections": legs})  # fmt: skip
    writer = AuditLogWriter(asettings.clickhouse_url, db)
    writer.open()
    try:
        writer.write([Fetched(0, 1, 0, body)])
    finally:
        writer.close()
    odds, leg_odds = ch.query(f"SELECT odds, leg_odds FROM {db}.bets FINAL")[0]
    assert Decimal(odds) == price
    assert [Decimal(x) for x in leg_odds] == [Decimal(x["odds"]) for x in legs]


# -- what ClickHouse cannot take ------------------------------------------------------------


def dated(entity: str, entity_id: str, action: str, offset: int, after: dict[str, Any],
          occurred_at: str) -> bytes:  # fmt: skip
    """An audit record whose producer-side time is ``occurred_at``; recorded now-ish (T)."""
    doc = json.loads(record(entity, entity_id, action, offset, after))
    return json.dumps({**doc, "occurred_at": occurred_at}).encode()


def bet_after(bet_id: str, *, stake: str = "10.00", odds: str = "2.10",
              legs: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        "player_id": "p-1", "reason": None, "decided_at": T, "currency": "EUR",
        "standing_version": 1, "bet_id": bet_id, "status": "accepted", "odds": odds,
        "stake": stake,
        "selections": [{"event_id": f"m-{i}", "market_id": "1x2", "outcome_id": "home",
                        "odds": o} for i, o in enumerate(legs or [odds])],
    }  # fmt: skip


def test_a_record_clickhouse_cannot_hold_is_dead_lettered_and_the_rest_goes_in(
    asettings: Settings, ch: ClickHouse
) -> None:
    """Money beyond Decimal(38, 6), a price beyond the price column, a stake that is no
    number: each is set aside with ClickHouse's error, never stored as 0 or NULL, and the
    good records of the same batch land in their tables."""
    db = asettings.clickhouse_database
    huge = "1" + "0" * 40
    bad = {
        2: record("bet", "b-huge-odds", "bet.accepted", 2, bet_after("b-huge-odds", odds=huge)),
        4: ledger_record("deposit:big", "deposit", 4, amount=huge,
                         entries=[("p-1", "cash", huge), ("house", "house_payments", "-" + huge)]),
        5: record("bet", "b-nan", "bet.accepted", 5, bet_after("b-nan", stake="lots")),
    }  # fmt: skip
    good = {o: v for o, v in enumerate(v for _, v in stakes(6)) if o not in bad}
    # The largest values the wire allows: 32 integer digits of money, a 20-leg accumulator.
    biggest = "9" * 32 + ".999"
    good[6] = ledger_record("deposit:max", "deposit", 6, amount=biggest,
                            entries=[("p-1", "cash", biggest)])  # fmt: skip
    legs = ["1.0001"] * 5 + ["2.13"] * 10  # 40 places: the price column's scale
    acca = Decimal(1)
    with localcontext(Context(prec=100)):  # never the default 28 digits: it would round
        for leg in legs:
            acca *= Decimal(leg)
    good[7] = record("bet", "b-acca", "bet.accepted", 7,
                     bet_after("b-acca", odds=str(acca), legs=legs))  # fmt: skip
    rows = sorted({**good, **bad}.items())
    writer = AuditLogWriter(asettings.clickhouse_url, db, topic="t.audit")
    try:
        letters = writer.write([Fetched(0, o, 1_700_000_000_000, v) for o, v in rows])
    finally:
        writer.close()

    assert sorted(int(x.row.split(b"\t")[1]) for x in letters) == sorted(bad)
    stored = ch.query(f"SELECT source_topic, kafka_partition, kafka_offset, kafka_ts, body, "
                      f"code, error FROM {db}.analytics_dead_letters FINAL "
                      "ORDER BY kafka_offset")  # fmt: skip
    assert [(t, p, o) for t, p, o, *_ in stored] == [("t.audit", 0, o) for o in sorted(bad)]
    assert [body.encode() for *_, body, _, _ in stored] == [bad[o] for o in sorted(bad)]
    assert all(code == 395 and "does not fit" in error for *_, code, error in stored)
    assert stored[0][3] == dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)

    # Nothing of theirs became a 0 or a NULL; the good ones are exact.
    assert scalar(ch, f"SELECT count() FROM {db}.bets FINAL WHERE bet_id != 'b-acca'") == 0
    keys = [k for (k,) in ch.query(f"SELECT key FROM {db}.ledger_transactions FINAL ORDER BY key")]
    assert keys == sorted([f"bet:b-{i}" for i in good if i < 6] + ["deposit:max"])
    assert scalar(ch, f"SELECT amount FROM {db}.ledger_transactions FINAL "
                      "WHERE key = 'deposit:max'") == Decimal(biggest)  # fmt: skip
    odds, leg_odds = ch.query(f"SELECT odds, leg_odds FROM {db}.bets FINAL")[0]
    assert Decimal(odds) == acca and acca.as_tuple().exponent == -40
    assert [Decimal(x) for x in leg_odds] == [Decimal(x) for x in legs]


def test_bets_dated_across_centuries_go_in_one_insert(asettings: Settings, ch: ClickHouse) -> None:
    """Producer times in 150 different months: the partitions follow the server's clock, so
    the insert touches one month, not 150 (ClickHouse refuses more than 100 per insert)."""
    db = asettings.clickhouse_database
    rows = []
    for i in range(150):
        when = f"{1900 + i}-{i % 12 + 1:02d}-15T12:00:00+00:00"
        after = {**bet_after(f"b-{i}"), "placed_at": when}
        rows.append(Fetched(0, i, 0, dated("bet", f"b-{i}", "bet.accepted", i, after, when)))
    writer = AuditLogWriter(asettings.clickhouse_url, db)
    try:
        assert writer.write(rows) == []
    finally:
        writer.close()
    assert scalar(ch, f"SELECT count() FROM {db}.bets FINAL") == 150
    assert scalar(ch, f"SELECT uniqExact(toYYYYMM(placed_at)) FROM {db}.bets FINAL") == 150
    for table in ("audit_log", "bets"):
        parts = ch.query(f"SELECT DISTINCT partition FROM system.parts WHERE database = '{db}' "
                         f"AND table = '{table}' AND active")  # fmt: skip
        assert parts == [("202611",)]


def test_the_sink_sets_a_refused_record_aside_and_moves_on(
    asettings: Settings, ch: ClickHouse
) -> None:
    """Through Kafka: a record whose amount no column holds, amid good ones. The sink keeps
    running, the offsets move past it, and it waits in analytics_dead_letters."""
    s, db = asettings, asettings.clickhouse_database
    huge = "9" * 40
    poison = ledger_record("deposit:huge", "deposit", 10_000, amount=huge,
                           entries=[("p-1", "cash", huge)])  # fmt: skip
    produce(s, "audit", [*stakes(100), ("deposit:huge", poison), *stakes(100, start=100)])
    sink = AnalyticsSink(s)
    thread = threading.Thread(target=sink.run)
    thread.start()
    try:
        wait_for(lambda: sum(sink.stats.committed.values()) >= 201, timeout=60,
                 what="every offset committed")  # fmt: skip
    finally:
        sink.stop.set()
        thread.join(30)
    assert not thread.is_alive() and sink.stats.dead_lettered == 1
    assert scalar(ch, f"SELECT count() FROM {db}.ledger_transactions FINAL") == 200
    letters = ch.query(f"SELECT source_topic, body, code FROM {db}.analytics_dead_letters FINAL")
    assert letters == [(s.topic("audit"), poison.decode(), 395)]
    assert analytics.lag(s) == 0


def test_croupier_sql_stops_a_query_at_its_timeout(
    asettings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CROUPIER_STACK_DIR", "/nonexistent")
    monkeypatch.setenv("CROUPIER_CLICKHOUSE_URL", asettings.clickhouse_url)
    # Hours of work: only the engine's own limit ends it (the answer names it).
    code = croupier_main(["sql", "SELECT sum(cityHash64(number)) FROM numbers(1000000000000)",
                          "--timeout", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1, err
    assert "stopped after --timeout 1 s" in err and "TIMEOUT_EXCEEDED" in err
    assert croupier_main(["sql", "SELECT 1", "--timeout", "1"]) == 0  # the next one runs


def test_a_database_partitioned_by_producer_time_is_named_when_the_schema_is_applied(
    asettings: Settings, ch: ClickHouse, caplog: pytest.LogCaptureFixture
) -> None:
    from sinks.clickhouse import schema

    db = asettings.clickhouse_database
    ch.command(f"CREATE DATABASE {db}")
    old = (
        schema.TABLES["audit_log"]
        .format(db=db)
        .replace("PARTITION BY toYYYYMM(recorded_at)", "PARTITION BY toYYYYMM(occurred_at)")
    )
    ch.command(old)
    schema.apply(ch, db)
    assert "audit_log partitioned by a producer's time" in caplog.text
    caplog.clear()
    ch.command(f"DROP DATABASE {db}")
    schema.apply(ch, db)
    assert "partitioned by a producer's time" not in caplog.text
