"""The commit protocol on stand-ins: a store in memory, a consumer and a producer that log."""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from config.settings import Settings
from schemas.records import DeadLetter
from streams.flow import Flow, Outputs, next_offsets
from streams.kafka import Message

TOPIC = "t.bets"


def msg(offset: int, value: bytes = b"ok", partition: int = 0) -> Message:
    return Message(TOPIC, partition, offset, f"k{offset}".encode(), value)


class Log:
    def __init__(self) -> None:
        self.steps: list[str] = []


class FakeSource:
    def __init__(self, log: Log) -> None:
        self.log, self.committed = log, {}  # type: ignore[var-annotated]

    def commit(self, done: dict[int, int]) -> None:
        self.log.steps.append(f"commit {sorted(done.items())}")
        self.committed.update(done)


class FakeSender:
    """Queues records; ``flush`` acknowledges them, or fails ``failures`` times first."""

    def __init__(self, log: Log, failures: int = 0) -> None:
        self.log, self.failures = log, failures
        self.queued: list[tuple[str, bytes | None, bytes]] = []
        self.acknowledged: list[tuple[str, bytes | None, bytes]] = []

    def publish(self, topic: str, records: Any) -> int:
        batch = [(topic, k, v) for k, v in records]
        self.queued += batch
        return len(batch)

    async def flush(self) -> None:
        if self.failures:
            self.failures -= 1
            self.queued.clear()  # what was not acknowledged is sent again by the rerun
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        self.log.steps.append(f"flush {len(self.queued)}")
        self.acknowledged += self.queued
        self.queued = []


class MemoryStore:
    """Decisions by position, stored once: a rerun gets the stored decision back."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.decided: dict[tuple[int, int], bytes] = {}
        self.letters: list[DeadLetter] = []
        self.progress: dict[tuple[str, int], int] = {}

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def set_aside(self, letter: DeadLetter, progress: dict[tuple[str, int], int]) -> None:
        self.letters.append(letter)
        self.progress.update(progress)

    async def handle(self, messages: list[Message]) -> Outputs:
        """The flow's whole part: decide each message (a poisoned one breaks the flow)."""
        for m in messages:
            if m.value == b"poison":
                raise ValueError("a bug this message reaches")
        out = []
        for m in messages:
            decision = self.decided.setdefault(
                (m.partition, m.offset), b"decided " + (m.key or b"")
            )
            out.append((m.key, decision))
            self.progress[(m.topic, m.partition)] = m.offset + 1
        self.log.steps.append(f"stored {len(messages)}")
        result = Outputs()
        result.add("t.bet-decisions", out)
        return result


def flow(failures: int = 0) -> tuple[Flow, Log, MemoryStore, FakeSource, FakeSender]:
    log = Log()
    store = MemoryStore(log)
    settings = Settings(topic_prefix="t.")
    f = Flow(None, settings, name="bets", topic=TOPIC, store=store, handle=store.handle)
    source, sender = FakeSource(log), FakeSender(log, failures)
    f.source, f.sender = source, sender  # type: ignore[assignment]  # stand-ins
    return f, log, store, source, sender


def test_outputs_are_flushed_before_the_offsets_are_committed() -> None:
    f, log, _store, _source, sender = flow()
    asyncio.run(f.one_batch([msg(0), msg(1), msg(0, partition=1)]))
    assert log.steps == ["stored 3", "flush 3", "commit [(0, 2), (1, 1)]"]
    assert [v for _, _, v in sender.acknowledged] == [b"decided k0", b"decided k1", b"decided k0"]


def test_a_message_that_breaks_the_flow_is_set_aside_and_the_rest_decided() -> None:
    f, log, store, source, sender = flow()
    asyncio.run(f.one_batch([msg(0), msg(1, b"poison"), msg(2)]))
    assert sorted(store.decided) == [(0, 0), (0, 2)]
    assert [(d.source.offset, d.reason) for d in store.letters] == [(1, "processing_error")]
    letters = [v for t, _, v in sender.acknowledged if t == "t.dead-letters"]
    assert len(letters) == 1 and b"a bug this message reaches" in letters[0]
    assert store.progress == {(TOPIC, 0): 3}
    assert source.committed == {0: 3}
    assert log.steps[-1] == "commit [(0, 3)]"


def test_kafka_away_holds_the_batch_until_it_has_every_output() -> None:
    f, log, store, _source, sender = flow(failures=2)
    asyncio.run(f.one_batch([msg(0), msg(1)]))
    # Run again whole, to the stored decisions; committed only once Kafka had them.
    assert log.steps == ["stored 2", "stored 2", "stored 2", "flush 2", "commit [(0, 2)]"]
    assert [v for _, _, v in sender.acknowledged] == [b"decided k0", b"decided k1"]
    assert store.letters == []


def test_next_offsets_are_per_partition_past_the_last_message() -> None:
    assert next_offsets([msg(5), msg(3), msg(9, partition=2), msg(6)]) == {0: 7, 2: 10}


def test_a_partition_left_by_the_faust_consumer_resumes_at_the_lower_of_its_two_records() -> None:
    from streams.kafka import faust_resume_point

    committed = {0: 10, 1: 7, 2: 5}  # the Faust group's commits (it could run ahead)
    done = {0: 8, 1: 9}  # PostgreSQL's progress, written once published
    assert faust_resume_point(committed, done) == {0: 8, 1: 7}  # 2: from the beginning


def test_a_consumer_that_cannot_learn_where_to_start_never_skips() -> None:
    from confluent_kafka import OFFSET_INVALID, TopicPartition

    from streams.kafka import Source

    def away(topic: str, partitions: list[int]) -> dict[int, int]:
        raise ConnectionError("PostgreSQL away")

    class Consumer:
        assigned: list[TopicPartition] = []

        def committed(self, partitions: list[TopicPartition], timeout: float) -> Any:
            return [TopicPartition(tp.topic, tp.partition, OFFSET_INVALID) for tp in partitions]

        def assign(self, partitions: list[TopicPartition]) -> None:
            self.assigned = partitions

    source = Source(Settings(topic_prefix="t."), group="g", topic=TOPIC, start_at=away)
    consumer = Consumer()
    source._on_assign(consumer, [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])
    # The committed offsets, else the beginning (auto.offset.reset): nothing passed over.
    assert [(tp.partition, tp.offset) for tp in consumer.assigned] == [
        (0, OFFSET_INVALID), (1, OFFSET_INVALID)
    ]  # fmt: skip
    assert source.assigned == {0, 1}


def test_an_assignment_that_lands_while_the_source_leaves_asks_nothing() -> None:
    """A stop during a rebalance: librdkafka hands the assignment over while the consumer
    closes. Asking the broker (or PostgreSQL) where to start then waited up to 30 s per
    flow on a consumer being destroyed, and held a worker's stop past a minute (CI,
    2026-12-07); the source now takes the assignment as it is and asks nothing."""
    from confluent_kafka import TopicPartition

    from streams.kafka import Source

    asked: list[str] = []

    def start_at(topic: str, partitions: list[int]) -> dict[int, int]:
        asked.append("start_at")
        return {}

    class Consumer:
        assigned: list[TopicPartition] = []

        def committed(self, partitions: list[TopicPartition], timeout: float) -> Any:
            asked.append("committed")
            return partitions

        def assign(self, partitions: list[TopicPartition]) -> None:
            self.assigned = partitions

    source = Source(Settings(topic_prefix="t."), group="g", topic=TOPIC, start_at=start_at)
    consumer = Consumer()
    parts = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    asyncio.run(source.close())  # leaves (no group joined: nothing to commit)
    source._on_assign(consumer, parts)
    assert asked == [] and consumer.assigned == parts
    assert source.assigned == set()  # nothing of it is read, so nothing to commit
    fresh = Source(Settings(topic_prefix="t."), group="g", topic=TOPIC, start_at=start_at)
    fresh._on_assign(consumer, parts)  # a source that is not leaving asks as before
    assert asked == ["committed", "start_at"]
    asyncio.run(fresh.close())
