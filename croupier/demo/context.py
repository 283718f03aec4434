"""One run of the demo: its ids, its players, its clients, and the messages it builds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from config.settings import Settings
from croupier.demo.plumbing import Heartbeat, Out, Progress, Tail, Upstream
from croupier.demo.printing import Checks

D = Decimal
FEED_PRODUCER = "demo"  # one producer for every run: silent between runs, back with each


@dataclass(frozen=True)
class Player:
    short: str
    player_id: str
    jurisdiction: str
    currency: str
    deposit: Decimal


Leg = tuple[str, str, str, str]  # event, market, outcome, odds the player saw


@dataclass(frozen=True)
class BetCase:
    """A bet to place and what Croupier must answer."""

    short: str
    bet_id: str
    player: str  # player id
    currency: str
    stake: str
    legs: tuple[Leg, ...]
    policy: str
    expect: str  # "accepted" or the rejection reason
    expect_odds: str | None = None
    why: str = ""

    def wire(self, at: str) -> bytes:
        return json.dumps({
            "bet_id": self.bet_id, "player_id": self.player, "placed_at": at,
            "stake": self.stake, "currency": self.currency, "odds_change": self.policy,
            "selections": [{"event_id": e, "market_id": m, "outcome_id": o, "odds": p}
                           for e, m, o, p in self.legs],
        }).encode()  # fmt: skip


class Demo:
    """One run of the match: its ids, its messages, what it saw and what it checked."""

    def __init__(self, settings: Settings, run: str, deadline: float) -> None:
        self.settings, self.run, self.deadline = settings, run, deadline
        self.prefix = f"demo-{run}-"
        self.upstream = Upstream(settings)
        self.progress = Progress(settings)
        out = (
            "bet-decisions",
            "settlements",
            "payment-decisions",
            "dead-letters",
            "player-notifications",
            "casino-results",
        )
        self.tail = Tail(settings, [settings.topic(t) for t in out])
        self.checks = Checks()
        self.feed_producer = FEED_PRODUCER
        self.heartbeat = Heartbeat(self.upstream, self.feed_producer)
        self.m1, self.m2 = f"{self.prefix}m1", f"{self.prefix}m2"
        self.players = [
            Player("uk", f"{self.prefix}uk", "UK", "GBP", D("100.00")),
            Player("dk", f"{self.prefix}dk", "DK", "DKK", D("500.00")),
            Player("es", f"{self.prefix}es", "ES", "EUR", D("100.00")),
            Player("nj", f"{self.prefix}nj", "NJ", "USD", D("100.00")),
        ]
        self.final: dict[str, tuple[str, str]] = {}  # short -> (cash, pending) at the end

    def close(self) -> None:
        self.heartbeat.stop()
        self.tail.close()
        self.progress.close()

    def ours(self, topic: str) -> list[Out]:
        real = self.settings.topic(topic)
        return [r for r in self.tail.records if r.topic == real and r.key.startswith(self.prefix)]

    def player(self, short: str) -> Player:
        return next(p for p in self.players if p.short == short)

    def joining(
        self, p: Player, now: str, *, session_at: str | None = None
    ) -> list[dict[str, Any]]:
        """A player's first events: registered, a session open, located where required."""
        base = {"player_id": p.player_id, "timestamp": now}
        events: list[dict[str, Any]] = [
            {**base, "type": "registered", "jurisdiction": p.jurisdiction,
             "currency": p.currency, "birth_date": "1990-05-01"},
            {**base, "type": "session_started", "session_id": f"{p.player_id}-s1",
             "timestamp": session_at or now},
        ]  # fmt: skip
        if p.jurisdiction == "NJ":
            geo = {"type": "geolocation", "jurisdiction": "NJ", "allowed": True,
                   "checked_at": now, "geolocate_in": 3600, "ip": "198.51.100.7"}  # fmt: skip
            events.append({**base, **geo})
        return events

    def odds(self, event: str, markets: dict[str, dict[str, str]]) -> tuple[str, bytes]:
        return event, json.dumps({
            "type": "odds_change", "event_id": event, "producer": self.feed_producer,
            "timestamp": self.upstream.feed_time(),
            "markets": [{"market_id": m, "status": "active",
                         "outcomes": [{"outcome_id": o, "odds": p} for o, p in prices.items()]}
                        for m, prices in markets.items()],
        }).encode()  # fmt: skip

    def feed(self, kind: str, event: str, **fields: Any) -> tuple[str, bytes]:
        msg = {"type": kind, "event_id": event, "producer": self.feed_producer,
               "timestamp": self.upstream.feed_time(), **fields}  # fmt: skip
        return event, json.dumps(msg).encode()

    def settle(self, event: str, results: dict[str, dict[str, str]]) -> tuple[str, bytes]:
        markets = [{"market_id": m, "outcomes": [{"outcome_id": o, "result": r}
                                                 for o, r in res.items()]}
                   for m, res in results.items()]  # fmt: skip
        return self.feed("bet_settlement", event, markets=markets)
