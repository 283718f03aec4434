"""The odds table's rules: how feed messages change an event's markets, and feed health.

An event's book is one value of the ``odds`` table (keyed by event id): each market's
status, current prices, the feed time of the last message applied to it and a version
that counts applied changes. Everything here is decided on the feed's own timestamps, so
applying the same messages again, in any redelivery, gives the same book:

* a message older than what a market already reflects never overwrites it (a stale or
  duplicate ``odds_change`` is ignored; equal timestamps keep the first);
* ``settled`` and ``cancelled`` are terminal for prices: only a rollback reopens the market,
  and it comes back ``suspended`` until fresh odds arrive;
* a producer's ``alive`` heartbeats are kept per producer. A producer whose last heartbeat
  is older than the timeout is down, and a market is open for betting only if its producer
  is up and the market's prices are newer than the producer's last recovery: a dead feed
  never leaves old prices open, and a recovered one reopens a market only with fresh odds.
  A producer that never sent a heartbeat is not monitored.

Because feed time orders everything here, a feed time ahead of the server's clock would
rule for ever: an ``alive`` stamped in year 9999 would keep its producer "up", and an
``odds_change`` or settlement stamped there would make every later message "stale". So
``feed_clock_problem`` refuses any feed message stamped beyond the server's ``now`` plus
the clock tolerance (``clock_skew``): the odds flow dead-letters it before it touches a
book, a producer's health or a market's settlement state. A late message (stamped in the
past) is harmless: it is stale or applies in feed order as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from rules.clock import ahead
from schemas.odds import Alive, BetStop, OddsChange, OddsMessage

TERMINAL = frozenset({"settled", "cancelled"})


@dataclass(frozen=True)
class Market:
    """One market's state in the odds table."""

    status: str
    odds: Mapping[str, Decimal]
    updated_at: datetime  # feed time of the last message applied
    version: int

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "odds": {k: str(v) for k, v in self.odds.items()},
            "updated_at": self.updated_at.isoformat(),
            "version": self.version,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Market:
        return cls(
            status=data["status"],
            odds={k: Decimal(v) for k, v in data["odds"].items()},
            updated_at=datetime.fromisoformat(data["updated_at"]),
            version=int(data["version"]),
        )


@dataclass(frozen=True)
class EventBook:
    """Every market of one event, and the producer whose feed prices them."""

    event_id: str
    producer: str | None
    markets: Mapping[str, Market] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "producer": self.producer,
            "markets": {k: m.to_json() for k, m in self.markets.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EventBook:
        return cls(
            event_id=data["event_id"],
            producer=data.get("producer"),
            markets={k: Market.from_json(m) for k, m in data["markets"].items()},
        )


@dataclass(frozen=True)
class ProducerHealth:
    """A producer's heartbeats: the last one, and when it last came back after silence.

    ``last_alive`` is the feed time of the last heartbeat (it orders them); ``seen_at``
    is when that heartbeat counts as proof of life on the server's clock: the earlier of
    its feed time and the server's time at it, so a producer whose clock runs ahead (within
    the tolerance) is not kept "up" after it falls silent.
    """

    producer: str
    last_alive: datetime
    recovered_at: datetime | None = None
    seen_at: datetime | None = None  # None: as last_alive (state written before it existed)

    def to_json(self) -> dict[str, Any]:
        return {
            "producer": self.producer,
            "last_alive": self.last_alive.isoformat(),
            "recovered_at": self.recovered_at.isoformat() if self.recovered_at else None,
            "seen_at": self.seen_at.isoformat() if self.seen_at else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProducerHealth:
        rec, seen = data.get("recovered_at"), data.get("seen_at")
        return cls(
            producer=data["producer"],
            last_alive=datetime.fromisoformat(data["last_alive"]),
            recovered_at=datetime.fromisoformat(rec) if rec else None,
            seen_at=datetime.fromisoformat(seen) if seen else None,
        )

    def is_up(self, now: datetime, timeout: timedelta) -> bool:
        alive = self.last_alive if self.seen_at is None else self.seen_at
        return now - alive <= timeout


def feed_clock_problem(msg: OddsMessage, now: datetime, tolerance: timedelta) -> str | None:
    """Why ``msg`` is refused (``clock_skew``): its feed time is more than ``tolerance``
    ahead of the server's ``now``; ``None`` when it is not."""
    return ahead(msg.timestamp, now, tolerance, what=f"{msg.type} timestamp")


def apply_alive(
    health: ProducerHealth | None,
    msg: Alive,
    timeout: timedelta,
    now: datetime | None = None,
) -> ProducerHealth | None:
    """The producer's health after a heartbeat processed at the server's ``now``; ``None``
    when it changes nothing (stale). Without ``now`` the feed time stands for it."""
    seen = msg.timestamp if now is None else min(msg.timestamp, now)
    if health is None:
        return ProducerHealth(msg.producer, msg.timestamp, None, seen)
    if msg.timestamp <= health.last_alive:
        return None
    silent = msg.timestamp - health.last_alive > timeout
    return ProducerHealth(
        msg.producer, msg.timestamp, msg.timestamp if silent else health.recovered_at, seen
    )


def _touch(market: Market, at: datetime, **changes: Any) -> Market:
    return replace(market, updated_at=at, version=market.version + 1, **changes)


def _targets(book: EventBook, market_ids: list[str] | None) -> list[str]:
    return list(book.markets) if market_ids is None else market_ids


def apply_odds_message(book: EventBook | None, msg: OddsChange | BetStop) -> EventBook | None:
    """The event's book after a price change or bet stop; ``None`` when it changes nothing."""
    if book is None:
        book = EventBook(msg.event_id, msg.producer)
    at = msg.timestamp
    markets = dict(book.markets)
    changed = False
    if isinstance(msg, OddsChange):
        for m in msg.markets:
            current = markets.get(m.market_id)
            if current is not None and (at <= current.updated_at or current.status in TERMINAL):
                continue
            odds = {o.outcome_id: o.odds for o in m.outcomes}
            if current is None:
                markets[m.market_id] = Market(m.status, odds, at, 1)
            else:
                markets[m.market_id] = _touch(current, at, status=m.status,
                                              odds=odds or current.odds)  # fmt: skip
            changed = True
    else:
        for market_id in _targets(book, msg.market_ids):
            current = markets.get(market_id)
            if current is None:
                markets[market_id] = Market("suspended", {}, at, 1)
            elif at <= current.updated_at or current.status in TERMINAL:
                continue
            elif current.status != "suspended":
                markets[market_id] = _touch(current, at, status="suspended")
            else:
                continue
            changed = True
    producer = msg.producer or book.producer
    if not changed and producer == book.producer:
        return None
    return EventBook(book.event_id, producer, markets)


def set_status(
    book: EventBook | None, event_id: str, market_ids: list[str], status: str, at: datetime
) -> EventBook | None:
    """The book with ``market_ids`` moved to ``status`` by a settlement, cancel or rollback.

    The sportsbook sink decides, in PostgreSQL, which markets such a message changes (it
    owns the money they move); the table follows that decision, whatever the timestamps.
    """
    if book is None:
        book = EventBook(event_id, None)
    markets = dict(book.markets)
    changed = False
    for market_id in market_ids:
        current = markets.get(market_id)
        if current is None:
            markets[market_id] = Market(status, {}, at, 1)
        elif current.status != status:
            markets[market_id] = replace(current, status=status, version=current.version + 1,
                                         updated_at=max(at, current.updated_at))  # fmt: skip
        else:
            continue
        changed = True
    return EventBook(book.event_id, book.producer, markets) if changed else None


def market_open(
    book: EventBook,
    market: Market,
    producers: Mapping[str, ProducerHealth],
    now: datetime,
    timeout: timedelta,
) -> bool:
    """Whether ``market`` takes bets now: active, and its producer's feed is trustworthy."""
    if market.status != "active":
        return False
    health = producers.get(book.producer) if book.producer else None
    if health is None:
        return True
    if not health.is_up(now, timeout):
        return False
    return health.recovered_at is None or market.updated_at >= health.recovered_at
