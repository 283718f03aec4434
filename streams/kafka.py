"""A flow's Kafka ends: the consumer it reads batches from and the producer it answers with.

Both are librdkafka (confluent-kafka): fetching, decompression, batching and delivery run
in C threads, so a message costs the worker's event loop a few microseconds instead of
the ~100 µs Faust's consumer and aiokafka's producer spent on each (BENCHMARKS.md,
issue 16). The global tables are views read the same way (``streams/view.py``); Faust
keeps the timers and the worker's lifecycle.

Where a flow resumes is Kafka's committed offset of its own consumer group, committed
only after a batch is done: stored in PostgreSQL, its outputs published and flushed
(``streams/flow.py``). librdkafka hands a partition's messages over in order without
skipping one, so nothing can be passed over: no repair is needed. A crash after the
commit in PostgreSQL and before the offset commit replays the batch, whose outputs the
idempotent stores give back byte for byte. A partition the group has never committed
starts at the beginning, unless the Faust consumer that flows ran on before (group
``CROUPIER_APP_ID``) committed it: then at the lower of that commit and PostgreSQL's
``consumer_progress`` (``faust_resume_point``). Both were written only once a batch was
published, so a deployment moving over neither skips nor replays much. PostgreSQL's
progress alone is not enough: it is now written before the outputs are published.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_INVALID,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from config.kafka import librdkafka_conf, make_producer
from config.settings import Settings
from schemas.records import SourcePosition

log = logging.getLogger(__name__)

Records = Iterable[tuple[bytes | None, bytes]]  # (key, value) to publish
StartAt = Callable[[str, list[int]], dict[int, int]]  # topic, partitions -> next offsets
IDLE_WAIT = 1.0  # seconds an idle flow waits for a message before it looks up again


@dataclass(frozen=True, slots=True)
class Message:
    """One consumed record: where it was, and its bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int = 0  # the record's Kafka timestamp (0: none), for decision latency

    @property
    def position(self) -> SourcePosition:
        return SourcePosition(topic=self.topic, partition=self.partition, offset=self.offset)


class Source:
    """One topic read in batches by one member of a consumer group.

    Every call runs on the source's own thread: librdkafka waits there with the GIL
    released, and its rebalance callbacks run there too, between two batches, never under
    one. ``start_at`` says where a partition without a committed offset starts.
    """

    def __init__(self, settings: Settings, *, group: str, topic: str, start_at: StartAt) -> None:
        self.topic = topic
        self.group = group
        self._start_at = start_at
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=group)
        session_ms = int(settings.session_timeout * 1000)
        self._consumer = Consumer({
            **librdkafka_conf(settings),
            "group.id": group,
            # Which worker holds what, for operators: its name (`worker --name`) and pid.
            "client.id": f"{group}@{settings.worker_name or ''}/{os.getpid()}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # A SIGKILLed worker never leaves its group; the broker notices after this long.
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": min(3000, session_ms // 3),
            "enable.partition.eof": False,
            "on_commit": self._committed,
        })  # fmt: skip
        self.assigned: set[int] = set()
        self.done: dict[int, int] = {}  # partition -> the next offset to process
        self._closing = False

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def start(self) -> None:
        await self._call(self._consumer.subscribe, [self.topic], self._on_assign, self._on_revoke)

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        if self._closing:
            # An assignment that lands while the source leaves its group (a stop during a
            # rebalance) is never read: asking where to start could wait 30 s per flow on
            # a consumer that is being destroyed, and hold the stop past its deadline.
            consumer.assign(partitions)
            log.info("%s: assigned while leaving; nothing read", self.group)
            return
        try:
            committed = consumer.committed(partitions, timeout=30)
            fresh = [tp.partition for tp in committed if tp.offset == OFFSET_INVALID]
            known = self._start_at(self.topic, fresh) if fresh else {}
        except Exception as exc:  # a service away: never skip, at worst answer again
            log.warning("%s: where to start not known (%r); committed offsets, else the "
                        "beginning", self.group, exc)  # fmt: skip
            committed, known = partitions, {}
        for tp in committed:
            if tp.offset == OFFSET_INVALID and tp.partition in known:
                tp.offset = known[tp.partition]
        consumer.assign(committed)
        self.assigned = {tp.partition for tp in committed}
        log.info("%s: assigned %s", self.group,
                 {tp.partition: tp.offset for tp in committed})  # fmt: skip

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._commit_done(consumer, partitions)
        consumer.unassign()
        self.assigned = set()
        log.info("%s: revoked %s", self.group, sorted(tp.partition for tp in partitions))

    async def batch(self, most: int, within: float, idle: float = IDLE_WAIT) -> list[Message]:
        """Up to ``most`` messages: the first as soon as it comes (or none after ``idle``
        seconds), then as many more as come within ``within`` seconds."""
        raw = await self._call(self._take, most, within, idle)
        out = []
        for m in raw:
            error = m.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                log.warning("%s: %s", self.group, error)  # the client retries on its own
                continue
            kind, at = m.timestamp()
            out.append(Message(m.topic(), m.partition(), m.offset(), m.key(), m.value() or b"",
                               at if kind != TIMESTAMP_NOT_AVAILABLE else 0))  # fmt: skip
        return out

    def _take(self, most: int, within: float, idle: float) -> list[Any]:
        # One wait that ends with the first message, so an idle flow wakes once a second,
        # not every ``within``; then the batch fills for at most ``within``.
        first = self._consumer.poll(idle)
        if first is None:
            return []
        return [first, *self._consumer.consume(most - 1, within)] if most > 1 else [first]

    def commit(self, done: dict[int, int]) -> None:
        """Commit ``done`` (partition -> next offset) in the background: the next batch does
        not wait for the broker. A commit that fails or is lost to a crash only replays
        more; ``close`` waits for those under way."""
        if done:
            self.done.update(done)
            offsets = [TopicPartition(self.topic, p, o) for p, o in done.items()]
            try:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            except KafkaException as exc:  # e.g. no longer a member of the group
                log.info("%s: offsets not committed (%s); those messages replay", self.group, exc)

    def _committed(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None:  # e.g. the partitions moved in a rebalance
            log.info("%s: offsets not committed (%s); those messages replay", self.group, err)

    async def lags(self) -> dict[int, int]:
        """Per assigned partition, the end minus the consumer's position (from the last fetch)."""
        lags: dict[int, int] = await self._call(self._lags)
        return lags

    def _lags(self) -> dict[int, int]:
        parts = [TopicPartition(self.topic, p) for p in sorted(self.assigned)]
        if not parts:
            return {}
        out = {}
        for tp in self._consumer.position(parts):
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0 and tp.offset >= 0:
                out[tp.partition] = high - tp.offset
        return out

    def _commit_done(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Commit, and wait for, what is done of ``partitions`` (they are about to go)."""
        done = [TopicPartition(self.topic, tp.partition, self.done[tp.partition])
                for tp in partitions if tp.partition in self.done]  # fmt: skip
        for tp in partitions:
            self.done.pop(tp.partition, None)
        if done:
            try:
                consumer.commit(offsets=done, asynchronous=False)
            except KafkaException as exc:
                log.info("%s: offsets not committed (%s); those messages replay", self.group, exc)

    def _close(self) -> None:
        parts = [TopicPartition(self.topic, p) for p in sorted(self.assigned)]
        self._commit_done(self._consumer, parts)
        self._consumer.close()

    async def close(self) -> None:
        """Commit what is done and leave the group (its partitions move at once, not after
        the session timeout)."""
        self._closing = True
        try:
            await self._call(self._close)
        finally:
            self._thread.shutdown(wait=False)


def committed_offsets(
    settings: Settings, group: str, topic: str, partitions: list[int]
) -> dict[int, int]:
    """What ``group`` committed for ``topic``'s partitions, asked through a consumer that
    never joins it (blocking)."""
    reader = Consumer({**librdkafka_conf(settings), "group.id": group,
                       "enable.auto.commit": False})  # fmt: skip
    try:
        asked = [TopicPartition(topic, p) for p in partitions]
        return {tp.partition: tp.offset for tp in reader.committed(asked, timeout=30)
                if tp.offset >= 0}  # fmt: skip
    finally:
        reader.close()


def faust_resume_point(committed: dict[int, int], done: dict[int, int]) -> dict[int, int]:
    """Where partitions left by the Faust consumer resume: the lower of its committed offset
    (which it was seen to move past unprocessed messages) and PostgreSQL's progress (which
    it wrote after publishing); a partition missing either starts at the beginning."""
    return {p: min(c, done[p]) for p, c in committed.items() if p in done}


class Sender:
    """A flow's producer: records queued in librdkafka, then ``flush`` until Kafka has all.

    Idempotent, acks from every in-sync replica, keys partitioned by murmur2 as Java
    clients and Faust do. A record Kafka refuses fails ``flush``, so the batch is not
    done and its offsets are not committed.
    """

    def __init__(self, settings: Settings) -> None:
        self._producer = make_producer(settings, **{"linger.ms": 1})
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sender")
        self._errors: list[KafkaError] = []

    def _delivered(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._errors.append(err)

    def publish(self, topic: str, records: Records) -> int:
        """Queue ``records`` for ``topic``; how many."""
        n = 0
        produce = self._producer.produce
        for key, value in records:
            while True:
                try:
                    produce(topic, value, key, on_delivery=self._delivered)
                    break
                except BufferError:  # librdkafka's queue is full: let it drain a little
                    self._producer.poll(0.05)
            n += 1
        return n

    async def flush(self) -> None:
        """Wait until Kafka acknowledged every queued record; raise if it refused one."""
        left = await asyncio.get_running_loop().run_in_executor(
            self._thread, self._producer.flush, 30.0
        )
        errors, self._errors = self._errors, []
        if errors:
            raise KafkaException(errors[0])
        if left:
            msg = f"{left} records not acknowledged by Kafka within 30 s"
            raise TimeoutError(msg)

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            self._thread.shutdown(wait=False)
