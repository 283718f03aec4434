"""The double-entry wallet ledger in PostgreSQL: the source of truth for money.

This module is the adapter: it posts the operations ``rules/ledger.py`` builds and checks
(``LedgerOp``, ``stake``, ``settle``, ...) and reads the books back.

Model
-----
* **Accounts.** Per player and currency: ``cash`` (spendable), ``pending`` (stakes of open
  bets), ``withdrawal_reserve`` (withdrawals awaiting the provider), each with a stored
  balance of zero or more, and ``debt`` (migration 0014), zero or less: what the player
  owes, negated (the house's receivable). The house has ``house_stakes``,
  ``house_payouts``, ``house_payments`` and ``house_casino`` per currency.
* **Debt.** A settlement's rollback takes the payout back from cash as far as it goes; the
  rest becomes debt, so a correction is never refused for want of cash. A later deposit,
  sportsbook payout or released withdrawal pays the debt first, in its own transaction
  (``rules/ledger.py`` states the rule).
* **Entries.** Signed amounts; the entries of one transaction sum to zero per currency
  (a statement-level trigger refuses any insert that does not). An account's balance is
  the sum of its entries; the stored player balances are a cache of that sum which
  ``reconcile()`` proves.
* **Transactions.** One row per business operation, unique by its idempotency key (the
  business id that caused it, namespaced by kind: ``deposit:<payment_id>``,
  ``bet:<bet_id>``, ``casino-debit:<transaction_id>``, ...; ``rules/ledger_keys.py``
  spells them all). The row records the first result,
  applied or rejected with a reason, and a hash of the request: the same key again
  returns that first result and moves nothing; the same key with other content is a
  conflict, never a silent success.
* **One code path.** ``ledger_post(ops jsonb)`` (migration 0002) is the only writer. The
  ledger's tables and the function belong to ``croupier_ledger``, a role nobody logs in
  as, and the function runs as it (SECURITY DEFINER, search_path pinned: migration 0018);
  the application's role may read the tables and call the function, nothing else.
  Triggers refuse rows and balance updates from any other role and any change to an
  account but its balance; transactions and entries refuse UPDATE and DELETE.
  Corrections are new operations (``unsettle``, ``casino_rollback``).

Why no hot house row
--------------------
Every bet moves money between a player and the house. If the house accounts had a stored
balance, every transaction would update, and so lock, the same few rows, serializing
the whole platform on them. House accounts therefore store no balance: their entries are
inserted (append-only, no row lock) and their balance is the sum of their entries when
someone asks. Only the player's own rows are locked, which is the serialization the
rules need anyway (a player's balance cannot go below zero). Within an operation the
player's rows are updated in account order, so concurrent posters cannot deadlock on
them; a batch is posted in player order for the same reason.

Batching
--------
``post_batch`` sends many operations in one round trip and one database transaction;
each operation is still all-or-nothing (a refused debit undoes that operation's other
moves and records a rejection) and idempotent by its own key. The flows use it so a
worker does thousands of operations a second instead of hundreds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import psycopg

from rules.ledger import (
    IdempotencyConflict,
    LedgerError,
    LedgerOp,
    LedgerResult,
    known_entries,
    owed,
    player_order,
)
from schemas.money import to_minor_unit
from schemas.records import AuditRecord, SourcePosition
from sinks.postgres import audit
from sinks.postgres.common import RETRYABLE, jsonb
from sinks.retry import again_sync

_POST_SQL = "SELECT * FROM ledger_post(%s::jsonb)"


# -- posting -------------------------------------------------------------------------------


def _results(ops: Sequence[LedgerOp], order: list[int], rows: Iterable[Any]) -> list[LedgerResult]:
    out: list[LedgerResult | None] = [None] * len(ops)
    for row in rows:
        position, key, status, reason, duplicate, txn_id, cash_after, pending_after = row
        out[order[position]] = LedgerResult(
            key, status, reason, duplicate, txn_id, cash_after, pending_after
        )
    missing = [ops[i].key for i, r in enumerate(out) if r is None]
    if missing:
        msg = f"ledger_post returned no result for {missing[:5]}"
        raise LedgerError(msg)
    return [r for r in out if r is not None]


def _payload(ops: Sequence[LedgerOp], order: list[int]) -> str:
    return jsonb([ops[i].wire() for i in order])


def _raise_conflict(result: LedgerResult) -> LedgerResult:
    if result.status == "conflict":
        msg = f"idempotency key {result.key} was used before for a different request"
        raise IdempotencyConflict(msg)
    return result


class Ledger:
    """The ledger over one synchronous connection (command line, benchmarks, tests)."""

    def __init__(self, conn: psycopg.Connection[Any], *, retries: int = 5) -> None:
        self.conn = conn
        self.retries = retries

    @classmethod
    def connect(cls, dsn: str, schema: str) -> Ledger:
        return cls(psycopg.connect(dsn, options=f"-c search_path={schema}", autocommit=True))

    def close(self) -> None:
        self.conn.close()

    def post(self, op: LedgerOp) -> LedgerResult:
        """Post one operation in its own transaction; raise on an idempotency conflict."""
        return _raise_conflict(self.post_batch([op])[0])

    def post_batch(self, ops: Sequence[LedgerOp]) -> list[LedgerResult]:
        """Post many operations in one round trip; results in the order given."""
        if not ops:
            return []
        order = player_order(ops)
        payload = _payload(ops, order)

        def post() -> list[LedgerResult]:
            with self.conn.transaction():
                rows = self.conn.execute(_POST_SQL, (payload,)).fetchall()
            return _results(ops, order, rows)

        return again_sync(post, on=RETRYABLE, attempts=self.retries + 1)
        raise AssertionError("unreachable")  # noqa: EM101

    # -- reads ---------------------------------------------------------------------------

    def balances(self, player_id: str) -> list[Balance]:
        rows = self.conn.execute(
            """SELECT currency,
                      max(balance) FILTER (WHERE kind = 'cash'),
                      max(balance) FILTER (WHERE kind = 'pending'),
                      max(balance) FILTER (WHERE kind = 'withdrawal_reserve'),
                      coalesce(max(balance) FILTER (WHERE kind = 'debt'), 0)
                 FROM ledger_accounts WHERE owner = %s GROUP BY currency ORDER BY currency""",
            (player_id,),
        ).fetchall()
        return [
            Balance(player_id, cur, cash, pending, reserved, owed(debt))
            for cur, cash, pending, reserved, debt in rows
        ]

    def statement(
        self, player_id: str, since: datetime | None = None, until: datetime | None = None
    ) -> list[StatementLine]:
        """Every entry on the player's accounts in ``[since, until)``, with running balances
        (a debt account's: zero or below, what the player owes negated)."""
        rows = self.conn.execute(
            """SELECT * FROM (
                 SELECT t.recorded_at, t.idempotency_key, t.operation, a.kind, e.currency,
                        e.amount,
                        sum(e.amount) OVER (PARTITION BY e.account_id ORDER BY e.entry_id)
                   FROM ledger_entries e
                   JOIN ledger_accounts a USING (account_id)
                   JOIN ledger_transactions t USING (txn_id)
                  WHERE a.owner = %(p)s) s
                WHERE (%(since)s::timestamptz IS NULL OR recorded_at >= %(since)s)
                  AND (%(until)s::timestamptz IS NULL OR recorded_at < %(until)s)
                ORDER BY recorded_at, idempotency_key, kind""",
            {"p": player_id, "since": since, "until": until},
        ).fetchall()
        return [StatementLine(*row) for row in rows]

    def reconcile(self) -> Reconciliation:
        """Prove the books: entries balance per currency, stored balances equal entries
        (debt accounts included); count the debt accounts and what they hold."""
        totals = self.conn.execute(
            """SELECT currency, coalesce(sum(amount) FILTER (WHERE amount > 0), 0),
                      coalesce(-sum(amount) FILTER (WHERE amount < 0), 0), count(*)
                 FROM ledger_entries GROUP BY currency ORDER BY currency"""
        ).fetchall()
        unbalanced = self.conn.execute(
            """SELECT txn_id, currency, sum(amount) FROM ledger_entries
                GROUP BY txn_id, currency HAVING sum(amount) <> 0 LIMIT 20"""
        ).fetchall()
        drift = self.conn.execute(
            """SELECT a.owner, a.kind, a.currency, a.balance, coalesce(sum(e.amount), 0)
                 FROM ledger_accounts a LEFT JOIN ledger_entries e USING (account_id)
                WHERE a.balance IS NOT NULL
                GROUP BY a.account_id HAVING a.balance <> coalesce(sum(e.amount), 0)
                LIMIT 20"""
        ).fetchall()
        accounts = self.conn.execute(
            """SELECT a.owner, a.kind, a.currency, coalesce(sum(e.amount), 0)
                 FROM ledger_accounts a LEFT JOIN ledger_entries e USING (account_id)
                WHERE a.owner = 'house' GROUP BY a.account_id ORDER BY 3, 2"""
        ).fetchall()
        debts = self.conn.execute(
            """SELECT currency, count(*), count(*) FILTER (WHERE balance < 0),
                      coalesce(-sum(balance), 0)
                 FROM ledger_accounts WHERE kind = 'debt' GROUP BY currency ORDER BY 1"""
        ).fetchall()
        return Reconciliation(
            currencies=[CurrencyTotals(c, d, cr, n) for c, d, cr, n in totals],
            unbalanced_transactions=[tuple(r) for r in unbalanced],
            balance_drift=[tuple(r) for r in drift],
            house=[tuple(r) for r in accounts],
            debts=[DebtTotals(c.strip(), n, d, o) for c, n, d, o in debts],
        )


async def post_on(
    conn: Any,
    ops: Sequence[LedgerOp],
    sources: Sequence[SourcePosition] | None = None,
    *,
    into: list[AuditRecord] | None = None,
) -> list[LedgerResult]:
    """Post ``ops`` on ``conn`` inside the caller's transaction (no retry: the caller's
    transaction is the unit that is retried).

    With ``sources`` (the Kafka position that caused each op), every operation the ledger
    recorded now (applied or refused; not a duplicate of an earlier one) also leaves an
    audit record in its source partition's hash chain, in the same transaction:
    ``ledger_records`` says what it holds. With ``into`` the records are added there
    instead, for the caller to append with its own (one append per transaction).
    """
    if not ops:
        return []
    order = player_order(ops)
    cursor = await conn.execute(_POST_SQL, (_payload(ops, order),))
    results = _results(ops, order, await cursor.fetchall())
    if sources is not None:
        records = await ledger_records(conn, ops, results, sources)
        if into is not None:
            into.extend(records)
        else:
            await audit.append(conn, records)
    return results


# Each entry's account and transaction looked up by key (LIMIT 1: a lookup the planner can
# neither hash nor turn into a join), so no plan reads a whole table (migration 0027).
_ENTRIES_SQL = """
SELECT e.txn_id, a.owner, a.kind, e.amount, t.amount, t.payout FROM ledger_entries e
 CROSS JOIN LATERAL (SELECT x.owner, x.kind FROM ledger_accounts x
                      WHERE x.account_id = e.account_id LIMIT 1) a
 CROSS JOIN LATERAL (SELECT y.amount, y.payout FROM ledger_transactions y
                      WHERE y.txn_id = e.txn_id LIMIT 1) t
 WHERE e.txn_id = ANY(%s) ORDER BY e.entry_id"""


async def ledger_records(
    conn: Any,
    ops: Sequence[LedgerOp],
    results: Sequence[LedgerResult],
    sources: Sequence[SourcePosition],
) -> list[AuditRecord]:
    """The audit records of newly recorded operations: the request, the ledger's answer,
    the balances after and every entry (account and signed amount), enough to rebuild a
    wallet from the trail alone (``croupier audit rebuild``)."""
    fresh = [(op, r, src) for op, r, src in zip(ops, results, sources, strict=True)
             if not r.duplicate and r.status != "conflict"]  # fmt: skip
    if not fresh:
        return []
    entries: dict[int, list[dict[str, str]]] = {}
    asked = []
    for op, r, _ in fresh:
        known = known_entries(op, r)
        if known is None:
            asked.append(r.txn_id)
        else:
            entries[r.txn_id] = known
    # What the ledger stored: for an operation that refers to another (a settlement's
    # rollback) the amount and payout are derived there, not given by the request.
    stored: dict[int, tuple[Decimal, Decimal | None]] = {}
    if asked:
        cursor = await conn.execute(_ENTRIES_SQL, (asked,))
        for txn_id, owner, kind, amount, txn_amount, txn_payout in await cursor.fetchall():
            entries.setdefault(txn_id, []).append(
                {"owner": owner, "account": kind, "amount": str(amount)}
            )
            stored[txn_id] = (txn_amount, txn_payout)
    now = datetime.now(UTC)
    records = []
    for op, r, src in fresh:
        amount, payout = stored.get(r.txn_id, (op.amount, op.payout))
        after = {
            "txn_id": r.txn_id, "key": op.key, "operation": op.operation,
            "player_id": op.player_id, "currency": op.currency, "amount": str(amount),
            "payout": None if payout is None else str(payout), "result": op.result,
            "reference": op.reference, "status": r.status, "reason": r.reason,
            "cash_after": str(r.cash_after), "pending_after": str(r.pending_after),
            "entries": entries.get(r.txn_id, []),
        }  # fmt: skip
        records.append(AuditRecord(
            entity="ledger_transaction", entity_id=op.key, action=f"ledger.{op.operation}",
            source=src, occurred_at=op.occurred_at, recorded_at=now, before=None, after=after,
        ))  # fmt: skip
    return records


# -- read models ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Balance:
    """A player's wallet in one currency; ``debt`` is what they owe (zero or more)."""

    player_id: str
    currency: str
    cash: Decimal
    pending: Decimal
    withdrawal_reserved: Decimal
    debt: Decimal = Decimal(0)

    def as_json(self) -> dict[str, str]:
        """The shape ``croupier wallet balance PLAYER --json`` prints."""
        return {"player_id": self.player_id, "currency": self.currency,
                "balance": _money(self.cash, self.currency),
                "pending": _money(self.pending, self.currency),
                "debt": _money(self.debt, self.currency)}  # fmt: skip


@dataclass(frozen=True)
class StatementLine:
    recorded_at: datetime
    key: str
    operation: str
    account: str
    currency: str
    amount: Decimal
    balance_after: Decimal


@dataclass(frozen=True)
class CurrencyTotals:
    currency: str
    debits: Decimal
    credits: Decimal
    entries: int

    @property
    def balanced(self) -> bool:
        return self.debits == self.credits


@dataclass(frozen=True)
class DebtTotals:
    """The debt accounts of one currency: how many, how many owe, and what they owe."""

    currency: str
    accounts: int
    in_debt: int
    owed: Decimal

    def as_json(self) -> dict[str, Any]:
        """The shape ``croupier wallet reconcile --json`` prints under ``debts``."""
        owed = _money(self.owed, self.currency)
        return {"currency": self.currency, "accounts": self.accounts,
                "players_in_debt": self.in_debt, "owed": owed}  # fmt: skip


@dataclass(frozen=True)
class Reconciliation:
    currencies: list[CurrencyTotals]
    unbalanced_transactions: list[tuple[Any, ...]] = field(default_factory=list)
    balance_drift: list[tuple[Any, ...]] = field(default_factory=list)
    house: list[tuple[Any, ...]] = field(default_factory=list)
    debts: list[DebtTotals] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            all(c.balanced for c in self.currencies)
            and not self.unbalanced_transactions
            and not self.balance_drift
        )


def _money(value: Decimal, currency: str) -> str:
    """The amount in the currency's minor units (``12.50`` EUR, ``1200`` JPY)."""
    return format(to_minor_unit(value, currency, ROUND_HALF_EVEN), "f")
