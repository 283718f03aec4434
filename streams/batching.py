"""Running one batch so that one message can never stop a partition.

**Infrastructure errors hold the batch; everything else is one message's.** Whatever
fails a batch is sorted in one place (``infrastructure``):

- a service away (PostgreSQL, Kafka), a serialization failure or deadlock, a race on a
  business key with another worker, or a deployment fault (a missing table or function,
  a refused privilege): the batch is run again, with backoff, for as long as it takes.
  Nothing is dropped and nothing is skipped.
- anything else (a bug a message reaches, a value PostgreSQL refuses, an output Kafka
  refuses as too large): the batch is split in halves, each run on its own, until the
  message that fails alone is found. That message is tried ``MESSAGE_TRIES`` times and
  then set aside: dead-lettered with reason ``processing_error`` (or ``invalid`` when
  PostgreSQL refused its data), the error kept for an operator, a log line and the dead
  letter counter. Every other message of the batch is decided as usual, in order.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from schemas.base import safe_text
from sinks.base import DATA_SQLSTATES, SinkUnavailable, caused_by_data
from sinks.retry import backoff, until

log = logging.getLogger(__name__)
T = TypeVar("T")

EXIT_BATCH_FAILED = 70
FINISH_ON_CANCEL_SECONDS = 30.0
MESSAGE_TRIES = 3
MAX_BACKOFF_SECONDS = 5.0

UNIQUE_VIOLATION = "23505"
# SQLSTATE classes that say the database, not the data, is in the way: connection (08),
# transaction rollback: serialization failure, deadlock (40), the server's resources (53),
# an operator's intervention or a cancelled statement (57), a system error (58), an
# internal error (XX), and the deployment: a missing relation or function, a refused
# privilege (42), an invalid schema (3F), refused credentials (28). Classes 22 (data
# exception), 23 (integrity) and 54 (a program limit, e.g. an index row too large) are
# the data's own fault.
INFRASTRUCTURE_SQLSTATES = ("08", "40", "53", "57", "58", "XX", "42", "3F", "28")

Process = Callable[[list[Any]], Awaitable[None]]
SetAside = Callable[[Any, BaseException, str], Awaitable[None]]


def die(code: int, what: str) -> None:
    """End the process now, committing nothing: what is under way is redelivered."""
    log.critical("%s; exiting without committing so the batch is redelivered", what)
    logging.shutdown()
    os._exit(code)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else None


def raced(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL refusing a row another transaction has just stored
    under the same key: during a rebalance, two workers can hold the same positions for a
    moment, and the second one's transaction (rolled back whole) lost the race."""
    return any(_sqlstate(e) == UNIQUE_VIOLATION for e in _chain(exc))


def _retriable_kafka(exc: BaseException) -> bool:
    # aiokafka's errors carry ``retriable`` as a class attribute; confluent-kafka's
    # KafkaException carries a KafkaError whose ``retriable()`` and ``code()`` are methods.
    flag = getattr(exc, "retriable", None)
    if isinstance(flag, bool):
        return flag
    for arg in getattr(exc, "args", ())[:1]:
        retriable, code = getattr(arg, "retriable", None), getattr(arg, "code", None)
        if callable(retriable) and callable(code):
            return bool(retriable()) or code() in _KAFKA_AWAY
    return False


# librdkafka's codes for "the cluster is not there" (transport, all brokers down, timed out).
_KAFKA_AWAY = frozenset({-195, -187, -185})


def infrastructure(exc: BaseException) -> bool:
    """Whether ``exc`` says a service is away (run the batch again), not that a message is bad."""
    for e in _chain(exc):
        if isinstance(e, SinkUnavailable | ConnectionError | TimeoutError):
            return True
        state = _sqlstate(e)
        if state is not None:
            if state.startswith(INFRASTRUCTURE_SQLSTATES):
                return True
            if state.startswith(DATA_SQLSTATES):
                return False
        if _retriable_kafka(e):
            return True
    return False


def refused_data(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL refusing a value (too long, out of range, a NUL...)."""
    return any(_sqlstate(e) != UNIQUE_VIOLATION and caused_by_data(e) for e in _chain(exc))


def describe(exc: BaseException, limit: int = 500) -> str:
    """A short, printable account of ``exc`` for a dead letter (no control characters)."""
    return safe_text(f"{type(exc).__name__}: {exc}", limit)


async def hold_until_available(call: Callable[[], Awaitable[T]]) -> T:
    """``call`` until it returns or fails for a reason that is not infrastructure's.

    A race on a business key is run again at once, a few times; a service away, with
    backoff, for as long as it takes."""
    delay, races, away = backoff(MAX_BACKOFF_SECONDS), 0, 0
    while True:
        try:
            return await call()
        except Exception as exc:
            if raced(exc) and races < MESSAGE_TRIES:
                races += 1
                log.warning("batch lost a race to another worker (%s); running it again", exc)
                continue
            if raced(exc) or not infrastructure(exc):
                raise
            away += 1
            wait = delay(away)
            log.warning("batch held back, retrying in %.1fs: %s", wait, describe(exc))
            await asyncio.sleep(wait)


async def isolate(events: Sequence[Any], process: Process, set_aside: SetAside) -> None:
    """Process ``events``; a failure that is no service's is narrowed down to its message.

    The batch runs whole first (the fast path). If it fails for a reason of its own, its
    halves run in order, each the same way, so the messages before and after a bad one
    are decided as usual; a single message that fails ``MESSAGE_TRIES`` times (once, if
    PostgreSQL refused its data) is handed to ``set_aside``.
    """
    tries = 0
    while True:
        try:
            await hold_until_available(lambda: process(list(events)))
            return
        except Exception as exc:  # sorted below, outside this handler
            failure = exc
        # Outside the handler: what the halves raise must not chain to this failure (a
        # PostgreSQL refusal here would make a bug there look like the data's fault).
        if len(events) > 1:
            log.warning("a batch of %d failed (%s); splitting it to find the message",
                        len(events), describe(failure))  # fmt: skip
            middle = len(events) // 2
            await isolate(events[:middle], process, set_aside)
            await isolate(events[middle:], process, set_aside)
            return
        tries += 1
        data = refused_data(failure)
        if data or tries >= MESSAGE_TRIES:
            log.error("setting a message aside after %d tries", tries, exc_info=failure)
            await set_aside(events[0], failure, "invalid" if data else "processing_error")
            return
        log.warning("a message failed (try %d of %d): %s", tries, MESSAGE_TRIES,
                    describe(failure))  # fmt: skip


async def until_available(
    call: Callable[[], Awaitable[T]], *, what: str, max_delay: float = MAX_BACKOFF_SECONDS
) -> T:
    """Retry ``call`` while its destination is unavailable, backing off up to ``max_delay``."""
    return await until(call, on=SinkUnavailable, what=what, most=max_delay)
