"""The ``casino`` flow: game aggregators' seamless-wallet calls, answered on ``casino-results``.

Debits, credits and rollbacks keyed by transaction id (``rules/casino.py`` has the rules,
``sinks/postgres/casino.py`` the transaction). Every call gets an answer, a retry its first
answer again; an undecodable call is a dead letter; every decided call an audit record
(hash-chained in PostgreSQL; the relay of ``streams/audit.py`` puts it on ``audit``).
The batch protocol is every flow's (``streams/flow.py``): one transaction in PostgreSQL,
then the answers published.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from config.settings import Settings
from schemas.casino import CASINO_CALL, CasinoCall
from sinks.postgres.casino import CasinoInput, CasinoSink
from streams.context import position
from streams.flow import Flow, decision_flow
from streams.kafka import Message


def register(app: Any, settings: Settings, *, sink: CasinoSink) -> Flow:
    """Run the casino flow in ``app``."""

    def inputs(decoded: list[tuple[Message, CasinoCall]], now: datetime) -> list[CasinoInput]:
        return [CasinoInput(position(m), call, m.key, m.value) for m, call in decoded]

    return decision_flow(app, settings, name="casino", adapter=CASINO_CALL, inputs=inputs,
                         store=sink, answers="casino-results")  # fmt: skip
