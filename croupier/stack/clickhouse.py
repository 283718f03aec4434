"""The ClickHouse engine for the embedded default: chdb behind the ClickHouse HTTP interface.

chdb lets one process own a data directory, so one small process owns ``home/data`` and
serves it on 127.0.0.1 (``sinks.clickhouse.server``); workers and analysts reach it with
clickhouse-connect exactly as they would reach a ClickHouse server.
"""

from __future__ import annotations

import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from croupier.stack.process import (
    StackError,
    port_open,
    read_pid,
    spawn,
    stop_pid,
    tail,
    wait_until,
)

MODULE = "sinks.clickhouse.server"


@dataclass(frozen=True)
class EmbeddedClickHouse:
    """One chdb-backed ClickHouse HTTP endpoint."""

    home: Path
    logs: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.home / "clickhouse.pid"

    @property
    def logfile(self) -> Path:
        return self.logs / "clickhouse.log"

    def pid(self) -> int | None:
        return read_pid(self.pidfile, MODULE)

    def running(self) -> bool:
        return self.pid() is not None and ping(self.url)

    def start(self, *, timeout: float = 60.0) -> None:
        if self.running():
            return
        if port_open("127.0.0.1", self.port):
            msg = (
                f"port {self.port} on 127.0.0.1 is taken by another program; "
                "choose a free one with CROUPIER_CLICKHOUSE_PORT"
            )
            raise StackError(msg)
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", MODULE,
            "--path", str(self.home / "data"), "--port", str(self.port), "--host", "127.0.0.1",
        ]  # fmt: skip
        pid = spawn(argv, pidfile=self.pidfile, logfile=self.logfile)

        def ready() -> bool:
            if read_pid(self.pidfile, MODULE) != pid:
                msg = f"the ClickHouse engine exited during start-up:\n{tail(self.logfile)}"
                raise StackError(msg)
            return ping(self.url)

        wait_until(ready, timeout=timeout, what="ClickHouse engine", logfile=self.logfile)

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            stop_pid(pid, timeout=30)
        self.pidfile.unlink(missing_ok=True)


def ping(url: str) -> bool:
    """True when a ClickHouse HTTP interface answers ``/ping`` at ``url``."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/ping", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False
