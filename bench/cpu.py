"""Where the machine's CPU went, by part of the system, read from /proc.

The benchmarks count only their own processes and the ``make up`` stack's: a test
stack or another checkout's stack running beside a benchmark is not counted (its own
PostgreSQL server, its Kafka, its auditor).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _postmaster() -> int | None:
    """The pid of the ``make up`` stack's PostgreSQL server, when it runs one here."""
    try:
        return int((ROOT / ".stack/postgres/data/postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _role(pid: str, postmaster: int | None = None) -> str | None:
    """Which part of the system process ``pid`` is, by its command line. With the stack's
    ``postmaster``, only that server and its backends count as PostgreSQL, and only the
    stack's own Kafka counts as Kafka (test stacks and other checkouts' stacks are not)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return None
    if int(pid) == os.getpid():
        return "bench (producer and reader)"
    if b"croupier worker --name bench-" in cmd:
        return "workers"
    if b"croupier audit run" in cmd:
        try:  # the bench's own auditor only, on its schema (``bench_<tag>``)
            env = b"\0" + Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return None
        return "auditor" if b"\0CROUPIER_PG_SCHEMA=bench_" in env else None
    if postmaster is not None:
        if b"postgres" in cmd:
            try:
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                return None
            return "postgresql" if postmaster in (int(pid), ppid) else None
        if b"java" in cmd and b"kafka" in cmd:
            own = f"{ROOT}/.stack/kafka/server.properties".encode()
            return "kafka" if own in cmd else None
    elif b"postgres" in cmd:
        return "postgresql"
    elif b"java" in cmd and b"kafka" in cmd:
        return "kafka"
    if b"croupier" in cmd:
        return "other croupier"
    return None


def cpu_by_role() -> dict[str, float]:
    """CPU seconds (user + system) each part of the system has used, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    postmaster = _postmaster()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or (role := _role(entry, postmaster)) is None:
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        out[role] = out.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def postgres_cpu_seconds() -> float:
    """CPU seconds the stack's PostgreSQL server and its backends have used (0 when this
    machine does not run the stack's server)."""
    return cpu_by_role().get("postgresql", 0.0)
