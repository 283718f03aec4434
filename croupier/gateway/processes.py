"""Several gateway processes on one port (``croupier gateway run --workers N``).

Each process is a whole gateway: its own event loop, producer, results listener (every
process reads every answer: no consumer group) and PostgreSQL pools. They bind the port
with SO_REUSEPORT, so the kernel shares the connections out; what must be shared (bet
tickets, transaction claims, seen webhook signatures, tokens) is in PostgreSQL already.
A wallet call waits for its answer in the process that took it, and a bet's decision
reaches an SSE stream through whichever process holds that stream.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType


def run_processes(count: int) -> int:
    """Run ``count`` gateway processes until one ends or a SIGTERM/SIGINT comes (passed on
    to all); stop the others; the first exit status."""
    env = {**os.environ, "CROUPIER_GATEWAY_REUSE_PORT": "1", "CROUPIER_GATEWAY_WORKERS": "1"}
    procs: list[subprocess.Popen[bytes]] = []
    for i in range(count):
        # One scrape port: the first process's (the others' metrics stay on their /metrics).
        own = env if i == 0 else {**env, "CROUPIER_METRICS_PORT": "0"}
        procs.append(subprocess.Popen([sys.executable, "-m", "croupier", "gateway", "run"],
                                      env=own))  # fmt: skip
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status: int | None = None
    while status is None:
        for p in procs:
            code = p.poll()
            if code is not None:
                status = code
                break
        else:
            time.sleep(0.2)
    if not stopping:
        stop(signal.SIGTERM, None)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
    return 0 if stopping else status
