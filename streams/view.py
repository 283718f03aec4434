"""A global view: a compacted changelog topic that every worker reads whole, held in memory.

The odds and feed-health tables are global (``streams/odds.py`` says why): every worker
needs every event's book, whichever partition priced it. Each is a compacted, one-partition
changelog topic (``<app id>-<table>-changelog``, the name and the record format Faust's
``GlobalTable`` used, so a worker upgraded in place finds its tables where they were):
the key is the table key as a JSON string, the value the JSON object.

A ``GlobalView`` reads its changelog with librdkafka on a thread of its own: at start,
from the beginning to the end, before any flow that reads it decides anything (``ready``);
then it follows the topic for as long as the worker runs. Fetching and decompressing run
in librdkafka's C threads, so a change costs the worker one ``json.loads``; Faust's
``GlobalTable`` cost ~2.8 ms of CPU per odds change (its aiokafka producer and consumer
thread, BENCHMARKS.md).

Writes. The flow that owns a key (the partition owner: one writer per key) sets it here
and publishes the change with the rest of its batch's outputs, so the change is in Kafka
before the batch's offsets are committed. The value is visible to this worker at once.
Until the reader meets that very record in the changelog, it skips older records of the
key, so a change this worker made never goes back to what it replaced while its own
record is on the way (a regression Faust's table allowed, for a few milliseconds).

Fresh enough to decide on. Every worker applies every other worker's changes a few
milliseconds after they are published, but that delay has no bound of its own: a view
starved of CPU, or a changelog it is slow to fetch, would price bets on odds that another
worker has already replaced, or on a market it has already stopped. So a flow that decides
on views (the bets flow) first asks the broker where their changelogs end and waits until
its views have applied that much (``catch_up``: one request for all of them, then no wait
at all when the view is there, as it almost always is). A bet is then decided against
every change, from any worker, that was in Kafka when its batch began: what one worker
deciding alone would see. A view that cannot get there in ``CATCH_UP_SECONDS`` holds the
batch as a service away would (``streams/batching.py``): nothing is decided on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import time
import uuid
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from config.kafka import librdkafka_conf
from config.settings import Settings
from sinks.base import SinkUnavailable
from streams.batching import EXIT_BATCH_FAILED, die

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2  # how long the reader waits for a change before it looks up again
START_SECONDS = 120.0  # how long a start may take to read the changelog to its end
CATCH_UP_SECONDS = 10.0  # how long a batch waits for its views to reach their changelogs' ends


class Readable(Protocol):
    """What reads a global table: a ``GlobalView``, or a plain dict in a harness."""

    def get(self, key: str, /) -> dict[str, Any] | None: ...


def encode_key(key: str) -> bytes:
    return json.dumps(key).encode()


def encode_value(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class ViewState:
    """The view's contents and its writer's pending changes (no Kafka: tested alone)."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}
        # key -> the bytes this worker wrote last and has not read back yet
        self.pending: dict[str, bytes] = {}
        self.unpublished: list[tuple[bytes, bytes]] = []
        self.lock = threading.Lock()

    def set(self, key: str, value: dict[str, Any]) -> None:
        raw = encode_value(value)
        with self.lock:
            self.data[key] = value
            self.pending[key] = raw
            self.unpublished.append((encode_key(key), raw))

    def apply(self, key_raw: bytes | None, value_raw: bytes | None) -> None:
        """One changelog record, read in order."""
        if key_raw is None:
            return
        try:
            key = json.loads(key_raw)
            value = None if value_raw is None else json.loads(value_raw)
        except ValueError:
            log.warning("changelog record with a key or value that is not JSON: skipped")
            return
        if not isinstance(key, str) or not (value is None or isinstance(value, dict)):
            log.warning("changelog record of an unexpected shape: skipped")
            return
        with self.lock:
            mine = self.pending.get(key)
            if mine is not None:
                if value_raw != mine:
                    return  # older than what this worker wrote: its record is on the way
                del self.pending[key]
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value

    def take(self) -> list[tuple[bytes, bytes]]:
        with self.lock:
            out, self.unpublished = self.unpublished, []
        return out


class GlobalView:
    """A table every worker holds whole, read from its compacted changelog topic."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings, self.topic = settings, topic
        self.state = ViewState()
        self.ready = asyncio.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None
        self._users = 0
        self._starting: asyncio.Lock | None = None
        self.applied = 0  # the next changelog offset to apply: all before it are applied

    # -- the table ---------------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        return self.state.data.get(key)

    def __setitem__(self, key: str, value: dict[str, Any]) -> None:
        self.state.set(key, value)

    def items(self) -> list[tuple[str, dict[str, Any]]]:
        with self.state.lock:
            return list(self.state.data.items())

    def __len__(self) -> int:
        return len(self.state.data)

    def changes(self) -> list[tuple[bytes, bytes]]:
        """The records of the changes set since the last call, to publish on ``topic``."""
        return self.state.take()

    # -- the reader --------------------------------------------------------------------

    async def acquire(self) -> None:
        """Be ready for one more user (a flow): the first starts the view."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._users == 0 and not self.ready.is_set():
                await self.start()
            self._users += 1

    async def release(self) -> None:
        """One user fewer; the last stops the view."""
        self._users -= 1
        if self._users == 0:
            await self.stop()

    async def start(self) -> None:
        """Read the changelog to its end, then follow it on a thread of the view's own."""
        loop = asyncio.get_running_loop()
        started = threading.Event()

        def run() -> None:
            try:
                self._read(started)
            except BaseException as exc:
                if not started.is_set():  # reported to the waiting start
                    self._failed = exc
                    started.set()
                    return
                # Behind the changelog for good, the view would price bets on stale odds.
                log.exception("%s: the view stopped following its changelog", self.topic)
                die(EXIT_BATCH_FAILED, f"{self.topic}: the view stopped following its changelog")

        self._thread = threading.Thread(target=run, name=f"view:{self.topic}", daemon=True)
        self._thread.start()
        await loop.run_in_executor(None, started.wait)
        if self._failed is not None:
            raise self._failed
        self.ready.set()

    def _consumer(self) -> Any:
        return Consumer({
            **librdkafka_conf(self.settings),
            # Assigned, never subscribed: the group id is only librdkafka's requirement.
            "group.id": f"{self.topic}.view.{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 100,
        })  # fmt: skip

    def _read(self, started: threading.Event) -> None:
        consumer = self._consumer()
        try:
            end = self._end(consumer)
            consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
            position = 0
            deadline = time.monotonic() + START_SECONDS
            while position < end:
                if time.monotonic() > deadline:
                    msg = f"{self.topic}: not read to its end ({position} of {end}) in time"
                    raise TimeoutError(msg)
                position = self._poll(consumer, position)
            log.info("%s: %d keys read from %d records", self.topic, len(self.state.data), end)
            started.set()
            while not self._stop.is_set():
                position = self._poll(consumer, position)
        finally:
            consumer.close()

    def _end(self, consumer: Any) -> int:
        """The changelog's end offset now (the topic is made when missing)."""
        for attempt in range(60):
            try:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, 0), timeout=10
                )
                return int(high)
            except KafkaException as exc:
                missing = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION)
                if exc.args[0].code() not in missing or attempt == 59:
                    raise
                self._create_topic()
                time.sleep(0.5)
        raise AssertionError("unreachable")  # noqa: EM101

    def _create_topic(self) -> None:
        """The changelog as ``croupier topics create`` makes it: compacted, one partition."""
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient(librdkafka_conf(self.settings))
        topic = NewTopic(self.topic, num_partitions=1,
                         replication_factor=self.settings.topic_replication,
                         config={"cleanup.policy": "compact"})  # fmt: skip
        try:
            admin.create_topics([topic], operation_timeout=30)[self.topic].result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise

    def _poll(self, consumer: Any, position: int) -> int:
        # The first record as soon as it comes, then whatever else is already here: a
        # batch read (``consume``) would wait its whole timeout for a full batch, and hold
        # every change that long.
        first = consumer.poll(POLL_SECONDS)
        if first is None:  # past a gap compaction left at the end, if any
            at = consumer.position([TopicPartition(self.topic, 0)])[0].offset
            self.applied = position = max(position, at)
            return position
        for msg in [first, *consumer.consume(1000, 0)]:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                log.warning("%s: %s", self.topic, err)
                continue
            self.state.apply(msg.key(), msg.value())
            position = int(msg.offset()) + 1
        self.applied = position
        return position

    async def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 5.0)


_admins: dict[str, AdminClient] = {}


def _admin(settings: Settings) -> AdminClient:
    """One admin client per cluster and process: it asks for the changelogs' ends."""
    conf = librdkafka_conf(settings)
    key = repr(sorted(conf.items()))
    admin = _admins.get(key)
    if admin is None:
        admin = _admins[key] = AdminClient(conf)
    return admin


async def catch_up(views: list[GlobalView], *, within: float = CATCH_UP_SECONDS) -> None:
    """Return once every view has applied its changelog up to where it ended when called
    (see the module's docstring); ``SinkUnavailable`` if that takes over ``within`` s."""
    if not views:
        return
    timeout = within
    deadline = time.monotonic() + timeout
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    asked = {TopicPartition(v.topic, 0): latest for v in views}
    try:
        futures = _admin(views[0].settings).list_offsets(asked, request_timeout=timeout)
        done = await asyncio.wait_for(
            asyncio.gather(*(asyncio.wrap_future(f) for f in futures.values())), timeout
        )
    except (KafkaException, TimeoutError, concurrent.futures.CancelledError) as exc:
        # The next try asks through a new client: after a broker restart this one can
        # keep a leader epoch the broker fences for good (FENCED_LEADER_EPOCH).
        _admins.clear()
        msg = f"where the views' changelogs end is not known now: {exc!r}"
        raise SinkUnavailable(msg) from exc
    ends = {tp.topic: int(info.offset) for tp, info in zip(futures, done, strict=True)}
    for view in views:
        while view.applied < ends[view.topic]:
            if time.monotonic() > deadline:
                msg = (
                    f"{view.topic}: the view has applied {view.applied} of the "
                    f"{ends[view.topic]} records its changelog held; not deciding on it"
                )
                raise SinkUnavailable(msg)
            await asyncio.sleep(0.001)
