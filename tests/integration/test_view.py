"""Global views on the real broker: read to the end before ready, followed after, rebuilt
from the changelog by a new worker, and made when the changelog topic is missing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest

from config.settings import Settings
from streams.kafka import Sender
from streams.view import GlobalView
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
