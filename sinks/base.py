"""Sink contract: a sink writes one batch atomically, or raises and writes nothing."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

B_contra = TypeVar("B_contra", contravariant=True)


class Sink(Protocol, Generic[B_contra]):
    """Where an agent's batch goes; ``write`` is idempotent, keyed by Kafka position."""

    async def open(self) -> None: ...

    async def write(self, batch: B_contra) -> None: ...

    async def close(self) -> None: ...


class ProgressSink(Sink[B_contra], Protocol):
    """A sink that records how far each partition is done (rows, outputs and table)."""

    async def progress(self, topic: str, partitions: list[int]) -> dict[int, int]: ...

    async def record_progress(self, progress: dict[tuple[str, int], int]) -> None: ...


class SinkUnavailable(RuntimeError):
    """The destination cannot take writes now; the caller retries the same batch later."""
