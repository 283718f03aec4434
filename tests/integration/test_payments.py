"""Payments decided by payment id on the real broker and PostgreSQL (``rules/payments.py``).

A refused payment is that payment id's decision as much as an accepted one; a close that
comes before its withdrawal request is answered ``retry_later`` and does not stick; and
ledger keys of different kinds never collide.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from config.kafka import consume_until
from config.settings import Settings
from tests.conftest import StartWorker
from tests.integration.helpers import (
    audit_trail_holds,
    balance,
    done,
    joined,
    ledger_reconciles,
    produce,
    query,
    wait_for,
)

pytestmark = pytest.mark.integration

D = Decimal


def pay(kind: str, payment_id: str, player: str, amount: str | None = None) -> bytes:
    msg: dict[str, Any] = {"type": kind, "payment_id": payment_id, "player_id": player,
                           "timestamp": datetime.now(UTC).isoformat()}  # fmt: skip
    if amount is not None:
        msg.update(amount=amount, currency="EUR")
    return json.dumps(msg).encode()


def decided(settings: Settings, player: str, n: int) -> list[bytes]:
    """The first ``n`` decisions published for ``player``, in order, as published."""
    records = consume_until(
        settings, [settings.topic("payment-decisions")],
        want=lambda rs: sum(r.key == player for r in rs) >= n, timeout=60,
    )  # fmt: skip
    mine = sorted((r for r in records if r.key == player), key=lambda r: r.offset)
    return [r.value for r in mine[:n]]


def brief(value: bytes) -> str:
    d = json.loads(value)
    return f"{d['payment_id']} {d['reason'] or d['status']}"


def test_a_refused_payment_is_decided_once_by_its_payment_id(
    settings: Settings, worker_factory: StartWorker
) -> None:
    worker = worker_factory(settings)
    worker.wait_ready()
    # p-9 is unknown: the deposit is refused.
    produce(settings, "payments", [("p-9", pay("deposit", "pay-9", "p-9", "10.00"))])
    first = decided(settings, "p-9", 1)[0]
    assert brief(first) == "pay-9 unknown_player"
    # Now p-9 registers: the same deposit resent gets the first answer, byte for byte, and
    # the same id with another amount is a conflict; neither moves money.
    produce(settings, "players", joined("p-9"))
    wait_for(lambda: done(settings, "players") == 2, timeout=60, what="the registration")
    produce(settings, "payments", [
        ("p-9", pay("deposit", "pay-9", "p-9", "10.00")),
        ("p-9", pay("deposit", "pay-9", "p-9", "99.00")),
        ("p-9", pay("deposit", "pay-10", "p-9", "7.00")),
    ])  # fmt: skip
    got = decided(settings, "p-9", 3)
    assert got[1] == first
    assert brief(got[2]) == "pay-10 accepted"
    wait_for(lambda: done(settings, "payments") == 4, timeout=30, what="payments")
    letters = query(settings, "SELECT reason, source_offset FROM dead_letters "
                    "WHERE source_topic = %s", (settings.topic("payments"),))  # fmt: skip
    assert [r for r, _ in letters] == ["duplicate_conflict"]
    assert balance(settings, "p-9") == (D("7.00"), D(0))
    rows = query(settings, "SELECT payment_id, phase, status, reason FROM payment_decisions "
                 "ORDER BY payment_id")  # fmt: skip
    assert rows == [("pay-10", "open", "accepted", None),
                    ("pay-9", "open", "rejected", "unknown_player")]  # fmt: skip
    outcomes = query(settings, "SELECT outcome, count(*) FROM payment_events GROUP BY 1 "
                     "ORDER BY 1")  # fmt: skip
    assert outcomes == [("decided", 2), ("duplicate", 1)]
    # One decision, one audit record: the retry recorded nothing.
    assert query(settings, "SELECT count(*) FROM audit_records WHERE entity = 'payment' "
                 "AND entity_id = 'pay-9'") == [(1,)]  # fmt: skip


def test_closes_wait_for_their_withdrawal_and_keys_never_collide(
    settings: Settings, worker_factory: StartWorker
) -> None:
    worker = worker_factory(settings)
    worker.wait_ready()
    produce(settings, "players", joined("p-1"))
    wait_for(lambda: done(settings, "players") == 2, timeout=60, what="the registration")
    produce(settings, "payments", [
        ("p-1", pay("deposit", "d-1", "p-1", "100.00")),
        ("p-1", pay("withdrawal", "W1", "p-1", "20.00")),
        # A deposit whose id reads like W1's close takes its own key, not the close's.
        ("p-1", pay("deposit", "W1:close", "p-1", "5.00")),
        ("p-1", pay("withdrawal_completed", "W1", "p-1")),
        # A close before its request: retry_later, and the retry is decided on its merits.
        ("p-1", pay("withdrawal_failed", "W2", "p-1")),
    ])  # fmt: skip
    assert [brief(v) for v in decided(settings, "p-1", 5)] == [
        "d-1 accepted", "W1 accepted", "W1:close accepted", "W1 accepted", "W2 retry_later",
    ]  # fmt: skip
    produce(settings, "payments", [
        ("p-1", pay("withdrawal", "W2", "p-1", "30.00")),
        ("p-1", pay("withdrawal_failed", "W2", "p-1")),
        ("p-1", pay("withdrawal_failed", "W2", "p-1")),  # the provider's retry
    ])  # fmt: skip
    got = decided(settings, "p-1", 8)
    assert [brief(v) for v in got[5:]] == ["W2 accepted", "W2 accepted", "W2 accepted"]
    assert got[6] == got[7]
    wait_for(lambda: done(settings, "payments") == 8, timeout=30, what="payments")
    # 100 + 5 in, 20 paid out; W2's 30 reserved and released.
    assert balance(settings, "p-1") == (D("85.00"), D(0))
    keys = query(settings, "SELECT idempotency_key, operation, status FROM ledger_transactions "
                 "ORDER BY txn_id")  # fmt: skip
    assert keys == [
        ("deposit:d-1", "deposit", "applied"),
        ("withdrawal:W1", "withdrawal_reserve", "applied"),
        ("deposit:W1:close", "deposit", "applied"),
        ("withdrawal-close:W1", "withdrawal_confirm", "applied"),
        ("withdrawal:W2", "withdrawal_reserve", "applied"),
        ("withdrawal-close:W2", "withdrawal_release", "applied"),
    ]
    outcomes = query(settings, "SELECT type, outcome FROM payment_events WHERE payment_id = "
                     "'W2' ORDER BY source_offset")  # fmt: skip
    assert outcomes == [
        ("withdrawal_failed", "retry"),
        ("withdrawal", "decided"),
        ("withdrawal_failed", "decided"),
        ("withdrawal_failed", "duplicate"),
    ]
    assert query(settings, "SELECT count(*) FROM dead_letters") == [(0,)]
    ledger_reconciles(settings)
    audit_trail_holds(settings)


def test_a_batch_of_only_undecodable_payments_stores_its_dead_letters(
    settings: Settings, worker_factory: StartWorker
) -> None:
    worker = worker_factory(settings)
    worker.wait_ready()
    produce(settings, "payments", [("p-1", b"not json")])
    wait_for(lambda: done(settings, "payments") == 1, timeout=60, what="the bad payment")
    assert query(settings, "SELECT reason FROM dead_letters WHERE source_topic = %s",
                 (settings.topic("payments"),)) == [("malformed_json",)]  # fmt: skip
    produce(settings, "casino", [("p-1", b"{}")])
    wait_for(lambda: done(settings, "casino") == 1, timeout=60, what="the bad casino call")
    assert query(settings, "SELECT reason FROM dead_letters WHERE source_topic = %s",
                 (settings.topic("casino"),)) == [("invalid",)]  # fmt: skip
