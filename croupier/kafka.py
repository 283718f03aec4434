"""Small Kafka helpers for the command line, the demo and tests (confluent-kafka)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from croupier.settings import Settings


def make_producer(settings: Settings, **extra: Any) -> Any:
    """An idempotent producer that partitions keys as Java clients and Faust do (murmur2).

    librdkafka's default partitioner (CRC32) would put a player's events and bets in
    different partitions than Faust expects, breaking co-partitioning.
    """
    from confluent_kafka import Producer

    conf = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        **extra,
    }
    return Producer(conf)


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes


def consume_until(
    settings: Settings,
    topics: Sequence[str],
    *,
    want: Callable[[list[Record]], bool],
    timeout: float,
) -> list[Record]:
    """Read ``topics`` from the start until ``want(records)`` holds or ``timeout`` passes."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"croupier-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe(list(topics))
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    try:
        # ``want`` runs once per fetched batch, not per record: a predicate that looks at
        # every record would otherwise make reading a long topic quadratic.
        while time.monotonic() < deadline and not want(records):
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error():
                    continue
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                if topic is None or partition is None or offset is None:
                    continue
                key = msg.key()
                records.append(
                    Record(
                        topic, partition, offset, key.decode() if key else "", msg.value() or b""
                    )
                )
    finally:
        consumer.close()
    return records
