"""The payments flow's PostgreSQL side: deposits and withdrawals through the ledger.

One transaction per batch. Each input becomes a decision (stored with the exact JSON
published on ``payment-decisions``) or, when its payment id was already decided at another
position (a provider's retry), a ``duplicate`` row that publishes nothing: the ledger
keys every payment by ``payment:<id>`` and answers a retry with the first result. The
same payment id with other content is a dead letter (``duplicate_conflict``). A replay of
a position already stored publishes the stored decision again, byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rules.compliance import Action, Blocked
from rules.policy import Policies
from schemas.outbound import PaymentDecision, ReasonCode
from schemas.payments import Deposit, PaymentEvent, Withdrawal, WithdrawalCompleted
from schemas.records import AuditRecord, DeadLetter, SourcePosition
from sinks.postgres import audit, ledger
from sinks.postgres.common import (
    PgSink,
    conflict_letter,
    stored_outputs,
)
from sinks.postgres.protection import guard
from sinks.postgres.sportsbook import Output, reason_code, retrying


@dataclass(frozen=True)
class PaymentInput:
    source: SourcePosition
    event: PaymentEvent
    key: bytes | None = None
    value: bytes = b""


@dataclass
class PaymentBatch:
    inputs: list[PaymentInput] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, DeadLetter]] = field(default_factory=list)
    progress: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass
class Decided:
    decisions: list[Output] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, DeadLetter]] = field(default_factory=list)


def ledger_op(event: PaymentEvent, at: datetime, currency: str) -> ledger.LedgerOp:
    """The ledger operation a payment event asks for."""
    match event:
        case Deposit():
            return ledger.deposit(event.payment_id, event.player_id, event.amount,
                                  event.currency, at)  # fmt: skip
        case Withdrawal():
            return ledger.withdrawal_reserve(event.payment_id, event.player_id, event.amount,
                                             event.currency, at)  # fmt: skip
        case _:
            return ledger.withdrawal_close(
                event.payment_id, event.player_id, currency, at,
                completed=isinstance(event, WithdrawalCompleted),
            )  # fmt: skip


class PaymentsSink(PgSink):
    """Payments through the ledger, each deposit and withdrawal request asking player
    protection first, in the same transaction (``sinks/postgres/protection.py``)."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        consumer_group: str,
        policies: Policies,
        max_connections: int = 4,
    ) -> None:
        super().__init__(
            dsn, schema, consumer_group=consumer_group, max_connections=max_connections
        )
        self.policies = policies

    async def decide(self, batch: PaymentBatch, now: datetime) -> Decided:
        """Decide a batch in one transaction; what to publish."""

        async def attempt() -> Decided:
            async with self.transaction() as conn:
                return await self._decide(conn, batch, now)

        decided: Decided = await retrying(attempt)
        return decided

    async def _decide(self, conn: Any, batch: PaymentBatch, now: datetime) -> Decided:
        out = Decided(dead_letters=list(batch.dead_letters))
        if not batch.inputs:  # only dead letters: stored all the same, with their records
            await audit.store_dead_letters(conn, [d for _, d in out.dead_letters])
            return out
        stored = await stored_outputs(
            conn, "payment_events", "decision", [i.source for i in batch.inputs]
        )
        fresh: list[PaymentInput] = []
        for item in batch.inputs:
            got = stored.get((item.source.partition, item.source.offset))
            if got is None:
                fresh.append(item)
            elif got[1] is not None:
                out.decisions.append((got[0].encode(), got[1].encode()))
        guarded = await guard(conn, self.policies, [i.event.player_id for i in fresh], now)
        ops: list[ledger.LedgerOp] = []
        moving: list[PaymentInput] = []
        blocked: dict[int, Blocked] = {}
        for item in fresh:
            ev = item.event
            if isinstance(ev, Deposit | Withdrawal):
                action: Action = "deposit" if isinstance(ev, Deposit) else "withdrawal"
                refusal = guarded.check(
                    ev.player_id, action=action, currency=ev.currency, amount=ev.amount, at=now
                )
                if refusal is not None:
                    blocked[id(item)] = refusal
                    continue
                guarded.count(ev.player_id, action=action, amount=ev.amount, at=now)
            # A provider's result on a withdrawal is always applied, in the wallet's currency.
            # The ledger dates every payment when Croupier applies it: the limit windows
            # count that time, not a provider's clock.
            currency = guarded.currency(ev.player_id) or "EUR"
            ops.append(ledger_op(ev, now, currency))
            moving.append(item)
        trail: list[AuditRecord] = []  # the moves' records, then every decision's
        posted = await ledger.post_on(conn, ops, [i.source for i in moving], into=trail)
        results = dict(zip((id(i) for i in moving), posted, strict=True))
        rows = []
        decided: list[AuditRecord] = []  # every decision, after its ledger record

        for item in fresh:
            ev = item.event
            refused = blocked.get(id(item))
            reason: ReasonCode | None = refused.reason if refused else None
            result = results.get(id(item))
            outcome = "decided"
            if result is not None and result.status == "conflict":
                error = f"payment_id {ev.payment_id} was used before for a different request"
                out.dead_letters.append(
                    (item.key, conflict_letter(item.source, item.key, item.value, error))
                )
                continue
            if result is not None and result.duplicate:
                outcome = "duplicate"
            elif result is not None and not result.applied:
                reason = reason_code(result.reason)
            decision = None
            if outcome == "decided":
                decision = PaymentDecision(
                    payment_id=ev.payment_id,
                    player_id=ev.player_id,
                    status="rejected" if reason else "accepted",
                    reason=reason,
                    decided_at=now,
                ).model_dump_json()
                out.decisions.append((ev.player_id.encode(), decision.encode()))
                amount = getattr(ev, "amount", None)
                decided.append(AuditRecord(
                    entity="payment", entity_id=ev.payment_id,
                    action=f"payment.{'rejected' if reason else 'accepted'}",
                    source=item.source, occurred_at=ev.timestamp, recorded_at=now, before=None,
                    after={**json.loads(decision), "type": ev.type,
                           "amount": None if amount is None else str(amount),
                           "currency": getattr(ev, "currency", None)
                                       or guarded.currency(ev.player_id),
                           "standing_version": guarded.version(ev.player_id)},
                ))  # fmt: skip
            src = item.source
            rows.append((src.topic, src.partition, src.offset, ev.payment_id, ev.player_id,
                         ev.type, outcome, decision, guarded.version(ev.player_id)))  # fmt: skip
        async with conn.cursor() as cur:
            if rows:
                await cur.executemany(
                    """INSERT INTO payment_events (source_topic, source_partition, source_offset,
                           payment_id, player_id, type, outcome, decision, standing_version)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                    rows,
                )
        await audit.append(conn, trail + decided)
        await audit.store_dead_letters(conn, [d for _, d in out.dead_letters])
        return out
