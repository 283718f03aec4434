"""The payments flow's PostgreSQL side: deposits and withdrawals through the ledger.

One transaction per batch; the decisions are ``rules/payments.py``'s, this sink loads what
they need, posts to the ledger and writes what they decided:

1. Positions already answered (a replay after a crash) publish their stored answer again,
   byte for byte.
2. The payment ids' phases already decided are read (``payment_decisions``), and ``guard``
   reads the players' standings for player protection.
3. Each input is decided in arrival order; the moves are posted by one ``ledger_post``
   (keys ``deposit:``, ``withdrawal:``, ``withdrawal-close:<payment_id>``), whose refusals
   (``insufficient_funds``) are the decisions of those payments.
4. Every payment id phase's first decision is stored (``payment_decisions``, append-only,
   refused or not), every input's answer by position (``payment_events``: ``decided``,
   ``duplicate`` when it repeats a stored decision, ``retry`` for an answer that does not
   stick), and every decision leaves an audit record. A same id with other content is a
   dead letter (``duplicate_conflict``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rules import ledger as ledger_ops
from rules.compliance import Action
from rules.ledger import ledger_reason
from rules.payments import Book, Prior, Verdict, phase_of, request_hash
from rules.policy import Policies
from schemas.outbound import PaymentDecision, ReasonCode
from schemas.payments import Deposit, PaymentEvent, Withdrawal, WithdrawalCompleted
from schemas.records import AuditRecord, SourcePosition
from sinks.base import Batch, Stored
from sinks.postgres import audit, ledger
from sinks.postgres.common import (
    conflict_letter,
    jsonb,
    retrying,
    stored_outputs,
    write_progress,
)
from sinks.postgres.protection import guard
from sinks.postgres.sink import PgSink


@dataclass(frozen=True)
class PaymentInput:
    source: SourcePosition
    event: PaymentEvent
    key: bytes | None = None
    value: bytes = b""


PaymentBatch = Batch[PaymentInput]


def ledger_op(event: PaymentEvent, at: datetime, currency: str) -> ledger_ops.LedgerOp:
    """The ledger operation a payment event asks for (a close in ``currency``, the reserve's)."""
    match event:
        case Deposit():
            return ledger_ops.deposit(event.payment_id, event.player_id, event.amount,
                                  event.currency, at)  # fmt: skip
        case Withdrawal():
            return ledger_ops.withdrawal_reserve(event.payment_id, event.player_id, event.amount,
                                             event.currency, at)  # fmt: skip
        case _:
            return ledger_ops.withdrawal_close(
                event.payment_id, event.player_id, currency, at,
                completed=isinstance(event, WithdrawalCompleted),
            )  # fmt: skip


_PRIORS_SQL = """
SELECT payment_id, phase, type, player_id, request_hash, status, currency, decision
  FROM payment_decisions WHERE payment_id = ANY(%s)"""


async def priors(conn: Any, payment_ids: list[str]) -> Book:
    """The phases of these payment ids already decided."""
    cursor = await conn.execute(_PRIORS_SQL, (sorted(set(payment_ids)),))
    book = Book()
    for pid, phase, kind, player, hashed, status, currency, decision in await cursor.fetchall():
        book.known[(pid, phase)] = Prior(pid, phase, kind, player, hashed, status,
                                         currency and currency.strip(), decision)  # fmt: skip
    return book


class PaymentsSink(PgSink):
    """Payments through the ledger, each deposit and withdrawal request asking player
    protection first, in the same transaction (``sinks/postgres/protection.py``). The rules
    are ``rules/payments.py``; this sink loads what they need, posts and writes. Two workers
    deciding one payment id at once collide on ``payment_decisions``' key: the loser's
    transaction is retried and finds the winner's decision."""

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

    async def decide(self, batch: PaymentBatch, now: datetime) -> Stored:
        """Decide a batch and record its progress in one transaction; what to publish."""

        async def attempt() -> Stored:
            async with self.transaction() as conn:
                decided = await self._decide(conn, batch, now)
                await write_progress(conn, self.consumer_group, batch.progress)
                return decided

        decided: Stored = await retrying(attempt)
        return decided

    async def _decide(self, conn: Any, batch: PaymentBatch, now: datetime) -> Stored:
        out = Stored(dead_letters=list(batch.dead_letters))
        if not batch.inputs:  # only dead letters: stored all the same, for croupier check
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
                out.outputs.append((got[0].encode(), got[1].encode()))
        book = await priors(conn, [i.event.payment_id for i in fresh])
        guarded = await guard(conn, self.policies, [i.event.player_id for i in fresh], now)

        def protection(ev: Deposit | Withdrawal) -> ReasonCode | None:
            action: Action = "deposit" if isinstance(ev, Deposit) else "withdrawal"
            refused = guarded.check(
                ev.player_id, action=action, currency=ev.currency, amount=ev.amount, at=now
            )
            if refused is not None:
                return refused.reason
            guarded.count(ev.player_id, action=action, amount=ev.amount, at=now)
            return None

        verdicts: list[tuple[PaymentInput, Verdict]] = []
        ops: list[ledger_ops.LedgerOp] = []
        moving: list[PaymentInput] = []
        for item in fresh:
            ev = item.event
            verdict = book.decide(ev, request_hash(ev), protection)
            verdicts.append((item, verdict))
            if verdict.kind == "move":
                # The ledger dates every payment when Croupier applies it: the limit windows
                # count that time, not a provider's clock. A close moves in the reserve's
                # currency (the wallet's, for a reserve from before the decisions table).
                currency = verdict.currency or guarded.currency(ev.player_id) or "EUR"
                ops.append(ledger_op(ev, now, currency))
                moving.append(item)
        trail: list[AuditRecord] = []  # the moves' records, then every decision's
        posted = await ledger.post_on(conn, ops, [i.source for i in moving], into=trail)
        results = dict(zip((id(i) for i in moving), posted, strict=True))
        events, decisions = [], []
        decided: list[AuditRecord] = []  # every decision, after its ledger record
        for item, verdict in verdicts:
            ev, src = item.event, item.source
            reason = verdict.reason
            decision: str | None = None
            if verdict.kind == "move":
                result = results[id(item)]
                if result.status == "conflict":  # the key was taken outside this table
                    verdict = Verdict("conflict", ReasonCode.DUPLICATE_CONFLICT,
                                      f"ledger key {result.key} was used before")  # fmt: skip
                elif not result.applied:
                    reason = ledger_reason(result.reason)
            if verdict.kind == "repeat":
                decision = verdict.prior.decision if verdict.prior else None
                if decision is None:  # its first was a ledger conflict in this batch
                    verdict = Verdict("conflict", ReasonCode.DUPLICATE_CONFLICT,
                                      f"payment_id {ev.payment_id} was never decided")  # fmt: skip
            if verdict.kind == "conflict":
                error = f"{verdict.detail}; payment_id {ev.payment_id} other content"
                out.dead_letters.append(
                    (item.key, conflict_letter(item.source, item.key, item.value, error))
                )
                continue
            outcome = {"repeat": "duplicate", "answer": "retry"}.get(verdict.kind, "decided")
            if decision is None:
                decision = PaymentDecision(
                    payment_id=ev.payment_id,
                    player_id=ev.player_id,
                    status="rejected" if reason else "accepted",
                    reason=reason,
                    decided_at=now,
                ).model_dump_json()
            out.outputs.append((ev.player_id.encode(), decision.encode()))
            version = guarded.version(ev.player_id)
            events.append((src.topic, src.partition, src.offset, ev.payment_id, ev.player_id,
                           ev.type, outcome, decision, version))  # fmt: skip
            if outcome != "decided":
                continue  # a repeat changes nothing; an answer that does not stick neither
            book.settle(ev, accepted=reason is None, decision=decision)
            amount = getattr(ev, "amount", None)
            paid_in = getattr(ev, "currency", None) or verdict.currency
            decisions.append((ev.payment_id, phase_of(ev), ev.type, ev.player_id,
                              request_hash(ev), "rejected" if reason else "accepted",
                              reason.value if reason else None, paid_in, decision, now,
                              src.topic, src.partition, src.offset))  # fmt: skip
            decided.append(AuditRecord(
                entity="payment", entity_id=ev.payment_id,
                action=f"payment.{'rejected' if reason else 'accepted'}",
                source=src, occurred_at=ev.timestamp, recorded_at=now, before=None,
                after={**json.loads(decision), "type": ev.type,
                       "amount": None if amount is None else str(amount),
                       "currency": paid_in or guarded.currency(ev.player_id),
                       "standing_version": version},
            ))  # fmt: skip
        if decisions or events:  # one call (migration 0021: no INSERT of the app's own)
            await conn.execute(
                "SELECT payments_record(%s::jsonb, %s::jsonb)",
                (jsonb(decisions), jsonb(events)),
            )
        await audit.append(conn, trail + decided)
        await audit.store_dead_letters(conn, [d for _, d in out.dead_letters])
        return out
