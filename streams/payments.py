"""The ``payments`` flow: deposits and withdrawals through the ledger, answered on
``payment-decisions``.

A deposit credits the wallet; a withdrawal reserves the amount (never below zero) until
the provider's ``withdrawal_completed`` pays it out or ``withdrawal_failed`` releases it.
Deposits and withdrawal requests ask player protection first, inside the sink's
transaction (unknown player, self-exclusion and deposit limits for deposits; a
self-excluded player may still withdraw); a provider's result is always applied.
Everything is idempotent by payment id in the ledger. The batch protocol is every decision
flow's (``streams/flow.py``): one transaction in PostgreSQL, then the answers published.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from config.settings import Settings
from schemas.payments import PAYMENT_EVENT, PaymentEvent
from sinks.postgres.payments import PaymentInput, PaymentsSink
from streams.context import position
from streams.flow import Flow, decision_flow
from streams.kafka import Message


def register(app: Any, settings: Settings, *, sink: PaymentsSink) -> Flow:
    """Run the payments flow in ``app``."""

    def inputs(decoded: list[tuple[Message, PaymentEvent]], now: datetime) -> list[PaymentInput]:
        return [PaymentInput(position(m), event, m.key, m.value) for m, event in decoded]

    return decision_flow(app, settings, name="payments", adapter=PAYMENT_EVENT, inputs=inputs,
                         store=sink, answers="payment-decisions")  # fmt: skip
