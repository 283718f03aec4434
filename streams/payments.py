"""The ``payments`` flow: deposits and withdrawals through the ledger, answered on
``payment-decisions``.

A deposit credits the wallet; a withdrawal reserves the amount (never below zero) until
the provider's ``withdrawal_completed`` pays it out or ``withdrawal_failed`` releases it.
Deposits and withdrawal requests ask player protection first, inside the sink's
transaction (unknown player, self-exclusion and deposit limits for deposits; a
self-excluded player may still withdraw); a provider's result is always applied.
Everything is idempotent by payment id in the ledger. The batch protocol is the bets flow's: commit
in PostgreSQL, then publish the stored decisions, then record progress.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from croupier.settings import Settings
from schemas.payments import PAYMENT_EVENT
from sinks.postgres.payments import PaymentBatch, PaymentInput, PaymentsSink
from streams import metrics
from streams.batching import until_available
from streams.context import decode_all, letter_records, position
from streams.flow import Flow, Outputs, declare_flow
from streams.kafka import Message


def register(app: Any, settings: Settings, *, sink: PaymentsSink) -> Flow:
    """Run the payments flow in ``app``."""
    decisions, dead_letters = settings.topic("payment-decisions"), settings.topic("dead-letters")

    async def handle(messages: list[Message]) -> Outputs:
        batch = PaymentBatch()
        decoded = decode_all(
            PAYMENT_EVENT, messages, progress=batch.progress, letters=batch.dead_letters
        )
        for message, payment in decoded:
            batch.inputs.append(PaymentInput(position(message), payment, message.key,
                                             message.value))  # fmt: skip
        now = datetime.now(UTC)
        with metrics.sink_batch("ledger.payments", len(batch.inputs)):
            decided = await until_available(lambda: sink.decide(batch, now), what="PostgreSQL")
        metrics.count_decisions("payments", decided.outputs)
        out = Outputs()
        out.add(decisions, decided.outputs)
        out.add(dead_letters, letter_records(decided.dead_letters))
        return out

    return declare_flow(app, settings, name="payments", topic=settings.topic("payments"),
                        store=sink, handle=handle)  # fmt: skip
