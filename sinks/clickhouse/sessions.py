"""Sessions and running queries of the embedded ClickHouse front, as ClickHouse has them.

chdb 4.4 gives each ``chdb.session.Session`` on a data directory its own engine connection:
its own current database, settings and temporary tables, and statements of different
connections run side by side (a ``KILL QUERY`` from one cancels a statement running in
another). So isolation is the engine's own, not rebuilt here: a request with a
``session_id`` gets its session's connection, one without gets a fresh connection that is
put back among a few idle ones only if it holds nothing of the request (ClickHouse gives
such a request a fresh context too), and an expired
session's connection is closed, which drops its temporary tables.

What this module adds is what the engine has no notion of:

* sessions by ``session_id`` with ClickHouse's ``session_timeout`` (default 60 s, at most
  ``MAX_SESSION_TIMEOUT``, counted from the end of the session's last request),
  ``session_check=1`` (code 372 when missing), code 373 for a session used by two requests
  at once; a session belongs to the user who opened it (another user naming it gets 497),
  and there are at most ``max_sessions``;
* the settings a session's ``SET`` statements changed, kept here and applied (after the
  guard's checks) with each request's own URL settings;
* running queries by ``(user, query_id)``: a second one with a running id is code 216
  unless ``replace_running_query=1``, and ``KILL QUERY WHERE query_id = '...'`` cancels a
  user's own query, whether it waits for its turn or runs.
"""

from __future__ import annotations

import collections
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sinks.clickhouse.guard import Node, Refused

DEFAULT_SESSION_TIMEOUT = 60
MAX_SESSION_TIMEOUT = 3600  # ClickHouse's max_session_timeout default
_ID = re.compile(r"[A-Za-z0-9_.:@+-]{1,128}")


@dataclass(frozen=True)
class SessionParams:
    """What a request asks of its session: its id, how long it lives idle, whether it must exist."""

    id: str
    timeout: float
    check: bool


def session_params(params: Mapping[str, str]) -> SessionParams | None:
    """The session a request names in its URL parameters, or None for a session-less one."""
    session_id = params.get("session_id", "")
    if not session_id:
        return None
    if not _ID.fullmatch(session_id):
        detail = "session_id may hold only letters, digits and _.:@+- (at most 128)"
        raise Refused(36, "BAD_ARGUMENTS", detail)
    raw = params.get("session_timeout", "") or str(DEFAULT_SESSION_TIMEOUT)
    try:
        timeout = int(raw)
    except ValueError:
        timeout = -1
    if timeout < 0:
        raise Refused(374, "INVALID_SESSION_TIMEOUT", f"Invalid session timeout: '{raw[:64]}'")
    if timeout > MAX_SESSION_TIMEOUT:
        raise Refused(
            374, "INVALID_SESSION_TIMEOUT",
            f"Session timeout '{timeout}' is larger than max_session_timeout: "
            f"{MAX_SESSION_TIMEOUT}. Maximum session timeout could be modified in configuration "
            "file.",
        )  # fmt: skip
    return SessionParams(session_id, float(timeout), params.get("session_check") == "1")


class Context:
    """One chdb connection and what the front remembers of it between statements."""

    def __init__(self, conn: Any, *, user: str, session_id: str | None, timeout: float) -> None:
        self.conn = conn
        self.user = user
        self.session_id = session_id
        self.timeout = timeout
        self.database: str | None = None  # None: unknown, USE before the next statement
        self.applied: dict[str, str] = {}  # settings the connection holds, applied by SET
        self.settings: dict[str, str] = {}  # what the session's own SET statements changed
        self.temporary = False  # a temporary table was created here: its size is watched
        self.lock = threading.Lock()  # held by the request using the context
        self.expires = 0.0

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


class SessionStore:
    """The open sessions, keyed by ``session_id``, each closed once idle past its timeout."""

    def __init__(
        self,
        open_connection: Callable[[], Any],
        *,
        max_sessions: int,
        max_idle: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open = open_connection
        self._max = max_sessions
        self._clock = clock
        self._sessions: dict[str, Context] = {}
        self._idle: list[Context] = []  # connections for requests without a session
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._closed = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    @contextmanager
    def context(self, user: str, params: SessionParams | None) -> Iterator[Context]:
        """The context a request runs in, held by it alone until the block ends."""
        if params is None:
            with self._fresh(user) as fresh:
                yield fresh
            return
        self.sweep()
        with self._lock:
            if self._closed:
                raise Refused(236, "ABORTED", "The server is shutting down")
            ctx = self._sessions.get(params.id)
            if ctx is not None and ctx.user != user:
                raise Refused(497, "ACCESS_DENIED",
                              f"{user}: Session {params.id} belongs to another user")  # fmt: skip
            if ctx is None:
                if params.check:
                    raise Refused(372, "SESSION_NOT_FOUND", f"Session {params.id} not found")
                if len(self._sessions) >= self._max:
                    raise Refused(290, "LIMIT_EXCEEDED",
                                  f"Too many open sessions (at most {self._max})")  # fmt: skip
                ctx = Context(self._open(), user=user, session_id=params.id, timeout=0)
                self._sessions[params.id] = ctx
            if not ctx.lock.acquire(blocking=False):
                raise Refused(373, "SESSION_IS_LOCKED",
                              f"Session {params.id} is locked by a concurrent client")  # fmt: skip
            ctx.timeout = params.timeout
        try:
            yield ctx
        finally:
            ctx.expires = self._clock() + ctx.timeout
            ctx.lock.release()

    @contextmanager
    def _fresh(self, user: str) -> Iterator[Context]:
        """A context in the state of a new connection, for a request without a session.

        A connection goes back to the idle ones only when it holds nothing of the request:
        its settings and database are known (``applied``, ``database``) and set afresh for
        the next; one where a temporary table was made, or a statement failed, is closed.
        """
        with self._lock:
            ctx = self._idle.pop() if self._idle else None
        if ctx is None:
            ctx = Context(self._open(), user=user, session_id=None, timeout=0)
        ctx.user = user
        clean = False
        try:
            yield ctx
            clean = not ctx.temporary
        finally:
            with self._lock:
                keep = clean and not self._closed and len(self._idle) < self._max_idle
                if keep:
                    self._idle.append(ctx)
            if not keep:
                ctx.close()

    def sweep(self) -> list[str]:
        """Close the sessions idle past their timeout; their ids."""
        now = self._clock()
        expired: list[Context] = []
        with self._lock:
            for session_id, ctx in list(self._sessions.items()):
                if ctx.expires <= now and ctx.lock.acquire(blocking=False):
                    del self._sessions[session_id]
                    expired.append(ctx)
        for ctx in expired:
            try:
                ctx.close()
            finally:
                ctx.lock.release()
        return [str(ctx.session_id) for ctx in expired]

    def close(self) -> None:
        """Close every session, waiting for the requests that hold one."""
        with self._lock:
            self._closed = True
            contexts = list(self._sessions.values()) + self._idle
            self._sessions.clear()
            self._idle.clear()
        for ctx in contexts:
            with ctx.lock:
                ctx.close()


# -- running queries ----------------------------------------------------------------------


@dataclass
class Running:
    """A query from the moment it is accepted until its answer is built."""

    user: str
    query_id: str
    marker: str = field(default_factory=lambda: f"/* croupier-run:{uuid.uuid4().hex} */ ")
    cancelled: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)  # the engine runs it
    done: threading.Event = field(default_factory=threading.Event)
    text: str = ""  # the statement, for KILL QUERY's answer


class QueryRegistry:
    """Queries by ``(user, query_id)``: unique while they run, and cancellable by their user."""

    def __init__(self, kill: Callable[[Running], None]) -> None:
        self._kill = kill  # stops a statement the engine runs
        self._running: dict[tuple[str, str], Running] = {}
        self._lock = threading.Lock()

    def start(
        self, user: str, query_id: str, *, replace: bool = False, wait: float = 5.0
    ) -> Running:
        """Register a query; code 216 when its id runs already (unless ``replace`` stops that)."""
        key = (user, query_id)
        with self._lock:
            old = self._running.get(key)
            if old is None:
                new = self._running[key] = Running(user, query_id)
                return new
        if not replace:
            raise Refused(216, "QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING",
                          f"Query with id = {query_id} is already running")  # fmt: skip
        self.cancel(old)
        if not old.done.wait(wait):
            raise Refused(216, "QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING",
                          f"Query with id = {query_id} is already running and can't be "
                          "stopped")  # fmt: skip
        return self.start(user, query_id)

    def finish(self, running: Running) -> None:
        with self._lock:
            if self._running.get((running.user, running.query_id)) is running:
                del self._running[(running.user, running.query_id)]
        running.done.set()

    def find(self, user: str, query_id: str) -> Running | None:
        with self._lock:
            return self._running.get((user, query_id))

    def cancel(self, running: Running) -> None:
        """Cancel a query: one waiting never starts, one running is killed in the engine."""
        running.cancelled.set()
        if running.started.is_set() and not running.done.is_set():
            self._kill(running)


class Turns:
    """Turns to run a statement, ``n`` at a time, given in the order they were asked for.

    First come, first served: a client that waited longest runs first, and one that gave
    up leaves the line at once (a lock or semaphore polled with timeouts reorders them).
    """

    def __init__(self, n: int) -> None:
        self._free = n
        self._line: collections.deque[threading.Event] = collections.deque()
        self._lock = threading.Lock()

    def acquire(self, *, give_up: Callable[[], bool]) -> bool:
        """Wait for a turn; False when ``give_up()`` turned true first."""
        mine = threading.Event()
        with self._lock:
            if self._free and not self._line:
                self._free -= 1
                return True
            self._line.append(mine)
        while not mine.wait(0.05):
            if give_up():
                with self._lock:
                    if mine in self._line:
                        self._line.remove(mine)
                        return False
                break  # the turn came meanwhile: the caller gives it back
        return True

    def release(self) -> None:
        with self._lock:
            if self._line:
                self._line.popleft().set()  # handed straight to the next in line
            else:
                self._free += 1


_KILL_LITERAL = re.compile(r"'([A-Za-z0-9_.:@+-]{1,128})'")


def kill_target(nodes: list[Node]) -> tuple[str | None, bool]:
    """``(query_id, sync)`` of ``KILL QUERY WHERE query_id = '...' [SYNC|ASYNC]``.

    Read from the engine's AST; any other condition is code 48, as this front cannot judge
    whose queries it selects. A query_id no query can have gives ``None`` (nothing to kill).
    """
    shape = [(n.depth, n.kind, n.name) for n in nodes]
    if (
        len(shape) != 5
        or shape[0][1] != "KillQueryQuery"
        or shape[1][1:] != ("Function", "equals")
        or shape[2][1] != "ExpressionList"
        or shape[3][1:] != ("Identifier", "query_id")
        or shape[4][1] != "Literal"
    ):
        raise Refused(48, "NOT_IMPLEMENTED",
                      "Only KILL QUERY WHERE query_id = '...' is supported here")  # fmt: skip
    found = _KILL_LITERAL.fullmatch(shape[4][2])
    return (found.group(1) if found else None), " ASYNC" not in f" {nodes[0].name} "


def progress_header(progress: Mapping[str, Any]) -> str:
    """An ``X-ClickHouse-Progress`` value: ClickHouse's fields, numbers as strings."""
    fields = ("read_rows", "read_bytes", "written_rows", "written_bytes", "total_rows_to_read",
              "result_rows", "result_bytes", "elapsed_ns")  # fmt: skip
    inner = ",".join(f'"{name}":"{int(progress.get(name, 0) or 0)}"' for name in fields)
    return "{" + inner + "}"
