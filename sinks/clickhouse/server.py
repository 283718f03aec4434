"""Serve the ClickHouse HTTP interface from chdb, so embedded mode needs no ClickHouse server.

chdb runs the real ClickHouse engine inside a Python process, but only one process may open a
data directory. This process owns it and answers the ClickHouse HTTP interface, well enough for
clickhouse-connect and curl, so every Croupier process reaches ClickHouse through
``CROUPIER_CLICKHOUSE_URL`` whether a ClickHouse server or this one answers::

    python -m sinks.clickhouse.server --path DIR --port PORT [--host 127.0.0.1]

All clients share one chdb session. So, unlike ClickHouse: ``session_id`` is ignored, ``SET``
statements are refused (settings travel as URL parameters, applied per request), GET does not
imply readonly, there is no authentication (hence loopback only unless ``--allow-remote``),
no external data, and responses are never compressed.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import socketserver
import sys
import tempfile
import threading
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import Message
from email.parser import BytesParser
from enum import IntEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from chdb import session as chdb_session

log = logging.getLogger("sinks.clickhouse.server")

# chdb marks itself typed, but its functions carry no annotations.
_Session: Any = chdb_session.Session


class Code(IntEnum):
    """ClickHouse codes of the errors this server raises itself; chdb supplies all others."""

    UNSUPPORTED_METHOD = 1
    NOT_IMPLEMENTED = 48
    SYNTAX_ERROR = 62
    UNKNOWN_FORMAT = 73
    UNKNOWN_COMPRESSION_METHOD = 89
    UNKNOWN_SETTING = 115
    ABORTED = 236
    CANNOT_DECOMPRESS = 271
    HTTP_LENGTH_REQUIRED = 381
    STD_EXCEPTION = 1001


# The HTTP status ClickHouse pairs with common codes; 500 for the rest. Clients key on the
# exception-code header, the status only has to be the right kind of error.
_HTTP_STATUS = (
    dict.fromkeys((6, 25, 26, 27, 38, 41, 53, 62, 72, 89, 117, 271), 400)  # cannot parse
    | dict.fromkeys((16, 46, 47, 50, 56, 60, 63, 73, 81, 115), 404)  # unknown name
    | {381: 411, 48: 501}
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
    }
)  # fmt: skip

_CODE = re.compile(r"Code: (\d+)\.")
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FORMAT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
# Names chdb's Python layer turns into pandas/pyarrow objects instead of bytes.
_PYTHON_FORMATS = frozenset({"dataframe", "arrowtable", "datastore", "debug"})
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_RESULT_STATEMENT = re.compile(
    r"[\s(]*(?:SELECT|WITH|SHOW|DESC|DESCRIBE|EXISTS|EXPLAIN|CHECK)\b", re.IGNORECASE
)
_SET_STATEMENT = re.compile(r"\s*SET\s", re.IGNORECASE)
_USE_STATEMENT = re.compile(r"\s*USE\s", re.IGNORECASE)

_QUOTED = rb"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\""
# INSERT INTO <target> [(columns)] [SETTINGS ...] FORMAT <name>, then the data, which starts
# after the first newline, or after the blanks when there is none (as ClickHouse parses it).
_INSERT_HEAD = re.compile(
    rb"\s*(INSERT\s+INTO\s(?:" + _QUOTED + rb"|[^'`\";])*?)\s+FORMAT\s+(\w+)[ \t\r]*\n?",
    re.IGNORECASE,
)
_NOT_DATA = re.compile(rb"\b(?:VALUES|SELECT|WITH)\b", re.IGNORECASE)
# The INSERT head is looked for only this far into the body, which may be megabytes of data.
_HEAD_WINDOW = 64 * 1024
_INSERT_CHUNK = 1 << 20


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


@dataclass(frozen=True)
class Outcome:
    """What a statement produced: the body, its format (None: no result set), and the summary."""

    body: bytes
    result_format: str | None
    summary: dict[str, str]


class ChdbEngine:
    """The one chdb session on a data directory, running one statement at a time.

    chdb's session has locks of its own, but the database and settings a request needs are
    session state, so the whole exchange (USE, SET, statement) must not interleave.
    """

    def __init__(self, path: str) -> None:
        try:
            self._session: Any = _Session(path)
        except Exception as exc:
            msg = f"cannot open chdb data directory {path} (does another process own it?): {exc}"
            raise RuntimeError(msg) from exc
        self._lock = threading.Lock()
        self._database: str | None = None  # None: unknown, USE before the next statement
        self._settings: dict[str, str] = {}  # settings this session holds, applied by SET
        row = self._session.query("SELECT version(), timezone()", "TabSeparated").bytes()
        self.version, self.timezone = row.decode().strip().split("\t")

    def execute(self, request: Request) -> Outcome:
        """Run one statement in the request's database with the request's settings."""
        with self._lock:
            if self._session is None:
                detail = "The server is shutting down"
                raise ClickHouseError.of(Code.ABORTED, detail)
            try:
                self._use(request.database)
                self._apply(request.settings)
                if request.insert_format is not None:
                    return self._insert(request, request.insert_format)
                return self._query(request)
            except Exception as exc:  # chdb raises ChdbError, RuntimeError, ValueError...
                raise ClickHouseError.from_engine(exc) from exc

    def close(self) -> None:
        """Wait for the running statement, then close the session so the data is flushed."""
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def _use(self, database: str) -> None:
        if database != self._database:
            self._session.query(f"USE {_quote_identifier(database)}", "TabSeparated")
            self._database = database

    def _apply(self, settings: Mapping[str, str]) -> None:
        # Only the difference from the last request is sent: clients repeat the same settings.
        for name in [name for name in self._settings if name not in settings]:
            self._session.query(f"SET {name} = DEFAULT", "TabSeparated")
            del self._settings[name]
        for name, value in settings.items():
            if self._settings.get(name) != value:
                self._session.query(f"SET {name} = {_quote_string(value)}", "TabSeparated")
                self._settings[name] = value

    def _query(self, request: Request) -> Outcome:
        result = self._session.query(
            request.sql, request.output_format, params=request.params or None
        )
        if _USE_STATEMENT.match(request.sql):
            self._database = None
        body: bytes = result.bytes() or b""
        trailing = _TRAILING_FORMAT.search(request.sql)
        result_format: str | None = None
        if trailing is not None:
            result_format = trailing.group(1)
        elif body or _RESULT_STATEMENT.match(request.sql):
            result_format = request.output_format
        return Outcome(body, result_format, _summary(result))

    def _insert(self, request: Request, fmt: str) -> Outcome:
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
            result = self._session.query(_from_infile(request.sql, path, fmt), "TabSeparated")
        finally:
            os.unlink(path)
        return Outcome(b"", None, _summary(result))


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
    params: Mapping[str, str], body: bytes, *, database: str, output_format: str
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
        return Request(head, database, output_format, settings, bind, fmt, data)
    try:
        sql = (prefix + body).decode()
    except UnicodeDecodeError as exc:
        detail = f"The query is not UTF-8: {exc}"
        raise ClickHouseError.of(Code.SYNTAX_ERROR, detail) from exc
    if not sql.strip():
        detail = "Empty query"
        raise ClickHouseError.of(Code.SYNTAX_ERROR, detail)
    if _SET_STATEMENT.match(sql):
        detail = (
            "SET would change the session every client shares; "
            "pass settings as URL parameters (clickhouse-connect: settings=...)"
        )
        raise ClickHouseError.of(Code.UNSUPPORTED_METHOD, detail)
    return Request(sql, database, output_format, settings, bind)


def _split_insert(prefix: bytes, body: bytes) -> tuple[str, str, bytes | memoryview] | None:
    """``(INSERT head, format, data)`` when the statement is an INSERT ... FORMAT with data."""
    probe = prefix + body[:_HEAD_WINDOW]
    match = _INSERT_HEAD.match(probe)
    if match is None or _NOT_DATA.search(re.sub(_QUOTED, b"", match.group(1))):
        return None
    try:
        head = match.group(1).decode()
    except UnicodeDecodeError:
        return None
    end = match.end()
    if end <= len(prefix):
        data: bytes | memoryview = prefix[end:] + body if end < len(prefix) else body
    else:
        data = memoryview(body)[end - len(prefix) :]
    return head, match.group(2).decode(), data


def decode_body(data: bytes, encoding: str) -> bytes:
    """The request body with its Content-Encoding undone (clickhouse-connect compresses inserts)."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return data
    try:
        if name == "gzip":
            return gzip.decompress(data)
        if name == "deflate":
            # ClickHouse's deflate is a zlib stream; MAX_WBITS | 32 also takes a gzip header.
            return zlib.decompress(data, zlib.MAX_WBITS | 32)
        if name == "zstd":
            return _zstd_decompress(data)
        if name == "lz4":
            return _lz4_decompress(data)
    except Exception as exc:  # each codec library raises its own error types
        detail = f"Cannot decode the {name} request body: {exc}"
        raise ClickHouseError.of(Code.CANNOT_DECOMPRESS, detail) from exc
    detail = f"Unknown Content-Encoding {encoding!r}: use lz4, zstd, gzip or deflate"
    raise ClickHouseError.of(Code.UNKNOWN_COMPRESSION_METHOD, detail)


def _zstd_decompress(data: bytes) -> bytes:
    if sys.version_info >= (3, 14):
        from compression import zstd
    else:
        from backports import zstd  # a clickhouse-connect dependency before Python 3.14
    return zstd.decompress(data)


def _lz4_decompress(data: bytes) -> bytes:
    # lz4 (a clickhouse-connect dependency) ships no type information, hence the Any.
    frame: Any = importlib.import_module("lz4.frame")
    # clickhouse-connect sends one LZ4 frame per insert block, back to back.
    parts: list[bytes] = []
    rest = data
    while rest:
        decompressor = frame.LZ4FrameDecompressor()
        parts.append(decompressor.decompress(rest))
        if not decompressor.eof:
            msg = "truncated LZ4 frame"
            raise ValueError(msg)
        rest = decompressor.unused_data
    return b"".join(parts)


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


class _Server(ThreadingHTTPServer):
    """A thread per connection, all sharing one engine."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], engine: ChdbEngine) -> None:
        self.engine = engine
        self.display_name = socket.gethostname()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

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


class _Handler(BaseHTTPRequestHandler):
    """Answers one connection: ``/ping``, and statements on ``/``."""

    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: clickhouse-connect pools its connections
    timeout = 60  # an idle keep-alive connection gives its thread back after this
    # Headers and body leave in two writes; with Nagle's algorithm the second waits ~40 ms
    # for the client's delayed ACK, on every request.
    disable_nagle_algorithm = True
    _query_id = ""  # of the request being answered, for its headers and the log

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _serve(self) -> None:
        self._query_id = ""
        try:
            status, body, headers = self._answer()
        except ClickHouseError as exc:
            log.warning("query %s failed: %s", self._query_id or "-", str(exc).splitlines()[0])
            status, body, headers = self._error(exc)
        except Exception as exc:  # a bug of ours: still answer, and say so loudly
            log.exception("query %s failed", self._query_id or "-")
            status, body, headers = self._error(ClickHouseError.of(Code.STD_EXCEPTION, repr(exc)))
        self._send(status, body, headers)

    def _answer(self) -> tuple[int, bytes, dict[str, str]]:
        body = self._read_body()
        url = urlsplit(self.path)
        ok = (200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
        if url.path == "/ping":
            return ok
        if url.path != "/":
            return 404, f"There is no handle {url.path}\n".encode(), {}
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        content_type = self.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            params.update(_form_fields(content_type, body))
            body = b""
        if self.command == "GET" and not params.get("query") and not body:
            return ok
        self._query_id = params.get("query_id") or str(uuid.uuid4())
        database = params.get("database") or self.headers.get("X-ClickHouse-Database")
        output_format = params.get("default_format") or self.headers.get("X-ClickHouse-Format")
        request = build_request(
            params,
            body,
            database=database or "default",
            output_format=output_format or "TabSeparated",
        )
        outcome = self.server.engine.execute(request)
        headers = {
            "X-ClickHouse-Query-Id": self._query_id,
            "X-ClickHouse-Summary": json.dumps(outcome.summary, separators=(",", ":")),
            "Content-Type": "text/plain; charset=UTF-8",
        }
        if outcome.result_format is not None:
            headers["X-ClickHouse-Format"] = outcome.result_format
            headers["Content-Type"] = _content_type(outcome.result_format)
        return 200, outcome.body, headers

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = self._read_chunked()
        else:
            length = self.headers.get("Content-Length", "0") or "0"
            if not length.isdigit():
                self.close_connection = True  # the body's end is unknown
                detail = f"Bad Content-Length {length!r}"
                raise ClickHouseError.of(Code.HTTP_LENGTH_REQUIRED, detail)
            raw = self.rfile.read(int(length))
        return decode_body(raw, self.headers.get("Content-Encoding", ""))

    def _read_chunked(self) -> bytes:
        # clickhouse-connect streams insert bodies from a generator, so urllib3 sends chunks.
        parts: list[bytes] = []
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
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)  # the CRLF closing the chunk

    def _error(self, exc: ClickHouseError) -> tuple[int, bytes, dict[str, str]]:
        headers = {
            "X-ClickHouse-Exception-Code": str(exc.code),
            "Content-Type": "text/plain; charset=UTF-8",
        }
        if self._query_id:
            headers["X-ClickHouse-Query-Id"] = self._query_id
        return exc.http_status, f"{exc}\n".encode(), headers

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        self.send_header("X-ClickHouse-Server-Display-Name", self.server.display_name)
        self.send_header("X-ClickHouse-Timezone", self.server.engine.timezone)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(path: str, host: str, port: int) -> None:
    """Own ``path`` with chdb and answer on ``host:port`` until SIGTERM or SIGINT."""
    engine = ChdbEngine(path)
    try:
        server = _Server((host, port), engine)
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
        "--allow-remote",
        action="store_true",
        help="listen on a non-loopback address although there is no authentication",
    )
    args = parser.parse_args(argv)
    if not (args.allow_remote or _is_loopback(args.host)):
        parser.error(
            f"--host {args.host} is not a loopback address and this server has no "
            "authentication; pass --allow-remote to listen there anyway"
        )
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    path = os.path.abspath(args.path)  # chdb compares engine paths as strings
    try:
        os.makedirs(path, exist_ok=True)
        serve(path, args.host, args.port)
    except (OSError, RuntimeError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
