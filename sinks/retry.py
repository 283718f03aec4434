"""Trying again what may succeed the next time: one helper for every retry, on tenacity.

Two kinds of failure are worth another try:

- a **race** a transaction lost to another (a serialization failure, a deadlock, a
  concurrent insert of the same key): tried again at once, a few times (``again``);
- a **service away** (PostgreSQL, Kafka, ClickHouse restarting): tried again for as long
  as it takes, backing off (``until``).

Both back off exponentially with jitter, so workers that failed together do not come back
together (tenacity's ``wait_exponential_jitter``).

The first try runs outside tenacity: nearly every call succeeds at once, and a retrying
object made per call is a knot of reference cycles. Made for every batch and every
transaction, they left a worker's garbage collector about 40,000 objects to sweep at a
time, a pause of 60-70 ms in the middle of deciding bets (``BENCHMARKS.md``). Tenacity
takes over from the first failure on, with the waits it would have used.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_exponential_jitter,
)

T = TypeVar("T")
Failures = type[BaseException] | tuple[type[BaseException], ...]

RACE_ATTEMPTS = 6  # a race lost five times in a row is no race: let it fail
RACE_FIRST, RACE_MOST = 0.005, 0.1  # seconds
AWAY_FIRST = 0.1  # seconds; up to the caller's ``most``

log = logging.getLogger(__name__)

# Exponential from the first wait, each with up to the first wait again at random.
RACE_WAIT = wait_exponential_jitter(multiplier=RACE_FIRST, max=RACE_MOST, jitter=RACE_FIRST)


def away_wait(most: float) -> wait_exponential_jitter:
    """The waits between tries of a service away: 0.1 s doubling up to ``most``, jittered."""
    return wait_exponential_jitter(multiplier=AWAY_FIRST, max=most, jitter=AWAY_FIRST)


def _after_first(wait: Callable[[RetryCallState], float]) -> Callable[[RetryCallState], float]:
    """``wait`` for a loop that starts after one try already failed outside it: its
    attempt ``n`` is the call's attempt ``n + 1``."""

    def shifted(state: RetryCallState) -> float:
        moved = RetryCallState(state.retry_object, None, (), {})
        moved.attempt_number = state.attempt_number + 1
        return float(wait(moved))

    return shifted


def _first_wait(wait: Callable[[RetryCallState], float]) -> float:
    """The wait after a call's first failed try."""
    state = RetryCallState(Retrying(), None, (), {})
    return float(wait(state))


async def again(
    call: Callable[[], Awaitable[T]], *, on: Failures, attempts: int = RACE_ATTEMPTS
) -> T:
    """``call`` until it returns; a failure in ``on`` is tried again (``attempts`` in all),
    anything else, or the last, is raised."""
    try:
        return await call()
    except on:
        if attempts <= 1:
            raise
    await asyncio.sleep(_first_wait(RACE_WAIT))
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(on), stop=stop_after_attempt(attempts - 1),
        wait=_after_first(RACE_WAIT), reraise=True,
    ):  # fmt: skip
        with attempt:
            return await call()
    raise AssertionError("unreachable")  # noqa: EM101


def again_sync(call: Callable[[], T], *, on: Failures, attempts: int = RACE_ATTEMPTS) -> T:
    """``again`` for blocking code."""
    try:
        return call()
    except on:
        if attempts <= 1:
            raise
    time.sleep(_first_wait(RACE_WAIT))
    for attempt in Retrying(
        retry=retry_if_exception_type(on), stop=stop_after_attempt(attempts - 1),
        wait=_after_first(RACE_WAIT), reraise=True,
    ):  # fmt: skip
        with attempt:
            return call()
    raise AssertionError("unreachable")  # noqa: EM101


async def until(call: Callable[[], Awaitable[T]], *, on: Failures, what: str, most: float) -> T:
    """``call`` until it returns, for as long as it fails in ``on`` (``what`` is away),
    backing off up to ``most`` seconds and saying so each time."""

    def say(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("%s unavailable, retrying in %.1fs: %s", what, wait, exc)

    try:
        return await call()
    except on as exc:
        wait = _first_wait(away_wait(most))
        log.warning("%s unavailable, retrying in %.1fs: %s", what, wait, exc)
    await asyncio.sleep(wait)
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(on), stop=stop_never,
        wait=_after_first(away_wait(most)), before_sleep=say,
        reraise=True,
    ):  # fmt: skip
        with attempt:
            return await call()
    raise AssertionError("unreachable")  # noqa: EM101


def backoff(most: float) -> Callable[[int], float]:
    """The wait before try ``n + 1`` of something away (``n`` from 1), for loops whose
    own rules decide what is worth another try (``streams.batching``)."""
    wait = away_wait(most)
    owner = Retrying(wait=wait)

    def delay(n: int) -> float:
        state = RetryCallState(owner, None, (), {})
        state.attempt_number = n
        return float(wait(state))

    return delay
