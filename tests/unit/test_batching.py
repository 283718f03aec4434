"""A batch is finished before it can be acked, or the process ends without committing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from sinks.base import SinkUnavailable
from streams.batching import EXIT_BATCH_FAILED, run_batch, until_available


def test_a_cancelled_caller_waits_for_its_batch_to_finish() -> None:
    done: list[str] = []

    async def batch() -> None:
        await asyncio.sleep(0.2)
        done.append("written")

    async def scenario() -> None:
        caller = asyncio.ensure_future(run_batch(batch))
        await asyncio.sleep(0.05)
        caller.cancel()  # a shutdown or rebalance arrives mid-batch
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert done == ["written"]

    asyncio.run(scenario())


def test_a_failing_batch_ends_the_process_without_returning() -> None:
    script = textwrap.dedent(
        """
        import asyncio
        from streams.batching import run_batch

        async def batch():
            raise RuntimeError("bug in a rule")

        asyncio.run(run_batch(batch))
        print("returned")  # must never run: returning would let Faust ack the batch
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == EXIT_BATCH_FAILED
    assert "returned" not in result.stdout
    assert "bug in a rule" in result.stderr


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


def test_a_batch_that_lost_a_race_on_a_key_runs_again() -> None:
    calls = []

    async def batch() -> str:
        calls.append(1)
        if len(calls) < 3:
            try:
                raise _UniqueViolation("duplicate key value violates unique constraint")
            except _UniqueViolation as exc:
                raise RuntimeError("insert failed") from exc  # wrapped, as sinks do
        return "stored answers"

    assert asyncio.run(run_batch(batch)) == "stored answers"
    assert len(calls) == 3


def test_a_batch_that_keeps_losing_the_race_ends_the_process() -> None:
    script = textwrap.dedent(
        """
        import asyncio
        from streams.batching import run_batch

        class UniqueViolation(Exception):
            sqlstate = "23505"

        async def batch():
            raise UniqueViolation("always")

        asyncio.run(run_batch(batch))
        print("returned")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == EXIT_BATCH_FAILED
    assert "returned" not in result.stdout
    assert result.stderr.count("lost a race") == 3
