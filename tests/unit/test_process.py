"""The local stack's process helpers: how a child ended, and waiting out a file lock."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from croupier.stack.process import ephemeral_ports, free_port, wait_unlocked

_EXIT_STATUS = """
import sys, time
from pathlib import Path
from croupier.stack.process import exit_status, spawn

tmp = Path(sys.argv[1])

def gone(pid):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = exit_status(pid)
        if status is not None:
            return status
        time.sleep(0.05)
    return "still running"

print(gone(spawn(["sh", "-c", "kill -9 $$"], pidfile=tmp / "a.pid", logfile=tmp / "a.log")))
print(gone(spawn(["sh", "-c", "exit 3"], pidfile=tmp / "b.pid", logfile=tmp / "b.log")))
print(exit_status(1))
"""


def test_exit_status_names_the_signal_or_the_code(tmp_path: Path) -> None:
    # In a process of its own: the test runner's other tests may reap stray children.
    run = subprocess.run([sys.executable, "-c", _EXIT_STATUS, str(tmp_path)],
                         capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    # ``None`` for a process that is not our child: nobody here can know how it ended.
    assert run.stdout.split("\n")[:3] == ["signal SIGKILL", "exit status 3", "None"]


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


def test_free_ports_lie_below_the_range_clients_take_their_local_ports_from() -> None:
    ephemeral = ephemeral_ports()
    for _ in range(50):
        port = free_port()
        assert 1024 <= port < ephemeral.start
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))  # still free: a server could take it now
