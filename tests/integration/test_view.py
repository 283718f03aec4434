"""Global views on the real broker: read to the end before ready, followed after, rebuilt
from the changelog by a new worker, and made when the changelog topic is missing."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from config.settings import Settings
from sinks.base import SinkUnavailable
from streams.kafka import Sender
from streams.view import GlobalView, catch_up
from topologies.topics import changelog_topic

pytestmark = pytest.mark.integration


async def eventually(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30.0
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the view did not catch up in time")
        await asyncio.sleep(0.05)


def test_views_share_one_changelog(settings: Settings) -> None:
    topic = changelog_topic(settings, f"view-{uuid.uuid4().hex[:8]}")  # not there yet

    async def scenario() -> None:
        writer, reader = GlobalView(settings, topic), GlobalView(settings, topic)
        await writer.acquire()  # makes the topic
        await reader.acquire()
        sender = Sender(settings)
        for n in range(200):
            writer[f"e-{n % 20}"] = {"event_id": f"e-{n % 20}", "n": n}
        # Seen by its writer at once, by nobody else before it is published.
        assert writer.get("e-19") == {"event_id": "e-19", "n": 199}
        assert reader.get("e-19") is None
        sender.publish(topic, writer.changes())
        await sender.flush()
        await eventually(
            lambda: len(reader) == 20 and reader.get("e-0") == {"event_id": "e-0", "n": 180}
        )
        assert dict(reader.items()) == dict(writer.items())
        # The writer reads its own records back, and then holds what the changelog holds.
        await eventually(lambda: not writer.state.pending)
        assert dict(writer.items()) == dict(reader.items())
        # A new worker's view is whole before it says it is ready.
        late = GlobalView(settings, topic)
        await late.acquire()
        assert dict(late.items()) == dict(writer.items())
        for view in (writer, reader, late):
            await view.release()
        await sender.close()

    asyncio.run(scenario())


def test_catch_up_waits_for_what_the_changelog_held(settings: Settings) -> None:
    """A flow decides on a view only once it holds every change that was in Kafka when the
    batch began: a view held back (here: its thread stalled) holds the batch, and one that
    cannot catch up in time is a service away, never a stale answer."""
    topic = changelog_topic(settings, f"view-{uuid.uuid4().hex[:8]}")

    async def scenario() -> None:
        writer, reader = GlobalView(settings, topic), GlobalView(settings, topic)
        await writer.acquire()
        await reader.acquire()
        await catch_up([reader])  # nothing published: nothing to wait for
        gate = threading.Event()
        apply = reader.state.apply

        def stalled(key: bytes | None, value: bytes | None) -> None:
            gate.wait()
            apply(key, value)

        reader.state.apply = stalled  # type: ignore[method-assign, assignment]
        sender = Sender(settings)
        writer["e-1"] = {"event_id": "e-1", "status": "stopped"}
        sender.publish(topic, writer.changes())
        await sender.flush()  # in Kafka: every decision from now on must see it
        with pytest.raises(SinkUnavailable, match="not deciding on it"):
            await catch_up([reader], within=0.5)
        assert reader.get("e-1") is None
        waiting = asyncio.create_task(catch_up([reader]))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # held while the view is behind
        gate.set()
        await asyncio.wait_for(waiting, 10)
        assert reader.get("e-1") == {"event_id": "e-1", "status": "stopped"}
        for view in (writer, reader):
            await view.release()
        await sender.close()

    asyncio.run(scenario())
