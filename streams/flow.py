"""One flow = one agent on one source topic, plus the repair that keeps it from losing a tail.

Every flow processes batches the same way (``streams/batching.py``: one in flight, an ack
only after the batch is done) and records per partition how far it is done in
PostgreSQL (``consumer_progress``). Before ``process`` sees a batch, ``streams/gaps.py``
adds back any offsets the consumer skipped before it. That leaves one hole: Faust can
commit an offset past messages its agent never finished, and if no later message
arrives on that partition, no batch ever notices. The repair timer closes it: every
``repair_interval`` seconds it compares, for each partition this worker owns, the
group's committed offset with PostgreSQL's progress; a range that stays behind across
two checks is read back by position and processed like any batch (under the same lock,
so never beside one). Whatever was in fact done already is absorbed by the idempotent
sinks.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from croupier.settings import Settings
from streams.batching import run_batch, until_available
from streams.context import in_partition_of
from streams.gaps import CommittedOffsets, by_partition, fill_gaps, read_range

log = logging.getLogger(__name__)

Process = Callable[[list[Any]], Awaitable[None]]


class Tracked(Protocol):
    """What the flow needs of its sink: a lifecycle, and how far each partition is done."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def progress(self, topic: str, partitions: list[int]) -> dict[int, int]: ...


def follows(done: int | None, offsets: list[int]) -> bool:
    """Whether ``offsets`` continue exactly from ``done`` (the next offset), with no hole."""
    return done is not None and sorted(offsets) == list(range(done, done + len(offsets)))


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
    lock = asyncio.Lock()

    # Partition -> the next offset this process finished. A batch that starts exactly
    # there with no hole cannot have skipped anything, so PostgreSQL is not asked.
    finished: dict[int, int] = {}

    async def complete(events: list[Any]) -> None:
        offsets = by_partition(events)
        if not all(follows(finished.get(p), have) for p, have in offsets.items()):
            events = await fill_gaps(
                events, sink=sink, bootstrap=settings.kafka_bootstrap_servers, topic=source_topic
            )
        await process(events)
        for partition, have in by_partition(events).items():
            finished[partition] = max(have) + 1

    async def one_batch(events: list[Any]) -> None:
        async with lock:
            await run_batch(functools.partial(complete, events))

    @app.agent(source, name=name)  # type: ignore[untyped-decorator]  # app is Any
    async def agent(stream: Any) -> None:
        await sink.open()
        try:
            async for events in stream.take_events(settings.batch_max, settings.batch_within):
                await one_batch(list(events))
        finally:
            await sink.close()

    behind: dict[int, int] = {}  # partition -> progress seen behind the committed offset
    readers: list[CommittedOffsets] = []  # made on first use, kept for the process

    @app.timer(interval=settings.repair_interval)  # type: ignore[untyped-decorator]
    async def repair() -> None:
        mine = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == source_topic)
        if not mine:
            return
        done = await until_available(lambda: sink.progress(source_topic, mine), what="PostgreSQL")
        if not readers:
            readers.append(CommittedOffsets(settings.kafka_bootstrap_servers, settings.app_id))
        committed = await asyncio.to_thread(readers[0].read, source_topic, mine)
        for partition in mine:
            start, end = done.get(partition, 0), committed.get(partition, 0)
            if end <= start:
                behind.pop(partition, None)
                continue
            if behind.get(partition) != start:  # maybe a batch in flight: look again later
                behind[partition] = start
                continue
            behind.pop(partition, None)
            log.warning(
                "%s[%d]: committed at %d but done only to %d; reading the range back",
                source_topic, partition, end, start,
            )  # fmt: skip
            events = await asyncio.to_thread(
                read_range, settings.kafka_bootstrap_servers, source_topic, partition, start, end
            )
            if events:
                # A table write needs a current event to find its changelog partition.
                with in_partition_of(events[0]):
                    await one_batch(events)

    return agent
