"""Players, payments, odds, bets and settlement end to end on the real broker and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from config.kafka import consume_until
from config.settings import Settings
from sinks.postgres.ledger import Ledger
from tests.conftest import StartWorker
from tests.integration.helpers import (
    balance,
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


def decisions(settings: Settings, want: int) -> dict[str, list[dict[str, Any]]]:
    topic = settings.topic("bet-decisions")
    records = consume_until(settings, [topic], want=lambda rs: len(rs) >= want, timeout=60)
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        d = json.loads(r.value)
        out.setdefault(d["bet_id"], []).append(d)
    return out


def settled(settings: Settings) -> list[tuple[Any, ...]]:
    return query(settings, "SELECT settlement_id, kind, result, payout FROM settlements ORDER BY 1")


def test_bets_are_decided_once_settled_rolled_back_and_resettled(
    settings: Settings, worker_factory: StartWorker
) -> None:
    worker = worker_factory(settings)
    worker.wait_ready()
    produce(settings, "players", [*joined("p-1"), *joined("p-2")])
    wait_for(lambda: done(settings, "players") == 4, timeout=60, what="registrations")

    # Payments: deposits, a withdrawal paid out, one refused, a retry and a conflict.
    pays = [
        ("p-1", payment("deposit", "pay-1", "p-1", "100.00")),
        ("p-2", payment("deposit", "pay-2", "p-2", "50.00")),
        ("p-9", payment("deposit", "pay-9", "p-9", "10.00")),  # unknown player
        ("p-2", payment("withdrawal", "pay-3", "p-2", "20.00")),
        ("p-2", payment("withdrawal_completed", "pay-3", "p-2")),
        ("p-2", payment("withdrawal", "pay-4", "p-2", "1000.00")),  # more than she has
        ("p-1", payment("deposit", "pay-1", "p-1", "100.00")),  # provider retry
        ("p-1", payment("deposit", "pay-1", "p-1", "999.00")),  # same id, other content
    ]
    produce(settings, "payments", pays)
    topic = settings.topic("payment-decisions")
    records = consume_until(settings, [topic], want=lambda rs: len(rs) >= 6, timeout=60)
    got = {
        (d["payment_id"], d["status"], d["reason"])
        for d in map(json.loads, (r.value for r in records))
    }
    assert got == {
        ("pay-1", "accepted", None), ("pay-2", "accepted", None),
        ("pay-9", "rejected", "unknown_player"), ("pay-3", "accepted", None),
        ("pay-4", "rejected", "insufficient_funds"),
    }  # fmt: skip
    wait_for(lambda: done(settings, "payments") == len(pays), timeout=30, what="payments")
    assert query(settings, "SELECT count(*) FROM payment_events WHERE outcome = 'duplicate'") == [
        (1,)
    ]
    assert query(settings, "SELECT reason FROM dead_letters WHERE source_topic = %s",
                 (settings.topic("payments"),)) == [("duplicate_conflict",)]  # fmt: skip
    assert balance(settings, "p-1") == (D("100.00"), D(0))
    assert balance(settings, "p-2") == (D("30.00"), D(0))

    # Odds for two matches, then bets against them.
    produce(settings, "odds", [
        ("m-1", odds_change("m-1", {"1x2": {"home": "2.10", "draw": "3.40", "away": "3.60"}})),
        ("m-2", odds_change("m-2", {"1x2": {"home": "1.50", "draw": "4.00", "away": "6.00"}})),
        ("m-3", odds_change("m-3", {"ou": {"over": "1.90", "under": "1.90"}})),
    ])  # fmt: skip
    wait_for(lambda: done(settings, "odds") == 3, timeout=30, what="odds")
    home = ("m-1", "1x2", "home", "2.10")
    bets = [
        ("p-1", bet("b-1", "p-1", "10.00", [home])),
        ("p-1", bet("b-2", "p-1", "5.00", [("m-1", "1x2", "home", "2.00")])),  # price moved
        ("p-1", bet("b-3", "p-1", "5.00", [("m-1", "1x2", "home", "2.00")], policy="higher")),
        (
            "p-2",
            bet(
                "b-4",
                "p-2",
                "10.00",
                [("m-1", "1x2", "draw", "3.40"), ("m-2", "1x2", "home", "1.50")],
            ),
        ),
        ("p-1", bet("b-5", "p-1", "5.00", [("m-7", "1x2", "home", "2.00")])),  # unknown market
        ("p-9", bet("b-6", "p-9", "5.00", [home])),  # unknown player
        ("p-2", bet("b-7", "p-2", "500.00", [home])),  # more than the wallet holds
        ("p-1", bet("b-8", "p-1", "4.00", [("m-3", "ou", "over", "1.90")])),
        ("p-1", bet("b-1", "p-1", "10.00", [home])),  # producer retry
        ("p-1", bet("b-1", "p-1", "11.00", [home])),  # same id, other bet
        ("p-1", b'{"bet_id": "b-x", '),  # malformed
    ]
    produce(settings, "bets", bets)
    got_decisions = decisions(settings, want=9)
    wait_for(lambda: done(settings, "bets") == len(bets), timeout=30, what="bets")
    summary = {
        b: [(d["status"], d["reason"], d["odds"]) for d in ds] for b, ds in got_decisions.items()
    }
    # The producer's retry of b-1 gets the first answer again, the same in every field.
    assert got_decisions["b-1"][0] == got_decisions["b-1"][1]
    assert summary == {
        "b-1": [("accepted", None, "2.10")] * 2,
        "b-2": [("rejected", "odds_changed", None)],
        "b-3": [("accepted", None, "2.10")],
        "b-4": [("accepted", None, "5.10")],
        "b-5": [("rejected", "market_unknown", None)],
        "b-6": [("rejected", "unknown_player", None)],
        "b-7": [("rejected", "insufficient_funds", None)],
        "b-8": [("accepted", None, "1.90")],
    }
    letters = query(
        settings,
        "SELECT reason FROM dead_letters WHERE source_topic = %s",
        (settings.topic("bets"),),
    )
    assert sorted(r[0] for r in letters) == ["duplicate_conflict", "malformed_json"]
    assert query(settings, "SELECT bet_id FROM bet_duplicates") == [("b-1",)]
    assert balance(settings, "p-1") == (D("81.00"), D("19.00"))
    assert balance(settings, "p-2") == (D("20.00"), D("10.00"))

    # Settlement: m-1 first (the accumulator waits for its other leg), then m-2.
    produce(settings, "odds", [
        ("m-1", settlement("m-1", {"1x2": {"home": "win", "draw": "lose", "away": "lose"}},
                           at="2026-11-24T21:00:00Z")),
        ("m-1", settlement("m-1", {"1x2": {"home": "win", "draw": "lose", "away": "lose"}},
                           at="2026-11-24T21:00:00Z")),  # a duplicate: changes nothing
        ("m-2", settlement("m-2", {"1x2": {"home": "win", "draw": "lose", "away": "lose"}},
                           at="2026-11-24T21:01:00Z")),
        ("m-3", feed("bet_cancel", "m-3", at="2026-11-24T21:02:00Z")),
    ])  # fmt: skip
    wait_for(lambda: done(settings, "odds") == 7, timeout=30, what="settlement")
    assert settled(settings) == [
        ("b-1/1", "settled", "win", D("21.00")),
        ("b-3/1", "settled", "win", D("10.50")),
        ("b-4/1", "settled", "lose", D(0)),
        ("b-8/1", "voided", "void", D("4.00")),
    ]
    assert balance(settings, "p-1") == (D("116.50"), D(0))  # 81 + 21 + 10.50 + 4
    assert balance(settings, "p-2") == (D("20.00"), D(0))
    # A bet on a settled market is refused.
    produce(settings, "bets", [("p-1", bet("b-9", "p-1", "1.00", [home]))])
    assert decisions(settings, want=9)["b-9"][0]["reason"] == "market_suspended"

    # The feed got m-1 wrong: roll back, then settle again with the draw winning.
    produce(settings, "odds", [
        ("m-1", feed("rollback_bet_settlement", "m-1", at="2026-11-24T21:10:00Z")),
        ("m-1", settlement("m-1", {"1x2": {"home": "lose", "draw": "win", "away": "lose"}},
                           at="2026-11-24T21:11:00Z")),
    ])  # fmt: skip
    wait_for(lambda: done(settings, "odds") == 9, timeout=30, what="resettlement")
    assert settled(settings) == [
        ("b-1/1", "settled", "win", D("21.00")),
        ("b-1/2", "rolled_back", None, D(0)), ("b-1/3", "resettled", "lose", D(0)),
        ("b-3/1", "settled", "win", D("10.50")),
        ("b-3/2", "rolled_back", None, D(0)), ("b-3/3", "resettled", "lose", D(0)),
        ("b-4/1", "settled", "lose", D(0)),
        ("b-4/2", "rolled_back", None, D(0)), ("b-4/3", "resettled", "win", D("51.00")),
        ("b-8/1", "voided", "void", D("4.00")),
    ]  # fmt: skip
    assert balance(settings, "p-1") == (D("85.00"), D(0))  # 116.50 - 21 - 10.50
    assert balance(settings, "p-2") == (D("71.00"), D(0))  # 20 + 51

    topic = settings.topic("settlements")
    records = consume_until(settings, [topic], want=lambda rs: len(rs) >= 10, timeout=30)
    published = {json.loads(r.value)["settlement_id"] for r in records}
    assert published == {row[0] for row in settled(settings)}

    ledger = Ledger.connect(settings.pg_dsn.get_secret_value(), settings.pg_schema)
    try:
        assert ledger.reconcile().ok
    finally:
        ledger.close()
    assert worker.terminate() == 0, worker.problems()


def test_liability_limits_and_the_servers_clock_decide_at_placement(
    settings: Settings, worker_factory: StartWorker
) -> None:
    """The house limits refuse each kind of bet that breaks one; a bet or a feed message
    stamped far from the server's clock is refused; a bet_cancel window voids by the time
    the bet was decided, not by the player's placed_at."""
    worker = worker_factory(settings)
    worker.wait_ready()
    produce(settings, "players", [*joined("p-1")])
    produce(settings, "payments", [("p-1", payment("deposit", "pay-1", "p-1", "100.00"))])
    events = [f"l-{n}" for n in range(70)]
    produce(settings, "odds", [
        *[(e, odds_change(e, {"1x2": {"home": "2.00", "short": "1.10"}})) for e in events],
        ("big", odds_change("big", {"1x2": {"home": "9000.00", "away": "101.00"}})),
        ("big-2", odds_change("big-2", {"1x2": {"away": "101.00"}})),
    ])  # fmt: skip
    wait_for(lambda: done(settings, "odds") == 72 and done(settings, "payments") == 1,
             timeout=60, what="odds and the deposit")  # fmt: skip

    far_ahead = "2100-01-01T00:00:00+00:00"
    bets = [
        ("p-1", bet("ok", "p-1", "1.00", [(e, "1x2", "home", "2.00") for e in events[:3]])),
        ("p-1", bet("legs", "p-1", "1.00", [(e, "1x2", "short", "1.10") for e in events[:21]])),
        ("p-1", bet("seventy", "p-1", "1.00", [(e, "1x2", "home", "2.00") for e in events])),
        ("p-1", bet("stake", "p-1", "10000.01", [("l-0", "1x2", "home", "2.00")])),
        ("p-1", bet("odds", "p-1", "1.00",
                    [("big", "1x2", "away", "101.00"), ("big-2", "1x2", "away", "101.00")])),
        ("p-1", bet("payout", "p-1", "30.00", [("big", "1x2", "home", "9000.00")])),
        ("p-1", bet("ahead", "p-1", "1.00", [("l-0", "1x2", "home", "2.00")], at=far_ahead)),
    ]  # fmt: skip
    produce(settings, "bets", bets)
    got = decisions(settings, len(bets))
    assert {b: (d[0]["status"], d[0]["reason"]) for b, d in got.items()} == {
        "ok": ("accepted", None),
        "legs": ("rejected", "max_legs"),
        "seventy": ("rejected", "max_odds"),  # 1.18e21: refused before it is even rounded
        "stake": ("rejected", "max_stake"),
        "odds": ("rejected", "max_odds"),  # 10201 > 10000
        "payout": ("rejected", "max_payout"),  # 270000.00 > 250000
        "ahead": ("rejected", "clock_skew"),
    }
    assert balance(settings, "p-1") == (D("99.00"), D("1.00"))

    # A heartbeat from year 2100 is a dead letter: it never marks the producer up.
    produce(settings, "odds", [
        ("live", json.dumps({"type": "alive", "producer": "live",
                             "timestamp": far_ahead}).encode()),
    ])  # fmt: skip
    wait_for(lambda: done(settings, "odds") == 73, timeout=30, what="the heartbeat")
    assert query(settings, "SELECT reason FROM dead_letters WHERE source_topic = %s",
                 (settings.topic("odds"),)) == [("clock_skew",)]  # fmt: skip

    # The accepted bet's legs carry its decision time; a window that covers the player's
    # placed_at but ends before the decision voids nothing, one that covers it voids.
    decided = query(settings, "SELECT decided_at FROM bets WHERE bet_id = 'ok'")[0][0]
    assert query(settings, "SELECT DISTINCT placed_at FROM bet_legs WHERE bet_id = 'ok'") == [
        (decided,)
    ]
    before = (decided - timedelta(microseconds=1)).isoformat()
    produce(settings, "odds", [
        ("l-0", feed("bet_cancel", "l-0", at=before, end_time=before)),
        ("l-1", feed("bet_cancel", "l-1", at=before, start_time=decided.isoformat())),
    ])  # fmt: skip
    wait_for(lambda: done(settings, "odds") == 75, timeout=30, what="the cancels")
    assert query(settings, "SELECT event_id, cancelled FROM bet_legs WHERE bet_id = 'ok' "
                 "ORDER BY leg") == [("l-0", False), ("l-1", True), ("l-2", False)]  # fmt: skip
