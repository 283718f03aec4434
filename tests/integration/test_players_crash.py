"""SIGKILL the worker mid-stream, restart it, and prove nothing is lost or applied twice."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from config.kafka import consume_until
from config.settings import Settings
from sinks.postgres.audit import verify
from tests.conftest import StartWorker
from tests.integration.helpers import player_event, produce, query, rows_recorded, wait_for

pytestmark = pytest.mark.integration

PLAYERS = 150
FOLLOW_UPS = 15  # session events per player after registering


def _stream(rng: random.Random) -> tuple[list[tuple[str, bytes]], Counter[str], int]:
    """Registrations, then interleaved session events, malformed messages sprinkled in."""
    items: list[tuple[str, bytes]] = []
    applied: Counter[str] = Counter()
    malformed = 0
    pending = {f"p-{n}": FOLLOW_UPS for n in range(PLAYERS)}
    for pid in pending:
        items.append((pid, player_event("registered", pid)))
        applied[pid] += 1
    while pending:
        pid = rng.choice(sorted(pending))
        kind = "session_started" if pending[pid] % 2 else "session_ended"
        items.append((pid, player_event(kind, pid)))
        applied[pid] += 1
        pending[pid] -= 1
        if not pending[pid]:
            del pending[pid]
        if rng.random() < 0.01:
            items.append((pid, b"{not json"))
            malformed += 1
    return items, applied, malformed


def diagnose(settings: Settings, delivered: list[Any]) -> str:
    """Which messages have no row, and where progress and the group's commits stand."""
    produced = {(m.partition(), m.offset()) for m in delivered}
    rows = set(query(settings, "SELECT source_partition, source_offset FROM player_events"))
    rows |= set(query(settings, "SELECT source_partition, source_offset FROM dead_letters"))
    missing = sorted(produced - rows)
    progress = query(settings, "SELECT partition, next_offset FROM consumer_progress "
                     "WHERE topic = %s ORDER BY 1", (settings.topic("players"),))  # fmt: skip
    return f"missing {len(missing)}: {missing[:20]}; progress {progress}"


def test_sigkill_mid_stream_loses_nothing_and_applies_nothing_twice(
    settings: Settings, worker_factory: StartWorker
) -> None:
    rng = random.Random(20261124)
    items, applied, malformed = _stream(rng)
    total = len(items)
    delivered: list[Any] = []

    def publish() -> None:
        # A steady stream over several seconds, so the kills land mid-stream.
        for start in range(0, total, 100):
            delivered.extend(produce(settings, "players", items[start : start + 100]))
            time.sleep(0.05)

    worker = worker_factory(settings)
    worker.wait_ready()
    producer = threading.Thread(target=publish)
    producer.start()
    # Kill at three points of progress, and once stop gracefully, restarting each time.
    for fraction, how in ((0.15, "kill"), (0.4, "kill"), (0.6, "term"), (0.8, "kill")):

        def progressed(target: float = total * fraction) -> bool:
            return rows_recorded(settings) >= target

        wait_for(progressed, timeout=120, what=f"{fraction:.0%} progress")
        time.sleep(rng.uniform(0, 0.3))
        if how == "kill":
            worker.kill()
        else:
            assert worker.terminate() == 0, worker.problems()
        worker_factory(settings, restart_of=worker)
        worker.wait_ready()
    producer.join()
    try:
        wait_for(lambda: rows_recorded(settings) >= total, timeout=180, what="every message's row")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnose(settings, delivered)}") from None
    time.sleep(2)  # anything applied twice would show up now
    assert worker.history == [-9, -9, 0, -9]

    # One row per message, at exactly the positions Kafka gave them.
    produced = {(m.partition(), m.offset()) for m in delivered}
    assert len(produced) == total
    rows = query(settings, "SELECT source_partition, source_offset FROM player_events")
    rows += query(settings, "SELECT source_partition, source_offset FROM dead_letters")
    assert len(rows) == total and set(rows) == produced

    # Nothing refused that should have applied: the standings were read back after every restart.
    outcomes = dict(query(settings, "SELECT outcome, count(*) FROM player_events GROUP BY 1"))
    assert outcomes == {"applied": sum(applied.values())}
    dead = dict(query(settings, "SELECT reason, count(*) FROM dead_letters GROUP BY 1"))
    assert dead == ({"malformed_json": malformed} if malformed else {})

    # Every player's version counts its events exactly once.
    versions = dict(query(settings, "SELECT player_id, version FROM players"))
    assert versions == dict(applied)

    # The audit trail has every applied change; a replayed one is the same record again.
    audit = consume_until(
        settings,
        [settings.topic("audit")],
        # Every player change relayed (the dead letters' records are on the topic too).
        want=lambda rs: (
            len(
                {
                    (d["source"]["partition"], d["source"]["offset"])
                    for d in map(json.loads, (r.value for r in rs))
                    if d["entity"] == "player"
                }
            )
            >= sum(applied.values())
        ),
        timeout=60,
    )
    by_source: dict[tuple[int, int], set[int]] = {}
    for r in audit:
        doc = json.loads(r.value)
        if doc["entity"] != "player":
            continue  # a dead letter's record
        src = (doc["source"]["partition"], doc["source"]["offset"])
        by_source.setdefault(src, set()).add(doc["after"]["version"])
    assert len(by_source) == sum(applied.values())
    assert all(len(v) == 1 for v in by_source.values())

    # In PostgreSQL, exactly one chained record per applied change, and every chain holds.
    chained = query(settings, "SELECT source_partition, source_offset, count(*) "
                    "FROM audit_records WHERE entity = 'player' GROUP BY 1, 2")  # fmt: skip
    assert len(chained) == sum(applied.values()) and all(n == 1 for *_, n in chained)
    # And one per dead letter, however often its input was read again.
    letters = query(settings, "SELECT source_partition, source_offset FROM dead_letters")
    recorded = query(settings, "SELECT source_partition, source_offset FROM audit_records "
                     "WHERE entity = 'dead_letter'")  # fmt: skip
    assert sorted(recorded) == sorted(letters)
    with psycopg.connect(settings.pg_dsn.get_secret_value(),
                         options=f"-c search_path={settings.pg_schema}") as conn:  # fmt: skip
        result = verify(conn)
    assert result.ok, result.problems
