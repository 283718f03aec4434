"""What the flows share: timers that never end a worker, positions, dead letters, decoding."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import TypeAdapter

from schemas.decode import DecodeFailure, decode
from schemas.records import MAX_LETTER_KEY_BYTES, DeadLetter, SourcePosition
from streams import metrics
from streams.kafka import Message

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


def position(message: Message) -> SourcePosition:
    """Where ``message`` was: what its decision, audit record or dead letter names."""
    return SourcePosition(topic=message.topic, partition=message.partition, offset=message.offset)


def dead_letter(message: Message, reason: str, error: str) -> DeadLetter:
    """The dead-letter record for ``message``: its bytes, position and the error."""
    where = SourcePosition(topic=message.topic, partition=message.partition, offset=message.offset)
    return DeadLetter.of(where, message.key, message.value, reason, error, datetime.now(UTC))


def advance(progress: dict[tuple[str, int], int], message: Message) -> None:
    """Move ``progress`` past ``message``."""
    where = (message.topic, message.partition)
    progress[where] = max(progress.get(where, 0), message.offset + 1)


def decode_all(
    adapter: TypeAdapter[T],
    messages: list[Message],
    *,
    progress: dict[tuple[str, int], int],
    letters: Letters,
) -> list[tuple[Message, T]]:
    """Decode a batch: every message moves ``progress``; one that does not decode is a letter."""
    out: list[tuple[Message, T]] = []
    for message in messages:
        advance(progress, message)
        result = decode(adapter, message.value, key=message.key)
        if isinstance(result, DecodeFailure):
            letters.append((message.key, dead_letter(message, result.reason, result.error)))
        else:
            out.append((message, result))
    metrics.count_wrongly_keyed((m.topic, m.key, model) for m, model in out)
    return out


def letter_records(letters: Letters) -> list[tuple[bytes | None, bytes]]:
    """Dead letters as records to publish, under their original keys (and counted)."""
    if letters:
        metrics.count_dead_letters((letter.source.topic, letter.reason) for _, letter in letters)
    return [
        (None if key is None else key[:MAX_LETTER_KEY_BYTES], letter.model_dump_json().encode())
        for key, letter in letters
    ]


async def publish(app: Any, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> None:
    """Hand ``(key, value)`` records to the Faust app's producer (the timers' outputs; the
    flows have their own, ``streams/kafka.py``); the caller flushes before moving on."""
    producer = app.producer
    for key, value in records:
        await producer.send(topic, key, value, None, None, None)
