"""The commit protocol on stand-ins: a store in memory, a consumer and a producer that log."""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from croupier.settings import Settings
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
