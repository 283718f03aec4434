"""The ``odds`` flow: the odds table, feed health, and settlement driven by the feed.

Why a global table. Bets are keyed by player and odds by event, so the worker deciding a
bet must see every market, whichever partition priced it. The ``odds`` table (one value
per event: its markets' status, prices, feed time and version) and the ``feed_health``
table (one value per producer: its heartbeats) are global views (``streams/view.py``):
every worker applies every change from their compacted changelog topics, and a restarted
worker rebuilds them from there before it decides anything. They have one changelog
partition each; the odds flow that owns an event's partition is the only writer of its
key, so writes never race, and its changes are published with the batch's outputs. Bet
decisions read prices from these tables and nowhere else.

Per batch, in offset order per partition: ``odds_change`` and ``bet_stop`` update the
event's book by the rules in ``rules/odds.py`` (feed-time versions: stale and duplicate
messages change nothing, so a replay is harmless); ``alive`` updates its producer's
health; ``bet_settlement``, ``bet_cancel`` and the rollbacks are applied in PostgreSQL
first (market state, bet legs, ledger; idempotent by Kafka position), then their
settlements are published and the table follows the statuses PostgreSQL decided. A
message that does not decode is a dead letter, and so is one stamped beyond the server's
clock plus ``CROUPIER_CLOCK_SKEW_SECONDS`` (``clock_skew``), before it touches a book, a
producer's health or a market. The batch's audit records, dead letters and progress are
stored in one transaction at its end; only then are the table's changes written.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from config.settings import Settings
from rules.odds import (
    EventBook,
    ProducerHealth,
    apply_alive,
    apply_odds_message,
    feed_clock_problem,
    set_status,
)
from schemas.odds import ODDS_MESSAGE, Alive, BetStop, OddsChange
from schemas.records import AuditRecord, SourcePosition
from sinks.postgres.sportsbook import SportsbookSink
from streams import metrics
from streams.batching import until_available
from streams.context import (
    Letters,
    app_timer,
    dead_letter,
    decode_all,
    letter_records,
    position,
)
from streams.flow import Flow, Outputs, declare_flow
from streams.kafka import Message
from streams.view import GlobalView

log = logging.getLogger(__name__)


def health_of(table: GlobalView, producer: str) -> ProducerHealth | None:
    value = table.get(producer)
    return None if value is None else ProducerHealth.from_json(value)


def odds_record(
    source: SourcePosition,
    msg: OddsChange | BetStop,
    before: EventBook | None,
    after: EventBook,
    now: datetime,
) -> AuditRecord:
    """The audit record of an odds change or bet stop applied: the markets it changed, as
    they were and as they are."""
    old = before.markets if before else {}
    changed = sorted(k for k, m in after.markets.items() if old.get(k) != m)
    return AuditRecord(
        entity="odds", entity_id=msg.event_id,
        action="odds.stopped" if isinstance(msg, BetStop) else "odds.changed",
        source=source, occurred_at=msg.timestamp, recorded_at=now,
        before={"producer": before.producer if before else None,
                "markets": {k: old[k].to_json() for k in changed if k in old}},
        after={"producer": after.producer,
               "markets": {k: after.markets[k].to_json() for k in changed}},
    )  # fmt: skip


def register(
    app: Any, settings: Settings, *, odds: GlobalView, health: GlobalView, sink: SportsbookSink
) -> Flow:
    """Run the odds flow and the feed-health watch in ``app``."""
    settlements, dead_letters = settings.topic("settlements"), settings.topic("dead-letters")
    timeout = timedelta(seconds=settings.feed_timeout)

    async def handle(messages: list[Message]) -> Outputs:
        out = Outputs()
        progress: dict[tuple[str, int], int] = {}
        letters: Letters = []
        # The batch's book changes wait here until their audit records are committed: a
        # crash in between replays the batch, finds the table as it was, and the trail skips
        # the records it holds. Written first, a change would be a stale no-op on replay and
        # its record would be lost.
        books: dict[str, dict[str, Any]] = {}
        records: list[AuditRecord] = []
        now = datetime.now(UTC)

        def book_now(event_id: str) -> EventBook | None:
            value = books.get(event_id) or odds.get(event_id)
            return None if value is None else EventBook.from_json(value)

        for message, msg in decode_all(ODDS_MESSAGE, messages, progress=progress, letters=letters):
            skew = feed_clock_problem(msg, now, settings.clock_skew)
            if skew is not None:  # a feed time ahead of ours would rule the book for ever
                letters.append((message.key, dead_letter(message, "clock_skew", skew)))
                continue
            if isinstance(msg, Alive):
                new_health = apply_alive(health_of(health, msg.producer), msg, timeout, now)
                if new_health is not None:
                    if new_health.recovered_at == msg.timestamp:
                        log.warning("producer %s is back; its markets reopen with fresh odds",
                                    msg.producer)  # fmt: skip
                    health[msg.producer] = new_health.to_json()
                    metrics.FEEDS.alive(msg.producer, new_health.last_alive)
                continue
            book = book_now(msg.event_id)
            if isinstance(msg, OddsChange | BetStop):
                new_book = apply_odds_message(book, msg)
                if new_book is not None:
                    books[msg.event_id] = new_book.to_json()
                    records.append(odds_record(position(message), msg, book, new_book, now))
                continue
            outcome = await until_available(
                functools.partial(
                    sink.apply_market_message,
                    position(message),
                    msg,
                    list(book.markets) if book else [],
                    datetime.now(UTC),
                ),
                what="PostgreSQL",
            )
            out.add(settlements, outcome.settlements)
            by_status: dict[str, list[str]] = {}
            for market_id, status in outcome.changed.items():
                by_status.setdefault(status, []).append(market_id)
            for status, market_ids in by_status.items():
                changed = set_status(book, msg.event_id, market_ids, status, msg.timestamp)
                if changed is not None:
                    book = changed
                    books[msg.event_id] = changed.to_json()
        with metrics.sink_batch("postgres.odds", len(records)):
            await until_available(
                lambda: sink.record_batch(records, [d for _, d in letters], progress),
                what="PostgreSQL",
            )
        for event_id, value in books.items():
            odds[event_id] = value
        # The tables' changes go out with the batch: in Kafka before its offsets commit.
        out.add(odds.topic, odds.changes())
        out.add(health.topic, health.changes())
        out.add(dead_letters, letter_records(letters))
        return out

    down: set[str] = set()
    metrics.FEEDS.timeout = settings.feed_timeout

    @app_timer(app, max(1.0, settings.feed_timeout / 4))
    async def watch_feeds() -> None:
        """Say when a producer falls silent (its markets are closed for betting)."""
        now = datetime.now(UTC)
        for name, value in list(health.items()):
            h = ProducerHealth.from_json(value)
            metrics.FEEDS.alive(name, h.last_alive)  # the table holds every worker's feeds
            if not h.is_up(now, timeout) and name not in down:
                down.add(name)
                log.warning("producer %s silent since %s: its markets are suspended",
                            name, h.last_alive.isoformat())  # fmt: skip
            elif h.is_up(now, timeout):
                down.discard(name)

    # A feed's changes come in bursts (an event's markets at once): a longer window makes
    # a burst one transaction (its trail, its progress) instead of one a message.
    return declare_flow(app, settings, name="odds", topic=settings.topic("odds"), store=sink,
                        handle=handle, views=(odds, health),
                        within=settings.odds_batch_within)  # fmt: skip
