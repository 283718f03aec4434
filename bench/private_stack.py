"""A private embedded stack for benchmarks that must break things (``bench/faults.py``) or
resize them (``bench/scaleout.py``): its own directory, free ports, N workers.

It never touches the stack ``make up`` runs. The bench process's own environment is
pointed at it (``CROUPIER_STACK_DIR`` and the ports), so the ``croupier`` commands it runs
as subprocesses (``simulate``, ``check``) find it through its ``.stack/env`` like an
operator's would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from croupier.stack import SERVICES, Stack, StackConfig  # noqa: E402
from croupier.stack.process import free_port, pid_alive  # noqa: E402

SERVICE_VARS = ("KAFKA_BOOTSTRAP_SERVERS", "CROUPIER_PG_DSN", "CROUPIER_PG_ADMIN_DSN",
                "CROUPIER_CLICKHOUSE_URL")  # fmt: skip


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass
class PrivateStack:
    """The stack, the environment its commands need, and a log of what was done to it."""

    stack: Stack
    env: dict[str, str]
    events: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def note(self, what: str, **detail: Any) -> None:
        self.events.append({"at": round(time.time(), 3), "what": what, **detail})
        extra = " ".join(f"{k}={v}" for k, v in detail.items())
        log(f"{what} {extra}".rstrip())

    def croupier(
        self, *args: str, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "croupier", *args]
        return subprocess.run(argv, env=self.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip

    def popen(self, args: Sequence[str], logfile: Path) -> subprocess.Popen[bytes]:
        out = open(logfile, "ab")  # noqa: SIM115  # closed with the process
        return subprocess.Popen([sys.executable, "-m", "croupier", *args], env=self.env,
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip

    # -- the processes ----------------------------------------------------------------------

    def workers(self) -> dict[str, int | None]:
        return self.stack.worker_pids()

    def kill_worker(self, name: str) -> int | None:
        pid = self.workers().get(name)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        return pid

    def supervise(self) -> list[str]:
        """What a supervisor (systemd, compose's ``restart:``) does: start every worker and
        service that is not running. Returns what it had to restart."""
        with self._lock:
            env = self.stack.service_env()
            dead = [n for n, pid in self.workers().items() if pid is None]
            dead += [s for s in SERVICES if self.stack.service_pid(s) is None]
            for service in SERVICES:
                self.stack.start_service(service, env, timeout=120)
            self.stack.start_workers(env, timeout=180)
            return dead

    def supervise_in_background(self, every: float = 2.0) -> None:
        """Keep supervising, as systemd would, until the stack stops: a process that dies
        at any time (not only when a fault is injected) is started again, and noted."""

        def loop() -> None:
            while not self._stop.wait(every):
                try:
                    restarted = self.supervise()
                except Exception as exc:  # a service still down: try again
                    self.note("supervisor: not restarted yet", error=str(exc)[:160])
                    continue
                if restarted:
                    self.note("supervisor restarted", processes=",".join(restarted))

        threading.Thread(target=loop, name="supervisor", daemon=True).start()

    def stop_supervising(self) -> None:
        self._stop.set()
        with self._lock:  # let a restart under way finish
            pass


@contextmanager
def private_stack(
    workers: int, *, keep: bool = False, prefix: str = "croupier-faults-"
) -> Iterator[PrivateStack]:
    """Start a private stack with ``workers`` workers (plus the auditor and the analytics
    sink, as ``make up`` does); stop it and remove it afterwards unless ``keep``."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    tmp.chmod(0o755)  # PostgreSQL runs as its own user and must reach its data dir
    ports: set[int] = set()
    while len(ports) < 5:
        ports.add(free_port())
    kafka, controller, pg, ch, gateway = sorted(ports)
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
    env |= {
        "CROUPIER_STACK_DIR": str(tmp / "stack"),
        "CROUPIER_CACHE_DIR": str(ROOT / ".stack" / "cache"),
        "CROUPIER_KAFKA_PORT": str(kafka),
        "CROUPIER_KAFKA_CONTROLLER_PORT": str(controller),
        "CROUPIER_PG_PORT": str(pg),
        "CROUPIER_CLICKHOUSE_PORT": str(ch),
        "CROUPIER_WORKERS": str(workers),
        "CROUPIER_GATEWAY_PORT": str(gateway),
    }
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # Stack spawns its processes with this environment
    stack = Stack(StackConfig.from_env(env))
    ps: PrivateStack | None = None
    try:
        start = time.monotonic()
        stack.up()
        log(f"private stack up in {time.monotonic() - start:.1f} s under {tmp} "
            f"({workers} worker(s))")  # fmt: skip
        ps = PrivateStack(stack, env)
        yield ps
    finally:
        try:
            if ps is not None:
                ps.stop_supervising()
            stack.down()
        finally:
            os.environ.clear()
            os.environ.update(saved)
            if keep:
                log(f"kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
