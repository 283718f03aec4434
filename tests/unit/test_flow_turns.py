"""The sink a flow's agent and repair timer share is closed between batches, never under one."""

from __future__ import annotations

import asyncio

from streams.flow import SinkTurns


class Sink:
    """An in-memory sink that records what happened to it, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.is_open = False

    async def open(self) -> None:
        self.is_open = True
        self.events.append("open")

    async def close(self) -> None:
        self.is_open = False
        self.events.append("close")

    async def write(self, what: str) -> None:
        assert self.is_open, f"{what} written to a closed sink"
        await asyncio.sleep(0.05)
        assert self.is_open, f"the sink was closed under {what}"
        self.events.append(what)

    async def progress(self, topic: str, partitions: list[int]) -> dict[int, int]:
        return {}

    async def record_progress(self, progress: dict[tuple[str, int], int]) -> None:
        return None


def test_a_stop_waits_for_the_batch_under_way_and_no_turn_works_after_it() -> None:
    sink = Sink()
    turns = SinkTurns(sink)

    async def repair(what: str) -> None:
        async with turns.turn() as open_:
            if open_:
                await sink.write(what)

    async def scenario() -> None:
        await turns.start()
        under_way = asyncio.ensure_future(repair("repair batch"))
        await asyncio.sleep(0.01)  # the repair holds its turn
        await turns.stop()  # the agent stops meanwhile
        await under_way
        assert not turns.open
        await repair("a repair after the stop")  # finds the sink closed: does nothing

    asyncio.run(scenario())
    assert sink.events == ["open", "repair batch", "close"]


def test_a_restarted_agent_opens_the_sink_again() -> None:
    sink = Sink()
    turns = SinkTurns(sink)

    async def scenario() -> None:
        await turns.start()
        await turns.stop()
        await turns.start()
        async with turns.turn() as open_:
            assert open_
            await sink.write("batch")
        await turns.stop()

    asyncio.run(scenario())
    assert sink.events == ["open", "close", "open", "batch", "close"]
