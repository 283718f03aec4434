"""The analytics sink's writer: audit records, as Kafka holds them, into ClickHouse.

A batch is written in one insert into ``<database>.audit_log``, each record's exact JSON
with where Kafka held it; the schema's materialized views map it to the typed tables
(``sinks/clickhouse/schema.py``). Rows go as TabSeparated text: the only per-record work
in Python is escaping, so the engine, not this process, sets the pace.

``write`` inserts the whole batch or raises ``SinkUnavailable``; the caller keeps the batch
and its offsets and tries again. A repeated batch (a retry after a lost answer, or a
redelivery after a crash) adds rows the tables' deduplication removes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sinks.base import SinkUnavailable
from sinks.clickhouse import schema
from sinks.clickhouse.client import ClickHouse, connect

log = logging.getLogger(__name__)

# A big insert runs its materialized views side by side, on every core; for a small one
# the threads cost more than they save.
_PARALLEL_FROM_BYTES = 4 * 1024 * 1024
_PARALLEL_VIEWS = {"parallel_view_processing": 1}


@dataclass(frozen=True, slots=True)
class Fetched:
    """One audit record as consumed: its Kafka partition, offset, timestamp and bytes."""

    partition: int
    offset: int
    timestamp_ms: int
    value: bytes


def encode_row(partition: int, offset: int, timestamp_ms: int, value: bytes) -> bytes:
    """One record as a TabSeparated row of ``schema.AUDIT_COLUMNS``."""
    # TabSeparated escapes backslash, tab, newline and carriage return. JSON text holds
    # none of the last three raw, but the bytes are passed through as they are.
    if b"\\" in value:
        value = value.replace(b"\\", b"\\\\")
    if b"\t" in value:
        value = value.replace(b"\t", b"\\t")
    if b"\n" in value:
        value = value.replace(b"\n", b"\\n")
    if b"\r" in value:
        value = value.replace(b"\r", b"\\r")
    return b"%d\t%d\t%d\t%s\n" % (partition, offset, timestamp_ms, value)


def encode(batch: Iterable[Fetched]) -> bytes:
    """Records as TabSeparated rows of ``schema.AUDIT_COLUMNS``."""
    return b"".join(encode_row(f.partition, f.offset, f.timestamp_ms, f.value) for f in batch)


class AuditLogWriter:
    """Inserts batches into one database's ``audit_log``; (re)connects and applies the
    schema on first use and after every failure."""

    def __init__(
        self, url: str, database: str, *, connector: Callable[[str], ClickHouse] = connect
    ) -> None:
        schema.statements(database)  # validates the name before anything runs
        self.url = url
        self.database = database
        self._connector = connector
        self._ch: ClickHouse | None = None

    def _ready(self) -> ClickHouse:
        if self._ch is None:
            ch = self._connector(self.url)
            try:
                schema.apply(ch, self.database)
            except BaseException:
                ch.close()
                raise
            self._ch = ch
        return self._ch

    def open(self) -> None:
        """Connect and apply the schema now; ``SinkUnavailable`` when ClickHouse is not there."""
        self._guard(lambda: self._ready())

    def write(self, batch: Sequence[Fetched]) -> None:
        """Insert ``batch`` whole, or raise ``SinkUnavailable``."""
        if batch:
            self.write_encoded(encode(batch))

    def write_encoded(self, data: bytes) -> None:
        """Insert rows already encoded (``encode_row``), or raise ``SinkUnavailable``."""
        if not data:
            return
        table = f"{self.database}.{schema.AUDIT_LOG}"
        settings = _PARALLEL_VIEWS if len(data) >= _PARALLEL_FROM_BYTES else None
        self._guard(
            lambda: self._ready().insert_raw(
                table, schema.AUDIT_COLUMNS, data, "TabSeparated", settings
            )
        )

    def _guard(self, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as exc:  # connection refused, timeouts, server errors alike
            self.close()
            msg = f"ClickHouse at {self.url}: {_first_line(exc)}"
            raise SinkUnavailable(msg) from exc

    def close(self) -> None:
        ch, self._ch = self._ch, None
        if ch is not None:
            try:
                ch.close()
            except Exception as exc:  # closing a broken connection may fail; it is gone
                log.debug("closing the ClickHouse client: %r", exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
