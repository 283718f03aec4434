"""The reporter's and the audit relay's timers survive a failing pass: logged, tried again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from config.settings import Settings
from sinks.signing import generate
from streams import audit, reports

Tick = Callable[[], Coroutine[Any, Any, None]]


class App:
    """Just enough of a Faust app: its timers, kept to be ticked by hand."""

    def __init__(self) -> None:
        self.should_stop = False
        self.ticks: dict[str, Tick] = {}

    def timer(self, interval: float) -> Callable[[Tick], Tick]:
        def keep(tick: Tick) -> Tick:
            self.ticks[tick.__name__] = tick
            return tick

        return keep


class Failing:
    """A sink whose passes raise what a bug in one record's handling would raise."""

    def __init__(self) -> None:
        self.calls = 0

    async def open(self) -> None:
        pass

    async def derive(self, key: Any, jurisdictions: Any) -> int:
        self.calls += 1
        raise KeyError("player_id")

    async def publish(self, send: Any) -> int:
        return 0

    async def relay(self, send: Any) -> int:
        self.calls += 1
        raise ValueError("a record the producer refuses")


def test_a_failing_reporter_pass_is_logged_and_the_worker_lives(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, sink = App(), Failing()
    generate(tmp_path / "report.pem")  # the report key signs; it is never made on use
    settings = Settings(CROUPIER_REPORT_SIGNING_KEY=str(tmp_path / "report.pem"))
    reports.register(app, settings, sink=sink, policies=SimpleNamespace(jurisdictions=["UK"]))  # type: ignore[arg-type]  # a stand-in
    for _ in range(3):
        asyncio.run(app.ticks["reporter"]())  # raised, the worker would end here
    assert sink.calls == 3
    assert "reporter: the tick failed (1 in a row)" in caplog.text


def test_a_failing_relay_pass_is_logged_and_the_worker_lives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, relay = App(), Failing()
    settings = Settings(CROUPIER_AUDIT_CHECKPOINT_INTERVAL=0)
    audit.register(app, settings, relay=relay)  # type: ignore[arg-type]  # a stand-in
    for _ in range(2):
        asyncio.run(app.ticks["audit_relay"]())
    assert relay.calls == 2
    assert "audit_relay: the tick failed (1 in a row)" in caplog.text
