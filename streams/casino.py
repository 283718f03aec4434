"""The ``casino`` flow: game aggregators' seamless-wallet calls, answered on ``casino-results``.

Debits, credits and rollbacks keyed by transaction id (``rules/casino.py`` has the rules,
``sinks/postgres/casino.py`` the transaction). Every call gets an answer, a retry its first
answer again; an undecodable call is a dead letter; every decided call an audit record
(hash-chained in PostgreSQL; the relay of ``streams/audit.py`` puts it on ``audit``).
The batch protocol is every flow's (``streams/flow.py``): one transaction in PostgreSQL,
then the answers published.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from croupier.settings import Settings
from schemas.casino import CASINO_CALL
from sinks.postgres.casino import CasinoBatch, CasinoInput, CasinoSink
from streams import metrics
from streams.batching import until_available
from streams.context import decode_all, letter_records, position
from streams.flow import Flow, Outputs, declare_flow
from streams.kafka import Message


def register(app: Any, settings: Settings, *, sink: CasinoSink) -> Flow:
    """Run the casino flow in ``app``."""
    results, dead_letters = settings.topic("casino-results"), settings.topic("dead-letters")

    async def handle(messages: list[Message]) -> Outputs:
        batch = CasinoBatch()
        decoded = decode_all(CASINO_CALL, messages, progress=batch.progress,
                             letters=batch.dead_letters)  # fmt: skip
        for message, call in decoded:
            batch.inputs.append(CasinoInput(position(message), call, message.key, message.value))
        now = datetime.now(UTC)
        with metrics.sink_batch("ledger.casino", len(batch.inputs)):
            answered = await until_available(lambda: sink.decide(batch, now), what="PostgreSQL")
        metrics.count_decisions("casino", answered.outputs)
        out = Outputs()
        out.add(results, answered.outputs)
        out.add(dead_letters, letter_records(answered.dead_letters))
        return out

    return declare_flow(app, settings, name="casino", topic=settings.topic("casino"), store=sink,
                        handle=handle)  # fmt: skip
