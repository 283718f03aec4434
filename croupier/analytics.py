"""The analytics sink process: the ``audit`` topic into ClickHouse, batch by batch.

``croupier analytics run`` consumes ``audit`` (every committed state change, exactly the
facts the ledger holds) with a confluent-kafka consumer in its own group
(``<app id>-analytics``), and repeats:

1. collect a batch: up to ``CROUPIER_ANALYTICS_BATCH_MAX`` records, or what arrived within
   ``CROUPIER_ANALYTICS_BATCH_WAIT`` seconds of the first;
2. insert it (``sinks.clickhouse.sink``; a record ClickHouse refuses is set aside);
3. only then commit the batch's offsets.

A record ClickHouse refuses for its content (a value that does not fit its column, say) is
set aside in the ``analytics_dead_letters`` table with ClickHouse's error and where Kafka
held it, and the rest of its batch goes in (``sinks.clickhouse.sink``): one bad record
never holds the sink back. When ClickHouse cannot take the batch (it is away, busy or out
of memory), the consumer pauses its partitions (it stays in its group, fetching nothing)
and retries the same batch, backing off up to ``CROUPIER_ANALYTICS_RETRY_MAX`` seconds,
until ClickHouse is back: nothing is lost, the offsets wait. A crash anywhere (SIGKILL
mid-batch) leaves the offsets at the last batch inserted; the restart inserts the rest
again, and the tables' deduplication removes what was in twice. Partitions revoked while
a batch waits leave it: their next owner reads them from the committed offsets.

One insert in flight (in a thread, while the next batch is consumed), so a slow
ClickHouse slows the consumer (backpressure) and the batches grow to the maximum, which
is what an insert-per-batch engine likes. ``croupier analytics wait`` waits until the
group has committed all of ``audit``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from config.kafka import librdkafka_conf
from config.priority import step_back
from config.settings import Settings
from croupier.redact import redact
from sinks.base import SinkUnavailable
from sinks.clickhouse.sink import AuditLogWriter, DeadLetter, encode_row
from streams import metrics

log = logging.getLogger("croupier.analytics")

MARKER = "croupier analytics run"  # in the process's command line (stack status, down)


@dataclass
class Stats:
    """What the sink did, for its log line and for tests and benchmarks."""

    rows: int = 0
    batches: int = 0
    retries: int = 0
    dead_lettered: int = 0  # records ClickHouse refused, set aside in analytics_dead_letters
    committed: dict[int, int] = field(default_factory=dict)  # partition -> next offset


class Batch:
    """Records consumed and not yet committed, encoded for the insert, with each
    partition's next offset."""

    def __init__(self) -> None:
        self.rows: list[bytes] = []
        self.partitions: list[int] = []
        self.next_offsets: dict[int, int] = {}
        self.oldest_ms: int | None = None
        self.started: float | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, partition: int, offset: int, timestamp_ms: int, value: bytes) -> None:
        if self.started is None:
            self.started = time.monotonic()
        self.rows.append(encode_row(partition, offset, timestamp_ms, value))
        self.partitions.append(partition)
        self.next_offsets[partition] = offset + 1
        if self.oldest_ms is None or timestamp_ms < self.oldest_ms:
            self.oldest_ms = timestamp_ms

    def add_message(self, msg: Any) -> None:
        _, ts = msg.timestamp()
        self.add(msg.partition(), msg.offset(), max(ts, 0), msg.value())

    def drop_partitions(self, partitions: set[int]) -> int:
        """Forget the records of ``partitions`` (revoked); how many were dropped."""
        if not partitions.intersection(self.next_offsets):
            return 0
        kept = [(r, p) for r, p in zip(self.rows, self.partitions, strict=True)
                if p not in partitions]  # fmt: skip
        dropped = len(self.rows) - len(kept)
        self.rows = [r for r, _ in kept]
        self.partitions = [p for _, p in kept]
        for p in partitions:
            self.next_offsets.pop(p, None)
        if not self.rows:
            self.started = None
        return dropped


@dataclass
class Inflight:
    """A batch being inserted, in the writer thread."""

    batch: Batch
    future: Future[list[DeadLetter]]
    started: float


class AnalyticsSink:
    """Consume ``audit``, insert batches into ClickHouse, commit after each insert.

    One insert runs in a thread while the next batch is collected, so consuming and
    inserting overlap; a batch's offsets are committed only after its insert, and in batch
    order (the next insert starts once the previous one is committed).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        writer: AuditLogWriter | None = None,
        consumer_factory: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = settings.topic("audit")
        self.writer = writer or AuditLogWriter(
            settings.clickhouse_url, settings.clickhouse_database, topic=self.topic
        )
        self._consumer_factory = consumer_factory or _confluent_consumer
        self.stop = threading.Event()
        self.stats = Stats()
        self._batch = Batch()
        self._inflight: Inflight | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._paused = False

    @property
    def group(self) -> str:
        return f"{self.settings.app_id}-analytics"

    def run(self) -> Stats:
        """Consume until ``stop`` is set; what is in hand is inserted first if it can be."""
        s = self.settings
        self._open_writer()
        consumer = self._consumer_factory(
            {
                **librdkafka_conf(s),
                "group.id": self.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # Big fetches: the consumer should never be what limits the sink.
                "fetch.max.bytes": 64 * 1024 * 1024,
                "max.partition.fetch.bytes": 8 * 1024 * 1024,
                "queued.max.messages.kbytes": 256 * 1024,
                "session.timeout.ms": int(s.session_timeout * 1000),
            }
        )
        consumer.subscribe([self.topic], on_revoke=self._on_revoke, on_lost=self._on_revoke)
        metrics.add_check("analytics.consuming", lambda: not self.stop.is_set())
        log.info("analytics sink: consuming %s into %s (database %s), group %s", self.topic,
                 redact(s.clickhouse_url), s.clickhouse_database, self.group)  # fmt: skip
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="analytics-insert")
        try:
            while not self.stop.is_set():
                self._collect(consumer)
                inflight = self._inflight
                if inflight is not None and inflight.future.done():
                    self._settle(consumer)
                if self._batch and (self._full() or self._waited()):
                    self._settle(consumer)  # the previous insert first: offsets in order
                    if not self.stop.is_set():
                        self._launch()
            # Stopping: finish what is in hand if ClickHouse takes it soon.
            self._settle(consumer, give_up=True)
            if self._batch:
                self._launch()
                self._settle(consumer, give_up=True)
        finally:
            self._pool.shutdown(wait=True)
            consumer.close()
            self.writer.close()
        return self.stats

    # -- steps ------------------------------------------------------------------------------

    def _open_writer(self) -> None:
        delay = 0.2
        while not self.stop.is_set():
            try:
                self.writer.open()
                return
            except SinkUnavailable as exc:
                log.warning("analytics sink: waiting for ClickHouse: %s", exc)
                self.stop.wait(delay)
                delay = min(delay * 2, self.settings.analytics_retry_max)

    def _full(self) -> bool:
        return len(self._batch) >= self.settings.analytics_batch_max

    def _waited(self) -> bool:
        started = self._batch.started
        return started is not None and (
            time.monotonic() - started >= self.settings.analytics_batch_wait
        )

    def _collect(self, consumer: Any) -> None:
        """Consume what fits in the batch, waiting at most what is left of its time."""
        s = self.settings
        started = self._batch.started
        wait = s.analytics_batch_wait if started is None else max(
            0.0, s.analytics_batch_wait - (time.monotonic() - started))  # fmt: skip
        inflight = self._inflight
        if inflight is not None:
            # Come back when the insert ends, to commit it and start the next one.
            wait = min(wait, 0.02)
        room = s.analytics_batch_max - len(self._batch)
        if room <= 0:
            return
        batch = self._batch
        for msg in consumer.consume(num_messages=min(room, 100_000), timeout=wait):
            if msg.error() is not None:
                log.warning("analytics sink: consumer error: %s", msg.error())
            elif msg.value() is not None:  # the audit topic has no tombstones; skip any
                batch.add_message(msg)

    def _launch(self) -> None:
        """Start inserting the batch in hand; a new one collects meanwhile."""
        assert self._pool is not None and self._inflight is None
        batch, self._batch = self._batch, Batch()
        future = self._pool.submit(self.writer.write_rows, batch.rows)
        self._inflight = Inflight(batch, future, time.monotonic())

    def _settle(self, consumer: Any, *, give_up: bool = False) -> None:
        """Wait for the insert in flight; commit it, or, when ClickHouse could not take it,
        pause the partitions and retry it until it can (a few times only when ``give_up`` or
        stopping: what is not inserted is read again on the next start)."""
        delay = 0.2
        attempts = 0
        while (inflight := self._inflight) is not None:
            try:
                inflight.future.result()
            except SinkUnavailable as exc:
                self.stats.retries += 1
                attempts += 1
                if not self._paused:
                    self._paused = True
                    consumer.pause(list(consumer.assignment()))
                    log.warning("analytics sink: paused, %d record(s) wait: %s",
                                len(inflight.batch), exc)  # fmt: skip
                if (give_up or self.stop.is_set()) and attempts > 3:
                    log.warning("analytics sink: stopping with %d record(s) not inserted; the "
                                "next start reads them again", len(inflight.batch))  # fmt: skip
                    self._inflight = None
                    return
                self._idle(consumer, delay)
                delay = min(delay * 2, self.settings.analytics_retry_max)
                if self._inflight is inflight:  # not dropped by a rebalance meanwhile
                    assert self._pool is not None
                    inflight.future = self._pool.submit(self.writer.write_rows, inflight.batch.rows)
                continue
            self._inflight = None
            self._commit(consumer, inflight)
        if self._paused:
            self._paused = False
            # Whatever is assigned now, including partitions assigned during the pause.
            consumer.resume(list(consumer.assignment()))
            log.info("analytics sink: resumed")

    def _idle(self, consumer: Any, seconds: float) -> None:
        """Wait, serving the group (heartbeats, rebalances) without fetching: paused."""
        deadline = time.monotonic() + seconds
        while (
            (left := deadline - time.monotonic()) > 0
            and self._inflight is not None
            and not self.stop.is_set()
        ):
            msg = consumer.poll(min(left, 0.5))
            if msg is not None and msg.error() is None and msg.value() is not None:
                # A partition assigned during the pause is not paused: keep what it gave.
                self._batch.add_message(msg)
                consumer.pause([_partition(self.topic, msg.partition())])

    def _commit(self, consumer: Any, inflight: Inflight) -> None:
        from confluent_kafka import KafkaException

        batch = inflight.batch
        letters = inflight.future.result()
        if letters:
            self.stats.dead_lettered += len(letters)
            metrics.count_dead_letters((self.topic, "processing_error") for _ in letters)
        offsets = [_partition(self.topic, p, o) for p, o in sorted(batch.next_offsets.items())]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The rows are in; the next owner of these partitions inserts them again, and
            # deduplication removes the repeat.
            log.warning("analytics sink: commit failed (rows are inserted): %s", exc)
        else:
            self.stats.committed.update(batch.next_offsets)
        self.stats.rows += len(batch)
        self.stats.batches += 1
        metrics.observe_sink("clickhouse", time.monotonic() - inflight.started, len(batch))
        oldest = (time.time() * 1000 - (batch.oldest_ms or 0)) / 1000
        log.info("analytics sink: inserted %d record(s) in %.3f s; oldest %.3f s old",
                 len(batch), time.monotonic() - inflight.started, oldest)  # fmt: skip

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        """Partitions leave: settle the insert in flight while they are still ours, and
        leave what is not inserted of theirs to their next owner."""
        revoked = {tp.partition for tp in partitions}
        inflight = self._inflight
        if inflight is not None:
            try:
                inflight.future.result()
            except SinkUnavailable:
                inflight.batch.drop_partitions(revoked)
                if not inflight.batch:
                    self._inflight = None
            else:
                self._inflight = None
                self._commit(consumer, inflight)
        dropped = self._batch.drop_partitions(revoked)
        if dropped:
            log.info("analytics sink: %d uncommitted record(s) of revoked partitions left "
                     "to their next owner", dropped)  # fmt: skip


def lag(settings: Settings) -> int:
    """Records on ``audit`` the analytics group has not committed yet (all of them before it
    commits anything)."""
    from confluent_kafka import Consumer

    group = f"{settings.app_id}-analytics"
    consumer = Consumer({**librdkafka_conf(settings),
                         "group.id": group, "enable.auto.commit": False})  # fmt: skip
    try:
        topic = settings.topic("audit")
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            return 0  # no audit topic: nothing to wait for
        tps = [_partition(topic, p) for p in sorted(meta.partitions)]
        behind = 0
        for tp in consumer.committed(tps, timeout=10):
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            behind += high - (tp.offset if tp.offset >= 0 else low)
        return behind
    finally:
        consumer.close()


def _watch_lag(settings: Settings, every: float = 5.0) -> None:
    """Keep ``croupier_analytics_lag_messages`` current (a daemon thread of the sink)."""
    while True:
        try:
            metrics.ANALYTICS_LAG.set(lag(settings))
        except Exception as exc:  # Kafka away: the gauge keeps its last value
            log.warning("analytics lag not measured: %s", exc)
        time.sleep(every)


def wait_caught_up(settings: Settings, *, timeout: float, settle: float = 1.0) -> bool:
    """Wait until the sink has committed all of ``audit`` and nothing new came for
    ``settle`` seconds (the relay publishes every ``CROUPIER_AUDIT_RELAY_INTERVAL``)."""
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        if lag(settings) == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= settle:
                return True
        else:
            quiet_since = None
        time.sleep(0.2)
    return False


def _partition(topic: str, partition: int, offset: int | None = None) -> Any:
    from confluent_kafka import TopicPartition

    if offset is None:
        return TopicPartition(topic, partition)
    return TopicPartition(topic, partition, offset)


def _confluent_consumer(conf: dict[str, Any]) -> Any:
    from confluent_kafka import Consumer

    return Consumer(conf)


def run(settings: Settings) -> int:
    """``croupier analytics run``: the sink in the foreground until SIGTERM or SIGINT."""
    from config import logs

    logs.setup()
    step_back(settings.background_nice, what="analytics sink")
    # The sink says when ClickHouse is away, once; the HTTP stack would say it every retry.
    for noisy in ("urllib3.connectionpool", "clickhouse_connect.driver._backend.http_sync"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    metrics.serve(settings.metrics_port, "analytics", settings.metrics_bind)
    if settings.metrics_port > 0:
        threading.Thread(target=_watch_lag, args=(settings,), name="analytics-lag",
                         daemon=True).start()  # fmt: skip
    sink = AnalyticsSink(settings)

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("analytics sink: stopping (signal %d)", signum)
        sink.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stats = sink.run()
    log.info("analytics sink: stopped after %d record(s) in %d batch(es)", stats.rows,
             stats.batches)  # fmt: skip
    return 0
