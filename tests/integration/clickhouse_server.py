"""The embedded ClickHouse front as a process of its own, for the tests that start one.

Each has its own data directory and users file: ``default`` writes, ``analyst`` reads at
``readonly=2`` (as the stack's analyst), ``viewer`` at ``readonly=1``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from sinks.clickhouse.guard import users_document

REPO = Path(__file__).resolve().parents[2]
WRITER = ("default", "writer-pw")
ANALYST = ("analyst", "analyst-pw")
VIEWER = ("viewer", "viewer-pw")

# Straight to 127.0.0.1, whatever proxy the environment names.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def basic(user: tuple[str, str]) -> str:
    """An ``Authorization`` header value for ``(name, password)``."""
    return "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()


class EngineProcess:
    """One server process over a data directory, started and stopped as the stack does it."""

    def __init__(self, path: Path, port: int, log: Path, *extra: str) -> None:
        self.path = path
        self.port = port
        self.log = log
        self.extra = extra
        self.users_file = path.parent / "users.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The writer's URL."""
        return f"http://{WRITER[0]}:{WRITER[1]}@127.0.0.1:{self.port}"

    @property
    def analyst_url(self) -> str:
        return f"http://{ANALYST[0]}:{ANALYST[1]}@127.0.0.1:{self.port}"

    def start(self) -> None:
        self.users_file.write_text(
            users_document(
                {WRITER[0]: (WRITER[1], 0), ANALYST[0]: (ANALYST[1], 2), VIEWER[0]: (VIEWER[1], 1)}
            )
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        self._log_file = self.log.open("ab")
        argv = [
            sys.executable, "-m", "sinks.clickhouse.server",
            "--path", str(self.path), "--port", str(self.port),
            "--users", str(self.users_file), *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=self._log_file, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                self.proc = None
                pytest.fail(f"the engine did not come up:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.proc = None
        if self._log_file is not None:
            self._log_file.close()
        return code

    def ping(self) -> bool:
        try:
            with DIRECT.open(f"{self.base}/ping", timeout=1) as resp:
                return bool(resp.read() == b"Ok.\n")
        except OSError:
            return False


@contextlib.contextmanager
def serving(home: Path, *extra: str) -> Iterator[EngineProcess]:
    """A server on a free port over ``home``, for a test module; stopped at the end."""
    process = EngineProcess(home / "data", free_port(), home / "server.log", *extra)
    process.start()
    try:
        yield process
    finally:
        if process.proc is not None:
            process.stop()
