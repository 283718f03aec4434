"""Reading topics whole for ``croupier check``: a streaming scan by position, and ends."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from config.kafka import librdkafka_conf
from config.settings import Settings

Handler = Callable[[int, int, bytes | None, bytes | None], None]
IDLE_SECONDS = 3.0  # nothing more arrives below the ends (transaction markers): done


def _consumer(settings: Settings) -> Any:
    from confluent_kafka import Consumer

    return Consumer({
        **librdkafka_conf(settings),
        # Never joins or commits: assign() by position only; the id just has to be unique.
        "group.id": f"{settings.app_id}-check-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "queued.max.messages.kbytes": 256 * 1024,
        # An unreachable broker is reported once, by ``reachable``; not by librdkafka's
        # connection errors, a line every 50 ms.
        "log_level": 2,
    })  # fmt: skip


def ends(settings: Settings, topic: str, *, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """Per partition of ``topic``: (low, high) watermarks; empty when the topic is missing."""
    consumer = _consumer(settings)
    try:
        return _ends(consumer, topic, timeout)
    finally:
        consumer.close()


def _ends(consumer: Any, topic: str, timeout: float) -> dict[int, tuple[int, int]]:
    from confluent_kafka import TopicPartition

    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None:
        return {}
    out = {}
    for p in sorted(meta.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
        out[p] = (low, high)
    return out


def scan(settings: Settings, topic: str, handle: Handler, *, timeout: float = 10.0) -> int:
    """Feed every record of ``topic`` up to its ends (as they are now) to ``handle``
    (partition, offset, key, value), in batches; how many records."""
    from confluent_kafka import KafkaException, TopicPartition

    consumer = _consumer(settings)
    try:
        left = {p: (lo, hi) for p, (lo, hi) in _ends(consumer, topic, timeout).items() if hi > lo}
        if not left:
            return 0
        consumer.assign([TopicPartition(topic, p, lo) for p, (lo, _) in left.items()])
        count = 0
        idle_since = time.monotonic()
        while left:
            batch = consumer.consume(num_messages=10_000, timeout=0.5)
            if not batch:
                if time.monotonic() - idle_since > IDLE_SECONDS:
                    break
                continue
            idle_since = time.monotonic()
            for msg in batch:
                if msg.error() is not None:
                    raise KafkaException(msg.error())
                p, off = msg.partition(), msg.offset()
                end = left.get(p)
                if end is None or off >= end[1]:
                    continue  # arrived after the scan began
                handle(p, off, msg.key(), msg.value())
                count += 1
                if off + 1 >= end[1]:
                    del left[p]
        return count
    finally:
        consumer.close()


def reachable(settings: Settings, *, timeout: float = 10.0) -> str | None:
    """None when the brokers answer; otherwise why not."""
    from confluent_kafka import KafkaException

    consumer = _consumer(settings)
    try:
        consumer.list_topics(timeout=timeout)
        return None
    except KafkaException as exc:
        return str(exc)
    finally:
        consumer.close()
