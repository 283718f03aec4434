"""Play a plan on the running stack, on the wall clock, and follow what comes back.

Set-up first: the players' events, the feed's first heartbeat and pre-match prices, then
(once the workers have consumed those: PostgreSQL's ``consumer_progress``, read with
retries, the only time the simulation asks the database) the first deposits, whose
decisions it waits for. Then the match day: each step is sent when its time comes,
while a reader follows the outcomes and a progress line shows the phase, the rates,
the backlog and the decisions by reason. At the end it waits (up to the timeout) for
every input's outcome and every accepted bet's final settlement.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from config.settings import Settings
from croupier.sim.plan import DEAD, Plan, Step
from croupier.sim.track import Outcomes, Sender, Sent

if TYPE_CHECKING:
    from rich.text import Text


class FeedClock:
    """Timestamps: now, strictly after the last one handed out (feed order is time order)."""

    def __init__(self) -> None:
        self._last = datetime.now(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self._last = max(datetime.now(UTC), self._last + timedelta(microseconds=1))
            return self._last.isoformat()


class SetupFailed(Exception):
    """The workers did not get through the set-up in time (or PostgreSQL is away)."""


def wait_consumed(settings: Settings, sent: Iterable[Sent], deadline: float) -> None:
    """Wait until the workers' group has finished every message in ``sent`` (PostgreSQL's
    ``consumer_progress``); a PostgreSQL restart is ridden out until ``deadline``."""
    import psycopg

    need: dict[tuple[str, int], int] = {}
    for s in sent:
        if s.position is None:
            msg = f"Kafka did not take a set-up message: {s.error or 'no delivery report'}"
            raise SetupFailed(msg)
        t, p, o = s.position
        need[(t, p)] = max(need.get((t, p), 0), o + 1)
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(
                settings.pg_dsn.get_secret_value(),
                connect_timeout=5,
                options=f"-c search_path={settings.pg_schema}",
            ) as conn:
                while time.monotonic() < deadline:
                    rows = conn.execute(
                        """SELECT topic, partition, next_offset FROM consumer_progress
                            WHERE consumer_group = %s AND topic = ANY(%s)""",
                        (settings.app_id, sorted({t for t, _ in need})),
                    ).fetchall()
                    done = {(t, p): o for t, p, o in rows}
                    if all(done.get(tp, 0) >= o for tp, o in need.items()):
                        return
                    time.sleep(0.1)
        except psycopg.Error as exc:
            last = exc
            time.sleep(1.0)
    msg = f"the workers did not consume the set-up in time{f' ({last})' if last else ''}"
    raise SetupFailed(msg)


@dataclass
class Sample:
    at: float  # seconds since the match day started
    phase: str
    sent: int  # inputs that expect an outcome
    decided: int


@dataclass
class Live:
    """The shared state the progress display reads."""

    plan: Plan
    sender: Sender
    outcomes: Outcomes
    started: float = 0.0  # monotonic start of the match day (0: set-up)
    phase: str = "set-up"
    samples: list[Sample] = field(default_factory=list)

    def expecting(self) -> int:
        with self.sender.lock:
            return sum(1 for s in self.sender.sent if s.step.expect is not None)


class Progress(threading.Thread):
    """Samples every second; on a TTY, one line redrawn in place by rich (its phase bold,
    cut to the terminal's width), else the same line printed every ~5 s."""

    period = 1.0  # seconds between samples

    def __init__(self, live: Live, mode: str, out: TextIO = sys.stdout) -> None:
        super().__init__(name="sim-progress", daemon=True)
        self.live, self.out = live, out
        tty = out.isatty()
        self.mode = ("redraw" if tty else "lines") if mode == "auto" else mode
        self.stopping = threading.Event()

    def sample(self) -> Sample:
        live = self.live
        at = time.monotonic() - live.started if live.started else 0.0
        s = Sample(round(at, 2), live.phase, live.expecting(), live.outcomes.decided())
        live.samples.append(s)
        return s

    def line(self, s: Sample, before: Sample | None) -> str:
        span = (s.at - before.at) if before and s.at > before.at else 1.0
        sent_rate = (s.sent - before.sent) / span if before else 0.0
        done_rate = (s.decided - before.decided) / span if before else 0.0
        with self.live.outcomes.lock:
            top = self.live.outcomes.labels.most_common(8)
        reasons = ", ".join(f"{k} {v}" for k, v in top)
        return (
            f"[{s.at:6.1f}s] {s.phase:<16} sent {sent_rate:6.0f}/s  decided "
            f"{done_rate:6.0f}/s  backlog {s.sent - s.decided:5d}  | {reasons}"
        )

    def shown(self, s: Sample, before: Sample | None) -> Text:
        """The line as rich text for the redraw: the phase bold, one row however wide."""
        from rich.text import Text

        text = Text(self.line(s, before), no_wrap=True, overflow="ellipsis")
        text.stylize("bold", 10, 10 + len(s.phase))
        return text

    def run(self) -> None:
        redraw = None
        if self.mode == "redraw":
            from rich.console import Console
            from rich.live import Live as Redraw

            # The thread owns the line; whatever else is printed goes where it always went.
            console = Console(file=self.out, force_terminal=True)
            redraw = Redraw(
                console=console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False
            )
            redraw.start()
        before: Sample | None = None
        last_line = 0.0
        try:
            while not self.stopping.wait(self.period):
                s = self.sample()
                if redraw is not None:
                    redraw.update(self.shown(s, before), refresh=True)
                elif self.mode == "lines" and time.monotonic() - last_line >= 5.0:
                    self.out.write(self.line(s, before) + "\n")
                    self.out.flush()
                    last_line = time.monotonic()
                before = s
        finally:
            if redraw is not None:
                redraw.stop()

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)


def play(plan: Plan, live: Live, clock: Callable[[], str], interrupted: threading.Event) -> None:
    """Send the match day's steps, each at its time (late ones at once, in order)."""
    live.started = start = time.monotonic()
    for step in plan.steps:
        if interrupted.is_set():
            return
        delay = start + step.at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        live.phase = plan.phase_at(step.at)
        live.sender.send(step, clock())
    live.phase = "waiting"


def pending(plan: Plan, sender: Sender, outcomes: Outcomes) -> dict[str, list[str]]:
    """What is still missing: inputs without an outcome, accepted bets without a final
    settlement (a resettlement for bets on the rolled-back match)."""
    missing: list[str] = []
    unsettled: list[str] = []
    with outcomes.lock:
        for s in sender.sent:
            step = s.step
            if step.expect is None or step.ref is None:
                continue
            if step.expect == DEAD:
                if s.position is None or s.position not in outcomes.dead:
                    missing.append(step.ref)
            elif (step.expect, step.ref) not in outcomes.seen:
                missing.append(step.ref)
        finals = final_settlements(outcomes.settlements)
        for s in sender.sent:
            step = s.step
            if step.topic != "bets" or step.ref is None or step.repeat_of is not None:
                continue
            seen = outcomes.seen.get(("bet-decisions", step.ref))
            if seen is None or seen.label != "accepted":
                continue
            final = finals.get(step.ref)
            legs = (step.doc or {}).get("selections", [])
            # A single on the rolled-back match is settled, rolled back and settled again.
            # An accumulator is settled when its last leg is: if another match ends after
            # the correction, it is settled once, already on the corrected result.
            on_it = len(legs) == 1 and legs[0]["event_id"] == plan.rolled_back
            want = "resettled" if on_it else None
            if (
                final is None
                or final.get("kind") == "rolled_back"
                or (want is not None and final.get("kind") != want)
            ):
                unsettled.append(step.ref)
    return {"missing": missing, "unsettled": unsettled}


def final_settlements(settlements: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each bet's latest settlement (settlement ids are ``<bet_id>/<n>``)."""
    out: dict[str, tuple[int, dict[str, Any]]] = {}
    for sid, doc in settlements.items():
        bet, _, n = sid.rpartition("/")
        seq = int(n) if n.isdigit() else 0
        bet = str(doc.get("bet_id", bet))
        if bet not in out or seq > out[bet][0]:
            out[bet] = (seq, doc)
    return {b: d for b, (_, d) in out.items()}


def wait_outcomes(
    plan: Plan, sender: Sender, outcomes: Outcomes, deadline: float
) -> dict[str, list[str]]:
    while True:
        left = pending(plan, sender, outcomes)
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.25)


def undelivered(sent: Iterable[Sent]) -> list[Sent]:
    return [s for s in sent if s.position is None]


def send_setup(
    sender: Sender, steps: list[Step], clock: Callable[[], str], timeout: float
) -> list[Sent]:
    out = sender.send_all(steps, clock)
    if sender.flush(timeout) > 0:
        msg = "Kafka did not take the set-up messages in time"
        raise SetupFailed(msg)
    return out
