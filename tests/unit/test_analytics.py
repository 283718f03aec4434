"""The analytics sink without I/O: encoding, the DDL, and the batch-insert-commit loop.

The loop runs against a scripted consumer and writer: offsets are committed only after
their batch is inserted, a ClickHouse outage pauses the partitions and retries the same
batch, and revoked partitions leave the batch. (The mapping from audit records to rows is
SQL in the schema; tests/integration/test_analytics.py runs it on the real engine.)
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from config.settings import Settings
from croupier.analytics import AnalyticsSink
from croupier.sql import with_database
from sinks.base import SinkUnavailable
from sinks.clickhouse import schema
from sinks.clickhouse.sink import (
    AuditLogWriter,
    DeadLetter,
    Fetched,
    Refused,
    classify,
    dead_letter_row,
    encode,
    encode_row,
)

TOPIC = "t.audit"


class Msg:
    def __init__(self, partition: int, offset: int, value: bytes | None = b"{}") -> None:
        self._partition, self._offset, self._value = partition, offset, value

    def error(self) -> None:
        return None

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000 + self._offset)


class Consumer:
    """Hands out scripted messages; records pauses, resumes and commits."""

    def __init__(self, messages: list[Msg], partitions: Sequence[int] = (0, 1)) -> None:
        self.queue = deque(messages)
        self.partitions = list(partitions)
        self.paused: set[int] = set()
        self.commits: list[list[tuple[int, int]]] = []
        self.log: list[str] = []
        self.on_revoke: Callable[[Any, list[Any]], None] | None = None

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        assert topics == [TOPIC]
        self.on_revoke = callbacks["on_revoke"]

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        out: list[Msg] = []
        while self.queue and len(out) < num_messages:
            if self.queue[0].partition() in self.paused:
                break
            out.append(self.queue.popleft())
        self.log.append(f"consume {len(out)}")
        return out

    def poll(self, timeout: float) -> None:
        return None

    def assignment(self) -> list[Any]:
        from confluent_kafka import TopicPartition

        return [TopicPartition(TOPIC, p) for p in self.partitions]

    def pause(self, tps: list[Any]) -> None:
        self.paused |= {tp.partition for tp in tps}
        self.log.append("pause")

    def resume(self, tps: list[Any]) -> None:
        self.paused -= {tp.partition for tp in tps}
        self.log.append("resume")

    def commit(self, *, offsets: list[Any], asynchronous: bool) -> None:
        assert not asynchronous
        self.commits.append([(tp.partition, tp.offset) for tp in offsets])
        self.log.append("commit")

    def close(self) -> None:
        self.log.append("close")


class Writer(AuditLogWriter):
    """Fails ``failures`` times, then takes batches; stops the sink after ``stop_after`` rows."""

    def __init__(self, failures: int = 0, stop_after: int = 0) -> None:
        super().__init__("http://nowhere", "db")
        self.failures = failures
        self.stop_after = stop_after
        self.batches: list[list[tuple[int, int]]] = []
        self.attempts = 0
        self.stop: threading.Event | None = None
        self.consumer: Consumer | None = None

    def open(self) -> None:
        pass

    def write_encoded(self, data: bytes) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise SinkUnavailable("ClickHouse at http://nowhere: connection refused")
        rows = [line.split(b"\t")[:2] for line in data.splitlines()]
        if self.consumer is not None:
            self.consumer.log.append(f"insert {len(rows)}")
        self.batches.append([(int(p), int(o)) for p, o in rows])
        if self.stop is not None and sum(map(len, self.batches)) >= self.stop_after:
            self.stop.set()

    def close(self) -> None:
        pass


def sink_with(consumer: Consumer, writer: Writer, **overrides: Any) -> AnalyticsSink:
    values: dict[str, Any] = {
        "CROUPIER_TOPIC_PREFIX": "t.",
        "CROUPIER_ANALYTICS_BATCH_MAX": 4,
        "CROUPIER_ANALYTICS_BATCH_WAIT": 0.01,
        "CROUPIER_ANALYTICS_RETRY_MAX": 0.01,
        **overrides,
    }
    sink = AnalyticsSink(Settings(**values), writer=writer, consumer_factory=lambda conf: consumer)
    writer.stop = sink.stop
    writer.consumer = consumer
    return sink


def test_each_batch_is_inserted_whole_before_its_offsets_are_committed() -> None:
    messages = [Msg(p, o) for o in range(5) for p in (0, 1)]  # 10 records, interleaved
    consumer, writer = Consumer(messages), Writer(stop_after=10)
    stats = sink_with(consumer, writer).run()

    assert [len(b) for b in writer.batches] == [4, 4, 2]  # by count, then by time
    assert sorted(x for b in writer.batches for x in b) == sorted(
        (m.partition(), m.offset()) for m in messages
    )
    # The next offset of each partition, committed after the insert that holds it.
    assert consumer.commits == [[(0, 2), (1, 2)], [(0, 4), (1, 4)], [(0, 5), (1, 5)]]
    steps = [s for s in consumer.log if s.startswith(("insert", "commit"))]
    assert steps == ["insert 4", "commit", "insert 4", "commit", "insert 2", "commit"]
    assert stats.rows == 10 and stats.committed == {0: 5, 1: 5}


def test_clickhouse_away_pauses_the_partitions_and_retries_the_same_batch() -> None:
    messages = [Msg(0, o) for o in range(6)]
    consumer, writer = Consumer(messages), Writer(failures=3, stop_after=6)
    stats = sink_with(consumer, writer).run()

    assert writer.attempts == 3 + 2
    assert writer.batches == [[(0, 0), (0, 1), (0, 2), (0, 3)], [(0, 4), (0, 5)]]
    # Paused at the first failure, nothing consumed until the batch went in and committed.
    first = consumer.log.index("pause")
    after = consumer.log[first:]
    assert after[: after.index("insert 4") + 3] == ["pause", "insert 4", "commit", "resume"]
    assert consumer.commits[0] == [(0, 4)]
    assert stats.retries == 3 and not consumer.paused


def test_stopping_while_clickhouse_is_away_commits_nothing_and_ends() -> None:
    consumer, writer = Consumer([Msg(0, 0), Msg(0, 1)]), Writer(failures=1_000)
    sink = sink_with(consumer, writer)
    timer = threading.Timer(0.2, sink.stop.set)  # SIGTERM, say, mid-outage
    timer.start()
    stats = sink.run()
    timer.join()

    assert writer.batches == [] and consumer.commits == []
    assert stats.rows == 0 and writer.attempts >= 4
    assert consumer.log[-1] == "close"


def test_revoked_partitions_leave_the_waiting_batch_to_their_next_owner() -> None:
    consumer = Consumer([Msg(0, 0), Msg(1, 0), Msg(0, 1), Msg(1, 1)])
    writer = Writer(failures=1, stop_after=2)
    sink = sink_with(consumer, writer)

    def poll(timeout: float) -> None:
        # While ClickHouse is away, partition 1 moves to another consumer.
        if consumer.partitions == [0, 1]:
            assert consumer.on_revoke is not None
            consumer.on_revoke(consumer, [p for p in consumer.assignment() if p.partition == 1])
            consumer.partitions = [0]

    consumer.poll = poll  # type: ignore[method-assign]  # a scripted rebalance
    sink.run()

    assert writer.batches == [[(0, 0), (0, 1)]]
    assert consumer.commits == [[(0, 2)]]  # nothing committed for the revoked partition


def test_records_travel_as_tab_separated_rows_with_their_bytes_escaped() -> None:
    rows = [
        Fetched(2, 41, 1_700_000_000_007, b'{"a": "x\\"y"}'),
        Fetched(0, 7, 5, b"tab\there\nnew line \\ slash\r"),
    ]
    first, second = encode(rows).splitlines(keepends=True)
    assert first == b'2\t41\t1700000000007\t{"a": "x\\\\"y"}\n'
    assert second == b"0\t7\t5\ttab\\there\\nnew line \\\\ slash\\r\n"


def test_the_ddl_names_its_database_everywhere_and_is_idempotent() -> None:
    ddl = schema.statements("analytics_x")
    assert ddl[0] == "CREATE DATABASE IF NOT EXISTS analytics_x"
    for statement in ddl[1:]:
        assert statement.startswith(
            ("CREATE TABLE IF NOT EXISTS analytics_x.", "ALTER TABLE analytics_x.",
             "CREATE MATERIALIZED VIEW IF NOT EXISTS "
             "analytics_x.", "CREATE OR REPLACE VIEW analytics_x.")
        )  # fmt: skip
        assert "{db}" not in statement
        for name in re.findall(r"\b(?:FROM|(?<!ARRAY )JOIN)\s+(\S+)", statement):
            assert name.startswith(("analytics_x.", "(")), (name, statement)
    for table in schema.TABLES:
        assert f"CREATE TABLE IF NOT EXISTS analytics_x.{table} " in "\n".join(ddl)
    assert all("ReplacingMergeTree" in schema.TABLES[t] for t in schema.TABLES)


@pytest.mark.parametrize("name", ["", "1db", "a-b", "a;DROP", "db.x"])
def test_a_database_name_must_be_an_identifier(name: str) -> None:
    with pytest.raises(ValueError, match="must be letters"):
        schema.statements(name)


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("http://127.0.0.1:8123", "http://127.0.0.1:8123/croupier"),
        ("http://127.0.0.1:8123/", "http://127.0.0.1:8123/croupier"),
        ("https://u:p@ch.example:8443", "https://u:p@ch.example:8443/croupier"),
        ("http://127.0.0.1:8123/other", "http://127.0.0.1:8123/other"),  # the URL's own
        ("chdb:///var/lib/ch", "chdb:///var/lib/ch"),  # a data directory, not a database
    ],
)
def test_croupier_sql_defaults_to_the_analytics_database(url: str, want: str) -> None:
    assert with_database(url, "croupier") == want


class Refusing(Writer):
    """ClickHouse that refuses any insert holding a poisoned record, for its content."""

    def __init__(self, stop_after: int) -> None:
        super().__init__(stop_after=stop_after)
        self.letters: list[DeadLetter] = []
        self.inserts = 0

    def write_encoded(self, data: bytes) -> None:
        self.inserts += 1
        if b"poison" in data:
            raise Refused(395, "Code: 395. DB::Exception: a money value does not fit")
        super().write_encoded(data)

    def _answers(self) -> None:
        pass  # ClickHouse answers: the refusal is the row's

    def write_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        self.letters += letters
        if self.stop is not None and sum(map(len, self.batches)) + len(self.letters) >= (
            self.stop_after
        ):
            self.stop.set()


def test_a_refused_record_is_set_aside_and_the_rest_of_its_batch_goes_in() -> None:
    poisoned = {(0, 2), (1, 3)}
    messages = [Msg(p, o, b'{"poison"}' if (p, o) in poisoned else b"{}")
                for o in range(4) for p in (0, 1)]  # fmt: skip
    consumer, writer = Consumer(messages), Refusing(stop_after=8)
    stats = sink_with(consumer, writer, CROUPIER_ANALYTICS_BATCH_MAX=8).run()

    assert {(int(p), int(o)) for p, o, *_ in (x.row.split(b"\t") for x in writer.letters)} == (
        poisoned
    )
    assert all(x.code == 395 and "does not fit" in x.error for x in writer.letters)
    inserted = sorted(x for b in writer.batches for x in b)
    assert inserted == sorted({(m.partition(), m.offset()) for m in messages} - poisoned)
    # Split in halves until each refusal stood alone: far fewer inserts than records.
    assert writer.inserts <= 1 + 2 * 2 * 3
    assert consumer.commits == [[(0, 4), (1, 4)]] and stats.dead_lettered == 2
    assert "pause" not in consumer.log  # a refusal is not an outage: nothing waits


def test_refusals_and_outages_are_told_apart() -> None:
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    def answered(code: int, text: str = "boom") -> DatabaseError:
        return DatabaseError(f"HTTPDriver for http://x received ClickHouse error code {code}\n"
                             f" Code: {code}. DB::Exception: {text}. (X)")  # fmt: skip

    refused = classify(answered(395, "does not fit"))
    assert refused is not None and refused.code == 395 and str(refused).startswith("Code: 395")
    assert classify(answered(27, "Cannot parse input")) is not None
    assert classify(answered(252, "Too many partitions for single INSERT block")) is not None
    for busy in (241, 202, 159, 60, 81, 252):  # memory, too many queries, timeout, schema...
        assert classify(answered(busy, "Too many parts")) is None
    assert classify(OperationalError("connection refused")) is None
    assert classify(ValueError("not ClickHouse's")) is None


def test_a_dead_letter_row_keeps_the_bytes_and_where_they_were() -> None:
    row = encode_row(3, 41, 1_700_000_000_000, b'{"a":"tab\there\\\\"}')
    letter = DeadLetter(row, 395, "Code: 395.\nsecond line")
    assert dead_letter_row("t.audit", letter) == (
        b't.audit\t3\t41\t1700000000000\t{"a":"tab\\there\\\\\\\\"}'
        b"\t395\tCode: 395.\\nsecond line\n"
    )
