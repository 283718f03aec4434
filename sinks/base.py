"""Store contract: a flow's batch is stored atomically, or the store raises and stores nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from schemas.records import DeadLetter

In = TypeVar("In")
Output = tuple[bytes, bytes]  # (key, value) to publish
Letters = list[tuple[bytes | None, DeadLetter]]  # (the original key, its dead letter)


@dataclass
class Batch(Generic[In]):
    """A flow's batch as its store takes it: the decoded inputs, the dead letters decoding
    made, and each partition's next offset once the batch is stored."""

    inputs: list[In] = field(default_factory=list)
    dead_letters: Letters = field(default_factory=list)
    progress: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass
class Stored:
    """What a stored batch publishes: its answers, in order, and its dead letters."""

    outputs: list[Output] = field(default_factory=list)
    dead_letters: Letters = field(default_factory=list)


class Store(Protocol):
    """What the commit protocol (``streams/flow.py``) needs of every flow's store, beside
    the one transaction per batch its flow runs there."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def set_aside(self, letter: DeadLetter, progress: dict[tuple[str, int], int]) -> None:
        """Store a message's dead letter and ``progress`` past it, in one transaction."""
        ...


class SinkUnavailable(RuntimeError):
    """The destination cannot take writes now; the caller retries the same batch later."""


# SQLSTATE classes that are the data's own fault, not the database's: a data exception
# (22: a value out of range, too long, a NUL in text), an integrity violation (23) and a
# program limit (54: an index row too large). psycopg files 54 under OperationalError,
# beside a lost connection, so the class is what tells them apart.
DATA_SQLSTATES = ("22", "23", "54")


def caused_by_data(exc: BaseException) -> bool:
    """Whether ``exc`` is a database refusing a value rather than being unavailable.

    psycopg refuses some values before they reach the server (a NUL in text): a
    ``DataError`` with no SQLSTATE, the data's fault all the same."""
    import psycopg  # the adapters' driver; imported here so the contract stays light

    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str):
        return state.startswith(DATA_SQLSTATES)
    return isinstance(exc, psycopg.DataError)
