"""Who gets the CPU first: the decisions, then what follows from them.

A worker's decision waits on the worker, PostgreSQL and Kafka; the audit relay, the
regulator reports, the analytics fan-out and the dashboard only follow the decisions, and
catch up in the idle moments. On a machine whose cores are all busy (a match-day spike),
the kernel shares the CPU by weight: at equal priority the auditor alone took about a
sixth of it from the bets (BENCHMARKS.md, issue 16). So each background process lowers
its own priority once at start (``CROUPIER_BACKGROUND_NICE``, default 10: the kernel's
weight 110 against 1024, about a tenth of an equal share while the machine is saturated,
and all it wants when it is not). Nothing is skipped: the backlog they leave during a
spike is drained after it (``bench/bets.py`` reports how long that takes).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

BACKGROUND_NICE = 10  # CROUPIER_BACKGROUND_NICE


def step_back(nice: int, *, what: str) -> int:
    """Lower this process's priority to at least ``nice`` (never raise it: an unprivileged
    process cannot); the nice value it runs at."""
    current = os.nice(0)
    if nice > current:
        try:
            current = os.nice(nice - current)
        except OSError as exc:  # a container that forbids it: run at the priority given
            log.warning("%s: priority not lowered (%s)", what, exc)
    return current


def background_nice(environ: dict[str, str] | None = None) -> int:
    """``CROUPIER_BACKGROUND_NICE`` for a process without settings (the dashboard)."""
    raw = (os.environ if environ is None else environ).get("CROUPIER_BACKGROUND_NICE", "")
    try:
        return min(19, max(0, int(raw))) if raw else BACKGROUND_NICE
    except ValueError:
        return BACKGROUND_NICE
