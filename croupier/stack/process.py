"""Background processes of the local stack: start detached, find again by pid file, stop."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class StackError(RuntimeError):
    """The local stack could not do what was asked; the message says what to fix."""


def pid_alive(pid: int) -> bool:
    """True when ``pid`` is a live process (not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def read_pid(pidfile: Path, marker: str) -> int | None:
    """The pid in ``pidfile`` when that process is alive and its command line has ``marker``.

    The marker guards against a recycled pid after a reboot pointing at a stranger.
    """
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return pid
    return pid if marker in cmdline else None


def spawn(
    argv: Sequence[str],
    *,
    pidfile: Path,
    logfile: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` in its own session, output appended to ``logfile``; record its pid."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    pidfile.write_text(f"{proc.pid}\n")
    _children[proc.pid] = proc
    return proc.pid


# Our children's Popen objects, kept: a dropped one is reaped by the next Popen anywhere in
# the process (subprocess's own clean-up), and how it ended would be lost.
_children: dict[int, subprocess.Popen[bytes]] = {}


def stop_pid(pid: int, *, timeout: float = 30.0) -> None:
    """SIGTERM ``pid`` (and its process group), then SIGKILL if it outlives ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                _reap(pid)
                return
            time.sleep(0.1)
    if pid_alive(pid):
        msg = f"process {pid} did not stop after SIGKILL"
        raise StackError(msg)


def exit_status(pid: int) -> str | None:
    """How our child ``pid`` ended ("exit status 1", "signal SIGKILL"), reaping it; else None.

    None when it still runs or is not our child (then nobody here can know).
    """
    proc = _children.get(pid)
    if proc is not None:
        code = proc.poll()
        if code is None:
            return None
        return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if done == 0:
        return None
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)}"


def wait_unlocked(path: Path, *, timeout: float) -> bool:
    """Wait until no process holds a POSIX lock on ``path``; True when free (or absent).

    A JVM that has left the process table can still be releasing its file locks for a moment;
    starting its successor before then makes the successor fail on the lock.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, "rb+") as f:
                try:
                    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    pass
                else:
                    fcntl.lockf(f, fcntl.LOCK_UN)
                    return True
        except FileNotFoundError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(port: int) -> bool:
    """True when a listener could bind ``127.0.0.1:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_ports() -> range:
    """The ports the kernel hands out as the local end of outgoing connections."""
    try:
        low, high = (int(v) for v in _EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default
    return range(low, high + 1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, below the ephemeral range.

    A port the kernel picks for ``bind(0)`` comes from the ephemeral range, so any
    outgoing connection (a Kafka or PostgreSQL client) may take it as its local port before
    the server meant for it binds: a broker restarted on it then fails with "Address already
    in use". Below that range only a listener asks for a port by number.
    """
    top = min(ephemeral_ports().start, 65536)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(max(1024, top - 12000), top)
        if port_free(port):
            return port
    msg = f"no free TCP port on 127.0.0.1 below {top}"
    raise StackError(msg)


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, logfile: Path | None = None
) -> None:
    """Poll ``check`` until it holds; on timeout raise naming ``what`` and the log to read."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    hint = f"; see {logfile}" if logfile else ""
    msg = f"{what} did not come up within {timeout:.0f}s{hint}"
    raise StackError(msg)


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
