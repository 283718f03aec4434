"""The ``casino`` flow: game aggregators' seamless-wallet calls, answered on ``casino-results``.

Debits, credits and rollbacks keyed by transaction id (``rules/casino.py`` has the rules,
``sinks/postgres/casino.py`` the transaction). Every call gets an answer, a retry its first
answer again; an undecodable call is a dead letter; every decided call an audit record
(hash-chained in PostgreSQL; the relay of ``streams/audit.py`` puts it on ``audit``).
The batch protocol is the bets flow's: commit in PostgreSQL, then publish the stored
answers, then record progress.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from croupier.settings import Settings
from schemas.casino import CASINO_CALL
from sinks.postgres.casino import CasinoBatch, CasinoInput, CasinoSink
from streams import metrics
from streams.batching import until_available
from streams.context import decode_all, letter_records, position, publish
from streams.flow import declare_flow


def register(app: Any, settings: Settings, *, sink: CasinoSink) -> Any:
    """Declare the casino agent on ``app``; returns the agent."""
    source_topic = settings.topic("casino")
    results, dead_letters = settings.topic("casino-results"), settings.topic("dead-letters")

    async def process(events: list[Any]) -> None:
        batch = CasinoBatch()
        decoded = decode_all(CASINO_CALL, events, progress=batch.progress,
                             letters=batch.dead_letters)  # fmt: skip
        for event, call in decoded:
            batch.inputs.append(
                CasinoInput(position(event), call, event.message.key, event.message.value or b"")
            )
        now = datetime.now(UTC)
        with metrics.sink_batch("ledger.casino", len(batch.inputs)):
            answered = await until_available(lambda: sink.decide(batch, now), what="PostgreSQL")
        await publish(app, results, answered.answers)
        metrics.count_decisions("casino", answered.answers)
        await publish(app, dead_letters, letter_records(answered.dead_letters))
        await app.producer.flush()
        await until_available(lambda: sink.record_progress(batch.progress), what="PostgreSQL")

    return declare_flow(
        app, settings, name="croupier.casino", source_topic=source_topic, sink=sink,
        process=process,
    )  # fmt: skip
