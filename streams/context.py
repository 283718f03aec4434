"""Faust plumbing the agents share: table writes in the right partition, dead letters, sends."""

from __future__ import annotations

import contextlib
import functools
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

from faust.streams import _current_event
from pydantic import TypeAdapter

from schemas.decode import DecodeFailure, decode
from schemas.records import MAX_LETTER_KEY_BYTES, DeadLetter, SourcePosition
from streams import metrics
from streams.gaps import advance

log = logging.getLogger(__name__)
T = TypeVar("T")
Letters = list[tuple[bytes | None, DeadLetter]]
Tick = Callable[[], Awaitable[None]]


def app_timer(app: Any, interval: float) -> Callable[[Tick], Any]:
    """``@app.timer(interval)`` for a tick that must not outlive the app's stop.

    Faust stops an app's timers last, after its agents, consumer and producer. A tick
    that fires, or is under way, in between would send to a closed producer, and a
    timer's exception crashes the worker: a graceful stop would exit 1. So a tick does
    nothing once the app is stopping, and one the stop interrupts ends with a log line.
    Nothing is lost: every tick's work waits in PostgreSQL (an outbox, a watch) for the
    next tick, here or on the worker that comes next. For the same reason a tick that
    fails while the app runs is counted (``croupier_timer_failures``) and logged whole
    (the 1st, 10th and every 100th in a row, so a lasting fault does not flood the log),
    and the next tick tries again: a crash would only come back on every start (a
    session whose reality check cannot be sent would stop every worker in turn).
    """

    def declare(tick: Tick) -> Any:
        failures = metrics.TIMER_FAILURES.labels(tick.__name__)
        in_a_row = [0]

        @functools.wraps(tick)
        async def guarded() -> None:
            if app.should_stop:
                return
            try:
                await tick()
            except Exception as exc:
                if app.should_stop:
                    log.info("%s: interrupted by the stop: %r", tick.__name__, exc)
                    return
                failures.inc()
                in_a_row[0] += 1
                n = in_a_row[0]
                if n in (1, 10) or n % 100 == 0:
                    log.exception("%s: the tick failed (%d in a row); the next one tries again",
                                  tick.__name__, n)  # fmt: skip
            else:
                in_a_row[0] = 0

        return app.timer(interval=interval)(guarded)

    return declare


@contextlib.contextmanager
def in_partition_of(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event, so a table write lands in its partition.

    A Faust table sends each change to the changelog partition of the *current* event.
    A batch from ``take_events`` mixes partitions, and the current event is only the last
    one buffered; without this, a change could be written to another partition's
    changelog and be missing after a recovery.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def position(event: Any) -> SourcePosition:
    msg = event.message
    return SourcePosition(topic=msg.topic, partition=msg.partition, offset=msg.offset)


def dead_letter(event: Any, reason: str, error: str) -> DeadLetter:
    """The dead-letter record for ``event``: its bytes, position and the error."""
    msg = event.message
    value = msg.value if msg.value is not None else b""
    where = SourcePosition(topic=msg.topic, partition=msg.partition, offset=msg.offset)
    return DeadLetter.of(where, msg.key, value, reason, error, datetime.now(UTC))


def decode_all(
    adapter: TypeAdapter[T],
    events: list[Any],
    *,
    progress: dict[tuple[str, int], int],
    letters: Letters,
) -> list[tuple[Any, T]]:
    """Decode a batch: every event moves ``progress``; one that does not decode is a letter."""
    out: list[tuple[Any, T]] = []
    for event in events:
        advance(progress, event)
        result = decode(adapter, event.message.value, key=event.message.key)
        if isinstance(result, DecodeFailure):
            letters.append((event.message.key, dead_letter(event, result.reason, result.error)))
        else:
            out.append((event, result))
    return out


async def publish(app: Any, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> None:
    """Hand ``(key, value)`` records to the producer; the caller flushes before moving on.

    Straight to the producer rather than through ``faust.Topic.send``: the values are
    bytes already, and Faust's per-message machinery costs more than the send itself.
    Keys are partitioned by the producer's murmur2, as Faust and Java clients do.
    """
    producer = app.producer
    for key, value in records:
        await producer.send(topic, key, value, None, None, None)


def letter_records(letters: Letters) -> list[tuple[bytes | None, bytes]]:
    """Dead letters as records to publish, under their original keys (and counted)."""
    if letters:
        metrics.count_dead_letters((letter.source.topic, letter.reason) for _, letter in letters)
    return [
        (None if key is None else key[:MAX_LETTER_KEY_BYTES], letter.model_dump_json().encode())
        for key, letter in letters
    ]
