"""The ``bets`` flow: decide every bet exactly once, reserving the stake in the ledger.

Per batch (``streams/flow.py`` runs the protocol: one batch in flight, in offset order, so
a player's bets stay in order): decode (a message that does not decode is a dead letter),
price each bet against the odds table (``rules/sportsbook.py``), then hand the batch to
the sportsbook sink, which in one transaction fences the markets, asks player protection
for each bet in that transaction (``sinks/postgres/protection.py``: the standing is read
there, not from a table that could lag behind an exclusion), reserves the stakes and
stores every decision and the partitions' progress. A crash before the commit replays the
batch from scratch (nothing was published); a crash after it replays to the stored
decisions, which are published again byte for byte. A bet id seen before is never
decided twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from config.settings import Settings
from rules.odds import EventBook, Market, ProducerHealth
from rules.sportsbook import decide_bet
from schemas.base import hash_of
from schemas.bets import BET_REQUEST, BetRequest
from sinks.postgres.sportsbook import BetInput, SportsbookSink
from streams.context import position
from streams.flow import Flow, decision_flow
from streams.kafka import Message
from streams.view import GlobalView, Readable

# How many events' parsed markets a worker keeps (``read_books``): far above any live
# book, and a bound on what events long settled can hold.
PARSED_EVENTS_MAX = 50_000


def read_books(
    odds: Readable,
    bets: Iterable[BetRequest],
    parsed: dict[str, tuple[object, dict[str, Market]]] | None = None,
) -> dict[str, EventBook]:
    """The odds table's current state of every market these bets name (read once a batch).

    With ``parsed`` (kept by the caller from batch to batch), a market is parsed once per
    change of its event, not once per batch: the table replaces an event's value whole on
    every change, so the value's identity says whether what was parsed from it still holds.
    """
    wanted: dict[str, set[str]] = {}
    for bet in bets:
        for leg in bet.selections:
            wanted.setdefault(leg.event_id, set()).add(leg.market_id)
    if parsed is not None and len(parsed) > PARSED_EVENTS_MAX:
        parsed.clear()
    books: dict[str, EventBook] = {}
    for event_id, market_ids in wanted.items():
        value = odds.get(event_id)
        if value is None:
            continue
        markets = value["markets"]
        cache: dict[str, Market] = {}
        if parsed is not None:
            seen = parsed.get(event_id)
            if seen is None or seen[0] is not value:
                parsed[event_id] = seen = (value, {})
            cache = seen[1]
        found: dict[str, Market] = {}
        for m in market_ids:
            if m in markets:
                market = cache.get(m)
                if market is None:
                    market = cache[m] = Market.from_json(markets[m])
                found[m] = market
        books[event_id] = EventBook(event_id, value.get("producer"), found)
    return books


def read_producers(health: Readable, books: Iterable[EventBook]) -> dict[str, ProducerHealth]:
    out: dict[str, ProducerHealth] = {}
    for book in books:
        if book.producer and book.producer not in out:
            value = health.get(book.producer)
            if value is not None:
                out[book.producer] = ProducerHealth.from_json(value)
    return out


def register(
    app: Any,
    settings: Settings,
    *,
    odds: GlobalView,
    health: GlobalView,
    sink: SportsbookSink,
) -> Flow:
    """Run the bets flow in ``app``."""
    timeout = timedelta(seconds=settings.feed_timeout)
    skew = settings.clock_skew
    parsed: dict[str, tuple[object, dict[str, Market]]] = {}  # see read_books

    def inputs(decoded: list[tuple[Message, BetRequest]], now: datetime) -> list[BetInput]:
        """Each bet priced against the odds table (read once a batch)."""
        books = read_books(odds, [bet for _, bet in decoded], parsed)
        producers = read_producers(health, books.values())
        out = []
        for m, bet in decoded:
            text = bet.model_dump_json()  # hashed and stored: dumped once
            out.append(BetInput(
                position(m), bet, hash_of(text),
                decide_bet(bet, books, producers, now, timeout, clock_skew=skew),
                m.key, m.value, text,
            ))  # fmt: skip
        return out

    return decision_flow(app, settings, name="bets", adapter=BET_REQUEST, inputs=inputs,
                         store=sink, answers="bet-decisions", views=(odds, health))  # fmt: skip
