"""Players, payments, odds, bets and settlement end to end on the real broker and PostgreSQL."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from croupier.kafka import consume_until
from croupier.settings import Settings
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
    got_decisions = decisions(settings, want=8)
    wait_for(lambda: done(settings, "bets") == len(bets), timeout=30, what="bets")
    summary = {
        b: [(d["status"], d["reason"], d["odds"]) for d in ds] for b, ds in got_decisions.items()
    }
    assert summary == {
        "b-1": [("accepted", None, "2.10")],
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
