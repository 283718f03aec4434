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
from streams.context import decode_all, letter_records, position, publish
from streams.flow import declare_flow


def register(app: Any, settings: Settings, *, sink: PaymentsSink) -> Any:
    """Declare the payments agent on ``app``; returns the agent."""
    source_topic = settings.topic("payments")
    decisions, dead_letters = settings.topic("payment-decisions"), settings.topic("dead-letters")

    async def process(events: list[Any]) -> None:
        batch = PaymentBatch()
        decoded = decode_all(
            PAYMENT_EVENT, events, progress=batch.progress, letters=batch.dead_letters
        )
        for event, payment in decoded:
            batch.inputs.append(
                PaymentInput(
                    position(event), payment, event.message.key, event.message.value or b""
                )
            )
        now = datetime.now(UTC)
        with metrics.sink_batch("ledger.payments", len(batch.inputs)):
            decided = await until_available(lambda: sink.decide(batch, now), what="PostgreSQL")
        await publish(app, decisions, decided.decisions)
        metrics.count_decisions("payments", decided.decisions)
        await publish(app, dead_letters, letter_records(decided.dead_letters))
        await app.producer.flush()
        await until_available(lambda: sink.record_progress(batch.progress), what="PostgreSQL")

    agent = declare_flow(
        app,
        settings,
        name="croupier.payments",
        source_topic=source_topic,
        sink=sink,
        process=process,
    )
    return agent
