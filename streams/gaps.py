"""Offsets the Kafka consumer skipped, found against PostgreSQL's progress and read back.

Croupier's guarantee does not rest on Kafka's committed offsets: under SIGKILL we have
seen Faust 0.15 commit past a message its agent never processed (its consumer counts an
offset "gap" as acked). Each batch therefore records, in the same transaction as its
rows, the next offset per partition (``consumer_progress``). Before a batch is planned,
its offsets are compared with that record; anything missing in between is read back
from the topic by position and processed first, in order. A message that was not lost
after all is absorbed by the idempotent sinks. An offset the broker does not have (a
transaction marker, a compacted record) is skipped, as the broker has nothing there.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawMessage:
    """A record read by position: what the agents read of a Faust message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class RawEvent:
    """A record read back by position, shaped like a Faust event for the agents."""

    message: RawMessage


def missing_ranges(
    offsets: Mapping[int, Iterable[int]], progress: Mapping[int, int]
) -> dict[int, tuple[int, int]]:
    """Per partition, the ``[start, end)`` span holding the offsets a batch lacks.

    ``offsets`` are those the batch has per partition; ``progress`` the next offset to
    process per partition, as PostgreSQL recorded it (absent: nothing recorded yet).
    """
    ranges: dict[int, tuple[int, int]] = {}
    for partition, have in offsets.items():
        present = set(have)
        if not present:
            continue
        start = progress.get(partition, min(present))
        missing = [o for o in range(start, max(present)) if o not in present]
        if missing:
            ranges[partition] = (missing[0], missing[-1] + 1)
    return ranges


def read_range(
    bootstrap: str, topic: str, partition: int, start: int, end: int, *, timeout: float = 30.0
) -> list[RawEvent]:
    """Records ``start`` to ``end - 1`` of one partition, read by position (no group)."""
    import time

    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"croupier-gap-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            # A start the broker no longer has (retention) reads from the oldest it has.
            "auto.offset.reset": "earliest",
        }
    )
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        end = min(end, high)
        consumer.assign([TopicPartition(topic, partition, start)])
        out: list[RawEvent] = []
        deadline = time.monotonic() + timeout
        position = start
        while position < end:
            if time.monotonic() > deadline:
                msg = f"reading {topic}[{partition}] {start}..{end - 1} timed out at {position}"
                raise TimeoutError(msg)
            record = consumer.poll(0.5)
            if record is None:
                (where,) = consumer.position([TopicPartition(topic, partition)])
                position = max(position, where.offset)
                continue
            if record.error():
                continue
            offset = record.offset() or 0
            if offset >= end:
                break
            out.append(RawEvent(RawMessage(topic, partition, offset, record.key(), record.value())))
            position = offset + 1
        return out
    finally:
        consumer.close()


class Positions:
    """Where a group's commits and a topic's ends are, asked of the brokers.

    A consumer that never subscribes: it joins no group and commits nothing, it only asks
    the group's coordinator for the commits (OffsetFetch) and the partitions' leaders for
    their ends. Not librdkafka's admin client: after a broker restart that client was
    seen to time out every request from then on, and to abort the whole worker
    (``rd_kafka_enq_once_del_source_return: Assertion`` failed, librdkafka issue #4605).
    """

    def __init__(self, bootstrap: str, group: str) -> None:
        from confluent_kafka import Consumer

        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "log_level": 3,
        })  # fmt: skip

    def close(self) -> None:
        self._consumer.close()

    def committed(
        self, topic: str, partitions: list[int], *, timeout: float = 10.0
    ) -> dict[int, int]:
        """The group's committed offset per partition of ``topic`` (absent: none)."""
        from confluent_kafka import TopicPartition

        result = self._consumer.committed(
            [TopicPartition(topic, p) for p in partitions], timeout=timeout
        )
        return {tp.partition: tp.offset for tp in result
                if tp.error is None and tp.offset >= 0}  # fmt: skip

    def ends(self, topic: str, partitions: list[int], *, timeout: float = 10.0) -> dict[int, int]:
        """The end (next offset) of each partition of ``topic``, as read_committed sees it."""
        from confluent_kafka import TopicPartition

        return {
            p: self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
            for p in partitions
        }


BUSY_LOOKS = 6
"""Looks a partition may sit still, messages waiting, while its flow is busy elsewhere."""


def repair_plan(
    partitions: Iterable[int],
    done: Mapping[int, int],
    committed: Mapping[int, int],
    ends: Mapping[int, int],
    behind: dict[int, tuple[int, int]],
    batch_max: int,
    *,
    busy: bool = False,
) -> dict[int, tuple[int, int, str]]:
    """Per partition, a ``(start, end, why)`` range to read back by position.

    ``done`` is PostgreSQL's progress, ``committed`` the group's commits, ``ends`` the
    partitions' ends. A partition is behind when its commits ran past its progress, or
    when messages wait past its progress. ``behind`` remembers, per partition, the
    progress last seen behind and how many looks in a row it stayed there. Commits past
    the progress are read back on the second look (a batch still in flight is left alone).
    Messages waiting are read back on the second look when the flow finished no batch
    since the one before (``busy`` false: the consumer delivers nothing), but only after
    ``BUSY_LOOKS`` when it is working through other partitions' backlog: a partition that
    merely waits its turn is not stalled, and reading it back would do its work twice.
    """
    plans: dict[int, tuple[int, int, str]] = {}
    for partition in partitions:
        start = done.get(partition, 0)
        if committed.get(partition, 0) > start:
            end, why, looks_needed = committed[partition], "committed past it", 2
        elif ends.get(partition, 0) > start:
            # Messages wait and nothing moved: the consumer is not delivering them. A batch
            # of them is read by position instead.
            end, why = min(ends[partition], start + batch_max), "stalled with messages waiting"
            looks_needed = BUSY_LOOKS if busy else 2
        else:
            behind.pop(partition, None)
            continue
        seen, looks = behind.get(partition, (-1, 0))
        looks = looks + 1 if seen == start else 1
        if looks < looks_needed:
            behind[partition] = (start, looks)
            continue
        del behind[partition]
        plans[partition] = (start, end, why)
    return plans


def unique_positions(events: list[Any]) -> list[Any]:
    """``events`` with each position once (the first copy). Around a rebalance a batch can
    hold the same offset twice (a fetch from before it and the re-fetch after); decided
    twice in one transaction, its stored outcome's key is refused and the batch with it."""
    seen: set[tuple[int, int]] = set()
    out = []
    for event in events:
        at = (event.message.partition, event.message.offset)
        if at not in seen:
            seen.add(at)
            out.append(event)
    return out


def by_partition(events: Iterable[Any]) -> dict[int, list[int]]:
    offsets: dict[int, list[int]] = defaultdict(list)
    for event in events:
        offsets[event.message.partition].append(event.message.offset)
    return offsets


async def fill_gaps(events: list[Any], *, sink: Any, bootstrap: str, topic: str) -> list[Any]:
    """``events`` plus any messages the consumer skipped before them, in partition order.

    ``sink`` is the flow's ``ProgressSink``: its recorded progress says where each
    partition's processing really stands.
    """
    import asyncio

    from streams.batching import until_available

    offsets = by_partition(events)
    progress = await until_available(
        lambda: sink.progress(topic, sorted(offsets)), what="PostgreSQL"
    )
    ranges = missing_ranges(offsets, progress)
    if not ranges:
        return events
    extra: list[Any] = []
    for partition, (start, end) in ranges.items():
        log.warning(
            "%s[%d]: offsets %d..%d were skipped by the consumer; reading them back",
            topic, partition, start, end - 1,
        )  # fmt: skip
        got = await asyncio.to_thread(read_range, bootstrap, topic, partition, start, end)
        have = set(offsets[partition])
        extra += [e for e in got if e.message.offset not in have]
    return sorted([*events, *extra], key=lambda e: (e.message.partition, e.message.offset))


def advance(progress: dict[tuple[str, int], int], event: Any) -> None:
    """Move ``progress`` past ``event``."""
    msg = event.message
    key = (msg.topic, msg.partition)
    progress[key] = max(progress.get(key, 0), msg.offset + 1)
