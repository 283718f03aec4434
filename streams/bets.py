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

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from croupier.settings import Settings
from rules.odds import EventBook, Market, ProducerHealth
from rules.sportsbook import decide_bet
from schemas.bets import BET_REQUEST, BetRequest
from sinks.postgres.sportsbook import BetBatch, BetInput, SportsbookSink
from streams import metrics
from streams.batching import until_available
from streams.context import decode_all, letter_records, position
from streams.flow import Flow, Outputs, declare_flow
from streams.kafka import Message


def request_hash(model: Any) -> str:
    """What a request asks for, whatever the JSON's key order or spacing."""
    return hashlib.sha256(model.model_dump_json().encode()).hexdigest()


def read_books(odds: Any, bets: Iterable[BetRequest]) -> dict[str, EventBook]:
    """The odds table's current state of every market these bets name (read once a batch)."""
    wanted: dict[str, set[str]] = {}
    for bet in bets:
        for leg in bet.selections:
            wanted.setdefault(leg.event_id, set()).add(leg.market_id)
    books: dict[str, EventBook] = {}
    for event_id, market_ids in wanted.items():
        value = odds.get(event_id)
        if value is None:
            continue
        markets = value["markets"]
        books[event_id] = EventBook(
            event_id,
            value.get("producer"),
            {m: Market.from_json(markets[m]) for m in market_ids if m in markets},
        )
    return books


def read_producers(health: Any, books: Iterable[EventBook]) -> dict[str, ProducerHealth]:
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
    odds: Any,
    health: Any,
    sink: SportsbookSink,
) -> Flow:
    """Run the bets flow in ``app``."""
    decisions, dead_letters = settings.topic("bet-decisions"), settings.topic("dead-letters")
    timeout = timedelta(seconds=settings.feed_timeout)
    skew = settings.clock_skew

    async def handle(messages: list[Message]) -> Outputs:
        batch = BetBatch()
        decoded = decode_all(
            BET_REQUEST, messages, progress=batch.progress, letters=batch.dead_letters
        )
        bets = [b for _, b in decoded]
        books = read_books(odds, bets)
        producers = read_producers(health, books.values())
        now = datetime.now(UTC)
        for message, bet in decoded:
            verdict = decide_bet(bet, books, producers, now, timeout, clock_skew=skew)
            batch.inputs.append(BetInput(position(message), bet, request_hash(bet), verdict,
                                         message.key, message.value))  # fmt: skip
        with metrics.sink_batch("ledger.bets", len(batch.inputs)):
            placed = await until_available(lambda: sink.place(batch, now), what="PostgreSQL")
        metrics.count_decisions("bets", placed.outputs)
        out = Outputs()
        out.add(decisions, placed.outputs)
        out.add(dead_letters, letter_records(placed.dead_letters))
        return out

    return declare_flow(app, settings, name="bets", topic=settings.topic("bets"), store=sink,
                        handle=handle)  # fmt: skip
