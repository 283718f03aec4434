"""Running one agent batch so that an ack always means the batch is done.

Faust's ``take_events`` acks a batch in a ``finally`` block, so a batch whose processing
raised or was cancelled (shutdown, rebalance) would be acked, and its offsets committed,
half done. Each batch therefore runs as its own task: a cancelled agent waits for it to
finish; a batch that cannot finish ends the process at once, without committing, which
is no worse than a SIGKILL: the batch is redelivered and the idempotent sinks absorb it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sinks.base import SinkUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

EXIT_BATCH_FAILED = 70
FINISH_ON_CANCEL_SECONDS = 30.0


def _die(code: int, what: str) -> None:
    log.critical("%s; exiting without committing so the batch is redelivered", what)
    logging.shutdown()
    os._exit(code)


UNIQUE_VIOLATION = "23505"
RACE_RETRIES = 3


def raced(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL refusing a row another transaction has just stored
    under the same key: during a rebalance, two workers can hold the same positions for a
    moment, and the second one's transaction (rolled back whole) lost the race."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "sqlstate", None) == UNIQUE_VIOLATION:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def run_batch(batch: Callable[[], Awaitable[T]]) -> T:
    """Run ``batch`` to completion whatever happens to the calling task.

    A batch that lost a race on a business key to another worker runs again (its
    transaction was rolled back; run again, it finds what the other stored and answers
    with that, as a redelivery would); any other failure ends the process."""
    attempt = 0
    while True:
        task: asyncio.Task[T] = asyncio.ensure_future(batch())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            try:
                await asyncio.wait_for(asyncio.shield(task), FINISH_ON_CANCEL_SECONDS)
            except BaseException:
                _die(EXIT_BATCH_FAILED, "a batch could not finish during shutdown")
            raise
        except Exception as exc:
            if attempt < RACE_RETRIES and raced(exc):
                attempt += 1
                log.warning("batch lost a race to another worker (%s); running it again", exc)
                continue
            log.exception("batch failed")
            _die(EXIT_BATCH_FAILED, "a batch failed")
            raise  # unreachable: _die exits


async def until_available(
    call: Callable[[], Awaitable[T]], *, what: str, max_delay: float = 5.0
) -> T:
    """Retry ``call`` while its destination is unavailable, backing off up to ``max_delay``."""
    delay = 0.1
    while True:
        try:
            return await call()
        except SinkUnavailable as exc:
            log.warning("%s unavailable, retrying in %.1fs: %s", what, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
