"""The auditor's share of a saturated machine: a small one, for a bounded time.

The auditor's passes (the relay, the reports, the checkpoints) only follow the decisions:
every audit record is committed with the decision it records, so publishing it can wait.
Lowering the auditor's priority (``config/priority.py``) is not enough on its own: its
queries run in PostgreSQL's backends and its messages in Kafka's broker, both at full
priority, and with the auditor stopped during a saturated run the workers decided
10-25 % more bets a second (``BENCHMARKS.md``).

So while the CPU is saturated, the auditor works at most ``duty`` of the time: after a
pass that took ``t`` seconds it waits ``t * (1 - duty) / duty``. Saturated means no idle
CPU: under ``IDLE_FLOOR`` of the machine's CPU time idle (``/proc/stat``) during a look of
``PROBE_SECONDS`` taken while the auditor itself waits, so its own work never counts; only
a pass long enough to matter (``LOOK_AFTER_SECONDS``) is followed by a look, so a quiet
machine's small passes never wait. The deferral is bounded: once the auditor has not been
caught up for ``most`` seconds, it works at its full (lowered) priority again until it is,
so under a load that never ends the trail is at most about that far behind. Without
``/proc/stat`` it never waits: the behaviour before this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

STAT_FILE = Path("/proc/stat")
IDLE_FLOOR = 0.1  # below this share of idle CPU the machine counts as saturated
DUTY = 0.1  # the share of the time the auditor works while it is
MOST_BEHIND_SECONDS = 60.0  # how long it may defer before it works flat out again
PROBE_SECONDS = 0.1  # one look at the machine (/proc/stat counts in hundredths of a second)
LOOK_AFTER_SECONDS = 0.05  # a pass shorter than this is no load worth yielding for

Ticks = Callable[[], tuple[float, float] | None]


def read_ticks(path: Path = STAT_FILE) -> tuple[float, float] | None:
    """(idle, all) CPU time of the whole machine since boot, in ticks, or None."""
    try:
        with path.open() as f:
            first = f.readline().split()
    except OSError:
        return None
    if len(first) < 5 or first[0] != "cpu":
        return None
    try:
        values = [float(v) for v in first[1:]]
    except ValueError:
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: inside user, nice]
    return values[3] + values[4], sum(values[:8])


class Pacer:
    """When the auditor's next pass may start (see the module's docstring)."""

    def __init__(
        self,
        *,
        duty: float = DUTY,
        idle_floor: float = IDLE_FLOOR,
        most_behind: float = MOST_BEHIND_SECONDS,
        ticks: Ticks = read_ticks,
        clock: Callable[[], float] = time.monotonic,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.duty, self.idle_floor, self.most_behind = duty, idle_floor, most_behind
        self._ticks, self._clock = ticks, clock
        self._stop = stop  # once set, no more waiting: a stop is not held by a rest
        self.enabled = ticks() is not None
        self.caught_up_at = clock()
        self.waited = 0.0  # seconds spent yielding, for the logs and the bench
        self._yielding = False

    async def _idle(self, seconds: float) -> float:
        """The machine's idle share over the next ``seconds`` (spent waiting)."""
        before = self._ticks()
        if self._stop is None:
            await asyncio.sleep(seconds)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)
        after = self._ticks()
        if before is None or after is None or after[1] <= before[1]:
            return 1.0
        return (after[0] - before[0]) / (after[1] - before[1])

    def caught_up(self) -> None:
        """The trail is published to its end: deferring may start again."""
        self.caught_up_at = self._clock()

    async def turn(self, last_pass: float) -> None:
        """Return when the next pass may start; ``last_pass`` is how long the last took."""
        if (not self.enabled or last_pass < LOOK_AFTER_SECONDS
                or (self._stop is not None and self._stop.is_set())
                or self._clock() - self.caught_up_at > self.most_behind):  # fmt: skip
            self._set(yielding=False)
            return
        busy = await self._idle(PROBE_SECONDS) < self.idle_floor
        if busy:
            rest = last_pass * (1 - self.duty) / self.duty
            busy = await self._idle(rest) < self.idle_floor  # still busy after the rest
            self.waited += rest
        self.waited += PROBE_SECONDS
        self._set(yielding=busy)

    def _set(self, *, yielding: bool) -> None:
        if yielding != self._yielding:
            self._yielding = yielding
            if yielding:
                log.info("auditor: the CPU is saturated; working %.0f%% of the time",
                         100 * self.duty)  # fmt: skip
            else:
                log.info("auditor: working at full (lowered) priority")
