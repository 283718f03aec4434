"""What the simulation sent and what came back: the sender, the outcome reader, progress.

The reader is a confluent-kafka consumer assigned to the outcome topics at their end
offsets (taken before anything is produced), keeping only the run's keys. It records,
per input id, every distinct outcome it saw and when it first saw one; dead letters are
matched to inputs by their source position. librdkafka reconnects by itself, so a broker
restart only pauses it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from config.kafka import librdkafka_conf, make_producer
from config.settings import Settings
from croupier.sim.plan import BET, CASINO, DEAD, PAYMENT, Step

OUTCOME_ID = {BET: "bet_id", PAYMENT: "payment_id", CASINO: "transaction_id"}
SETTLEMENTS = "settlements"
READ = (BET, PAYMENT, CASINO, DEAD, SETTLEMENTS)


class Unreachable(Exception):
    """Kafka (or the run's topics) cannot be reached."""


@dataclass
class Seen:
    """The outcomes of one input: each distinct one, and when the first arrived."""

    first_at: float
    label: str  # accepted / ok / the reason
    values: set[bytes] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)
    copies: int = 0


class Outcomes(threading.Thread):
    """Reads the run's outcomes from the decision topics, dead letters and settlements."""

    def __init__(self, settings: Settings, prefix: str) -> None:
        super().__init__(name="sim-outcomes", daemon=True)
        from confluent_kafka import Consumer, KafkaException, TopicPartition
        from confluent_kafka.admin import AdminClient, OffsetSpec

        self.settings, self.prefix = settings, prefix.encode()
        self.topics = {settings.topic(t): t for t in READ}
        conf: dict[str, Any] = librdkafka_conf(settings)
        try:
            admin = AdminClient({**conf, "log_level": 0})  # the error says it once
            meta = admin.list_topics(timeout=10).topics
            missing = [
                t
                for t in [
                    *self.topics,
                    *(settings.topic(t) for t in ("bets", "odds", "players", "payments", "casino")),
                ]
                if t not in meta
            ]
            if missing:
                msg = f"topics {', '.join(missing)} do not exist: run `croupier topics create`"
                raise Unreachable(msg)
            parts = [TopicPartition(t, p) for t in self.topics for p in meta[t].partitions]
            # OffsetSpec ships without annotations.
            futures = admin.list_offsets(
                {tp: OffsetSpec.latest() for tp in parts},  # type: ignore[no-untyped-call]
                request_timeout=10,
            )
            ends = [
                TopicPartition(tp.topic, tp.partition, int(f.result().offset))
                for tp, f in futures.items()
            ]
        except KafkaException as exc:
            msg = f"Kafka at {settings.kafka_bootstrap_servers} does not answer ({exc})"
            raise Unreachable(msg) from exc
        self.consumer = Consumer(
            {
                **conf,
                "group.id": f"croupier-sim-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,
                "isolation.level": "read_committed",
            }
        )
        self.consumer.assign(ends)
        self.lock = threading.Lock()
        self.seen: dict[tuple[str, str], Seen] = {}  # (outcome topic, id) -> outcomes
        self.dead: dict[tuple[str, int, int], Seen] = {}  # source position -> dead letter
        self.settlements: dict[str, dict[str, Any]] = {}  # settlement_id -> the record
        self.settlement_copies = 0
        self.labels: Counter[str] = Counter()  # "bets accepted", "bets odds_changed", ...
        self.decided_times: list[float] = []  # when each first outcome arrived
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                batch = self.consumer.consume(num_messages=1000, timeout=0.2)
            except Exception:  # a broker away: librdkafka reconnects, keep asking
                time.sleep(0.5)
                continue
            now = time.monotonic()
            for msg in batch:
                if msg.error() is not None:
                    continue
                key = msg.key() or b""
                if not key.startswith(self.prefix):
                    continue
                self._take(self.topics.get(msg.topic() or "", ""), msg.value() or b"", now)

    def _take(self, topic: str, value: bytes, now: float) -> None:
        try:
            doc = json.loads(value)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        table: dict[Any, Seen]
        with self.lock:
            if topic == SETTLEMENTS:
                sid = str(doc.get("settlement_id"))
                if sid in self.settlements:
                    self.settlement_copies += 1
                else:
                    self.settlements[sid] = doc
                return
            if topic == DEAD:
                src = doc.get("source") or {}
                slot: Any = (
                    str(src.get("topic")),
                    int(src.get("partition", -1)),
                    int(src.get("offset", -1)),
                )
                label, table, group = str(doc.get("reason")), self.dead, "dead letters"
            else:
                status = doc.get("status")
                label = str(
                    status
                    if status in ("accepted", "ok")
                    else doc.get("reason") or doc.get("error")
                )
                slot, table = (topic, str(doc.get(OUTCOME_ID[topic]))), self.seen
                group = {BET: "bets", PAYMENT: "payments", CASINO: "casino"}[topic]
            entry = table.get(slot)
            if entry is None:
                entry = table[slot] = Seen(now, label)
                self.labels[f"{group} {label}"] += 1
                self.decided_times.append(now)
            entry.values.add(value)
            entry.labels.add(label)
            entry.copies += 1

    def decided(self) -> int:
        with self.lock:
            return len(self.seen) + len(self.dead)

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)
        with contextlib.suppress(Exception):  # a consumer whose broker is away
            self.consumer.close()


@dataclass
class Sent:
    """One message handed to the producer, and where Kafka put it."""

    step: Step
    at: float  # monotonic, when produced
    value: bytes
    position: tuple[str, int, int] | None = None
    error: str | None = None


class Sender:
    """Produces the plan's steps: idempotent, retrying, patient (a broker restart is waited
    out), recording each message's send time and Kafka position."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = make_producer(
            settings,
            **{
                "message.timeout.ms": 600_000,
                "retry.backoff.ms": 250,
                "queue.buffering.max.messages": 1_000_000,
                "linger.ms": 2,
            },
        )
        self.sent: list[Sent] = []
        self.bodies: dict[str, bytes] = {}  # bet id -> bytes, for a producer's retry
        self.by_topic: Counter[str] = Counter()
        self.lock = threading.Lock()

    def send(self, step: Step, now: str) -> Sent:
        if step.repeat_of is not None:
            value = self.bodies[step.repeat_of]
        else:
            value = step.body(now)
            if step.ref is not None:
                self.bodies[step.ref] = value
        record = Sent(step, time.monotonic(), value)

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                record.error = str(err)
            else:
                record.position = (msg.topic(), msg.partition(), msg.offset())

        topic = self.settings.topic(step.topic)
        while True:
            try:
                self.producer.produce(
                    topic, key=step.key.encode(), value=value, on_delivery=delivered
                )
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)
        with self.lock:
            self.sent.append(record)
            self.by_topic[step.topic] += 1
        return record

    def flush(self, timeout: float) -> int:
        """Wait for Kafka to take everything; how many messages are still queued."""
        return int(self.producer.flush(timeout))

    def send_all(self, steps: Iterable[Step], clock: Any) -> list[Sent]:
        return [self.send(s, clock()) for s in steps]
