"""One retry helper (``sinks/retry.py``): races are tried a few times, a service away for
as long as it takes, both with jittered backoff."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from sinks.base import SinkUnavailable
from sinks.retry import AWAY_FIRST, RACE_ATTEMPTS, again, again_sync, backoff, until


def flaky(fails: int, exc: BaseException) -> tuple[list[int], object]:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) <= fails:
            raise exc
        return "done"

    return calls, call


def test_a_lost_race_is_run_again_and_then_holds() -> None:
    calls, call = flaky(2, KeyError("race"))
    assert asyncio.run(again(call, on=KeyError)) == "done"  # type: ignore[arg-type]
    assert len(calls) == 3


def test_a_race_lost_every_time_is_raised_after_the_last_attempt() -> None:
    calls, call = flaky(100, KeyError("race"))
    with pytest.raises(KeyError):
        asyncio.run(again(call, on=KeyError))  # type: ignore[arg-type]
    assert len(calls) == RACE_ATTEMPTS


def test_another_failure_is_raised_at_once() -> None:
    calls, call = flaky(1, ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(again(call, on=KeyError))  # type: ignore[arg-type]
    assert len(calls) == 1


def test_blocking_code_gets_the_same_rule() -> None:
    calls: list[int] = []

    def call() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise KeyError("race")
        return len(calls)

    assert again_sync(call, on=KeyError) == 3
    tries: list[int] = []

    def always() -> int:
        tries.append(1)
        raise KeyError("race")

    with pytest.raises(KeyError):
        again_sync(always, on=KeyError, attempts=2)
    assert len(tries) == 2


def test_a_service_away_is_waited_for_and_each_wait_is_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls, call = flaky(2, SinkUnavailable("PostgreSQL restarting"))
    with caplog.at_level(logging.WARNING, logger="sinks.retry"):
        assert asyncio.run(until(call, on=SinkUnavailable, what="PostgreSQL", most=0.2)) == (  # type: ignore[arg-type]
            "done"
        )
    assert len(calls) == 3
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2
    assert all(m.startswith("PostgreSQL unavailable, retrying in ") for m in said)


def test_waits_grow_to_their_ceiling_with_jitter() -> None:
    delay = backoff(5.0)
    first = [delay(1) for _ in range(200)]
    assert all(AWAY_FIRST <= d <= 2 * AWAY_FIRST for d in first)
    assert len(set(first)) > 100  # jittered: workers that failed together spread out
    assert all(delay(n) <= 5.0 for n in range(1, 40))
    assert delay(30) == 5.0


def test_a_call_that_succeeds_at_once_leaves_no_cycles_to_collect() -> None:
    """The hot path calls these per batch and per transaction: a retrying object made for
    each call is cyclic garbage, swept by the collector in pauses of tens of milliseconds."""

    async def ok() -> int:
        return 1

    async def many() -> None:
        for _ in range(500):
            await again(ok, on=KeyError)
            await until(ok, on=SinkUnavailable, what="PostgreSQL", most=1.0)
        for _ in range(500):
            again_sync(lambda: 1, on=KeyError)

    gc.collect()
    gc.disable()
    try:
        asyncio.run(many())
        swept = gc.collect()
    finally:
        gc.enable()
    assert swept < 1000  # the event loop's own; a retrying object per call made 33,500
