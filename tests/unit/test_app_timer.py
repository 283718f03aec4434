"""A failing timer tick is logged and counted, never a crash; a stopping app ends quietly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from streams import metrics
from streams.context import app_timer


class _App:
    """What ``app_timer`` needs of a Faust app: ``should_stop`` and ``timer``."""

    def __init__(self) -> None:
        self.should_stop = False
        self.ticks: list[Callable[[], Coroutine[Any, Any, None]]] = []

    def timer(self, interval: float) -> Callable[[Any], Any]:
        def register(tick: Callable[[], Coroutine[Any, Any, None]]) -> Any:
            self.ticks.append(tick)
            return tick

        return register


def test_a_failing_tick_is_logged_and_counted_and_the_next_tick_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = _App()
    runs: list[int] = []

    @app_timer(app, 1.0)
    async def reality_checks() -> None:
        runs.append(1)
        if len(runs) == 1:
            msg = "a session id the notification model refuses"
            raise ValueError(msg)

    failed = metrics.TIMER_FAILURES.labels("reality_checks")
    before = failed._value.get()
    asyncio.run(app.ticks[0]())  # raises inside: must not escape
    asyncio.run(app.ticks[0]())
    assert runs == [1, 1]
    assert failed._value.get() == before + 1
    assert "reality_checks: the tick failed (1 in a row)" in caplog.text


def test_a_stopping_app_runs_no_tick_and_a_tick_the_stop_breaks_ends_quietly() -> None:
    app = _App()
    runs: list[int] = []

    @app_timer(app, 1.0)
    async def relay() -> None:
        runs.append(1)
        app.should_stop = True  # the stop arrives mid-tick
        msg = "ProducerClosed"
        raise RuntimeError(msg)

    failed = metrics.TIMER_FAILURES.labels("relay")
    before = failed._value.get()
    asyncio.run(app.ticks[0]())
    asyncio.run(app.ticks[0]())  # the app is stopping: nothing runs
    assert runs == [1]
    assert failed._value.get() == before
