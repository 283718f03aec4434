"""The analytics sink's writer: audit records, as Kafka holds them, into ClickHouse.

A batch is written in one insert into ``<database>.audit_log``, each record's exact JSON
with where Kafka held it; the schema's materialized views map it to the typed tables
(``sinks/clickhouse/schema.py``). Rows go as TabSeparated text: the only per-record work
in Python is escaping, so the engine, not this process, sets the pace.

``write_rows`` inserts a batch, or raises ``SinkUnavailable`` when ClickHouse is away (or
busy, or out of memory: ``AVAILABILITY_CODES``); the caller keeps the batch and its offsets
and tries again. When ClickHouse refuses the batch for anything else, the refusal is
about some record's content, and trying again would fail again for ever: the batch is
split in halves, and halves again, until each refused record stands alone; those go to
``analytics_dead_letters`` with ClickHouse's error, and the rest are inserted. A repeated
batch (a retry after a lost answer, or a redelivery after a crash) adds rows the tables'
deduplication removes, dead letters included.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from sinks.base import SinkUnavailable
from sinks.clickhouse import schema
from sinks.clickhouse.client import ClickHouse, UnsupportedUrl, connect

log = logging.getLogger(__name__)

# A big insert runs its materialized views side by side, on every core; for a small one
# the threads cost more than they save.
_PARALLEL_FROM_BYTES = 4 * 1024 * 1024
_PARALLEL_VIEWS = {"parallel_view_processing": 1}


# ClickHouse's codes for "not now" rather than "not this": the server is busy, short of
# memory or disk, read-only, shutting down, or the schema is missing (applied again on the
# next connection). Every other code ClickHouse answers an insert with is about its data.
AVAILABILITY_CODES = frozenset({
    3, 32, 60, 81, 159, 160, 164, 202, 203, 209, 210, 236, 241, 242, 243, 285, 319, 341, 373,
    394, 425, 439, 497, 516, 999, 1000,
})  # fmt: skip
TOO_MANY_PARTS = 252  # too many parts (merges behind: wait) or partitions in one insert (split)
_CODE = re.compile(r"(?:error code |Code: )(\d+)")


class Refused(Exception):
    """ClickHouse answered an insert with an error about the rows, not its availability."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An encoded row ClickHouse refused on its own, and why."""

    row: bytes
    code: int
    error: str


@dataclass(frozen=True, slots=True)
class Fetched:
    """One audit record as consumed: its Kafka partition, offset, timestamp and bytes."""

    partition: int
    offset: int
    timestamp_ms: int
    value: bytes


def escape(value: bytes) -> bytes:
    """``value`` as a TabSeparated field: backslash, tab, newline and return escaped."""
    # JSON text holds none of the last three raw, but the bytes are passed through as
    # they are.
    if b"\\" in value:
        value = value.replace(b"\\", b"\\\\")
    if b"\t" in value:
        value = value.replace(b"\t", b"\\t")
    if b"\n" in value:
        value = value.replace(b"\n", b"\\n")
    if b"\r" in value:
        value = value.replace(b"\r", b"\\r")
    return value


def encode_row(partition: int, offset: int, timestamp_ms: int, value: bytes) -> bytes:
    """One record as a TabSeparated row of ``schema.AUDIT_COLUMNS``."""
    return b"%d\t%d\t%d\t%s\n" % (partition, offset, timestamp_ms, escape(value))


def dead_letter_row(topic: str, letter: DeadLetter) -> bytes:
    """A refused row as a TabSeparated row of ``schema.DEAD_LETTER_COLUMNS``."""
    error = escape(letter.error.encode(errors="replace"))
    return b"%s\t%s\t%d\t%s\n" % (escape(topic.encode()), letter.row[:-1], letter.code, error)


def classify(exc: Exception) -> Refused | None:
    """A ``Refused`` when ClickHouse answered with an error about the data; None otherwise."""
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    if isinstance(exc, OperationalError) or not isinstance(exc, DatabaseError):
        return None  # no answer, or not ClickHouse's: the transport, the driver
    text = str(exc)
    found = _CODE.search(text)
    if found is None:
        return None
    code = int(found.group(1))
    if code in AVAILABILITY_CODES or (code == TOO_MANY_PARTS and "partitions" not in text):
        return None
    start = text.find("Code: ")
    return Refused(code, (text[start:] if start >= 0 else text).strip()[:2000])


def encode(batch: Iterable[Fetched]) -> bytes:
    """Records as TabSeparated rows of ``schema.AUDIT_COLUMNS``."""
    return b"".join(encode_row(f.partition, f.offset, f.timestamp_ms, f.value) for f in batch)


class AuditLogWriter:
    """Inserts batches into one database's ``audit_log``; (re)connects and applies the
    schema on first use and after every failure."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        connector: Callable[[str], ClickHouse] = connect,
        topic: str = "audit",
    ) -> None:
        schema.statements(database)  # validates the name before anything runs
        self.url = url
        self.database = database
        self.topic = topic  # where the rows came from, for the dead letters
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

    def write(self, batch: Sequence[Fetched]) -> list[DeadLetter]:
        """Insert ``batch``, dead-lettering what ClickHouse refuses (``write_rows``)."""
        return self.write_rows([encode_row(f.partition, f.offset, f.timestamp_ms, f.value)
                                for f in batch])  # fmt: skip

    def write_rows(self, rows: Sequence[bytes]) -> list[DeadLetter]:
        """Insert encoded rows (``encode_row``): those ClickHouse refuses for their content go
        to ``analytics_dead_letters`` and are returned; ``SinkUnavailable`` when it is away."""
        letters: list[DeadLetter] = []
        self._insert_or_split(rows, letters)
        if letters:
            self.write_dead_letters(letters)
        return letters

    def _insert_or_split(self, rows: Sequence[bytes], letters: list[DeadLetter]) -> None:
        try:
            self.write_encoded(b"".join(rows))
        except Refused as exc:
            if len(rows) > 1:
                half = len(rows) // 2
                self._insert_or_split(rows[:half], letters)
                self._insert_or_split(rows[half:], letters)
                return
            # One row alone, refused: unless ClickHouse has just gone away, it is the row.
            self._guard(self._answers, refusable=False)
            log.warning("analytics sink: ClickHouse refused the record at %s (code %d), set "
                        "aside in %s: %s", _position(rows[0]), exc.code, schema.DEAD_LETTERS,
                        _first_line(exc))  # fmt: skip
            letters.append(DeadLetter(rows[0], exc.code, str(exc)))

    def _answers(self) -> None:
        if not self._ready().ping():
            msg = "no answer to a ping"
            raise ConnectionError(msg)

    def write_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Store refused rows in ``analytics_dead_letters``, or raise ``SinkUnavailable``."""
        data = b"".join(dead_letter_row(self.topic, letter) for letter in letters)
        table = f"{self.database}.{schema.DEAD_LETTERS}"
        self._guard(
            lambda: self._ready().insert_raw(
                table, schema.DEAD_LETTER_COLUMNS, data, "TabSeparated", None
            ),
            refusable=False,
        )

    def write_encoded(self, data: bytes) -> None:
        """Insert rows already encoded (``encode_row``) whole; ``Refused`` when ClickHouse
        refuses them for their content, ``SinkUnavailable`` when it is away."""
        if not data:
            return
        table = f"{self.database}.{schema.AUDIT_LOG}"
        settings = _PARALLEL_VIEWS if len(data) >= _PARALLEL_FROM_BYTES else None
        self._guard(
            lambda: self._ready().insert_raw(
                table, schema.AUDIT_COLUMNS, data, "TabSeparated", settings
            )
        )

    def _guard(self, action: Callable[[], object], *, refusable: bool = True) -> None:
        try:
            action()
        except UnsupportedUrl:
            raise  # a setting to fix, not a server to wait for
        except Exception as exc:
            refused = classify(exc) if refusable else None
            if refused is not None:
                raise refused from exc  # the connection is fine: it answered
            self.close()  # connection refused, timeouts, a busy server alike
            msg = f"ClickHouse at {_redact(self.url)}: {_first_line(exc)}"
            raise SinkUnavailable(msg) from exc

    def close(self) -> None:
        ch, self._ch = self._ch, None
        if ch is not None:
            try:
                ch.close()
            except Exception as exc:  # closing a broken connection may fail; it is gone
                log.debug("closing the ClickHouse client: %r", exc)


def _position(row: bytes) -> str:
    partition, offset, _ = row.split(b"\t", 2)
    return f"partition {partition.decode()} offset {offset.decode()}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


def _redact(url: str) -> str:
    """``url`` without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
