"""One flow = one agent on one source topic, plus the repair that keeps it from losing a tail.

Every flow processes batches the same way (``streams/batching.py``: one in flight, an
ack only after the batch is done, a service away holding the batch and a message that
breaks the flow set aside as its dead letter, here in ``set_aside``) and records per
partition how far it is done in PostgreSQL (``consumer_progress``). Before ``process``
sees a batch, ``streams/gaps.py`` adds back any offsets the consumer skipped before it.
That leaves one hole: Faust can commit an offset past messages its agent never finished,
and if no later message arrives on that partition, no batch ever notices. And under
SIGKILL and restarts we have also seen a worker's consumer deliver nothing at all for a
partition it owns, messages waiting. The repair timer closes both: every
``repair_interval`` seconds it compares, for each partition this worker owns,
PostgreSQL's progress with the group's committed offset and with the partition's end.
Progress behind the committed offset, or behind the end without having moved since the
last look while the flow finished no batch at all, is read back by position (a batch at
a time) and processed like any batch, under the same lock, so never beside one. A
partition waiting behind a flow busy with other partitions' backlog is only waiting its
turn: it is read back only if it has not moved for ``BUSY_LOOKS`` looks (reading it at
once made the flow do, and publish, the same work twice, exactly when it was behind).
Whatever was in fact done already is absorbed by the idempotent sinks, and a redelivered
output is the stored one, byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from croupier.settings import Settings
from schemas.records import DeadLetter
from streams import metrics
from streams.batching import (
    describe,
    hold_until_available,
    isolate,
    run_batch,
    until_available,
)
from streams.context import app_timer, dead_letter, in_partition_of, letter_records, publish
from streams.gaps import (
    Positions,
    by_partition,
    fill_gaps,
    read_range,
    repair_plan,
    unique_positions,
)

log = logging.getLogger(__name__)

Process = Callable[[list[Any]], Awaitable[None]]


class Tracked(Protocol):
    """What the flow needs of its sink: a lifecycle, and how far each partition is done."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def progress(self, topic: str, partitions: list[int]) -> dict[int, int]: ...

    async def record_progress(self, progress: dict[tuple[str, int], int]) -> None: ...

    async def set_aside(self, letter: DeadLetter, progress: dict[tuple[str, int], int]) -> None:
        """Store ``letter`` and ``progress`` (past its message) in one transaction."""
        ...


def follows(done: int | None, offsets: list[int]) -> bool:
    """Whether ``offsets`` continue exactly from ``done`` (the next offset), with no hole."""
    return done is not None and sorted(offsets) == list(range(done, done + len(offsets)))


class Lifecycle(Protocol):
    """A sink that opens and closes."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...


class SinkTurns:
    """A flow's sink taken in turns: one batch at a time, and open or closed between them.

    The agent and the repair timer share the sink. The timer is the app's, not the
    agent's, so it can fire while the agent stops: it takes a turn only while the sink is
    open, and the agent closes the sink between turns, never under a repair's batch.
    """

    def __init__(self, sink: Lifecycle) -> None:
        self.sink = sink
        self.lock = asyncio.Lock()
        self.open = False

    async def start(self) -> None:
        async with self.lock:
            await self.sink.open()
            self.open = True

    async def stop(self) -> None:
        self.open = False  # no turn starts now; one under way finishes first
        async with self.lock:
            await self.sink.close()

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[bool]:
        """Hold the sink for one batch; yields whether it is open (if not, do nothing)."""
        async with self.lock:
            yield self.open


def declare_flow(
    app: Any,
    settings: Settings,
    *,
    name: str,
    source_topic: str,
    sink: Tracked,
    process: Process,
) -> Any:
    """Declare the agent ``name`` on ``source_topic`` and its repair timer; returns the agent."""
    source = app.topic(source_topic, key_type=bytes, value_type=bytes)
    turns = SinkTurns(sink)

    # Partition -> the next offset this process finished. A batch that starts exactly
    # there with no hole cannot have skipped anything, so PostgreSQL is not asked.
    finished: dict[int, int] = {}

    dead_letters = settings.topic("dead-letters")

    async def set_aside(event: Any, exc: BaseException, reason: str) -> None:
        """Dead-letter a message its flow cannot get past, and move its partition on."""
        letter = dead_letter(event, reason, describe(exc))
        msg = event.message
        log.error("%s[%d]@%d set aside as %s: %s", msg.topic, msg.partition, msg.offset,
                  reason, letter.error)  # fmt: skip
        progress = {(msg.topic, msg.partition): msg.offset + 1}
        await until_available(lambda: sink.set_aside(letter, progress), what="PostgreSQL")
        await hold_until_available(
            lambda: publish(app, dead_letters, letter_records([(msg.key, letter)]))
        )
        await hold_until_available(app.producer.flush)

    async def complete(events: list[Any]) -> None:
        events = unique_positions(events)
        offsets = by_partition(events)
        if not all(follows(finished.get(p), have) for p, have in offsets.items()):
            bootstrap = settings.kafka_bootstrap_servers
            events = await hold_until_available(
                lambda: fill_gaps(events, sink=sink, bootstrap=bootstrap, topic=source_topic)
            )
        await isolate(events, process, set_aside)
        for partition, have in by_partition(events).items():
            finished[partition] = max(have) + 1

    batches = [0, 0]  # batches finished: now, and at the repair timer's last look
    flow = name.removeprefix("croupier.")
    consumed = metrics.EVENTS.labels(source_topic)
    seconds, sizes = metrics.FLOW_SECONDS.labels(flow), metrics.FLOW_SIZE.labels(flow)

    async def locked_batch(events: list[Any]) -> None:
        """One batch; the caller holds the sink's turn."""
        started = time.perf_counter()
        await run_batch(functools.partial(complete, events))
        seconds.observe(time.perf_counter() - started)
        sizes.observe(len(events))
        consumed.inc(len(events))
        batches[0] += 1

    @app.agent(source, name=name)  # type: ignore[untyped-decorator]  # app is Any
    async def agent(stream: Any) -> None:
        await turns.start()
        try:
            async for events in stream.take_events(settings.batch_max, settings.batch_within):
                async with turns.turn():
                    await locked_batch(list(events))
        finally:
            await turns.stop()

    behind: dict[int, tuple[int, int]] = {}  # partition -> (progress seen behind, looks)
    views: list[Positions] = []  # made on first use, kept for the process

    async def plan_repairs(mine: list[int]) -> dict[int, tuple[int, int, str]]:
        """Per partition, a range to read back: behind the commits, or stalled."""
        done = await until_available(lambda: sink.progress(source_topic, mine), what="PostgreSQL")
        if not views:
            views.append(Positions(settings.kafka_bootstrap_servers, settings.app_id))
        committed = await asyncio.to_thread(views[0].committed, source_topic, mine)
        ends = await asyncio.to_thread(views[0].ends, source_topic, mine)
        busy, batches[1] = batches[0] != batches[1], batches[0]
        return repair_plan(mine, done, committed, ends, behind, settings.batch_max, busy=busy)

    async def read_back(partition: int, start: int, end: int) -> None:
        """Process ``start..end-1`` of ``partition``, read by position, as one batch."""
        bootstrap = settings.kafka_bootstrap_servers
        try:
            events = await asyncio.to_thread(
                read_range, bootstrap, source_topic, partition, start, end
            )
        except Exception as exc:  # a broker that cannot answer now: the next look tries again
            log.warning("%s[%d]: could not read back: %r", source_topic, partition, exc)
            return
        async with turns.turn() as open_:
            if not open_ or app.should_stop:
                return  # stopping: whoever owns the partition next finds it behind
            if events:
                # A table write needs a current event to find its changelog partition.
                with in_partition_of(events[0]):
                    await locked_batch(events)
                return
            # Nothing a reader can see there (transaction markers): nothing to process.
            skipped = {(source_topic, partition): end}
            await until_available(lambda: sink.record_progress(skipped), what="PostgreSQL")

    @app_timer(app, settings.repair_interval)
    async def repair() -> None:
        if not turns.open:
            return
        mine = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == source_topic)
        if not mine:
            return
        try:
            plans = await plan_repairs(mine)
        except Exception as exc:  # a broker that cannot answer now: look again next time
            log.warning("%s: repair check failed: %r", source_topic, exc)
            if views:  # the next look asks with a new client
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(views.pop().close)
            return
        for partition, (start, end, why) in plans.items():
            if app.should_stop:
                return
            log.warning(
                "%s[%d]: done only to %d, %s; reading %d..%d back",
                source_topic, partition, start, why, start, end - 1,
            )  # fmt: skip
            await read_back(partition, start, end)

    if settings.metrics_port > 0:
        lagging: list[set[int]] = [set()]

        @app_timer(app, metrics.LAG_INTERVAL)
        async def measure_lag() -> None:
            """The lag of each partition this worker owns: its end minus what is done."""
            tps = [tp for tp in app.consumer.assignment() if tp.topic == source_topic]
            try:
                ends = await app.consumer.highwaters(*tps) if tps else {}
                lags = {}
                for tp in tps:
                    done = finished.get(tp.partition)
                    if done is None:  # nothing processed here yet: where the consumer is
                        done = await app.consumer.position(tp)
                    if done is not None and ends.get(tp) is not None:
                        lags[tp.partition] = ends[tp] - done
            except Exception as exc:  # a broker that cannot answer now: look again next time
                log.debug("%s: lag not measured: %r", source_topic, exc)
                return
            lagging[0] = metrics.set_lag(source_topic, lags, lagging[0])

    return agent
