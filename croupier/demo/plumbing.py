"""The demo's wires: producing upstream, reading the outputs, waiting for the workers."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition

from config.kafka import librdkafka_conf, make_producer
from config.settings import Settings
from croupier.sim.run import FeedClock
from streams.flow import group_of

HEARTBEAT_SECONDS = 2.0


class DemoError(Exception):
    """The stack did not answer, or the workers did not get through a step in time."""


@dataclass(frozen=True)
class Sent:
    """A message Kafka acknowledged, and where it landed."""

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes


@dataclass(frozen=True)
class Out:
    """A message a worker published."""

    topic: str
    key: str
    doc: dict[str, Any]


class Upstream:
    """The upstream producers: produce, flush, and know where every message landed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = make_producer(settings)
        # Now, strictly after every feed time handed out before (feed order is time order).
        self.feed_time = FeedClock()

    def send(self, topic: str, items: Sequence[tuple[str, bytes]]) -> list[Sent]:
        """Produce ``(key, value)`` pairs to a contract topic; wait until Kafka has them all."""
        delivered: dict[int, Sent] = {}
        errors: list[str] = []

        def report(index: int, key: str, value: bytes) -> Callable[[Any, Any], None]:
            def on_delivery(err: Any, msg: Any) -> None:
                if err is not None:
                    errors.append(str(err))
                else:
                    delivered[index] = Sent(msg.topic(), msg.partition(), msg.offset(), key, value)

            return on_delivery

        real = self.settings.topic(topic)
        for n, (key, value) in enumerate(items):
            self.producer.produce(real, key=key.encode(), value=value,
                                  on_delivery=report(n, key, value))  # fmt: skip
            self.producer.poll(0)
        self.producer.flush(30)
        if errors or len(delivered) != len(items):
            msg = f"Kafka did not take every message for {real}: {errors or 'no report'}"
            raise DemoError(msg)
        return [delivered[n] for n in range(len(items))]


class Tail:
    """Reads topics from where they ended when the demo started: only what comes after."""

    def __init__(self, settings: Settings, topics: Iterable[str]) -> None:
        from confluent_kafka import Consumer, TopicPartition
        from confluent_kafka.admin import AdminClient

        self.admin = AdminClient(librdkafka_conf(settings))
        self.consumer = Consumer({
            **librdkafka_conf(settings),
            "group.id": f"croupier-demo-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        })  # fmt: skip
        meta = self.admin.list_topics(timeout=10).topics
        partitions: list[tuple[str, int]] = []
        for topic in topics:
            if topic not in meta:
                msg = f"topic {topic} does not exist: run `croupier topics create`"
                raise DemoError(msg)
            partitions += [(topic, p) for p in meta[topic].partitions]
        self.next = self.ends(partitions)
        self.consumer.assign([TopicPartition(t, p, o) for (t, p), o in self.next.items()])
        self.records: list[Out] = []

    def ends(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Each partition's end offset, asked in one request (a consumer asks one by one,
        each queued behind its fetch: half a second a partition)."""
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec

        futures = self.admin.list_offsets(
            # OffsetSpec ships without annotations.
            {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions},  # type: ignore[no-untyped-call]
            request_timeout=10,
        )
        return {(tp.topic, tp.partition): int(f.result().offset) for tp, f in futures.items()}

    def catch_up(self, deadline: float) -> None:
        """Read everything published so far (up to each partition's current end)."""
        target = self.ends(self.next)
        while any(self.next[tp] < end for tp, end in target.items()):
            if time.monotonic() > deadline:
                msg = "timed out reading the workers' outputs"
                raise DemoError(msg)
            for m in self.consumer.consume(num_messages=500, timeout=0.2):
                topic, partition, offset, key = m.topic(), m.partition(), m.offset(), m.key()
                if m.error() or topic is None or partition is None or offset is None:
                    continue
                self.next[(topic, partition)] = offset + 1
                try:
                    doc = json.loads(m.value() or b"null")
                except ValueError:
                    doc = None
                self.records.append(
                    Out(topic, key.decode() if key else "", doc if isinstance(doc, dict) else {})
                )
            # The consumer's position, not the last offset read: it steps over control records.
            for tp in self.consumer.position(self.consumer.assignment()):
                if tp.offset >= 0:
                    self.next[(tp.topic, tp.partition)] = tp.offset

    def close(self) -> None:
        self.consumer.close()


class Progress:
    """How far the workers' consumer group has finished each partition (PostgreSQL's word),
    and for the feed, how far its flow has published: a worker decides on the odds and
    feed-health tables once their changes are in Kafka (``streams/view.py``), and the odds
    flow commits its offsets only after publishing them, so a step that sends bets after
    odds waits for that commit, not only for PostgreSQL's progress, which comes first."""

    def __init__(self, settings: Settings) -> None:
        self.group = settings.app_id
        self.odds_topic = settings.topic("odds")
        self.odds_group = group_of(settings, "odds")
        self._settings = settings
        self._committed: Consumer | None = None
        self.conn = psycopg.connect(
            settings.pg_dsn.get_secret_value(),
            options=f"-c search_path={settings.pg_schema}",
            autocommit=True,
        )

    def wait(self, sent: Iterable[Sent], deadline: float, what: str) -> None:
        """Wait until every message in ``sent`` is done: its rows, outputs and table moves."""
        need: dict[tuple[str, int], int] = {}
        for s in sent:
            need[(s.topic, s.partition)] = max(need.get((s.topic, s.partition), 0), s.offset + 1)
        topics = sorted({t for t, _ in need})
        while True:
            rows = self.conn.execute(
                """SELECT topic, partition, next_offset FROM consumer_progress
                    WHERE consumer_group = %s AND topic = ANY(%s)""",
                (self.group, topics),
            ).fetchall()
            done = {(t, p): o for t, p, o in rows}
            if all(done.get(tp, 0) >= offset for tp, offset in need.items()):
                feed = {tp: o for tp, o in need.items() if tp[0] == self.odds_topic}
                if not feed or self._published(feed):
                    return
            if time.monotonic() > deadline:
                msg = f"timed out waiting for the workers to finish {what}"
                raise DemoError(msg)
            time.sleep(0.1)

    def wait_reports(self, deadline: float) -> None:
        """Wait until the reporter has read the whole audit trail and published it all."""
        while True:
            behind = self.conn.execute(
                """SELECT (SELECT count(*) FROM audit_heads h LEFT JOIN report_progress p
                             USING (chain) WHERE h.seq > coalesce(p.seq, 0))
                        + (SELECT count(*) FROM report_heads h LEFT JOIN report_published p
                             USING (jurisdiction) WHERE h.seq > coalesce(p.seq, 0))"""
            ).fetchone()
            if behind is not None and behind[0] == 0:
                return
            if time.monotonic() > deadline:
                msg = "timed out waiting for the reporter (are the workers of this code up?)"
                raise DemoError(msg)
            time.sleep(0.2)

    def _published(self, need: dict[tuple[str, int], int]) -> bool:
        """Whether the odds flow committed (so published) at least ``need`` in Kafka."""
        if self._committed is None:
            self._committed = Consumer({**librdkafka_conf(self._settings),
                                        "group.id": self.odds_group,
                                        "enable.auto.commit": False})  # fmt: skip
        asked = [TopicPartition(t, p) for t, p in need]
        done = {(tp.topic, tp.partition): tp.offset
                for tp in self._committed.committed(asked, timeout=10)}  # fmt: skip
        return all(done.get(tp, -1) >= offset for tp, offset in need.items())

    def close(self) -> None:
        self.conn.close()
        if self._committed is not None:
            self._committed.close()


class Heartbeat:
    """The feed producer's ``alive`` messages, every couple of seconds, in a thread."""

    def __init__(self, upstream: Upstream, producer: str) -> None:
        self.upstream, self.producer = upstream, producer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-alive", daemon=True)

    def beat(self) -> list[Sent]:
        msg = {"type": "alive", "producer": self.producer, "timestamp": self.upstream.feed_time()}
        return self.upstream.send("odds", [(self.producer, json.dumps(msg).encode())])

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.beat()
            except Exception:  # a missed beat shows up as market_suspended
                continue

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
