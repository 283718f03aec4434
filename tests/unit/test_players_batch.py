"""Planning a players batch without a broker: decisions, dead letters, and replays skipped."""

from __future__ import annotations

import base64
import json
from typing import Any

from config.policies import load_policies
from config.settings import POLICY_DIR
from schemas.players import OpenSession
from streams.kafka import Message
from streams.players import decode_batch
from streams.players import plan_batch as _plan

POLICIES = load_policies(POLICY_DIR)


def plan(items: Any, stored: Any = None) -> Any:
    return _plan(items, stored or {}, policies=POLICIES)


def event(offset: int, value: bytes, *, partition: int = 0, key: bytes = b"p-1") -> Message:
    return Message("players", partition, offset, key, value)


def doc(kind: str, pid: str = "p-1", sid: str = "s-1") -> bytes:
    body: dict[str, Any] = {"type": kind, "player_id": pid, "timestamp": "2026-11-24T17:00:00Z"}
    if kind == "registered":
        body |= {"jurisdiction": "UK", "currency": "EUR", "birth_date": "1990-05-01"}
    else:
        body["session_id"] = sid
    return json.dumps(body).encode()


def test_a_batch_decides_every_event_once() -> None:
    events = [
        event(0, doc("registered")),
        event(1, doc("session_started")),
        event(2, b"{oops"),
        event(3, doc("session_started", "p-2"), key=b"p-2"),
    ]
    batch, letters = plan(decode_batch(events))
    assert [(e.source.offset, e.outcome) for e in batch.events] == [(0, "applied"), (1, "applied")]
    assert batch.states["p-1"].version == 2
    assert [(d.source.offset, d.reason) for d in batch.dead_letters] == [
        (2, "malformed_json"),
        (3, "unknown_player"),
    ]
    assert [key for key, _ in letters] == [b"p-1", b"p-2"]
    assert base64.b64decode(batch.dead_letters[0].value_base64) == b"{oops"
    assert [a.after["version"] for a in batch.audit if a.after] == [1, 2]


def test_an_event_the_stored_standing_already_reflects_is_not_applied_again() -> None:
    first, _ = plan(decode_batch([event(0, doc("registered")), event(1, doc("session_started"))]))
    stored = dict(first.states)  # what PostgreSQL committed before a crash
    # After the crash the same two events come again, then a new one.
    replay = [
        event(0, doc("registered")),
        event(1, doc("session_started")),
        event(2, doc("session_started", sid="s-2")),
    ]
    batch, _ = plan(decode_batch(replay), stored)
    assert [e.source.offset for e in batch.events] == [2]
    assert batch.states["p-1"].version == 3
    assert [a.source.offset for a in batch.audit] == [2]


def test_the_same_offset_of_another_partition_is_applied() -> None:
    first, _ = plan(decode_batch([event(0, doc("registered")), event(1, doc("session_started"))]))
    opened = OpenSession(session_id="s-1", started_at=first.states["p-1"].updated_at)
    assert first.states["p-1"].session == opened
    batch, _ = plan(decode_batch([event(1, doc("session_ended"), partition=1)]),
                    dict(first.states))  # fmt: skip
    assert [e.source.offset for e in batch.events] == [1]
    assert batch.states["p-1"].session is None


def test_an_event_stamped_ahead_of_the_servers_clock_is_a_clock_skew_dead_letter() -> None:
    ahead = json.loads(doc("session_started"))
    ahead["timestamp"] = "9999-01-01T00:00:00Z"
    events = [event(0, doc("registered")), event(1, json.dumps(ahead).encode())]
    batch, letters = plan(decode_batch(events))
    assert [(e.source.offset, e.outcome) for e in batch.events] == [(0, "applied")]
    assert [(d.source.offset, d.reason) for d in batch.dead_letters] == [(1, "clock_skew")]
    assert batch.states["p-1"].session is None
    assert len(letters) == 1
