"""A graceful stop while the timers are busy exits 0, and what they had not done yet is done
by the next worker: nothing lost, and no crash from a send to a closed producer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from config.settings import Settings
from tests.conftest import StartWorker
from tests.integration.helpers import produce, query, rows_recorded, wait_for
from tests.integration.test_players_crash import _stream

pytestmark = pytest.mark.integration

SLOW_STOP = Path(__file__).parents[1] / "support" / "slow_stop"
UNPUBLISHED = """SELECT count(*) FROM audit_records a
                   LEFT JOIN audit_published p USING (chain)
                  WHERE a.seq > coalesce(p.seq, 0)"""


def test_sigterm_while_the_audit_relay_is_busy_exits_0_and_loses_nothing(
    settings: Settings, worker_factory: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Faust stops the app's timers last, after the producer. Slow sends to `audit` keep the
    # relay inside a pass over its backlog, and a slow last stop keeps it running there
    # after the producer has closed: before the fix, the worker crashed and exited 1.
    monkeypatch.setenv("PYTHONPATH", str(SLOW_STOP))
    monkeypatch.setenv("CROUPIER_TEST_SLOW_AUDIT_SEND", "0.02")
    monkeypatch.setenv("CROUPIER_TEST_SLOW_LAST_STOP", "2.0")
    items, applied, _ = _stream(random.Random(7))
    worker = worker_factory(settings)
    worker.wait_ready()
    produce(settings, "players", items)
    wait_for(lambda: rows_recorded(settings) >= len(items) // 3, timeout=120, what="a third")
    backlog = query(settings, UNPUBLISHED)[0][0]
    assert backlog > 100  # the relay is mid-pass: the stop lands inside it
    assert worker.terminate() == 0, worker.problems()

    # The next worker does the rest, and the relay publishes every record.
    monkeypatch.delenv("CROUPIER_TEST_SLOW_AUDIT_SEND")
    monkeypatch.delenv("CROUPIER_TEST_SLOW_LAST_STOP")
    worker_factory(settings, restart_of=worker)
    worker.wait_ready()
    wait_for(lambda: rows_recorded(settings) == len(items), timeout=120, what="every message")
    wait_for(lambda: query(settings, UNPUBLISHED)[0][0] == 0, timeout=60, what="the relay")
    stored = query(settings, "SELECT count(*) FROM audit_records WHERE entity = 'player'")
    assert stored[0][0] == sum(applied.values())
