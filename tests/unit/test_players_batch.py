"""Planning a players batch without a broker: decisions, dead letters, and replays skipped."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from croupier.policies import load_policies
from croupier.settings import POLICY_DIR
from schemas.players import OpenSession
from streams.players import decode_batch
from streams.players import plan_batch as _plan

POLICIES = load_policies(POLICY_DIR)


def plan(items: Any, table: Any, stored: Any = None) -> Any:
    return _plan(items, table, stored, policies=POLICIES)


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Event:
    message: Message


def event(offset: int, value: bytes, *, partition: int = 0, key: bytes = b"p-1") -> Event:
    return Event(Message("players", partition, offset, key, value))


def doc(kind: str, pid: str = "p-1", sid: str = "s-1") -> bytes:
    body: dict[str, Any] = {"type": kind, "player_id": pid, "timestamp": "2026-11-24T17:00:00Z"}
    if kind == "registered":
        body |= {"jurisdiction": "UK", "currency": "EUR", "birth_date": "1990-05-01"}
    else:
        body["session_id"] = sid
    return json.dumps(body).encode()


def test_a_batch_decides_every_event_once() -> None:
    table: dict[str, Any] = {}
    events = [
        event(0, doc("registered")),
        event(1, doc("session_started")),
        event(2, b"{oops"),
        event(3, doc("session_started", "p-2"), key=b"p-2"),
    ]
    batch, _ = plan(decode_batch(events), table)
    assert [(e.source.offset, e.outcome) for e in batch.events] == [(0, "applied"), (1, "applied")]
    assert batch.states["p-1"].version == 2
    assert [(d.source.offset, d.reason) for d in batch.dead_letters] == [
        (2, "malformed_json"),
        (3, "unknown_player"),
    ]
    assert base64.b64decode(batch.dead_letters[0].value_base64) == b"{oops"
    assert [a.after["version"] for a in batch.audit if a.after] == [1, 2]
    # Nothing touched the table yet: it moves only after PostgreSQL and Kafka have the batch.
    assert table == {}


def test_an_event_the_table_already_reflects_is_not_applied_again() -> None:
    first = [event(0, doc("registered")), event(1, doc("session_started"))]
    _, out = plan(decode_batch(first), {})
    table = {key: state.model_dump(mode="json") for _, key, state in out.table}
    # After a crash the same two events come again, then a new one.
    replay = [
        event(0, doc("registered")),
        event(1, doc("session_started")),
        event(2, doc("session_started", sid="s-2")),
    ]
    batch, out = plan(decode_batch(replay), table)
    assert [e.source.offset for e in batch.events] == [2]
    assert batch.states["p-1"].version == 3
    assert [a.source.offset for a in batch.audit] == [2]


def test_a_newer_standing_in_postgresql_wins_over_a_table_left_behind_by_a_crash() -> None:
    first, out = plan(decode_batch([event(0, doc("registered"))]), {})
    behind = {key: state.model_dump(mode="json") for _, key, state in out.table}
    # PostgreSQL committed offset 1 (version 2), but the worker died before its table did.
    opened = OpenSession(session_id="s-1", started_at=first.states["p-1"].updated_at)
    stored = {"p-1": first.states["p-1"].model_copy(
        update={"version": 2, "source_offset": 1, "session": opened})}  # fmt: skip
    batch, _ = plan(decode_batch([event(2, doc("session_ended"))]), behind, stored)
    assert batch.states["p-1"].version == 3
    redelivered, _ = plan(decode_batch([event(1, doc("session_started"))]), behind, stored)
    assert redelivered.events == []


def test_an_event_stamped_ahead_of_the_servers_clock_is_a_clock_skew_dead_letter() -> None:
    ahead = json.loads(doc("session_started"))
    ahead["timestamp"] = "9999-01-01T00:00:00Z"
    events = [event(0, doc("registered")), event(1, json.dumps(ahead).encode())]
    batch, out = plan(decode_batch(events), {})
    assert [(e.source.offset, e.outcome) for e in batch.events] == [(0, "applied")]
    assert [(d.source.offset, d.reason) for d in batch.dead_letters] == [(1, "clock_skew")]
    assert batch.states["p-1"].session is None
    assert len(out.dead_letters) == 1
