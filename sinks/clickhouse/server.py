"""Serve the ClickHouse HTTP interface from chdb, so embedded mode needs no ClickHouse server.

chdb runs the real ClickHouse engine inside a Python process, but only one process may open a
data directory. This process owns it and answers the ClickHouse HTTP interface, well enough for
clickhouse-connect and curl, so every Croupier process reaches ClickHouse through
``CROUPIER_CLICKHOUSE_URL`` whether a ClickHouse server or this one answers::

    python -m sinks.clickhouse.server --path DIR --port PORT --users USERS.json [--host H]

Users log in as ClickHouse's HTTP interface takes them (basic auth, ``X-ClickHouse-User`` and
``X-ClickHouse-Key``, or ``user`` and ``password`` URL parameters); ``sinks.clickhouse.guard``
says what each may run. A GET runs as readonly 2, as in ClickHouse. Requests must name this
host (127.0.0.1, localhost or an ``--allowed-host``: a DNS-rebinding page names its own) and
carry no browser ``Origin``. Bodies, decompressed bodies, results and connections are bounded.

Each client context has its own chdb connection (``sinks.clickhouse.sessions``): a
``session_id`` keeps its database, its settings (from ``SET``, checked as URL settings are)
and its temporary tables until ``session_timeout``; a request without one runs on a
connection that holds nothing of earlier requests, as in ClickHouse. ``SET`` outside a
session is accepted and forgotten. chdb
connections on one data directory run side by side; this server still gives statements
turns (``--max-concurrent-queries``, 1 by default), and a statement's turn is the only
thing it waits for: ``KILL QUERY WHERE query_id = '...'`` (a user's own queries only)
cancels one that waits, and, through the engine's own KILL, one that runs. A statement
whose client goes away is cancelled the same way within ``CLIENT_WATCH_SECONDS``, and one
whose client went away while it waited for its turn is not run at all. Every statement
also carries a ``max_execution_time``: a short one for readonly users, which bounds how
long the analytics sink can wait.
``send_progress_in_http_headers=1`` sends ``X-ClickHouse-Progress`` headers from chdb's
progress callback while the statement runs (the status line, 200, goes out with the first,
as ClickHouse does), and a last one with the totals. Errors carry ClickHouse's code in
``X-ClickHouse-Exception-Code`` and its HTTP status (``_HTTP_STATUS``).

The transport is ClickHouse's (``Wire``): Native answers take the layout of the client's
``client_protocol_version`` (``sinks.clickhouse.native``), ``compress=1``/``decompress=1``
use ClickHouse's compressed block framing and ``enable_http_compression=1`` an HTTP
Content-Encoding (``sinks.clickhouse.compression``); errors always leave plain.

Unlike ClickHouse: SETTINGS clauses on an INSERT are refused (settings travel as URL
parameters or ``SET``), a session named by another user than its own is refused (ClickHouse
keys sessions by user), ``KILL QUERY`` takes only ``WHERE query_id = '...'``, ``SET
param_x`` is not kept, and there is no external data.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import functools
import ipaddress
import json
import logging
import os
import re
import select
import signal
import socket
import socketserver
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import Message
from email.parser import BytesParser
from enum import IntEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from chdb import session as chdb_session

from sinks.clickhouse import native
from sinks.clickhouse.compression import (
    Codec,
    WireError,
    choose_encoding,
    codec_for,
    compress_blocks,
    decode_content,
    decompress_blocks,
    encode_content,
    http_level,
)
from sinks.clickhouse.guard import (
    Limits,
    Node,
    Refused,
    User,
    check_statement,
    effective_settings,
    load_users,
    parse_ast,
    statement_target,
    strictest,
)
from sinks.clickhouse.sessions import (
    Context,
    QueryRegistry,
    Running,
    SessionStore,
    Turns,
    kill_target,
    progress_header,
    session_params,
)

log = logging.getLogger("sinks.clickhouse.server")

# chdb marks itself typed, but its functions carry no annotations.
_Session: Any = chdb_session.Session


class Code(IntEnum):
    """ClickHouse codes of the errors this server raises itself; chdb supplies all others."""

    UNSUPPORTED_METHOD = 1
    BAD_ARGUMENTS = 36
    NOT_IMPLEMENTED = 48
    SYNTAX_ERROR = 62
    UNKNOWN_FORMAT = 73
    UNKNOWN_COMPRESSION_METHOD = 89
    UNKNOWN_SETTING = 115
    TOO_MANY_SIMULTANEOUS_QUERIES = 202
    ABORTED = 236
    LIMIT_EXCEEDED = 290
    QUERY_WAS_CANCELLED = 394
    TOO_MANY_ROWS_OR_BYTES = 396
    ACCESS_DENIED = 497
    AUTHENTICATION_FAILED = 516
    CANNOT_DECOMPRESS = 271
    HTTP_LENGTH_REQUIRED = 381
    STD_EXCEPTION = 1001


# The HTTP status of each code, as ClickHouse's exceptionCodeToHTTPStatus has it; 500 for the
# rest (READONLY and SETTING_CONSTRAINT_VIOLATION among them). One addition: LIMIT_EXCEEDED,
# which this server raises for a request body over its limit (ClickHouse has none), is 413.
_BAD_REQUEST = (36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, 376, 27, 15, 44, 37, 123, 8,
                167, 168, 223, 62, 117, 53, 321)  # fmt: skip
_HTTP_STATUS = (
    {194: 401}  # REQUIRED_PASSWORD
    | dict.fromkeys((192, 193, 516, 512, 497), 403)  # who is asking, and what they may do
    | dict.fromkeys(_BAD_REQUEST, 400)  # the request cannot be parsed or does not fit
    | dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511), 404)  # unknown
    | {229: 413, 290: 413, 48: 501, 209: 503, 76: 503, 381: 411, 159: 408, 439: 503, 779: 415}
)

# URL parameters that steer the HTTP exchange, not the query: ClickHouse consumes them itself.
# Passing them on as settings would be wrong, and ``readonly`` would lock the shared session.
_TRANSPORT_PARAMS = frozenset(
    {
        "query", "database", "default_format", "query_id", "user", "password", "quota_key",
        "role", "readonly", "session_id", "session_timeout", "session_check", "compress",
        "decompress", "buffer_size", "wait_end_of_query", "client_protocol_version",
        "enable_http_compression", "http_zlib_compression_level",
        "send_progress_in_http_headers", "http_headers_progress_interval_ms",
        "cancel_http_readonly_queries_on_client_close", "add_http_cors_header",
        "http_native_compression_disable_checksumming_on_decompress",
        "replace_running_query", "replace_running_query_max_wait_ms",
    }
)  # fmt: skip

_CODE = re.compile(r"Code: (\d+)\.")
_CODE_NAME = re.compile(r"\(([A-Z_]+)\)\s*$")
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FORMAT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
# Names chdb's Python layer turns into pandas/pyarrow objects instead of bytes.
_PYTHON_FORMATS = frozenset({"dataframe", "arrowtable", "datastore", "debug"})
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_RESULT_STATEMENT = re.compile(
    r"[\s(]*(?:SELECT|WITH|SHOW|DESC|DESCRIBE|EXISTS|EXPLAIN|CHECK)\b", re.IGNORECASE
)
_USE_STATEMENT = re.compile(r"\s*USE\s", re.IGNORECASE)

_QUOTED = rb"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\""
# INSERT INTO <target> [(columns)] [SETTINGS ...] FORMAT <name>, then the data, which starts
# after the first newline, or after the blanks when there is none (as ClickHouse parses it).
_INSERT_HEAD = re.compile(
    rb"\s*(INSERT\s+INTO\s(?:" + _QUOTED + rb"|[^'`\";])*?)\s+FORMAT\s+(\w+)[ \t\r]*\n?",
    re.IGNORECASE,
)
# INSERT INTO <target> [(columns)] [SETTINGS ...] VALUES (...), ...: the rows are data in
# format Values, which ClickHouse streams past max_query_size (formatQuery would not).
_INSERT_VALUES = re.compile(
    rb"\s*(INSERT\s+INTO\s(?:" + _QUOTED + rb"|[^'`\";])*?)\s+VALUES\b\s*", re.IGNORECASE
)
_NOT_DATA = re.compile(rb"\b(?:VALUES|SELECT|WITH|FORMAT)\b", re.IGNORECASE)
# The INSERT head is looked for only this far into the body, which may be megabytes of data.
_HEAD_WINDOW = 64 * 1024
_INSERT_CHUNK = 1 << 20
_ALLOWED_KEPT = 1024  # statements whose check passed, remembered (short ones only)
_ALLOWED_TEXT = 4096
# How often a running statement looks whether its client is still there (``_watch_client``).
CLIENT_WATCH_SECONDS = 0.25
_KILL_ROW = ("SELECT {s:String} AS kill_status, {q:String} AS query_id, {u:String} AS user, "
             "{t:String} AS query")  # fmt: skip


class ClickHouseError(Exception):
    """A failed request as the ClickHouse HTTP interface reports it: a code and a message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def of(cls, code: Code, detail: str) -> ClickHouseError:
        """An error of this server's own, worded the way ClickHouse words its errors."""
        return cls(code.value, f"Code: {code.value}. DB::Exception: {detail}. ({code.name})")

    @classmethod
    def from_engine(cls, exc: Exception) -> ClickHouseError:
        """The ClickHouse error inside an exception chdb raised."""
        text = str(exc)
        # chdb's streaming insert puts words of its own before the engine's message.
        start = text.find("Code: ")
        match = _CODE.match(text, start) if start >= 0 else None
        if match is None:
            return cls.of(Code.STD_EXCEPTION, text)
        return cls(int(match.group(1)), text[start:].strip())

    @classmethod
    def refused(cls, exc: Refused) -> ClickHouseError:
        """The error for a request the guard refused."""
        return cls(exc.code, f"Code: {exc.code}. DB::Exception: {exc.detail}. ({exc.name})")

    @property
    def http_status(self) -> int:
        """The HTTP status ClickHouse answers this error with."""
        return _HTTP_STATUS.get(self.code, 500)


@dataclass(frozen=True)
class Request:
    """One statement as an HTTP request carries it, ready for the engine."""

    sql: str  # the statement; for an insert with data, the part before FORMAT
    database: str
    output_format: str
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)  # values for {name:Type} placeholders
    insert_format: str | None = None  # set when ``data`` holds rows for the INSERT
    data: bytes | memoryview = b""
    user: str = "default"
    readonly: int = 0  # ClickHouse's readonly level this statement runs at


@dataclass(frozen=True)
class Outcome:
    """What a statement produced: the body, its format (None: no result set), and the summary.

    A ``SET`` runs nothing: ``assigned`` holds the settings it changes, for the server to
    check and keep. A ``KILL QUERY`` neither: ``kill`` holds its target and SYNC flag.
    """

    body: bytes
    result_format: str | None
    summary: dict[str, str]
    assigned: dict[str, str] | None = None
    kill: tuple[str | None, bool] | None = None


class ChdbEngine:
    """The chdb engine on a data directory: a connection per context, statements in turns.

    Each context (a session's, or a session-less request's; see ``sessions``) has a chdb
    connection of its own, with its own database, settings and temporary tables. Checking a
    statement needs no turn; running one does, and at most ``max_concurrent`` run at once.
    """

    def __init__(self, path: str, *, max_concurrent: int = 1) -> None:
        try:
            self._admin: Any = _Session(path)
        except Exception as exc:
            msg = f"cannot open chdb data directory {path} (does another process own it?): {exc}"
            raise RuntimeError(msg) from exc
        self._path = path
        self._admin_lock = threading.Lock()  # the admin connection: kills, KILL's answers
        self._max_concurrent = max_concurrent
        self._turns = Turns(max_concurrent)
        self._closed = False
        # Statements checked and passed, with their kind, tree and canonical text.
        self._allowed: OrderedDict[tuple[Any, ...], tuple[str, list[Node], str]] = OrderedDict()
        self._allowed_lock = threading.Lock()
        row = self._admin.query("SELECT version(), timezone()", "TabSeparated").bytes()
        self.version, self.timezone = row.decode().strip().split("\t")
        self.defaults = self._settings(self._admin, changed=False)
        self._baseline = self._settings(self._admin, changed=True)

    @staticmethod
    def _settings(conn: Any, *, changed: bool) -> dict[str, str]:
        sql = "SELECT name, value FROM system.settings"
        rows = conn.query(sql + " WHERE changed" if changed else sql, "TSVRaw").bytes()
        return dict(line.split("\t", 1) for line in rows.decode().splitlines() if "\t" in line)

    def connect(self) -> Any:
        """A new connection to the engine, for one context."""
        if self._closed:
            raise ClickHouseError.of(Code.ABORTED, "The server is shutting down")
        return _Session(self._path)

    def execute(
        self,
        request: Request,
        ctx: Context,
        *,
        client_there: Callable[[], bool] | None = None,
        running: Running | None = None,
        progress: Callable[[Mapping[str, Any]], None] | None = None,
        temporary_bytes: int = 256 << 20,
    ) -> Outcome:
        """Run one statement in ``ctx`` with the request's database and settings.

        ``client_there`` is asked once the statement's turn comes: a statement whose client
        went away while it waited never runs. ``running`` is cancelled by KILL QUERY;
        ``progress`` is called with the engine's progress while the statement runs.
        """
        try:
            kind, nodes, canonical = self._check(ctx, request)
            if kind == "Set":
                return Outcome(b"", None, _NOTHING_DONE, assigned=self._assigned(canonical))
            if kind == "KillQueryQuery":
                return Outcome(b"", None, _NOTHING_DONE, kill=kill_target(nodes))
            with self._turn(running, client_there):
                self._use(ctx, request.database)
                self._apply(ctx, request.settings)
                marker = running.marker if running is not None else ""
                if running is not None:
                    running.started.set()
                if progress is not None:
                    ctx.conn._conn.set_progress_callback(progress)
                try:
                    if request.insert_format is not None:
                        outcome = self._insert(ctx, request, request.insert_format, marker)
                    else:
                        outcome = self._query(ctx, request, marker)
                finally:
                    if progress is not None:
                        ctx.conn._conn.set_progress_callback(None)
            if kind == "CreateQuery" and canonical.startswith("CREATE TEMPORARY TABLE "):
                ctx.temporary = True
            if ctx.temporary and kind in ("CreateQuery", "InsertQuery"):
                self._bound_temporary(ctx, statement_target(nodes), temporary_bytes)
            return outcome
        except Refused as exc:
            raise ClickHouseError.refused(exc) from exc
        except ClickHouseError:
            raise
        except Exception as exc:  # chdb raises ChdbError, RuntimeError, ValueError...
            raise ClickHouseError.from_engine(exc) from exc

    @contextlib.contextmanager
    def _turn(
        self, running: Running | None, client_there: Callable[[], bool] | None
    ) -> Iterator[None]:
        """Wait for a turn to run, giving up when the query is killed meanwhile."""
        cancelled = running.cancelled.is_set if running is not None else lambda: False
        if self._turns.acquire(give_up=cancelled):
            try:
                if self._closed:
                    raise ClickHouseError.of(Code.ABORTED, "The server is shutting down")
                if running is not None and running.cancelled.is_set():
                    raise ClickHouseError.of(Code.QUERY_WAS_CANCELLED, "Query was cancelled")
                if client_there is not None and not client_there():
                    detail = "The client went away before the query started"
                    raise ClickHouseError.of(Code.QUERY_WAS_CANCELLED, detail)
                yield
            finally:
                self._turns.release()
            return
        raise ClickHouseError.of(Code.QUERY_WAS_CANCELLED, "Query was cancelled")

    def kill(self, running: Running) -> None:
        """Cancel a running statement, found by the marker its text starts with."""
        with self._admin_lock:
            if self._admin is not None:
                self._admin.query(
                    f"KILL QUERY WHERE startsWith(query, {_quote_string(running.marker)}) SYNC",
                    "TabSeparated",
                )

    def kill_answer(self, row: tuple[str, str, str, str] | None, fmt: str) -> bytes:
        """KILL QUERY's result set (kill_status, query_id, user, query) in format ``fmt``."""
        sql = _KILL_ROW if row is not None else _KILL_ROW + " LIMIT 0"
        values = dict(zip(("s", "q", "u", "t"), row or ("", "", "", ""), strict=True))
        with self._admin_lock:
            if self._admin is None:
                raise ClickHouseError.of(Code.ABORTED, "The server is shutting down")
            return bytes(self._admin.query(sql, fmt, params=values).bytes() or b"")

    def _check(self, ctx: Context, request: Request) -> tuple[str, list[Node], str]:
        """Refuse what the request's user may not run, judged on the engine's own parse.

        ``formatQuery`` parses one statement (a second one is ClickHouse's code 62) and
        gives it back canonical, without comments; ``EXPLAIN AST`` of that is the tree
        ``guard.check_statement`` walks. SET and KILL QUERY are the server's: the guard
        never sees them. The statement's kind, tree and canonical text come back.
        """
        sql = request.sql
        if request.insert_format is not None:
            sql = f"{sql} FORMAT {request.insert_format}"
        # The verdict depends on the text and the level only (the parser's settings are
        # forced), and clients repeat statements: the sink's INSERT head every batch.
        key = (sql, request.user, request.readonly, tuple(sorted(request.params.items())))
        with self._allowed_lock:
            if key in self._allowed:
                self._allowed.move_to_end(key)
                return self._allowed[key]
        params = request.params or None
        try:
            canonical = (
                ctx.conn.query(f"SELECT formatQuery({_quote_string(sql)})", "TSVRaw")
                .bytes()
                .decode()
                .strip()
            )
        except Exception as exc:
            # The engine's words, without the wrapping this check put around the statement.
            error = ClickHouseError.from_engine(exc)
            text = str(error).split(" : In scope SELECT formatQuery(", 1)[0]
            name = _CODE_NAME.search(str(error))
            suffix = f" ({name.group(1)})" if name and not text.endswith(")") else ""
            raise ClickHouseError(error.code, text + suffix) from exc
        ast = ctx.conn.query(f"EXPLAIN AST {canonical}", "TSVRaw", params=params)
        nodes = parse_ast(ast.bytes().decode())
        kind = nodes[0].kind if nodes else ""
        if kind in ("Set", "KillQueryQuery"):
            return kind, nodes, canonical
        try:
            check_statement(
                ast.bytes().decode(), user=request.user, readonly=request.readonly,
                canonical=canonical, is_temporary=lambda name: self._is_temporary(ctx, name),
            )  # fmt: skip
        except Refused as exc:
            if exc.code == 164 and request.readonly == 2 and exc.name == "READONLY":
                exc.detail += (". For queries over HTTP, method GET implies readonly. "
                               "You should use method POST for modifying queries")  # fmt: skip
            raise
        # A readonly user's verdict on a write hangs on the connection's temporary tables.
        hangs = request.readonly and kind in ("InsertQuery", "CreateQuery", "DropQuery")
        if len(sql) <= _ALLOWED_TEXT and not hangs:
            with self._allowed_lock:
                self._allowed[key] = (kind, nodes, canonical)
                if len(self._allowed) > _ALLOWED_KEPT:
                    self._allowed.popitem(last=False)
        return kind, nodes, canonical

    @staticmethod
    def _is_temporary(ctx: Context, name: str) -> bool:
        rows = ctx.conn.query(
            "SELECT count() FROM system.tables WHERE is_temporary AND name = {n:String}",
            "TSVRaw",
            params={"n": name},
        )
        return bytes(rows.bytes()).strip() != b"0"

    def _bound_temporary(self, ctx: Context, target: str | None, limit: int) -> None:
        """Drop the table that took a session's temporary tables past ``limit`` bytes."""
        rows = ctx.conn.query(
            "SELECT sum(total_bytes) FROM system.tables WHERE is_temporary", "TSVRaw"
        )
        held = int(bytes(rows.bytes()).strip() or b"0")
        if held <= limit:
            return
        if target is not None:
            ctx.conn.query(f"DROP TEMPORARY TABLE IF EXISTS {_quote_identifier(target)}")
        detail = (f"Temporary tables of this session would hold {held} bytes, more than "
                  f"{limit}; table {target} was dropped")  # fmt: skip
        raise ClickHouseError.of(Code.LIMIT_EXCEEDED, detail)

    def _assigned(self, canonical: str) -> dict[str, str]:
        """The settings a SET statement changes, as the engine reads them (aliases resolved).

        The statement runs on a connection of its own, thrown away after: nothing it sets
        reaches a context before the server has checked it.
        """
        probe = self.connect()
        try:
            probe.query(canonical, "TabSeparated")
            after = self._settings(probe, changed=True)
        finally:
            probe.close()
        return {n: v for n, v in after.items() if self._baseline.get(n) != v}

    def close(self) -> None:
        """Wait for the running statements, then close the engine so the data is flushed."""
        self._closed = True
        for _ in range(self._max_concurrent):
            self._turns.acquire(give_up=lambda: False)
        with self._admin_lock:
            if self._admin is not None:
                self._admin.close()
                self._admin = None

    @staticmethod
    def _use(ctx: Context, database: str) -> None:
        if database != ctx.database:
            ctx.conn.query(f"USE {_quote_identifier(database)}", "TabSeparated")
            ctx.database = database

    @staticmethod
    def _apply(ctx: Context, settings: Mapping[str, str]) -> None:
        # Only the difference from the last statement, in one SET: clients repeat settings.
        changes = [f"{name} = DEFAULT" for name in ctx.applied if name not in settings]
        changes += [
            f"{name} = {_quote_string(value)}"
            for name, value in settings.items()
            if ctx.applied.get(name) != value
        ]
        if changes:
            ctx.applied = {}  # unknown until the SET below succeeds
            ctx.conn.query("SET " + ", ".join(changes), "TabSeparated")
            ctx.applied = dict(settings)

    def _query(self, ctx: Context, request: Request, marker: str) -> Outcome:
        result = ctx.conn.query(
            marker + request.sql, request.output_format, params=request.params or None
        )
        if _USE_STATEMENT.match(request.sql):
            ctx.database = None
        body: bytes = result.bytes() or b""
        trailing = _TRAILING_FORMAT.search(request.sql)
        result_format: str | None = None
        if trailing is not None:
            result_format = trailing.group(1)
        elif body or _RESULT_STATEMENT.match(request.sql):
            result_format = request.output_format
        return Outcome(body, result_format, _summary(result))

    def _insert(self, ctx: Context, request: Request, fmt: str, marker: str) -> Outcome:
        # chdb takes query text as a str, so binary rows cannot ride inside it. Its
        # streaming inserter (send_insert) takes bytes, but reports success when the engine
        # refuses the rows (a CHECK constraint, a materialized view's throwIf): they are lost
        # without a word (chdb 4.4). INSERT ... FROM INFILE reads the same bytes from a file
        # and fails as a ClickHouse server does, for a temporary file's cost.
        fd, path = tempfile.mkstemp(prefix="croupier-insert-")
        try:
            with os.fdopen(fd, "wb") as spool:
                view = memoryview(request.data)
                for start in range(0, len(view), _INSERT_CHUNK):
                    spool.write(view[start : start + _INSERT_CHUNK])
            sql = marker + _from_infile(request.sql, path, fmt)
            result = ctx.conn.query(sql, "TabSeparated")
        finally:
            os.unlink(path)
        return Outcome(b"", None, _summary(result))


_NOTHING_DONE = dict.fromkeys(
    ("read_rows", "read_bytes", "written_rows", "written_bytes", "total_rows_to_read",
     "result_rows", "result_bytes", "elapsed_ns"), "0",
)  # fmt: skip


def _summary(result: Any) -> dict[str, str]:
    """The X-ClickHouse-Summary of a chdb result (ClickHouse sends the numbers as strings)."""
    # chdb's rows_read is the rows of the result; storage_rows_read what the query scanned.
    return {
        "read_rows": str(result.storage_rows_read()),
        "read_bytes": str(result.storage_bytes_read()),
        "written_rows": str(result.rows_written()),
        "written_bytes": str(result.bytes_written()),
        "total_rows_to_read": str(result.storage_rows_read()),
        "result_rows": str(result.rows_read()),
        "result_bytes": str(result.bytes_read()),
        "elapsed_ns": str(int(result.elapsed() * 1e9)),
    }


def _quote_identifier(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace("`", "\\`")
    return f"`{escaped}`"


_SETTINGS_CLAUSE = re.compile(r"\sSETTINGS\s", re.IGNORECASE)


def _from_infile(head: str, path: str, fmt: str) -> str:
    """``INSERT INTO t [(columns)] FROM INFILE 'path' [SETTINGS ...] FORMAT fmt``."""
    # Quoted names and values may hold the word SETTINGS: blank them out to look for it.
    masked = re.sub(_QUOTED.decode(), lambda m: " " * len(m.group(0)), head)
    found = _SETTINGS_CLAUSE.search(masked)
    cut = found.start() if found else len(head)
    return f"{head[:cut]} FROM INFILE {_quote_string(path)}{head[cut:]} FORMAT {fmt}"


def _quote_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def build_request(
    params: Mapping[str, str],
    body: bytes,
    *,
    database: str,
    output_format: str,
    user: str = "default",
    readonly: int = 0,
) -> Request:
    """Read the statement, its settings and any INSERT data out of URL parameters and body.

    ClickHouse's statement is the ``query`` parameter, a newline, then the body; for an
    ``INSERT ... FORMAT X`` the data starts right after the format name.
    """
    if not _FORMAT_NAME.fullmatch(output_format) or output_format.lower() in _PYTHON_FORMATS:
        detail = f"Unknown format {output_format}"
        raise ClickHouseError.of(Code.UNKNOWN_FORMAT, detail)
    settings: dict[str, str] = {}
    bind: dict[str, str] = {}
    for name, value in params.items():
        if name.startswith("param_"):
            bind[name.removeprefix("param_")] = value
        elif name not in _TRANSPORT_PARAMS:
            if not _SETTING_NAME.fullmatch(name):
                detail = f"Unknown setting {name!r}"
                raise ClickHouseError.of(Code.UNKNOWN_SETTING, detail)
            settings[name] = value
    query = params.get("query", "")
    prefix = (query + "\n").encode() if query else b""

    insert = _split_insert(prefix, body)
    if insert is not None:
        head, fmt, data = insert
        return Request(head, database, output_format, settings, bind, fmt, data, user, readonly)
    try:
        sql = (prefix + body).decode()
    except UnicodeDecodeError as exc:
        detail = f"The query is not UTF-8: {exc}"
        raise ClickHouseError.of(Code.SYNTAX_ERROR, detail) from exc
    if not sql.strip():
        detail = "Empty query"
        raise ClickHouseError.of(Code.SYNTAX_ERROR, detail)
    return Request(sql, database, output_format, settings, bind, user=user, readonly=readonly)


def _split_insert(prefix: bytes, body: bytes) -> tuple[str, str, bytes | memoryview] | None:
    """``(INSERT head, format, data)`` for an INSERT ... FORMAT or INSERT ... VALUES with data."""
    probe = prefix + body[:_HEAD_WINDOW]
    match = _INSERT_HEAD.match(probe)
    fmt: str | None = None
    if match is None:
        match = _INSERT_VALUES.match(probe)
        fmt = "Values"
    if match is None or _NOT_DATA.search(re.sub(_QUOTED, b"", match.group(1))):
        return None
    try:
        head = match.group(1).decode()
        fmt = fmt or match.group(2).decode()
    except UnicodeDecodeError:
        return None
    end = match.end()
    if end <= len(prefix):
        data: bytes | memoryview = prefix[end:] + body if end < len(prefix) else body
    else:
        data = memoryview(body)[end - len(prefix) :]
    return head, fmt, data


def decode_body(data: bytes, encoding: str, limit: int = 256 << 20) -> bytes:
    """The request body with its Content-Encoding undone (clickhouse-connect compresses inserts).

    Never more than ``limit`` bytes come out: a gzip bomb is refused once it has grown that
    far, not after it has filled the memory.
    """
    try:
        return decode_content(data, encoding, limit)
    except WireError as exc:
        raise _wire_error(exc) from exc


def _wire_error(exc: WireError) -> ClickHouseError:
    return ClickHouseError(exc.code, f"Code: {exc.code}. DB::Exception: {exc.detail}. ({exc.name})")


_TRUE = frozenset({"1", "true"})


@dataclass(frozen=True)
class Wire:
    """How a request's body arrives and its answer leaves: ClickHouse's transport parameters.

    ``client_protocol_version`` (Native's layout), ``compress``/``decompress`` (ClickHouse's
    block framing, ``sinks.clickhouse.compression``), ``enable_http_compression`` with the
    client's ``Accept-Encoding`` (an HTTP Content-Encoding).
    """

    revision: int = 0
    codec: Codec | None = None  # compress=1: the answer in ClickHouse's block framing
    decompress: bool = False
    verify: bool = True  # checksums of decompress=1 blocks
    encoding: str | None = None  # the answer's Content-Encoding
    level: int = 3

    @classmethod
    def of(
        cls, params: Mapping[str, str], accept_encoding: str, defaults: Mapping[str, str]
    ) -> Wire:
        """The transport of a request; a bad parameter is ClickHouse's error for it.

        Settings not in the URL take the engine's defaults (``enable_http_compression`` is 1
        in ClickHouse 26.9), but for ``network_compression_method``: see compression.py.
        """

        def setting(name: str) -> str | None:
            return params.get(name, defaults.get(name))

        try:
            codec = None
            if params.get("compress", "0").strip().lower() in _TRUE:
                codec = codec_for(
                    params.get("network_compression_method"),
                    setting("network_zstd_compression_level"),
                )
            encoding = None
            if (setting("enable_http_compression") or "0").strip().lower() in _TRUE:
                encoding = choose_encoding(accept_encoding)
            no_checksums = params.get(
                "http_native_compression_disable_checksumming_on_decompress", "0"
            )
            return cls(
                revision=native.parse_revision(params.get("client_protocol_version")),
                codec=codec,
                decompress=params.get("decompress", "0").strip().lower() in _TRUE,
                verify=no_checksums.strip().lower() not in _TRUE,
                encoding=encoding,
                level=http_level(setting("http_zlib_compression_level")),
            )
        except WireError as exc:
            raise _wire_error(exc) from exc

    def decompressed(self, body: bytes, limit: int) -> bytes:
        """A ``decompress=1`` body out of ClickHouse's block framing."""
        try:
            return decompress_blocks(body, limit, verify=self.verify)
        except WireError as exc:
            raise _wire_error(exc) from exc

    def encoded(self, outcome: Outcome, headers: dict[str, str]) -> bytes:
        """The answer's bytes as the client asked: Native's layout, framing, Content-Encoding."""
        body = outcome.body
        try:
            if (outcome.result_format or "").lower() == "native":
                body = native.reframe(body, self.revision)
            if self.codec is not None:
                body = compress_blocks(body, self.codec)
            if self.encoding is not None:
                body = encode_content(body, self.encoding, self.level)
                headers["Content-Encoding"] = self.encoding
        except WireError as exc:
            raise _wire_error(exc) from exc
        return body


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a multipart/form-data body; clients send large bind parameters this way."""
    message = BytesParser(policy=policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, str] = {}
    parts = message.get_payload()
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, Message):
            continue
        if part.get_filename() is not None:
            detail = "External data (file parts) is not supported by the embedded server"
            raise ClickHouseError.of(Code.NOT_IMPLEMENTED, detail)
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = payload.decode()
    return fields


def _content_type(fmt: str) -> str:
    name = fmt.lower()
    if name.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if name.startswith("csv"):
        header = "present" if "withnames" in name else "absent"
        return f"text/csv; charset=UTF-8; header={header}"
    if name.startswith("json"):
        return "application/json; charset=UTF-8"
    if name.startswith(("native", "rowbinary", "parquet", "arrow", "orc", "avro", "msgpack")):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


_QUERY_ID = re.compile(r"[A-Za-z0-9_.:@+-]{1,128}")
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def _header_safe(value: str) -> str:
    """``value`` with nothing a header cannot carry: no CR, LF or other control bytes."""
    return "".join(c for c in value if " " <= c <= "~")[:1024]


def credentials(  # headers: a Mapping or the handler's email Message
    headers: Any, params: Mapping[str, str]
) -> tuple[str, str] | ClickHouseError:
    """The user and password of a request, the three ways ClickHouse's HTTP interface takes them.

    As ClickHouse: one way per request, and no user means ``default``.
    """
    ways: list[tuple[str, str]] = []
    auth = headers.get("Authorization", "")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "basic":
            return ClickHouseError.of(
                Code.AUTHENTICATION_FAILED, f"Invalid authentication: unsupported scheme {scheme!r}"
            )
        try:
            user, _, password = (
                base64.b64decode(token.strip(), validate=True).decode().partition(":")
            )
        except (ValueError, UnicodeDecodeError):
            return ClickHouseError.of(
                Code.AUTHENTICATION_FAILED, "Invalid authentication: bad Basic credentials"
            )
        ways.append((user, password))
    if "X-ClickHouse-User" in headers or "X-ClickHouse-Key" in headers:
        ways.append(
            (headers.get("X-ClickHouse-User", "default"), headers.get("X-ClickHouse-Key", ""))
        )
    if "user" in params or "password" in params:
        ways.append((params.get("user", "default"), params.get("password", "")))
    if len(ways) > 1:
        detail = (
            "Invalid authentication: it is not allowed to use more than one of the "
            "Authorization header, X-ClickHouse-User/Key headers and user/password parameters"
        )
        return ClickHouseError.of(Code.AUTHENTICATION_FAILED, detail)
    return ways[0] if ways else ("default", "")


class CredentialsRequired(ClickHouseError):
    """Code 516 for a request that sent no credentials: HTTP 401, so a browser asks for them."""

    @property
    def http_status(self) -> int:
        return 401


def authenticate(
    users: Mapping[str, User], user: str, password: str, *, anonymous: bool = False
) -> User:
    """The user, or ClickHouse's code 516, which never says whether the name exists.

    As ClickHouse (since 24.12): HTTP 403 for wrong credentials, 401 when none were sent.
    """
    found = users.get(user)
    if found is None or not found.password_ok(password):
        detail = (
            f"{_header_safe(user)}: Authentication failed: password is incorrect, "
            "or there is no user with such name"
        )
        error = ClickHouseError.of(Code.AUTHENTICATION_FAILED, detail)
        if anonymous:
            raise CredentialsRequired(error.code, str(error))
        raise error
    return found


class _Server(ThreadingHTTPServer):
    """A thread per connection, all sharing one engine; at most ``max_connections`` at once."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        engine: ChdbEngine,
        users: Mapping[str, User],
        *,
        limits: Limits | None = None,
        allowed_hosts: frozenset[str] = frozenset(),
    ) -> None:
        self.engine = engine
        self.users = dict(users)
        self.limits = limits or Limits()
        self.sessions = SessionStore(engine.connect, max_sessions=self.limits.max_sessions)
        self.queries = QueryRegistry(engine.kill)
        self.allowed_hosts = _LOOPBACK_NAMES | {h.lower() for h in allowed_hosts}
        self.display_name = socket.gethostname()
        self._open = threading.BoundedSemaphore(self.limits.max_connections)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._open.acquire(blocking=False):
            body = (f"Code: {Code.TOO_MANY_SIMULTANEOUS_QUERIES.value}. DB::Exception: Too many "
                    f"simultaneous connections (more than {self.limits.max_connections}). "
                    "(TOO_MANY_SIMULTANEOUS_QUERIES)\n").encode()  # fmt: skip
            head = (f"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                    f"X-ClickHouse-Exception-Code: {Code.TOO_MANY_SIMULTANEOUS_QUERIES.value}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
            with contextlib.suppress(OSError):
                request.sendall(head + body)
                _linger(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._open.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._open.release()

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which stalls without working DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            # A client that hangs up, or idles out, is not worth a traceback.
            log.debug("connection from %s dropped", client_address, exc_info=True)
        else:
            log.exception("connection from %s failed", client_address)


def _linger(sock: socket.socket, seconds: float = 0.1, limit: int = 1 << 16) -> None:
    """Read what the client still sends, briefly, before a refused connection closes.

    Closing with the client's request unread makes the kernel reset the connection, and a
    client still sending its body then sees a broken pipe instead of the answer.
    """
    sock.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + seconds
    taken = 0
    while taken < limit and (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        got = sock.recv(1 << 14)
        if not got:
            return
        taken += len(got)


class _Handler(BaseHTTPRequestHandler):
    """Answers one connection: ``/ping`` (and ``/healthz``, ``/readyz``), and statements on
    ``/``."""

    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: clickhouse-connect pools its connections
    timeout = 60  # an idle keep-alive connection gives its thread back after this
    # Headers and body leave in two writes; with Nagle's algorithm the second waits ~40 ms
    # for the client's delayed ACK, on every request.
    disable_nagle_algorithm = True
    _query_id = ""  # of the request being answered, for its headers and the log
    _body_read = False
    _started = False  # the status line went out early, to carry progress headers
    _progress_done = False  # the statement ended: no more progress headers
    _progress_lock = threading.Lock()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _serve(self) -> None:
        self._query_id = ""
        self._body_read = False
        self._started = False
        self._progress_done = False
        self._progress_lock = threading.Lock()
        try:
            status, body, headers = self._answer()
        except ClickHouseError as exc:
            if not self._body_read:
                self._drain()
            log.warning("query %s failed: %s", self._query_id or "-", str(exc).splitlines()[0])
            status, body, headers = self._error(exc)
        except Exception as exc:  # a bug of ours: still answer, and say so loudly
            log.exception("query %s failed", self._query_id or "-")
            status, body, headers = self._error(ClickHouseError.of(Code.STD_EXCEPTION, repr(exc)))
        self._send(status, body, headers)

    def _check_origin(self) -> None:
        """Refuse what a browser page or a DNS-rebound name sends (ClickHouse has no such check)."""
        host = self.headers.get("Host")
        if host is not None:
            name = host.strip().lower()
            name = name.rsplit(":", 1)[0] if not name.endswith("]") else name
            if name not in self.server.allowed_hosts:
                self.close_connection = True
                detail = f"Host {_header_safe(host)!r} is not a name of this server"
                raise ClickHouseError.of(Code.ACCESS_DENIED, detail)
        origin = self.headers.get("Origin")
        fetch_site = self.headers.get("Sec-Fetch-Site", "").lower()
        if origin is not None or fetch_site in ("cross-site", "same-site"):
            self.close_connection = True
            detail = "Requests from web pages (an Origin header) are not allowed"
            raise ClickHouseError.of(Code.ACCESS_DENIED, detail)

    def _answer(self) -> tuple[int, bytes, dict[str, str]]:
        self._check_origin()
        url = urlsplit(self.path)
        ok = (200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        if url.path in ("/ping", "/healthz", "/readyz") or (
            url.path == "/" and self.command == "GET" and not url.query
        ):
            # ClickHouse's /ping, and the /healthz and /readyz every Croupier process has:
            # the server listens only once its engine is open, so answering is being ready.
            self._read_body(self.server.limits)
            return ok
        if url.path != "/":
            self._read_body(self.server.limits)
            return 404, f"There is no handle {_header_safe(url.path)}\n".encode(), {}
        found = credentials(self.headers, params)
        if isinstance(found, ClickHouseError):
            self.close_connection = True  # the body is not read: the connection cannot go on
            raise found
        anonymous = found == ("default", "") and not (
            any(
                h in self.headers
                for h in ("Authorization", "X-ClickHouse-User", "X-ClickHouse-Key")
            )
            or "user" in params
            or "password" in params
        )
        user = authenticate(self.server.users, *found, anonymous=anonymous)
        query_id = params.get("query_id") or str(uuid.uuid4())
        if not _QUERY_ID.fullmatch(query_id):
            self.close_connection = True
            detail = "query_id may hold only letters, digits and _.:@+- (at most 128)"
            raise ClickHouseError.of(Code.BAD_ARGUMENTS, detail)
        self._query_id = query_id
        accept_encoding = self.headers.get("Accept-Encoding", "")
        wire = Wire.of(params, accept_encoding, self.server.engine.defaults)
        body = self._read_body(self.server.limits)
        if wire.decompress:
            body = wire.decompressed(body, self.server.limits.max_decompressed_bytes)
        content_type = self.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            params.update(_form_fields(content_type, body))
            body = b""
        readonly = strictest(
            user.readonly,
            2 if self.command == "GET" else 0,
            int(params["readonly"]) if params.get("readonly") in ("1", "2") else 0,
        )
        database = params.get("database") or self.headers.get("X-ClickHouse-Database")
        output_format = params.get("default_format") or self.headers.get("X-ClickHouse-Format")
        request = build_request(
            params,
            body,
            database=database or "default",
            output_format=output_format or "TabSeparated",
            user=user.name,
            readonly=readonly,
        )
        try:
            where = session_params(params)
            running = self.server.queries.start(
                user.name, query_id, replace=params.get("replace_running_query") == "1"
            )
            running.text = request.sql[:_ALLOWED_TEXT]
        except Refused as exc:
            raise ClickHouseError.refused(exc) from exc
        try:
            with self.server.sessions.context(user.name, where) as ctx:
                return self._run(request, ctx, running, params, wire)
        except Refused as exc:
            raise ClickHouseError.refused(exc) from exc
        finally:
            self.server.queries.finish(running)

    def _run(
        self,
        request: Request,
        ctx: Context,
        running: Running,
        params: Mapping[str, str],
        wire: Wire,
    ) -> tuple[int, bytes, dict[str, str]]:
        """Run a request's statement in its context: a session's, or a fresh one."""
        limits = self.server.limits
        # A session's SET readonly = 1 or 2 makes its later statements that strict: the
        # level is this server's to enforce, never a setting passed to the engine.
        level = ctx.settings.get("readonly", "0")
        if level in ("1", "2"):
            request = dataclasses.replace(request, readonly=strictest(request.readonly, int(level)))
        check = functools.partial(
            effective_settings, user=request.user, readonly=request.readonly, limits=limits,
            defaults=self.server.engine.defaults,
        )  # fmt: skip
        # The session's SET values first, then the request's URL settings over them.
        settings = check(ctx.settings | request.settings)
        settings.pop("readonly", None)
        request = dataclasses.replace(request, settings=settings)
        wanted = params.get("send_progress_in_http_headers") or ctx.settings.get(
            "send_progress_in_http_headers", "0"
        )
        progress = None
        if wanted not in ("", "0", "false"):
            interval = params.get("http_headers_progress_interval_ms") or ctx.settings.get(
                "http_headers_progress_interval_ms", "100"
            )
            progress = self._progress(int(interval) / 1000 if interval.isdigit() else 0.1)
        ran = threading.Event()
        watch = threading.Thread(target=self._watch_client, args=(running, ran), daemon=True)
        watch.start()
        try:
            outcome = self.server.engine.execute(
                request,
                ctx,
                client_there=self._client_there,
                running=running,
                progress=progress,
                temporary_bytes=limits.session_temporary_bytes,
            )
        finally:
            ran.set()
            watch.join()
        if outcome.assigned is not None:
            # Checked as a URL setting would be; outside a session, as ClickHouse, SET is
            # accepted and forgotten with the request's context.
            check(ctx.settings | outcome.assigned)
            if ctx.session_id is not None:
                ctx.settings.update(outcome.assigned)
        if outcome.kill is not None:
            outcome = self._kill(outcome.kill, running, request.output_format)
        cap = int(settings.get("max_result_bytes") or 0) or limits.max_result_bytes
        if len(outcome.body) > cap:
            detail = f"Limit for result exceeded, max bytes: {cap}"
            raise ClickHouseError.of(Code.TOO_MANY_ROWS_OR_BYTES, detail)
        headers = {
            "X-ClickHouse-Query-Id": self._query_id,
            "X-ClickHouse-Summary": json.dumps(outcome.summary, separators=(",", ":")),
            "Content-Type": "text/plain; charset=UTF-8",
        }
        if progress is not None:
            headers["X-ClickHouse-Progress"] = progress_header(outcome.summary)
        if outcome.result_format is not None:
            headers["X-ClickHouse-Format"] = outcome.result_format
            headers["Content-Type"] = _content_type(outcome.result_format)
        return 200, wire.encoded(outcome, headers), headers

    def _kill(self, target: tuple[str | None, bool], running: Running, fmt: str) -> Outcome:
        """KILL QUERY for the user's own query: one waiting never runs, one running stops."""
        query_id, sync = target
        found = self.server.queries.find(running.user, query_id) if query_id else None
        row: tuple[str, str, str, str] | None = None
        if found is not None and found is not running:
            self.server.queries.cancel(found)
            if sync:
                found.done.wait(self.server.limits.writer_max_execution_time)
            status = "finished" if found.done.is_set() else "waiting"
            row = (status, found.query_id, found.user, found.text)
        body = self.server.engine.kill_answer(row, fmt)
        return Outcome(body, fmt, _NOTHING_DONE)

    def _progress(self, interval: float) -> Callable[[Mapping[str, Any]], None]:
        """A progress callback writing ``X-ClickHouse-Progress`` headers at most every ``interval``.

        As ClickHouse: the status line (200) goes out with the first one, so an error after
        it arrives in the body and the ``X-ClickHouse-Exception-Code`` header only.
        """
        last = [time.monotonic()]

        def on_progress(payload: Mapping[str, Any]) -> None:
            now = time.monotonic()
            with self._progress_lock:
                if now - last[0] < interval or self._progress_done:
                    return
                last[0] = now
                lines = [] if self._started else [f"{self.protocol_version} 200 OK\r\n"]
                self._started = True
                lines.append(f"X-ClickHouse-Progress: {progress_header(payload)}\r\n")
                with contextlib.suppress(OSError):
                    self.wfile.write("".join(lines).encode())

        return on_progress

    def _drain(self) -> None:
        """Read and drop the body of a refused request, so the client reads its answer.

        Closing with unread bytes makes the kernel reset the connection, and the client
        then sees a broken pipe instead of ClickHouse's error. A body too large to read,
        or chunked, is not read: the connection closes.
        """
        length = self.headers.get("Content-Length", "0") or "0"
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if chunked or not length.isdigit() or int(length) > self.server.limits.max_body_bytes:
            self.close_connection = True
            return
        self.close_connection = True  # after a refusal, no more requests on this connection
        remaining = int(length)
        try:
            while remaining > 0:
                got = self.rfile.read(min(remaining, 1 << 16))
                if not got:
                    break
                remaining -= len(got)
        except OSError:
            pass

    def _watch_client(self, running: Running, ran: threading.Event) -> None:
        """Until ``ran``, look every ``CLIENT_WATCH_SECONDS`` whether the client of
        ``running`` is still there; cancel the statement (the engine's KILL) when the client
        went away, as ClickHouse does, so an abandoned statement gives up its turn at once,
        not at its time limit."""
        while not ran.wait(CLIENT_WATCH_SECONDS):
            if running.started.is_set() and not self._client_there():
                log.info("query %s: the client went away; cancelling it", running.query_id)
                running.cancelled.set()
                with contextlib.suppress(Exception):  # it may have ended meanwhile
                    self.server.engine.kill(running)
                return

    def _client_there(self) -> bool:
        """False when the client closed its connection (it sent all it will: EOF is news)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return True
            return bool(self.connection.recv(1, socket.MSG_PEEK))
        except (OSError, ValueError):
            return False

    def _read_body(self, limits: Limits) -> bytes:
        self._body_read = True  # or the connection closes, which comes to the same
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = self._read_chunked(limits.max_body_bytes)
        else:
            length = self.headers.get("Content-Length", "0") or "0"
            if not length.isdigit():
                self.close_connection = True  # the body's end is unknown
                detail = f"Bad Content-Length {_header_safe(length)!r}"
                raise ClickHouseError.of(Code.HTTP_LENGTH_REQUIRED, detail)
            if int(length) > limits.max_body_bytes:
                self.close_connection = True  # the body is left unread
                detail = f"The request body is larger than {limits.max_body_bytes} bytes"
                raise ClickHouseError.of(Code.LIMIT_EXCEEDED, detail)
            raw = self.rfile.read(int(length))
        return decode_body(
            raw, self.headers.get("Content-Encoding", ""), limits.max_decompressed_bytes
        )

    def _read_chunked(self, limit: int) -> bytes:
        # clickhouse-connect streams insert bodies from a generator, so urllib3 sends chunks.
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError as exc:
                self.close_connection = True
                detail = f"Bad chunk size {size_line!r}"
                raise ClickHouseError.of(Code.SYNTAX_ERROR, detail) from exc
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > limit:
                self.close_connection = True
                detail = f"The request body is larger than {limit} bytes"
                raise ClickHouseError.of(Code.LIMIT_EXCEEDED, detail)
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)  # the CRLF closing the chunk

    def _start_response(self, status: int) -> None:
        """The status line, unless progress headers sent it already (then it said 200)."""
        with self._progress_lock:
            self._progress_done = True  # no progress header after this
            if not self._started:
                self.send_response(status)
            else:
                self.log_request(status)

    def _error(self, exc: ClickHouseError) -> tuple[int, bytes, dict[str, str]]:
        headers = {
            "X-ClickHouse-Exception-Code": str(exc.code),
            "Content-Type": "text/plain; charset=UTF-8",
        }
        if self._query_id:
            headers["X-ClickHouse-Query-Id"] = self._query_id
        if isinstance(exc, CredentialsRequired):
            headers["WWW-Authenticate"] = 'Basic realm="ClickHouse server"'
        return exc.http_status, f"{exc}\n".encode(), headers

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self._start_response(status)
        self.send_header("X-ClickHouse-Server-Display-Name", self.server.display_name)
        self.send_header("X-ClickHouse-Timezone", self.server.engine.timezone)
        for name, value in headers.items():
            self.send_header(name, _header_safe(value))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(
    path: str,
    host: str,
    port: int,
    users: Mapping[str, User],
    *,
    limits: Limits | None = None,
    allowed_hosts: frozenset[str] = frozenset(),
) -> None:
    """Own ``path`` with chdb and answer on ``host:port`` until SIGTERM or SIGINT."""
    engine = ChdbEngine(path, max_concurrent=(limits or Limits()).max_concurrent_queries)
    try:
        server = _Server((host, port), engine, users, limits=limits, allowed_hosts=allowed_hosts)
    except OSError as exc:
        engine.close()
        msg = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        raise OSError(msg) from exc
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # serve_forever runs in a thread: shutdown() from the thread running it would deadlock.
    worker = threading.Thread(target=server.serve_forever, name="clickhouse-http", daemon=True)
    worker.start()

    def sweep() -> None:  # expired sessions' connections close, their temporary tables go
        while not stopping.wait(1.0):
            for session_id in server.sessions.sweep():
                log.info("session %s expired", session_id)

    threading.Thread(target=sweep, name="clickhouse-sessions", daemon=True).start()
    log.info(
        "ClickHouse %s (chdb) on %s, serving http://%s:%d",
        engine.version,
        path,
        host,
        server.server_port,
    )
    try:
        stopping.wait()
        log.info("stopping")
    finally:
        server.shutdown()
        server.server_close()
        server.sessions.close()
        engine.close()
        log.info("stopped")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: ``python -m sinks.clickhouse.server --path DIR --port PORT``."""
    parser = argparse.ArgumentParser(
        prog="python -m sinks.clickhouse.server",
        description="Serve the ClickHouse HTTP interface from a chdb data directory.",
    )
    parser.add_argument("--path", required=True, help="chdb data directory (created if missing)")
    parser.add_argument("--port", type=int, default=8123, help="TCP port (default 8123)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--users", required=True, help="users file (JSON, password SHA-256; see guard.py)"
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        help="a Host name clients may use besides 127.0.0.1 and localhost (repeatable)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="listen on a non-loopback address (traffic is plain HTTP: passwords travel clear)",
    )
    defaults = Limits()
    for name in (f.name for f in dataclasses.fields(Limits)):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name)
        )
    args = parser.parse_args(argv)
    if not (args.allow_remote or _is_loopback(args.host)):
        parser.error(
            f"--host {args.host} is not a loopback address and this server speaks plain "
            "HTTP; pass --allow-remote to listen there anyway"
        )
    limits = Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)})
    from config import logs  # the one log format (imports nothing of ours)
    from config.priority import background_nice, step_back

    logs.setup()
    step_back(background_nice(), what="ClickHouse")  # analysts' queries yield to decisions
    path = os.path.abspath(args.path)  # chdb compares engine paths as strings
    try:
        os.makedirs(path, exist_ok=True)
        users = load_users(Path(args.users))
        serve(path, args.host, args.port, users, limits=limits,
              allowed_hosts=frozenset(args.allowed_host))  # fmt: skip
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
