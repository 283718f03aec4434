"""A silent odds producer closes its markets; a recovered one reopens them only with fresh odds.

Also: the odds table is what a restarted worker decides with (recovered from its
changelog), and an out-of-order price on the feed never overwrites a newer one.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from config.kafka import consume_until
from config.settings import Settings
from tests.conftest import StartWorker
from tests.integration.helpers import (
    bet,
    done,
    joined,
    odds_change,
    payment,
    produce,
    wait_for,
)

pytestmark = pytest.mark.integration

FEED_TIMEOUT = 3.0


def stamp(delta: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta)).isoformat()


def alive(producer: str = "live") -> bytes:
    return json.dumps({"type": "alive", "producer": producer, "timestamp": stamp()}).encode()


def decide(settings: Settings, bet_id: str, price: str) -> dict[str, Any]:
    """Place one bet on m-1's home win at ``price``; its decision."""
    produce(
        settings, "bets", [("p-1", bet(bet_id, "p-1", "1.00", [("m-1", "1x2", "home", price)]))]
    )
    records = consume_until(
        settings, [settings.topic("bet-decisions")],
        want=lambda rs: any(json.loads(r.value)["bet_id"] == bet_id for r in rs), timeout=30,
    )  # fmt: skip
    return next(json.loads(r.value) for r in records if json.loads(r.value)["bet_id"] == bet_id)


def test_a_silent_producer_suspends_its_markets_until_fresh_odds(
    settings: Settings, worker_factory: StartWorker
) -> None:
    s = settings.model_copy(update={"feed_timeout": FEED_TIMEOUT})
    worker = worker_factory(s)
    worker.wait_ready()
    produce(s, "players", joined("p-1"))
    wait_for(lambda: done(s, "players") == 2, timeout=60, what="registration")
    produce(s, "payments", [("p-1", payment("deposit", "d-1", "p-1", "100.00"))])
    produce(s, "odds", [
        ("live", alive()),
        ("m-1", odds_change("m-1", {"1x2": {"home": "2.10"}}, at=stamp(), producer="live")),
        # Delivered later but stamped earlier: the feed's order, not Kafka's, decides.
        ("m-1", odds_change("m-1", {"1x2": {"home": "9.99"}}, at=stamp(-60), producer="live")),
    ])  # fmt: skip
    wait_for(lambda: done(s, "odds") == 3 and done(s, "payments") == 1, timeout=30, what="odds")
    assert decide(s, "b-1", "2.10")["status"] == "accepted"

    # The feed falls silent: after the timeout its markets take no bets.
    time.sleep(FEED_TIMEOUT + 0.5)
    refused = decide(s, "b-2", "2.10")
    assert (refused["status"], refused["reason"]) == ("rejected", "market_suspended")

    # A worker restart keeps all of it: the tables come back from their changelogs.
    assert worker.terminate() == 0, worker.problems()
    worker_factory(s, restart_of=worker)
    worker.wait_ready()

    # Heartbeats again: the producer is back, but its old prices stay closed...
    produce(s, "odds", [("live", alive())])
    wait_for(lambda: done(s, "odds") == 4, timeout=30, what="heartbeat")
    stale = decide(s, "b-3", "2.10")
    assert (stale["status"], stale["reason"]) == ("rejected", "market_suspended")

    # ...until fresh odds arrive for the market.
    produce(s, "odds", [
        ("live", alive()),
        ("m-1", odds_change("m-1", {"1x2": {"home": "2.20"}}, at=stamp(), producer="live")),
    ])  # fmt: skip
    wait_for(lambda: done(s, "odds") == 6, timeout=30, what="fresh odds")
    fresh = decide(s, "b-4", "2.20")
    assert (fresh["status"], fresh["odds"]) == ("accepted", "2.20")
