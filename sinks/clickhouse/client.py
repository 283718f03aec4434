"""One small ClickHouse contract for Croupier, whichever engine is behind the URL.

``connect("http://127.0.0.1:8123")`` reaches a ClickHouse server, or the embedded engine that
``sinks.clickhouse.server`` serves, over the HTTP interface. ``connect("chdb:///abs/path")``
runs chdb inside this process instead, for single-process tools and tests. Both go through
clickhouse-connect, so the same DDL, queries and inserts give the same Python values either
way: ``Decimal`` for decimals, timezone-aware ``datetime`` for DateTime columns, ``None``
for NULL.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import SplitResult, unquote, urlsplit

import clickhouse_connect


class UnsupportedUrl(ValueError):
    """A ClickHouse URL of no scheme Croupier speaks, or naming no data directory."""


class ClickHouse(Protocol):
    """What Croupier needs from ClickHouse: statements, rows back, rows in."""

    def command(self, sql: str) -> None:
        """Run a statement that returns no rows (DDL, ALTER, INSERT ... SELECT)."""
        ...

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a SELECT and return its rows."""
        ...

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        """Insert rows, each holding one value per name in ``columns``, into ``table``."""
        ...

    def insert_raw(
        self,
        table: str,
        columns: Sequence[str],
        data: bytes,
        fmt: str,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Insert rows already encoded in ClickHouse format ``fmt`` (e.g. TabSeparated)."""
        ...

    def query_raw(self, sql: str, fmt: str, settings: dict[str, Any] | None = None) -> bytes:
        """Run a statement and return its result as ClickHouse formats it in ``fmt``."""
        ...

    def ping(self) -> bool:
        """True when the engine answers."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class ConnectClickHouse:
    """The contract over a clickhouse-connect client, of either transport (HTTP or chdb)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def command(self, sql: str) -> None:
        self._client.command(sql)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._client.query(sql).result_rows]

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        self._client.insert(table, rows, column_names=list(columns))

    def insert_raw(
        self,
        table: str,
        columns: Sequence[str],
        data: bytes,
        fmt: str,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self._client.raw_insert(table, list(columns), data, settings=settings, fmt=fmt)

    def query_raw(self, sql: str, fmt: str, settings: dict[str, Any] | None = None) -> bytes:
        return bytes(self._client.raw_query(sql, settings=settings, fmt=fmt))

    def ping(self) -> bool:
        return bool(self._client.ping())

    def close(self) -> None:
        self._client.close()


def connect(url: str, *, timeout: float | None = None) -> ClickHouse:
    """A ClickHouse for ``http(s)://[user[:password]@]host[:port][/database]`` or ``chdb://path``.

    ``chdb:///abs/path`` and ``chdb://relative/path`` open that data directory in this
    process; chdb lets only one process, and one directory per process, do that.
    ``timeout``: the longest an HTTP request waits for its answer, in seconds.
    """
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        return ConnectClickHouse(_http_client(parts, timeout))
    if parts.scheme == "chdb":
        path = unquote(parts.netloc + parts.path)
        if not path:
            msg = f"{url!r} names no data directory: use chdb:///absolute/path or chdb://relative"
            raise UnsupportedUrl(msg)
        client = clickhouse_connect.get_client(
            interface="chdb", path=os.path.abspath(path), tz_mode="aware"
        )
        return ConnectClickHouse(client)
    msg = f"unsupported ClickHouse URL {url!r}: use http://, https:// or chdb://"
    raise UnsupportedUrl(msg)


def _http_client(parts: SplitResult, timeout: float | None = None) -> Any:
    database = unquote(parts.path.strip("/")) or None
    secure = parts.scheme == "https"
    bounded: dict[str, Any] = {} if timeout is None else {"send_receive_timeout": timeout}
    return clickhouse_connect.get_client(
        **bounded,
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (8443 if secure else 8123),
        username=unquote(parts.username or "default"),
        password=unquote(parts.password or ""),
        database=database,
        secure=secure,
        # Croupier keeps no naive datetimes; UTC columns come back as aware values.
        tz_mode="aware",
        # Without a session one adapter may serve several threads: ClickHouse rejects
        # overlapping requests within one session, and Croupier needs no session state.
        autogenerate_session_id=False,
    )
