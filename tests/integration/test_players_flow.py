"""The first topology end to end on the real broker and PostgreSQL."""

from __future__ import annotations

import base64
import json

import pytest

from config.kafka import consume_until
from config.settings import Settings
from tests.conftest import StartWorker
from tests.integration.helpers import player_event, produce, query, rows_recorded, wait_for

pytestmark = pytest.mark.integration


def test_player_events_flow_to_postgres_audit_and_dead_letters(
    settings: Settings, worker_factory: StartWorker
) -> None:
    malformed = b'{"type": "registered", "player_id": '
    unknown_field = player_event("registered", "p-x", favourite_colour="red")
    items = [
        ("p-1", player_event("registered", "p-1")),
        ("p-2", player_event("registered", "p-2", jurisdiction="DK")),
        ("p-1", player_event("session_started", "p-1")),
        ("p-1", player_event("registered", "p-1")),  # a producer retry: unchanged
        ("p-2", player_event("registered", "p-2", jurisdiction="ES")),  # conflicting
        ("p-9", player_event("session_started", "p-9")),  # never registered
        ("p-1", malformed),
        ("p-x", unknown_field),
        ("p-1", player_event("session_ended", "p-1")),
    ]
    delivered = produce(settings, "players", items)
    worker = worker_factory(settings)
    worker.wait_ready()
    wait_for(lambda: rows_recorded(settings) == len(items), timeout=60, what="all rows")

    outcomes = {
        (row[0], row[1]): row[2]
        for row in query(
            settings, "SELECT source_partition, source_offset, outcome FROM player_events"
        )
    }
    by_position = {(m.partition(), m.offset()): i for i, m in enumerate(delivered)}
    got = {by_position[pos]: outcome for pos, outcome in outcomes.items()}
    assert got == {0: "applied", 1: "applied", 2: "applied", 3: "unchanged", 8: "applied"}
    dead = {
        by_position[(r[0], r[1])]: (r[2], bytes(r[3]))
        for r in query(
            settings, "SELECT source_partition, source_offset, reason, value FROM dead_letters"
        )
    }
    assert dead[6] == ("malformed_json", malformed)
    assert dead[7][0] == "invalid" and dead[7][1] == unknown_field
    assert dead[4][0] == "already_registered" and dead[5][0] == "unknown_player"
    assert set(got) | set(dead) == set(range(len(items)))  # exactly one row per message
    assert query(settings, "SELECT player_id, version, last_event FROM players ORDER BY 1") == [
        ("p-1", 3, "session_ended"),
        ("p-2", 1, "registered"),
    ]

    # The outputs: an audit record per applied change, a dead letter per refused input.
    topics = [settings.topic("audit"), settings.topic("dead-letters")]
    records = consume_until(settings, topics, want=lambda rs: len(rs) >= 12, timeout=30)
    audit = [json.loads(r.value) for r in records if r.topic == topics[0]]
    changes = [a for a in audit if a["entity"] == "player"]
    assert sorted((a["entity_id"], a["after"]["version"]) for a in changes) == [
        ("p-1", 1), ("p-1", 2), ("p-1", 3), ("p-2", 1),
    ]  # fmt: skip
    letters = [json.loads(r.value) for r in records if r.topic == topics[1]]
    # Each dead letter is in the trail too, with its reason and exact bytes.
    refused = {a["entity_id"]: a["after"] for a in audit if a["entity"] == "dead_letter"}
    assert {f"{d['source']['topic']}/{d['source']['partition']}/{d['source']['offset']}":
            (d["reason"], d["value_base64"]) for d in letters} == {
        k: (v["reason"], v["value_base64"]) for k, v in refused.items()
    }  # fmt: skip
    assert sorted(d["reason"] for d in letters) == [
        "already_registered", "invalid", "malformed_json", "unknown_player",
    ]  # fmt: skip
    kept = next(d for d in letters if d["reason"] == "malformed_json")
    assert base64.b64decode(kept["value_base64"]) == malformed
    assert kept["source"]["topic"] == settings.topic("players")

    assert worker.terminate() == 0, worker.problems()
