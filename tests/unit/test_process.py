"""The local stack's process helpers: how a child ended, and waiting out a file lock."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from croupier.stack.process import exit_status, spawn, wait_unlocked


def _wait_gone(pid: int) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = exit_status(pid)
        if status is not None:
            return status
        time.sleep(0.05)
    raise AssertionError(f"child {pid} did not end")


def test_exit_status_names_the_signal_or_the_code(tmp_path: Path) -> None:
    killed = spawn(
        ["sh", "-c", "kill -9 $$"], pidfile=tmp_path / "a.pid", logfile=tmp_path / "a.log"
    )
    assert _wait_gone(killed) == "signal SIGKILL"
    failed = spawn(["sh", "-c", "exit 3"], pidfile=tmp_path / "b.pid", logfile=tmp_path / "b.log")
    assert _wait_gone(failed) == "exit status 3"
    assert exit_status(1) is None  # not our child: nobody here can know


def test_wait_unlocked_waits_for_the_holder_to_let_go(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    lock.touch()
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import fcntl, sys, time\n"
            f"f = open({str(lock)!r}, 'rb+'); fcntl.lockf(f, fcntl.LOCK_EX)\n"
            "print('held', flush=True); time.sleep(1.5)",
        ],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    assert not wait_unlocked(lock, timeout=0.3)
    assert wait_unlocked(lock, timeout=10)
    holder.wait(5)
    assert wait_unlocked(tmp_path / "absent", timeout=0)
