"""Corrections always land: the debt account, on the real stack.

A settlement rollback the player can no longer pay for (the winnings were withdrawn) is
applied all the same: what the cash cannot give back becomes the player's debt, which the
next deposit, payout or released withdrawal pays down first. The bet always ends at the
feed's latest result, the books balance, the trail rebuilds every wallet, and a key an
older version refused is never reused.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from config.settings import Settings
from croupier.analytics import AnalyticsSink
from croupier.cli import main
from rules import ledger as L
from sinks.clickhouse.client import connect
from sinks.postgres.ledger import Ledger
from tests.conftest import StartWorker
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

pytestmark = pytest.mark.integration

D = Decimal
NOW = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)
Run = Callable[..., tuple[int, Any]]
HOME = {"1x2": {"home": "win", "draw": "lose", "away": "lose"}}
AWAY = {"1x2": {"home": "lose", "draw": "lose", "away": "win"}}
DEAD_HEAT = json.dumps({
    "type": "bet_settlement", "event_id": "m-2", "timestamp": "2026-11-24T21:13:00Z",
    "markets": [{"market_id": "1x2", "outcomes": [
        {"outcome_id": "home", "result": "win", "dead_heat_factor": "0.5"},
        {"outcome_id": "draw", "result": "lose"},
        {"outcome_id": "away", "result": "win", "dead_heat_factor": "0.5"}]}],
}).encode()  # fmt: skip


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    lg = Ledger.connect(settings.migration_dsn, settings.pg_schema)
    yield lg
    lg.close()


@pytest.fixture
def chsettings(settings: Settings) -> Iterator[Settings]:
    """The test's settings with a ClickHouse database of its own (dropped afterwards)."""
    s = settings.model_copy(update={"clickhouse_database": f"t_{uuid.uuid4().hex[:10]}",
                                    "analytics_batch_wait": 0.1})  # fmt: skip
    yield s
    ch = connect(s.clickhouse_url)
    ch.command(f"DROP DATABASE IF EXISTS {s.clickhouse_database}")
    ch.close()


@pytest.fixture
def run(
    chsettings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    """Run ``croupier ...`` in-process on this test's stack; (exit status, JSON or text)."""
    for name, value in chsettings.as_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CROUPIER_STACK_DIR", "/nonexistent")

    def call(*argv: str) -> tuple[int, Any]:
        capsys.readouterr()
        code = main(list(argv))
        out = capsys.readouterr()
        if "--json" in argv and out.out.strip():
            return code, json.loads(out.out)
        return code, out.out + out.err

    return call


def wallet(lg: Ledger, player: str) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """(cash, pending, withdrawal reserve, debt owed) of the player's EUR wallet."""
    (b,) = lg.balances(player)
    return b.cash, b.pending, b.withdrawal_reserved, b.debt


def test_the_ledger_turns_a_shortfall_into_debt_and_recovers_it_first(ledger: Ledger) -> None:
    lg = ledger
    lg.post(L.deposit("d-1", "p-1", D("10.00"), "EUR", NOW))
    lg.post(L.stake("b-1", "p-1", D("10.00"), "EUR", NOW))
    lg.post(L.settle("b-1/1", "b-1", "p-1", "EUR", D("21.00"), "win", NOW))
    lg.post(L.withdrawal_reserve("w-1", "p-1", D("20.00"), "EUR", NOW))
    lg.post(L.withdrawal_close("w-1", "p-1", "EUR", NOW, completed=True))
    lg.post(L.withdrawal_reserve("w-2", "p-1", D("1.00"), "EUR", NOW))
    assert wallet(lg, "p-1") == (D("0.00"), D("0.00"), D("1.00"), D(0))

    # The feed rolls the win back: 21.00 to take, nothing in cash. It lands all the same.
    undone = lg.post(L.unsettle("b-1/2", "b-1/1", "p-1", "EUR", NOW))
    assert (undone.status, undone.reason) == ("applied", None)
    assert wallet(lg, "p-1") == (D("0.00"), D("10.00"), D("1.00"), D("21.00"))
    rec = lg.reconcile()
    assert rec.ok, rec
    assert [(d.currency, d.accounts, d.in_debt, d.owed) for d in rec.debts] == [
        ("EUR", 1, 1, D("21.00"))
    ]

    # Money coming back pays the debt first: a released withdrawal, a void's stake.
    lg.post(L.withdrawal_close("w-2", "p-1", "EUR", NOW, completed=False))
    assert wallet(lg, "p-1") == (D("0.00"), D("10.00"), D("0.00"), D("20.00"))
    # A casino win goes to cash: the aggregator was answered with that balance.
    lg.post(L.casino_credit("tx-1", "p-1", D("3.00"), "EUR", NOW))
    assert wallet(lg, "p-1") == (D("3.00"), D("10.00"), D("0.00"), D("20.00"))
    lg.post(L.settle("b-1/3", "b-1", "p-1", "EUR", D("10.00"), "void", NOW))
    assert wallet(lg, "p-1") == (D("3.00"), D("0.00"), D("0.00"), D("10.00"))
    # Two deposits in one batch, in order: the first goes wholly to the debt.
    first, second = lg.post_batch([L.deposit("d-2", "p-1", D("4.00"), "EUR", NOW),
                                   L.deposit("d-3", "p-1", D("30.00"), "EUR", NOW)])  # fmt: skip
    assert (first.cash_after, second.cash_after) == (D("3.00"), D("27.00"))
    assert wallet(lg, "p-1") == (D("27.00"), D("0.00"), D("0.00"), D(0))

    # The debt account's entries tell the story; the house was made whole.
    moves = lg.conn.execute(
        """SELECT t.idempotency_key, e.amount FROM ledger_entries e
             JOIN ledger_accounts a USING (account_id)
             JOIN ledger_transactions t USING (txn_id)
            WHERE a.owner = 'p-1' AND a.kind = 'debt' ORDER BY e.entry_id"""
    ).fetchall()
    keys = [L.unsettle("b-1/2", "b-1/1", "p-1", "EUR", NOW).key,
            L.withdrawal_close("w-2", "p-1", "EUR", NOW, completed=False).key,
            "settlement:b-1/3", L.deposit("d-2", "p-1", D(1), "EUR", NOW).key,
            L.deposit("d-3", "p-1", D(1), "EUR", NOW).key]  # fmt: skip
    amounts = [D("-21.00"), D("1.00"), D("10.00"), D("4.00"), D("6.00")]
    assert moves == list(zip(keys, amounts, strict=True))
    rec = lg.reconcile()
    assert rec.ok and rec.debts[0].in_debt == 0 and rec.debts[0].owed == 0
    house = {kind: total for _, kind, _, total in rec.house}
    # In 44.00, out 20.00; the casino paid 3.00; the void bet nets to nothing.
    assert (house["house_payments"], house["house_casino"]) == (D("-24.00"), D("-3.00"))
    assert house["house_stakes"] + house["house_payouts"] == 0
    # A player in debt never goes below zero in cash, and nothing was refused.
    refused = lg.conn.execute("SELECT count(*) FROM ledger_transactions WHERE status <> 'applied'")
    assert refused.fetchone() == (0,)


def test_the_debt_path_end_to_end(
    settings: Settings, chsettings: Settings, worker_factory: StartWorker, ledger: Ledger,
    run: Run,
) -> None:  # fmt: skip
    s = settings
    worker = worker_factory(s)
    worker.wait_ready()
    produce(s, "players", [*joined("p-1"), *joined("p-2")])
    wait_for(lambda: done(s, "players") == 4, timeout=60, what="registrations")
    produce(s, "payments", [("p-1", payment("deposit", "pay-1", "p-1", "10.00")),
                            ("p-2", payment("deposit", "pay-2", "p-2", "10.00"))])  # fmt: skip
    produce(s, "odds", [
        ("m-1", odds_change("m-1", {"1x2": {"home": "2.10", "draw": "3.40", "away": "3.60"}})),
        ("m-2", odds_change("m-2", {"1x2": {"home": "2.00", "draw": "3.40", "away": "3.60"}})),
    ])  # fmt: skip
    wait_for(lambda: done(s, "payments") == 2 and done(s, "odds") == 2, timeout=60,
             what="deposits and odds")  # fmt: skip
    produce(
        s,
        "bets",
        [
            ("p-1", bet("b-1", "p-1", "10.00", [("m-1", "1x2", "home", "2.10")])),
            ("p-2", bet("b-2", "p-2", "10.00", [("m-2", "1x2", "home", "2.00")])),
        ],
    )
    wait_for(lambda: done(s, "bets") == 2, timeout=60, what="bets")

    # Both win; both withdraw the winnings.
    produce(
        s,
        "odds",
        [
            ("m-1", settlement("m-1", HOME, at="2026-11-24T21:00:00Z")),
            ("m-2", settlement("m-2", HOME, at="2026-11-24T21:00:00Z")),
        ],
    )
    wait_for(lambda: done(s, "odds") == 4, timeout=60, what="the wins")
    produce(s, "payments", [
        ("p-1", payment("withdrawal", "pay-3", "p-1", "20.00")),
        ("p-1", payment("withdrawal_completed", "pay-3", "p-1")),
        ("p-2", payment("withdrawal", "pay-4", "p-2", "20.00")),
        ("p-2", payment("withdrawal_completed", "pay-4", "p-2")),
    ])  # fmt: skip
    wait_for(lambda: done(s, "payments") == 6, timeout=60, what="withdrawals")
    assert wallet(ledger, "p-1") == (D("1.00"), D("0.00"), D("0.00"), D(0))

    # p-1: the feed rolls the win back. 21.00 to take, 1.00 in cash: 20.00 of debt.
    produce(s, "odds", [("m-1", feed("rollback_bet_settlement", "m-1",
                                     at="2026-11-24T21:10:00Z"))])  # fmt: skip
    wait_for(lambda: done(s, "odds") == 5, timeout=60, what="the rollback")
    assert wallet(ledger, "p-1") == (D("0.00"), D("10.00"), D("0.00"), D("20.00"))
    assert query(s, "SELECT status FROM bets WHERE bet_id = 'b-1'") == [("open",)]
    # A deposit pays the debt first.
    produce(s, "payments", [("p-1", payment("deposit", "pay-5", "p-1", "50.00"))])
    wait_for(lambda: done(s, "payments") == 7, timeout=60, what="the deposit")
    assert wallet(ledger, "p-1") == (D("30.00"), D("10.00"), D("0.00"), D(0))
    # Resettled as a loss: the stake goes to the house.
    produce(s, "odds", [("m-1", settlement("m-1", AWAY, at="2026-11-24T21:11:00Z"))])

    # p-2: a resettlement to a loss, a void, the void withdrawn, then a dead heat: each
    # applied in order, though the player holds nothing. The void's stake and the dead
    # heat's half payout each pay the debt down.
    produce(s, "odds", [
        ("m-2", settlement("m-2", AWAY, at="2026-11-24T21:10:00Z")),
        ("m-2", feed("bet_cancel", "m-2", at="2026-11-24T21:11:00Z")),
        ("m-2", feed("rollback_bet_cancel", "m-2", at="2026-11-24T21:12:00Z")),
        ("m-2", DEAD_HEAT),
    ])  # fmt: skip
    wait_for(lambda: done(s, "odds") == 10, timeout=60, what="the corrections")
    assert wallet(ledger, "p-1") == (D("30.00"), D("0.00"), D("0.00"), D(0))
    assert wallet(ledger, "p-2") == (D("0.00"), D("0.00"), D("0.00"), D("10.00"))
    assert query(s, "SELECT settlement_id, kind, result, payout FROM settlements "
                 "ORDER BY 1") == [
        ("b-1/1", "settled", "win", D("21.00")), ("b-1/2", "rolled_back", None, D(0)),
        ("b-1/3", "resettled", "lose", D(0)),
        ("b-2/1", "settled", "win", D("20.00")), ("b-2/2", "rolled_back", None, D(0)),
        ("b-2/3", "resettled", "lose", D(0)), ("b-2/4", "rolled_back", None, D(0)),
        ("b-2/5", "voided", "void", D("10.00")), ("b-2/6", "rolled_back", None, D(0)),
        ("b-2/7", "resettled", "lose", D(0)), ("b-2/8", "rolled_back", None, D(0)),
        ("b-2/9", "resettled", "win", D("10.00")),
    ]  # fmt: skip
    assert query(s, "SELECT bet_id, status, result, payout FROM bets ORDER BY 1") == [
        ("b-1", "settled", "lose", D(0)), ("b-2", "settled", "win", D("10.00"))]  # fmt: skip

    # Where it shows: the wallet, the statement, the books.
    code, shown = run("wallet", "balance", "p-2", "--json")
    assert code == 0 and shown == {"player_id": "p-2", "currency": "EUR", "balance": "0.00",
                                   "pending": "0.00", "debt": "10.00"}, shown  # fmt: skip
    code, text = run("wallet", "balance", "p-1")
    assert code == 0 and "balance 30.00" in text and "debt 0.00" in text, text
    code, lines = run("wallet", "statement", "p-1", "--json")
    debt = [(ln["key"], ln["amount"], ln["balance_after"]) for ln in lines
            if ln["account"] == "debt"]  # fmt: skip
    deposit = L.deposit("pay-5", "p-1", D(1), "EUR", NOW).key
    assert debt == [("settlement:b-1/2", "-20.00", "-20.00"), (deposit, "20.00", "0.00")]
    code, books = run("wallet", "reconcile", "--json")
    assert code == 0 and books["ok"], books
    assert books["debts"] == [{"currency": "EUR", "accounts": 2, "players_in_debt": 1,
                               "owed": "10.00"}]  # fmt: skip
    code, text = run("wallet", "reconcile")
    assert code == 0 and "in debt 1  owed 10.00" in text and "books balance" in text, text

    # The trail: it verifies, and rebuilds both wallets, debt included.
    code, verified = run("audit", "verify", "--json", "--public-key", "00" * 32)  # none signed
    assert code == 0, verified
    code, rebuilt = run("audit", "rebuild", "--all", "--json")
    assert code == 0 and rebuilt["ok"], rebuilt
    p2 = next(w for w in rebuilt["wallets"] if w["player_id"] == "p-2")
    assert {"currency": "EUR", "account": "debt", "balance": "-10.00"} in p2["balances"]
    # Replays agree with the book and the ledger (a payout that paid a debt moved it all).
    for bet_id in ("b-1", "b-2"):
        code, report = run("replay", "settlement", bet_id, "--json")
        assert code == 0, report["checks"]
    code, report = run("replay", "--json")
    assert code == 0, report["differences"]
    # Every invariant of `croupier check` holds with a debt on the books, ClickHouse's too.
    sink = AnalyticsSink(chsettings)
    thread = threading.Thread(target=sink.run)
    thread.start()
    try:
        code, checked = run("check", "--json", "--wait", "60")
    finally:
        sink.stop.set()
        thread.join(30)
    assert code == 0, json.dumps(checked, indent=1)
    assert all(row["ok"] and not row["skipped"] for row in checked["rows"]), checked
    assert worker.terminate() == 0, worker.problems()


def test_a_key_an_older_version_refused_is_not_reused(
    settings: Settings, worker_factory: StartWorker, ledger: Ledger
) -> None:
    s = settings
    worker = worker_factory(s)
    worker.wait_ready()
    produce(s, "players", joined("p-1"))
    wait_for(lambda: done(s, "players") == 2, timeout=60, what="registration")
    produce(s, "payments", [("p-1", payment("deposit", "pay-1", "p-1", "10.00"))])
    produce(s, "odds", [("m-1", odds_change("m-1", {"1x2": {"home": "2.10", "away": "3.60"}}))])
    wait_for(lambda: done(s, "payments") == 1 and done(s, "odds") == 1, timeout=60,
             what="deposit and odds")  # fmt: skip
    produce(s, "bets", [("p-1", bet("b-1", "p-1", "10.00", [("m-1", "1x2", "home", "2.10")]))])
    wait_for(lambda: done(s, "bets") == 1, timeout=60, what="the bet")
    # What an older version left: the rollback's key, settlement:b-1/2, holding a refusal
    # of the very request the sportsbook will make.
    stale = ledger.post(L.unsettle("b-1/2", "b-1/1", "p-1", "EUR", NOW))
    assert (stale.status, stale.reason) == ("rejected", "unknown_reference")

    produce(s, "odds", [("m-1", settlement("m-1", HOME, at="2026-11-24T21:00:00Z")),
                        ("m-1", feed("rollback_bet_settlement", "m-1",
                                     at="2026-11-24T21:10:00Z"))])  # fmt: skip
    wait_for(lambda: done(s, "odds") == 3, timeout=60, what="win and rollback")
    # The rollback skipped the refused key and landed under the next number.
    rows = query(s, "SELECT idempotency_key, operation, status FROM ledger_transactions "
                 "WHERE idempotency_key LIKE 'settlement:%%' ORDER BY txn_id")  # fmt: skip
    assert rows == [(stale.key, "unsettle", "rejected"),
                    ("settlement:b-1/1", "settle", "applied"),
                    ("settlement:b-1/3", "unsettle", "applied")]  # fmt: skip
    assert query(s, "SELECT status, settle_seq FROM bets WHERE bet_id = 'b-1'") == [("open", 3)]
    assert wallet(ledger, "p-1") == (D("0.00"), D("10.00"), D("0.00"), D(0))
    assert ledger.reconcile().ok
    assert worker.terminate() == 0, worker.problems()
