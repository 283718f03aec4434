"""The auditor's share of a saturated machine (``streams/pacing.py``): a tenth of the time
while no CPU is idle, no waiting when some is, and only for a bounded time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from streams.pacing import PROBE_SECONDS, Pacer, read_ticks


def busy_ticks() -> tuple[float, float]:
    return 0.0, time.monotonic() * 200  # never idle


def quiet_ticks() -> tuple[float, float]:
    now = time.monotonic() * 200
    return now * 0.6, now  # 60 % idle


def turn_takes(pacer: Pacer, last_pass: float) -> float:
    started = time.monotonic()
    asyncio.run(pacer.turn(last_pass))
    return time.monotonic() - started


def test_a_saturated_machine_gets_nine_tenths_of_the_time() -> None:
    pacer = Pacer(ticks=busy_ticks)
    took = turn_takes(pacer, 0.06)
    assert took >= 0.06 * 9 + PROBE_SECONDS * 0.9
    assert took < 2.0
    assert pacer.waited > 0.6


def test_a_machine_with_idle_cpu_waits_only_for_a_look() -> None:
    pacer = Pacer(ticks=quiet_ticks)
    assert turn_takes(pacer, 0.5) < PROBE_SECONDS + 0.1
    assert turn_takes(pacer, 0.01) < 0.01  # a small pass: not even a look


def test_the_deferral_is_bounded() -> None:
    pacer = Pacer(ticks=busy_ticks, most_behind=0.0)
    time.sleep(0.01)  # not caught up for longer than it may defer
    assert turn_takes(pacer, 0.5) < 0.05
    pacer.most_behind = 60.0
    pacer.caught_up()  # caught up again: it may defer again
    assert turn_takes(pacer, 0.06) >= 0.5


def test_without_cpu_times_it_never_waits(tmp_path: Path) -> None:
    missing = tmp_path / "stat"
    assert read_ticks(missing) is None
    pacer = Pacer(ticks=lambda: read_ticks(missing))
    assert not pacer.enabled
    assert turn_takes(pacer, 5.0) < 0.01


def test_the_kernels_format_is_read(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  272149 37185 71538 244791 2676 0 10851 623 0 0\n"
        "cpu0 136000 18000 35000 122000 1300 0 5400 300 0 0\n"
    )
    assert read_ticks(stat) == (244791 + 2676, 272149 + 37185 + 71538 + 244791 + 2676 + 10851 + 623)
    stat.write_text("intr 1 2 3\n")
    assert read_ticks(stat) is None
    assert read_ticks() is not None  # this machine's


def test_a_stop_is_not_held_by_a_rest() -> None:
    async def scenario() -> float:
        stop = asyncio.Event()
        pacer = Pacer(ticks=busy_ticks, stop=stop)
        asyncio.get_running_loop().call_later(0.2, stop.set)
        started = time.monotonic()
        await pacer.turn(10.0)  # a rest of 90 s, were it not stopped
        took = time.monotonic() - started
        await pacer.turn(10.0)  # stopped: no look, no rest
        return took

    assert asyncio.run(scenario()) < 1.0
