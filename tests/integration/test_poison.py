"""Poison in every flow at once: hostile bytes and a message that breaks our own code, in the
middle of normal traffic. The worker stays up (the same process throughout), every message
around the poison is decided, each poison is dead-lettered with its reason, and
``croupier check`` passes afterwards."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from tests.conftest import StartWorker
from tests.integration.helpers import done, joined, produce, query, wait_for
from tests.integration.test_casino import GAME
from tests.integration.test_check import OUTCOME, check, rows
from tests.integration.test_check import csettings as csettings  # the fixture

pytestmark = pytest.mark.integration

POISON = Path(__file__).parents[1] / "support" / "poison"
MARK = "POISON-MARK"  # a message holding this raises wherever its flow decides it

# Bytes no producer should send, and every one has been seen to stop a worker somewhere.
HOSTILE: list[bytes] = [
    b"[" * 100_000 + b"]" * 100_000,  # deeper than Python's recursion limit
    b'{"amount": ' + b"9" * 10_000 + b"}",  # longer than Python's int-digit limit
    b"\xff\xfe not UTF-8",
    b'{"padding": "' + b"x" * 900_000 + b'"}',  # its dead letter must still fit a record
    b"",
]
HOSTILES = len(HOSTILE) + 3  # and, made per flow: a NUL in an id, a key twice, a huge key
SET_ASIDE_OR_REFUSED = {"invalid", "malformed_json", "too_large", "processing_error"}


def now() -> str:
    return datetime.now(UTC).isoformat()


def payment(payment_id: str, player: str, amount: str) -> bytes:
    body = {"type": "deposit", "payment_id": payment_id, "player_id": player,
            "amount": amount, "currency": "EUR", "timestamp": now()}  # fmt: skip
    return json.dumps(body).encode()


def debit(tx: str, player: str) -> bytes:
    return json.dumps({"type": "debit", "transaction_id": tx, "round_id": f"r-{tx}",
                       "game_id": GAME, "player_id": player, "amount": "1.00",
                       "currency": "EUR", "timestamp": now()}).encode()  # fmt: skip


def odds(event_id: str) -> bytes:
    return json.dumps({"type": "odds_change", "event_id": event_id, "timestamp": now(),
                       "markets": [{"market_id": "1x2", "status": "active", "outcomes": [
                           {"outcome_id": "home", "odds": "2.10"},
                           {"outcome_id": "away", "odds": "3.60"}]}]}).encode()  # fmt: skip


def bet(bet_id: str, player: str, event_id: str) -> bytes:
    leg = {"event_id": event_id, "market_id": "1x2", "outcome_id": "home", "odds": "2.10"}
    body = {"bet_id": bet_id, "player_id": player, "placed_at": now(), "stake": "2.00",
            "currency": "EUR", "odds_change": "any", "selections": [leg]}  # fmt: skip
    return json.dumps(body).encode()


def with_nul(value: bytes) -> bytes:
    """``value`` with a NUL in its first id (PostgreSQL's text cannot hold one)."""
    body = json.loads(value)
    name = next(k for k in body if k.endswith("_id"))
    body[name] = f"{body[name]}\u0000x"
    return json.dumps(body).encode()


def with_duplicate(value: bytes) -> bytes:
    """``value`` with its first key given twice (the last would win in a lax decoder)."""
    first = next(iter(json.loads(value)))
    return b"{" + json.dumps(first).encode() + b': "duplicate", ' + value[1:]


def around(poison: tuple[str, bytes], normal: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """``normal`` with the poison and every hostile input in its middle."""
    half = len(normal) // 2
    key = normal[0][0]
    hostile = [(key, h) for h in HOSTILE] + [
        (key, with_nul(normal[0][1])),
        (key, with_duplicate(normal[0][1])),
        ("k" * 2048, normal[0][1]),  # a key past the wire's limit
    ]
    return [*normal[:half], poison, *hostile, *normal[half:]]


def letters(s: Settings, topic: str) -> dict[tuple[int, int], tuple[str, str]]:
    """The dead letters of ``topic``: (partition, offset) -> (reason, error)."""
    got = query(s, "SELECT source_partition, source_offset, reason, error FROM dead_letters "
                "WHERE source_topic = %s", (s.topic(topic),))  # fmt: skip
    return {(int(p), int(o)): (r, e) for p, o, r, e in got}


def assert_set_aside(s: Settings, topic: str, sent: list[Any], poison: int) -> None:
    """The poison at ``sent[poison]`` is a processing_error, each hostile input refused."""
    got = letters(s, topic)
    offsets = [(m.partition(), m.offset()) for m in sent]
    reason, error = got[offsets[poison]]
    assert reason == "processing_error", (topic, reason, error)
    assert "injected by tests/support/poison" in error
    hostile = offsets[poison + 1 : poison + 1 + HOSTILES]
    for offset in hostile:
        assert got[offset][0] in SET_ASIDE_OR_REFUSED, (topic, got[offset])
    assert len(got) == 1 + HOSTILES, (topic, got)


def test_poison_in_every_flow_is_set_aside_and_the_worker_decides_around_it(
    csettings: Settings,
    worker_factory: StartWorker,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = csettings
    monkeypatch.setenv("PYTHONPATH", str(POISON))
    monkeypatch.setenv("CROUPIER_TEST_POISON", MARK)
    worker = worker_factory(s)
    worker.wait_ready()
    pid = worker.proc.pid
    players = [f"pz-p-{i}" for i in range(8)]

    registrations = [kv for p in players for kv in joined(p)]
    poison = joined(f"pz-{MARK}")[0]  # a registration
    sent = produce(s, "players", around(poison, registrations))
    total = len(sent)
    wait_for(lambda: done(s, "players") == total, timeout=120, what="players")
    assert_set_aside(s, "players", sent, len(registrations) // 2)
    assert query(s, "SELECT count(*) FROM player_events")[0][0] == len(registrations)

    deposits = [(p, payment(f"pz-d-{p}", p, "100.00")) for p in players]
    sent = produce(s, "payments", around((players[0], payment(f"pz-d-{MARK}", players[0],
                                                              "5.00")), deposits))  # fmt: skip
    wait_for(lambda: done(s, "payments") == len(sent), timeout=120, what="payments")
    assert_set_aside(s, "payments", sent, len(deposits) // 2)
    decided = query(s, "SELECT count(*) FROM payment_events WHERE outcome = 'decided'")
    assert decided[0][0] == len(deposits)

    books = [(f"pz-m-{i}", odds(f"pz-m-{i}")) for i in range(4)]
    sent = produce(s, "odds", around((f"pz-m-{MARK}", odds(f"pz-m-{MARK}")), books))
    wait_for(lambda: done(s, "odds") == len(sent), timeout=120, what="odds")
    assert_set_aside(s, "odds", sent, len(books) // 2)
    changed = query(s, "SELECT count(DISTINCT entity_id) FROM audit_records "
                    "WHERE entity = 'odds'")  # fmt: skip
    assert changed[0][0] == len(books)

    wagers = [(p, bet(f"pz-b-{p}", p, "pz-m-0")) for p in players]
    sent = produce(s, "bets", around((players[1], bet(f"pz-b-{MARK}", players[1], "pz-m-0")),
                                     wagers))  # fmt: skip
    calls = [(p, debit(f"pz-tx-{p}", p)) for p in players]
    played = produce(s, "casino", around((players[2], debit(f"pz-tx-{MARK}", players[2])),
                                         calls))  # fmt: skip
    wait_for(lambda: done(s, "bets") == len(sent) and done(s, "casino") == len(played),
             timeout=120, what="bets and casino calls")  # fmt: skip
    assert_set_aside(s, "bets", sent, len(wagers) // 2)
    assert_set_aside(s, "casino", played, len(calls) // 2)
    accepted = query(s, "SELECT count(*) FROM bets WHERE status = 'open'")
    assert accepted[0][0] == len(wagers)
    answered = query(s, "SELECT count(*) FROM casino_calls WHERE outcome = 'decided' "
                     "AND answer::jsonb->>'status' = 'ok'")  # fmt: skip
    assert answered[0][0] == len(calls)

    # One process throughout: nothing crashed, nothing restarted.
    assert worker.proc.poll() is None and worker.proc.pid == pid and worker.history == []
    assert "Crashed" not in worker.log.read_text(errors="replace")
    code, report = check(capsys, "--wait", "60", "--skip-clickhouse")
    assert code == 0, json.dumps(report, indent=1)
    inputs = len(registrations) + len(deposits) + len(books) + len(wagers) + len(calls)
    assert rows(report)[OUTCOME]["checked"] == inputs + 5 * (1 + HOSTILES)
