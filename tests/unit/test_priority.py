"""The background processes' priority (config/priority.py), in a child process each: a
process can lower its own priority and never raise it back."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from config.priority import BACKGROUND_NICE, background_nice
from config.settings import Settings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def nice_after(*steps: int) -> int:
    code = ("import os, sys; from config.priority import step_back\n"
            f"for n in {list(steps)!r}: step_back(n, what='test')\n"
            "print(os.nice(0))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    return int(done.stdout)


def test_steps_back_to_at_least_the_value_and_never_forward() -> None:
    ours = os.nice(0)
    assert nice_after(max(ours, 7)) == max(ours, 7)
    # Asked for less than it already has, it stays where it is (it could not go back).
    assert nice_after(max(ours, 12), 3) == max(ours, 12)
    assert nice_after(0) == ours


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", BACKGROUND_NICE), ("0", 0), ("19", 19), ("25", 19), ("-5", 0), ("ten", BACKGROUND_NICE)],
)
def test_the_dashboard_reads_the_same_variable(raw: str, expected: int) -> None:
    assert background_nice({"CROUPIER_BACKGROUND_NICE": raw}) == expected


def test_settings_refuse_a_value_outside_nice() -> None:
    assert Settings().background_nice == BACKGROUND_NICE
    with pytest.raises(ValueError, match="CROUPIER_BACKGROUND_NICE"):
        Settings(CROUPIER_BACKGROUND_NICE=20)
