"""One flow: a topic read in batches, each batch decided and stored once, then answered.

Every flow runs the same commit protocol, written here once (as Quix Streams writes its
``Checkpoint.commit`` once):

1. **read** a batch from the flow's consumer (``streams/kafka.py``: up to
   ``CROUPIER_BATCH_MAX`` messages, waiting at most ``CROUPIER_BATCH_WITHIN``);
2. **handle** it: the flow decodes, decides and stores the batch in one PostgreSQL
   transaction (effects, decisions, audit records, dead letters, the partitions'
   ``consumer_progress``) and returns what to publish. That is all a flow supplies;
3. **publish** the outputs and **flush**: Kafka has every one of them;
4. **commit** the offsets: only now is the batch done, and a crash anywhere before this
   replays it, to the stored decisions, published again byte for byte.

A failure is sorted by ``streams/batching.py``: a service away holds the batch (run again
with backoff for as long as it takes), and anything else is narrowed down to the message
that fails alone, which is set aside as its dead letter (``set_aside``: the letter and its
partition's progress in one transaction, then published) so every message around it is
decided as usual.

A flow runs as a service of the Faust app, started once the global views it reads are
read to their end (``streams/view.py``) and stopped before the app's own producer: a
stop lets the batch under way finish (at most ``FINISH_ON_CANCEL_SECONDS``; if it
cannot, the process ends without committing, which is no worse than a SIGKILL), then
leaves the group at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import mode
from pydantic import TypeAdapter

from config.settings import Settings
from sinks.base import Batch, Store, Stored
from sinks.postgres.common import read_progress
from streams import metrics
from streams.batching import (
    EXIT_BATCH_FAILED,
    FINISH_ON_CANCEL_SECONDS,
    describe,
    die,
    hold_until_available,
    isolate,
    until_available,
)
from streams.context import app_timer, dead_letter, decode_all, letter_records
from streams.kafka import (
    Message,
    Records,
    Sender,
    Source,
    committed_offsets,
    faust_resume_point,
)
from streams.view import GlobalView, catch_up

log = logging.getLogger(__name__)


@dataclass
class Outputs:
    """What a handled batch publishes, topic by topic, in order."""

    records: list[tuple[str, Records]] = field(default_factory=list)

    def add(self, topic: str, records: Records) -> None:
        self.records.append((topic, records))


Handle = Callable[[list[Message]], Awaitable[Outputs]]


def next_offsets(messages: Sequence[Message]) -> dict[int, int]:
    """Per partition, the offset after the last of ``messages``."""
    done: dict[int, int] = {}
    for m in messages:
        if m.offset >= done.get(m.partition, -1):
            done[m.partition] = m.offset + 1
    return done


class Flow(mode.Service):
    """The commit protocol above, for one topic, as a service of the Faust app."""

    def __init__(
        self,
        app: Any,
        settings: Settings,
        *,
        name: str,
        topic: str,
        store: Store,
        handle: Handle,
        views: Sequence[GlobalView] = (),
        within: float | None = None,
    ) -> None:
        super().__init__()
        self.within = settings.batch_within if within is None else within
        self.app, self.settings, self.name = app, settings, name
        self.topic, self.store, self.handle = topic, store, handle
        self.views = list(views)  # read to their end before the first batch
        self.viewing: list[GlobalView] = []
        self.dead_letters = settings.topic("dead-letters")
        self.stopping = False
        self.finished = asyncio.Event()
        self.source: Source | None = None
        self.sender: Sender | None = None
        self.consumed = metrics.EVENTS.labels(topic)
        self.seconds = metrics.FLOW_SECONDS.labels(name)
        self.sizes = metrics.FLOW_SIZE.labels(name)
        self.decided = metrics.DECISION_SECONDS.labels(name)
        self.steps = {step: metrics.FLOW_STEP_SECONDS.labels(name, step)
                      for step in ("handle", "flush")}  # fmt: skip

    def _start_at(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """Where partitions this flow's group never committed start (``streams/kafka.py``)."""
        s = self.settings
        old = committed_offsets(s, s.app_id, topic, partitions)
        if not old:
            return {}
        done = read_progress(s.pg_dsn.get_secret_value(), s.pg_schema, s.app_id, topic, partitions)
        return faust_resume_point(old, done)

    def connect(self) -> tuple[Source, Sender]:
        """The flow's consumer and producer (a test runs the protocol on stand-ins)."""
        source = Source(self.settings, group=group_of(self.settings, self.name),
                        topic=self.topic, start_at=self._start_at)  # fmt: skip
        return source, Sender(self.settings)

    async def on_start(self) -> None:
        for view in self.views:
            await view.acquire()
            self.viewing.append(view)
        await until_available(self.store.open, what="PostgreSQL")
        self.source, self.sender = self.connect()
        await self.source.start()
        self.add_future(self._run())

    async def on_stop(self) -> None:
        self.stopping = True
        if self.source is not None:
            try:
                await asyncio.wait_for(self.finished.wait(), FINISH_ON_CANCEL_SECONDS)
            except TimeoutError:
                die(EXIT_BATCH_FAILED, f"{self.name}: a batch could not finish during shutdown")
            await self.source.close()
        if self.sender is not None:
            await self.sender.close()
        await self.store.close()
        while self.viewing:
            await self.viewing.pop().release()

    async def _run(self) -> None:
        assert self.source is not None
        try:
            while not self.stopping and not self.app.should_stop:
                messages = await self.source.batch(self.settings.batch_max, self.within)
                if messages:
                    await self.one_batch(messages)
        except Exception:
            log.exception("%s: the flow failed", self.name, extra={"flow": self.name})
            die(EXIT_BATCH_FAILED, f"{self.name}: the flow failed")
        finally:
            self.finished.set()

    async def one_batch(self, messages: list[Message]) -> None:
        """Steps 2 to 4 for one batch; messages that fail alone are set aside."""
        assert self.source is not None
        started = time.perf_counter()
        await isolate(messages, self._complete, self._set_aside)
        self.source.commit(next_offsets(messages))
        self.seconds.observe(time.perf_counter() - started)
        self.sizes.observe(len(messages))
        self.consumed.inc(len(messages))

    async def _complete(self, messages: list[Message]) -> None:
        assert self.sender is not None
        started = time.perf_counter()
        out = await self.handle(messages)
        flushing = time.perf_counter()
        self.steps["handle"].observe(flushing - started)
        for topic, records in out.records:
            self.sender.publish(topic, records)
        await self.sender.flush()
        self.steps["flush"].observe(time.perf_counter() - flushing)
        now_ms = time.time() * 1000  # the answers are in Kafka: each message is decided
        for m in messages:
            if m.timestamp_ms > 0:
                self.decided.observe(max(0.0, now_ms - m.timestamp_ms) / 1000)

    async def _set_aside(self, message: Message, exc: BaseException, reason: str) -> None:
        """Dead-letter a message its flow cannot get past, and move its partition on."""
        assert self.sender is not None
        letter = dead_letter(message, reason, describe(exc))
        log.error("%s[%d]@%d set aside as %s: %s", message.topic, message.partition,
                  message.offset, reason, letter.error,
                  extra={"flow": self.name, "partition": message.partition,
                         "offset": message.offset})  # fmt: skip
        progress = {(message.topic, message.partition): message.offset + 1}
        await until_available(lambda: self.store.set_aside(letter, progress), what="PostgreSQL")
        self.sender.publish(self.dead_letters, letter_records([(message.key, letter)]))
        await hold_until_available(self.sender.flush)


FLOWS = ("players", "odds", "bets", "payments", "casino")


def group_of(settings: Settings, name: str) -> str:
    """The consumer group of flow ``name`` (one per flow: a rebalance of one moves no other)."""
    return f"{settings.app_id}.{name}"


def flow_groups(settings: Settings) -> list[str]:
    """Every flow's consumer group."""
    return [group_of(settings, name) for name in FLOWS]


T = TypeVar("T")
In = TypeVar("In")


class DecisionStore(Store, Protocol[In]):
    """A store that decides a batch of inputs in one transaction (bets, payments, casino)."""

    async def decide(self, batch: Batch[In], now: datetime) -> Stored: ...


def decision_flow(
    app: Any,
    settings: Settings,
    *,
    name: str,
    adapter: TypeAdapter[T],
    inputs: Callable[[list[tuple[Message, T]], datetime], list[In]],
    store: DecisionStore[In],
    answers: str,
    views: Sequence[GlobalView] = (),
) -> Flow:
    """Run a flow whose every input gets an answer: decode with ``adapter``, make the
    store's inputs (``inputs``: the flow's own pure part, e.g. pricing against the odds),
    let the store decide the batch in its one transaction, and publish the answers on
    ``answers`` and the dead letters on ``dead-letters``. Inputs are made only once
    ``views`` hold every change that was in Kafka when the batch began (``catch_up``)."""
    answers_topic, dead_letters = settings.topic(answers), settings.topic("dead-letters")
    watched = list(views)

    async def handle(messages: list[Message]) -> Outputs:
        await until_available(lambda: catch_up(watched), what="Kafka")
        batch: Batch[In] = Batch()
        decoded = decode_all(adapter, messages, progress=batch.progress,
                             letters=batch.dead_letters)  # fmt: skip
        now = datetime.now(UTC)
        batch.inputs = inputs(decoded, now)
        with metrics.sink_batch(f"ledger.{name}", len(batch.inputs)):
            stored = await until_available(lambda: store.decide(batch, now), what="PostgreSQL")
        metrics.count_decisions(name, stored.outputs)
        out = Outputs()
        out.add(answers_topic, stored.outputs)
        out.add(dead_letters, letter_records(stored.dead_letters))
        return out

    return declare_flow(app, settings, name=name, topic=settings.topic(name), store=store,
                        handle=handle, views=views)  # fmt: skip


def declare_flow(
    app: Any,
    settings: Settings,
    *,
    name: str,
    topic: str,
    store: Store,
    handle: Handle,
    views: Sequence[GlobalView] = (),
    within: float | None = None,
) -> Flow:
    """Run flow ``name`` on ``topic`` in ``app`` (from its start, once ``views`` are read),
    its batches filling for ``within`` seconds (``CROUPIER_BATCH_WITHIN`` when None)."""
    flow = Flow(app, settings, name=name, topic=topic, store=store, handle=handle, views=views,
                within=within)  # fmt: skip
    app.service(flow)  # an instance: Faust starts it as it is
    # Ready (/readyz) once its views are read to their end and its consumer is subscribed,
    # until its loop ends.
    metrics.add_check(
        f"flow.{name}",
        lambda: (
            flow.source is not None
            and not flow.finished.is_set()
            and all(v.ready.is_set() for v in flow.views)
        ),
    )

    if settings.metrics_port > 0:
        lagging: list[set[int]] = [set()]

        @app_timer(app, metrics.LAG_INTERVAL)
        async def measure_lag() -> None:
            """The lag of each partition this worker owns: its end minus its position."""
            if flow.source is None:
                return
            try:
                lags = await flow.source.lags()
            except Exception as exc:  # a broker that cannot answer now: look again next time
                log.debug("%s: lag not measured: %r", topic, exc)
                return
            lagging[0] = metrics.set_lag(topic, lags, lagging[0])

    return flow
