"""The gateway's two Kafka clients: one idempotent producer (``acks=all``; a request is
answered only after its delivery report) and one listener on ``casino-results`` and
``bet-decisions`` that settles the waiting requests and feeds the SSE streams.

Both are confluent-kafka clients run by threads; what they learn is handed to the event
loop with ``call_soon_threadsafe``, so every dict below is touched by the loop alone.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import orjson

from config.kafka import librdkafka_conf, make_producer
from config.settings import Settings

log = logging.getLogger(__name__)


class Unavailable(Exception):
    """Kafka did not take the message (a full queue, or a delivery error)."""


class Publisher:
    """One idempotent producer for every route."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        # Idempotent, acks=all, and murmur2 partitioning as Faust expects (a player's bets
        # and events must land in the same partition number).
        self.producer = make_producer(settings, **{"linger.ms": 2, "client.id": "croupier-gateway",
                                                   "message.timeout.ms": 30_000})  # fmt: skip
        self._stop = threading.Event()
        # Delivery reports of one poll(), handed to the loop at once: one wake-up a batch.
        self._reports: list[tuple[asyncio.Future[None], Any]] = []
        self._thread = threading.Thread(target=self._poll, name="gateway-producer", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)
            self._hand_over()

    def _hand_over(self) -> None:
        if self._reports:
            reports, self._reports = self._reports, []
            self.loop.call_soon_threadsafe(_settle, reports)

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """Publish and return once every in-sync replica has it (raise ``Unavailable``)."""
        done: asyncio.Future[None] = self.loop.create_future()

        def on_delivery(err: Any, _msg: Any) -> None:  # in the poll thread
            self._reports.append((done, err))

        try:
            self.producer.produce(self.settings.topic(topic), value=value, key=key.encode(),
                                  on_delivery=on_delivery)  # fmt: skip
        except BufferError as exc:
            msg = "the producer's queue is full"
            raise Unavailable(msg) from exc
        await done

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.producer.flush(10)
        self._hand_over()


def _settle(reports: list[tuple[asyncio.Future[None], Any]]) -> None:
    for done, err in reports:
        if done.done():
            continue
        if err is None:
            done.set_result(None)
        else:
            done.set_exception(Unavailable(str(err)))


class Listener:
    """Reads ``casino-results`` and ``bet-decisions`` from their ends (no consumer group:
    every gateway sees every answer) and hands each to the loop."""

    TOPICS = ("casino-results", "bet-decisions")

    def __init__(
        self, settings: Settings, loop: asyncio.AbstractEventLoop,
        on_result: Callable[[str, bytes], None], on_decision: Callable[[dict[str, Any]], None],
    ) -> None:  # fmt: skip
        self.settings = settings
        self.loop = loop
        self.on_result = on_result
        self.on_decision = on_decision
        self.assigned = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        consumer = Consumer(librdkafka_conf(
            self.settings, **{"group.id": "croupier-gateway", "enable.auto.commit": False,
                              "enable.partition.eof": False, "fetch.wait.max.ms": 10},
        ))  # fmt: skip
        try:
            while not self._stop.is_set():
                try:
                    parts = []
                    for name in self.TOPICS:
                        topic = self.settings.topic(name)
                        meta = consumer.list_topics(topic, timeout=5).topics[topic]
                        if meta.error is not None:
                            raise KafkaException(meta.error)
                        for p in meta.partitions:
                            _low, high = consumer.get_watermark_offsets(
                                TopicPartition(topic, p), timeout=5
                            )
                            parts.append(TopicPartition(topic, p, high))
                    # Explicit end offsets, not OFFSET_END: an answer published after this
                    # point is read even if it lands before the first fetch.
                    consumer.assign(parts)
                    break
                except KafkaException as exc:
                    log.warning("gateway listener: waiting for Kafka (%s)", exc)
                    self._stop.wait(1)
            self.assigned.set()
            results, decisions = (self.settings.topic(t) for t in self.TOPICS)
            while not self._stop.is_set():
                # consume() waits its whole timeout unless the batch fills: wait for one
                # message with poll(), then take what else is there without waiting.
                first = consumer.poll(0.1)
                if first is None:
                    continue
                answers: list[tuple[str, bytes]] = []
                decided: list[dict[str, Any]] = []
                for msg in [first, *consumer.consume(500, 0)]:
                    where, value = msg.topic(), msg.value()
                    if msg.error() is not None or value is None or where is None:
                        continue
                    data = _object(value)
                    if data is None:
                        continue
                    if where == results and isinstance(data.get("transaction_id"), str):
                        answers.append((data["transaction_id"], value))
                    elif where == decisions and isinstance(data.get("bet_id"), str):
                        decided.append(data)
                if answers or decided:  # one wake-up of the loop a batch
                    self.loop.call_soon_threadsafe(self._deliver, answers, decided)
        finally:
            consumer.close()

    def _deliver(self, answers: list[tuple[str, bytes]], decided: list[dict[str, Any]]) -> None:
        for tx, value in answers:
            self.on_result(tx, value)
        for data in decided:
            self.on_decision(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class Waiters:
    """Requests waiting for a transaction's answers, by transaction id: each waiter gets
    every answer published for its transaction while it waits, and keeps the one meant for
    its own request (``Wallet`` checks)."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Queue[bytes]]] = {}

    def expect(self, transaction_id: str) -> asyncio.Queue[bytes]:
        answers: asyncio.Queue[bytes] = asyncio.Queue()
        self._waiting.setdefault(transaction_id, []).append(answers)
        return answers

    def forget(self, transaction_id: str, answers: asyncio.Queue[bytes]) -> None:
        waiting = self._waiting.get(transaction_id)
        if waiting and answers in waiting:
            waiting.remove(answers)
            if not waiting:
                del self._waiting[transaction_id]

    def answer(self, transaction_id: str, value: bytes) -> None:
        for answers in self._waiting.get(transaction_id, []):
            answers.put_nowait(value)

    def __len__(self) -> int:
        return len(self._waiting)


def _object(value: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None
