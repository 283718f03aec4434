"""A service away holds a batch; a bad message is set aside, never looped on."""

from __future__ import annotations

import asyncio

import psycopg

from sinks.base import SinkUnavailable
from streams.batching import (
    MESSAGE_TRIES,
    describe,
    infrastructure,
    isolate,
    refused_data,
    until_available,
)


def test_an_unavailable_sink_is_retried_until_it_takes_the_batch() -> None:
    attempts: list[int] = []

    async def write() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            msg = "database restarting"
            raise SinkUnavailable(msg)

    asyncio.run(until_available(write, what="test sink", max_delay=0.01))
    assert len(attempts) == 3


class _UniqueViolation(Exception):
    sqlstate = "23505"  # what psycopg's errors.UniqueViolation carries


class _DataError(Exception):
    sqlstate = "22003"  # numeric value out of range


class _ProgramLimit(Exception):
    sqlstate = "54000"  # index row size exceeds the maximum


class _ConnectionLost(Exception):
    sqlstate = "08006"


class _Undefined(Exception):
    sqlstate = "42883"  # a function the deployment forgot: no message's fault


class _KafkaError:
    def __init__(self, retriable: bool, code: int = 0) -> None:
        self._retriable, self._code = retriable, code

    def retriable(self) -> bool:
        return self._retriable

    def code(self) -> int:
        return self._code


class _KafkaException(Exception):  # what confluent-kafka's KafkaException looks like
    pass


class _MessageTooLarge(Exception):  # what aiokafka's errors look like
    retriable = False


def test_infrastructure_errors_are_told_from_a_message_s_own() -> None:
    assert infrastructure(SinkUnavailable("down"))
    assert infrastructure(_ConnectionLost("server closed the connection"))
    assert infrastructure(_Undefined("function does not exist"))
    assert infrastructure(ConnectionRefusedError())
    assert infrastructure(_KafkaException(_KafkaError(retriable=True)))
    assert infrastructure(_KafkaException(_KafkaError(retriable=False, code=-195)))
    try:
        raise RuntimeError("insert failed") from _ConnectionLost("gone")
    except RuntimeError as wrapped:
        assert infrastructure(wrapped)
    assert not infrastructure(_DataError("numeric field overflow"))
    assert not infrastructure(_ProgramLimit("index row size 600000 exceeds maximum"))
    assert not infrastructure(_MessageTooLarge())
    assert not infrastructure(_KafkaException(_KafkaError(retriable=False, code=10)))
    assert not infrastructure(RecursionError("maximum recursion depth exceeded"))
    assert not infrastructure(ValueError("a bug a message reaches"))
    assert refused_data(_DataError("x")) and refused_data(_ProgramLimit("x"))
    assert not refused_data(_UniqueViolation("race")) and not refused_data(ValueError())
    # psycopg refuses a NUL in text before it reaches the server: no SQLSTATE, still data.
    assert refused_data(psycopg.DataError("PostgreSQL text fields cannot contain NUL"))


def test_describe_is_short_and_printable() -> None:
    text = describe(ValueError("bad\x00id\n" + "x" * 5000))
    assert text.startswith("ValueError: bad?id?")
    assert len(text) <= 500 and text.isprintable()


class _Flow:
    """A flow in memory: what it decided, in order, and what it set aside."""

    def __init__(self, poison: set[int], *, fail: type[Exception] = ValueError) -> None:
        self.poison, self.fail = poison, fail
        self.decided: list[int] = []
        self.calls = 0
        self.aside: list[tuple[int, str, str]] = []

    async def process(self, events: list[int]) -> None:
        self.calls += 1
        if self.poison & set(events):
            msg = f"cannot decide {sorted(self.poison & set(events))}"
            raise self.fail(msg)
        self.decided.extend(events)

    async def set_aside(self, event: int, exc: BaseException, reason: str) -> None:
        self.aside.append((event, reason, describe(exc)))


def test_a_poison_message_is_set_aside_and_every_other_message_is_decided_in_order() -> None:
    flow = _Flow({7, 19})
    asyncio.run(isolate(list(range(32)), flow.process, flow.set_aside))
    assert flow.decided == [e for e in range(32) if e not in {7, 19}]
    assert [(e, r) for e, r, _ in flow.aside] == [(7, "processing_error"), (19, "processing_error")]
    assert "cannot decide [7]" in flow.aside[0][2]
    # Bisection: far fewer runs than one per message, and each poison tried MESSAGE_TRIES times.
    assert flow.calls < 32


def test_a_message_postgresql_refuses_is_set_aside_as_invalid_after_one_try() -> None:
    flow = _Flow({3}, fail=_DataError)
    asyncio.run(isolate([3], flow.process, flow.set_aside))
    assert flow.calls == 1
    assert [(e, r) for e, r, _ in flow.aside] == [(3, "invalid")]


def test_a_bug_beside_a_refused_value_is_still_a_processing_error() -> None:
    # The bug's message is found while the batch's first failure (PostgreSQL refusing the
    # other message's value) is still around: it must not be taken for the data's fault.
    async def process(events: list[int]) -> None:
        if 1 in events:
            raise _DataError("invalid byte sequence")
        if 2 in events:
            raise ValueError("a bug")

    aside: list[tuple[int, str]] = []

    async def set_aside(event: int, exc: BaseException, reason: str) -> None:
        aside.append((event, reason))

    asyncio.run(isolate([0, 1, 2, 3], process, set_aside))
    assert aside == [(1, "invalid"), (2, "processing_error")]


def test_a_failing_message_is_tried_a_bounded_number_of_times() -> None:
    flow = _Flow({0})
    asyncio.run(isolate([0], flow.process, flow.set_aside))
    assert flow.calls == MESSAGE_TRIES
    assert len(flow.aside) == 1


def test_a_message_that_fails_once_is_not_set_aside() -> None:
    tries: list[int] = []
    decided: list[int] = []

    async def process(events: list[int]) -> None:
        tries.append(1)
        if len(tries) < 3:
            raise ValueError("flaky")
        decided.extend(events)

    async def set_aside(event: int, exc: BaseException, reason: str) -> None:
        raise AssertionError("set aside")

    asyncio.run(isolate([1, 2], process, set_aside))
    assert decided == [1, 2]


def test_an_unavailable_service_holds_the_batch_and_nothing_is_set_aside() -> None:
    calls: list[int] = []
    decided: list[int] = []

    async def process(events: list[int]) -> None:
        calls.append(1)
        if len(calls) < 4:
            raise RuntimeError("write failed") from _ConnectionLost("connection reset")
        decided.extend(events)

    async def set_aside(event: int, exc: BaseException, reason: str) -> None:
        raise AssertionError("set aside")

    asyncio.run(isolate([1, 2, 3], process, set_aside))
    assert decided == [1, 2, 3]
    assert len(calls) == 4  # the whole batch each time: never split for a service away


def test_a_batch_that_lost_a_race_on_a_key_runs_again_whole() -> None:
    calls: list[list[int]] = []

    async def process(events: list[int]) -> None:
        calls.append(events)
        if len(calls) < 3:
            try:
                raise _UniqueViolation("duplicate key value violates unique constraint")
            except _UniqueViolation as exc:
                raise RuntimeError("insert failed") from exc  # wrapped, as sinks do

    async def set_aside(event: int, exc: BaseException, reason: str) -> None:
        raise AssertionError("set aside")

    asyncio.run(isolate([1, 2], process, set_aside))
    assert calls == [[1, 2], [1, 2], [1, 2]]
