"""The wallet ledger's pure side: the operations it is asked to post, and the debt rule.

``sinks/postgres/ledger.py`` is the adapter: it posts these operations through PostgreSQL's
``ledger_post`` and reads balances back. Nothing here does I/O.

Operations
----------
A ``LedgerOp`` is one business operation, built by the constructors below (``deposit``,
``stake``, ``settle``, ...) and keyed by the business id that causes it
(``rules/ledger_keys.py``). It is checked when built: a malformed request raises
``InvalidOperation`` and never reaches the database. ``request_hash`` says what the request
asks for (not when it was sent); ``ledger_post`` stores it and compares it on a repeated
key, so its encoding, like ``wire()``'s, must never change: existing databases hold them.

The debt rule
-------------
A player's money sits on two accounts per currency: ``cash`` (zero or more) and ``debt``
(zero or less: what the player owes, negated). PostgreSQL's ``ledger_post`` applies the
rule; ``sinks/postgres/rebuild.py`` checks the audit trail against it. House-wide:

* **Corrections always land.** A settlement's rollback (``unsettle``) takes the payout
  back: from cash as far as it goes, the rest becomes debt. It is never refused for want
  of cash.
* **A debt is recovered first.** Money that comes back to the player (a ``deposit``, a
  sportsbook payout on ``settle``, a ``withdrawal_release``) pays the debt down before
  anything reaches cash, in the same ledger transaction.
* Every other operation moves cash alone, and never below zero (the ledger refuses it):
  stakes, withdrawals and casino calls. Casino credits and rollbacks do not recover a
  debt: the casino rules answer the aggregator with the balance they foresee.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from rules import ledger_keys as keys
from schemas.money import MINOR_UNITS, check_scale, minor_units
from schemas.outbound import ReasonCode

# Operations whose money for the player pays a debt down first.
RECOVERING = frozenset({"deposit", "settle", "withdrawal_release"})
# Operations that take money back whatever the cash holds: a shortfall becomes debt.
CORRECTING = frozenset({"unsettle"})

_ZERO = Decimal(0)


class DebtRuleError(ValueError):
    """Arithmetic asked of the rule that makes no sense (a negative amount or balance)."""


@dataclass(frozen=True)
class Split:
    """How one operation's money for (or from) the player splits between cash and debt.

    Both are signed entries: ``cash`` on the cash account, ``debt`` on the debt account
    (positive: the debt shrinks; negative: it grows). ``cash + debt`` is what the
    operation gave the player (negative: what it took)."""

    cash: Decimal
    debt: Decimal


def _check(**values: Decimal) -> None:
    for name, value in values.items():
        if not value.is_finite() or value < 0:
            msg = f"{name} must be a finite amount of zero or more, not {value}"
            raise DebtRuleError(msg)


def recover(owed: Decimal, amount: Decimal) -> Split:
    """``amount`` coming to a player who owes ``owed``: the debt is paid first."""
    _check(owed=owed, amount=amount)
    to_debt = min(owed, amount)
    return Split(cash=amount - to_debt, debt=to_debt)


def take_back(cash: Decimal, amount: Decimal) -> Split:
    """``amount`` taken back by a correction from a player holding ``cash``: what the cash
    cannot give becomes debt."""
    _check(cash=cash, amount=amount)
    from_cash = min(cash, amount)
    return Split(cash=-from_cash, debt=from_cash - amount)


def split(operation: str, cash: Decimal, owed: Decimal, moved: Decimal) -> Split:
    """What ``operation`` moving ``moved`` for the player (signed: what cash and debt
    together gain) must post on each account, given the ``cash`` and debt ``owed`` before.

    A recovering operation that gives pays the debt first; a correction that takes goes
    to debt for what cash lacks; anything else moves cash alone.
    """
    _check(cash=cash, owed=owed)
    if operation in RECOVERING and moved > 0:
        return recover(owed, moved)
    if operation in CORRECTING and moved < 0:
        return take_back(cash, -moved)
    return Split(cash=moved, debt=_ZERO)


def owed(debt_balance: Decimal) -> Decimal:
    """What the player owes, from the debt account's balance (zero or below)."""
    if debt_balance > 0:
        msg = f"a debt account holds {debt_balance}: it can only hold zero or less"
        raise DebtRuleError(msg)
    return -debt_balance if debt_balance else _ZERO


# -- operations ----------------------------------------------------------------------------

Operation = Literal[
    "deposit",
    "withdrawal_reserve",
    "withdrawal_confirm",
    "withdrawal_release",
    "stake",
    "settle",
    "unsettle",
    "casino_debit",
    "casino_credit",
    "casino_rollback",
]
Status = Literal["applied", "rejected", "conflict"]

# Operations whose amount comes from the transaction they reference.
FROM_REFERENCE = frozenset(
    {"withdrawal_confirm", "withdrawal_release", "unsettle", "casino_rollback"}
)
_NEEDS_REFERENCE = FROM_REFERENCE | {"settle"}
_MAY_BE_ZERO = FROM_REFERENCE | {"casino_credit", "settle"}

# Decimal places per currency code already accepted (the fast check's table); it only
# grows by codes of three capital letters, so it stays small.
_PLACES: dict[str, int] = dict(MINOR_UNITS)


class LedgerError(Exception):
    """A ledger request that cannot be posted as asked."""


class InvalidOperation(LedgerError, ValueError):
    """The request itself is malformed (caught before it reaches the database)."""


class IdempotencyConflict(LedgerError):
    """The key was used before for a different request."""


@dataclass(frozen=True, slots=True)
class LedgerOp:
    """One business operation to post; ``key`` makes it idempotent."""

    key: str
    operation: Operation
    player_id: str
    currency: str
    occurred_at: datetime
    amount: Decimal = _ZERO
    reference: str | None = None
    payout: Decimal | None = None
    result: str | None = None
    _hash: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Batches build thousands of these: the common, well-formed request passes a few
        # cheap checks; anything else gets the full check and its list of what to fix.
        if not self._plainly_valid():
            problems = self._problems()
            if problems:
                msg = f"{self.operation} {self.key}: " + "; ".join(problems)
                raise InvalidOperation(msg)
            if type(self.currency) is str and self.currency not in _PLACES:
                _PLACES[self.currency] = minor_units(self.currency)

    def _plainly_valid(self) -> bool:
        """True only for a request ``_problems`` would find nothing wrong with."""
        operation, amount, payout = self.operation, self.amount, self.payout
        if type(amount) is not Decimal or not amount.is_finite():
            return False
        if not (amount > 0 or (amount == 0 and operation in _MAY_BE_ZERO)):
            return False
        if (operation in _NEEDS_REFERENCE) != (self.reference is not None):
            return False
        if (operation == "settle") != (payout is not None):
            return False
        places = _PLACES.get(self.currency) if type(self.currency) is str else None
        if places is None or _places(amount) > places:
            return False
        if payout is not None and (
            type(payout) is not Decimal
            or not payout.is_finite()
            or payout < 0
            or _places(payout) > places
        ):
            return False
        at = self.occurred_at
        if type(at) is not datetime or at.utcoffset() is None:
            return False
        return bool(self.key) and bool(self.player_id)

    def _problems(self) -> list[str]:
        """Everything wrong with the request, each said so that it can be fixed."""
        problems = []
        for name in ("amount", "payout"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, Decimal) or not value.is_finite()):
                problems.append(f"{name} must be a finite Decimal, not {type(value).__name__}")
            elif value is not None and value < 0:
                problems.append(f"{name} cannot be negative")
        finite = isinstance(self.amount, Decimal) and self.amount.is_finite()
        if finite and self.operation not in _MAY_BE_ZERO and self.amount <= 0:
            problems.append(f"{self.operation} needs a positive amount")
        if (self.operation in _NEEDS_REFERENCE) != (self.reference is not None):
            need = "needs" if self.operation in _NEEDS_REFERENCE else "takes no"
            problems.append(f"{self.operation} {need} reference")
        if (self.operation == "settle") != (self.payout is not None):
            problems.append("a payout goes with settle, and only with settle")
        if len(self.currency) != 3 or not self.currency.isupper():
            problems.append(f"currency {self.currency!r} is not an ISO 4217 code")
        else:
            for value in (self.amount, self.payout):
                try:
                    if isinstance(value, Decimal) and value.is_finite():
                        check_scale(value, self.currency)
                except ValueError as exc:
                    problems.append(str(exc))
        if self.occurred_at.utcoffset() is None:
            problems.append("occurred_at must be timezone-aware")
        if not self.key or not self.player_id:
            problems.append("key and player_id are required")
        return problems

    @property
    def request_hash(self) -> str:
        """What the request asks for (not when it was sent): the basis of conflict checks."""
        hashed = self._hash
        if hashed is None:
            payout = "" if self.payout is None else str(self.payout)
            hashed = self._hashed(str(self.amount), payout)
            object.__setattr__(self, "_hash", hashed)  # frozen: the cache is set once
        return hashed

    def _hashed(self, amount: str, payout: str) -> str:
        # Each field length-prefixed: no two different requests encode alike, whatever
        # characters an id holds. Stored hashes depend on this exact encoding.
        op, player, cur = self.operation, self.player_id, self.currency
        ref, res = self.reference or "", self.result or ""
        canonical = (f"{len(op)}:{op}{len(player)}:{player}{len(cur)}:{cur}"
                     f"{len(amount)}:{amount}{len(ref)}:{ref}{len(payout)}:{payout}"
                     f"{len(res)}:{res}")  # fmt: skip
        return hashlib.sha256(canonical.encode()).hexdigest()

    def wire(self) -> dict[str, Any]:
        """The request as ``ledger_post`` reads it (one element of its jsonb array)."""
        amount = str(self.amount)
        payout = None if self.payout is None else str(self.payout)
        hashed = self._hash
        if hashed is None:
            hashed = self._hashed(amount, "" if payout is None else payout)
            object.__setattr__(self, "_hash", hashed)
        return {
            "key": self.key, "op": self.operation, "player": self.player_id,
            "currency": self.currency, "amount": amount, "payout": payout,
            "result": self.result, "reference": self.reference,
            "hash": hashed, "at": _isoformat(self.occurred_at),
        }  # fmt: skip


def _places(amount: Decimal) -> int:
    """The decimal places of a finite ``amount`` as written ("1.50": 2, "1E+2": 0)."""
    text = str(amount)
    if "E" in text:  # scientific notation: ask the exponent
        exponent = amount.as_tuple().exponent
        return max(0, -exponent) if isinstance(exponent, int) else 0
    point = text.find(".")
    return 0 if point < 0 else len(text) - point - 1


# The last instant formatted, kept by identity: a batch's operations usually share one
# ``occurred_at`` object, and isoformat costs more than the rest of wire(). Equality would
# be wrong here (the same instant in two offsets prints differently); the strong reference
# keeps the object alive, so its identity cannot be reused.
_last_at: tuple[datetime, str] | None = None


def _isoformat(at: datetime) -> str:
    global _last_at  # a one-entry memo; a tuple is swapped atomically
    last = _last_at
    if last is not None and last[0] is at:
        return last[1]
    text = at.isoformat()
    _last_at = (at, text)
    return text


@dataclass(frozen=True, slots=True)
class LedgerResult:
    """What became of one operation (the first result, when ``duplicate``)."""

    key: str
    status: Status
    reason: str | None
    duplicate: bool
    txn_id: int
    cash_after: Decimal
    pending_after: Decimal

    @property
    def applied(self) -> bool:
        return self.status == "applied"


# -- operations, keyed by the business id that causes them --------------------------------


def deposit(
    payment_id: str, player_id: str, amount: Decimal, currency: str, at: datetime
) -> LedgerOp:
    return LedgerOp(keys.deposit(payment_id), "deposit", player_id, currency, at, amount)


def withdrawal_reserve(
    payment_id: str, player_id: str, amount: Decimal, currency: str, at: datetime
) -> LedgerOp:
    return LedgerOp(
        keys.withdrawal(payment_id), "withdrawal_reserve", player_id, currency, at, amount
    )


def withdrawal_close(
    payment_id: str, player_id: str, currency: str, at: datetime, *, completed: bool
) -> LedgerOp:
    """Confirm (paid out) or release (back to cash) a reserve; one key, so only one wins."""
    operation: Operation = "withdrawal_confirm" if completed else "withdrawal_release"
    return LedgerOp(keys.withdrawal_close(payment_id), operation, player_id, currency, at,
                    reference=keys.withdrawal(payment_id))  # fmt: skip


def stake(bet_id: str, player_id: str, amount: Decimal, currency: str, at: datetime) -> LedgerOp:
    return LedgerOp(keys.stake(bet_id), "stake", player_id, currency, at, amount)


def settle(
    settlement_id: str, bet_id: str, player_id: str, currency: str, payout: Decimal,
    result: str, at: datetime,
) -> LedgerOp:  # fmt: skip
    """Close an open stake: the stake goes to the house, ``payout`` to the player's cash."""
    return LedgerOp(keys.settlement(settlement_id), "settle", player_id, currency, at,
                    reference=keys.stake(bet_id), payout=payout, result=result)  # fmt: skip


def unsettle(
    rollback_id: str, settlement_id: str, player_id: str, currency: str, at: datetime
) -> LedgerOp:
    """Reverse a settlement with new entries; the bet is open again."""
    return LedgerOp(keys.settlement(rollback_id), "unsettle", player_id, currency, at,
                    reference=keys.settlement(settlement_id))  # fmt: skip


def casino_debit(
    tx_id: str, player_id: str, amount: Decimal, currency: str, at: datetime
) -> LedgerOp:
    return LedgerOp(keys.casino_debit(tx_id), "casino_debit", player_id, currency, at, amount)


def casino_credit(
    tx_id: str, player_id: str, amount: Decimal, currency: str, at: datetime
) -> LedgerOp:
    return LedgerOp(keys.casino_credit(tx_id), "casino_credit", player_id, currency, at, amount)


def casino_rollback(
    tx_id: str, debit_tx_id: str, player_id: str, currency: str, at: datetime
) -> LedgerOp:
    return LedgerOp(keys.casino_rollback(tx_id), "casino_rollback", player_id, currency, at,
                    reference=keys.casino_debit(debit_tx_id))  # fmt: skip


def player_order(ops: Sequence[LedgerOp]) -> list[int]:
    """The positions of ``ops`` in the order they are posted: by player, so concurrent
    posters lock players' rows in one global order; a player's operations keep theirs."""
    return sorted(range(len(ops)), key=lambda i: ops[i].player_id)


def known_entries(op: LedgerOp, result: LedgerResult) -> list[dict[str, str]] | None:
    """The entries ``ledger_post`` stored for ``op`` (as the adapter's ``ledger_records``
    lists them), when the request alone fixes them; None when only the database knows.

    A stake moves its amount from the player's cash to their pending stakes and nothing
    else, on either path of ``ledger_post`` (migrations 0002 and 0014: a debt never takes
    part in a stake), and a refused stake has no entries. Its amount is stored as given,
    so it is printed as the database prints it when Python writes it without an exponent.
    ``tests/integration/test_bets_placement.py`` holds this against the stored entries.
    """
    if op.operation != "stake" or result.status == "conflict":
        return None
    text = str(op.amount)
    if text != format(op.amount, "f"):
        return None
    if result.status != "applied":
        return []
    return [{"owner": op.player_id, "account": "cash", "amount": str(-op.amount)},
            {"owner": op.player_id, "account": "pending", "amount": text}]  # fmt: skip


# What the ledger may answer that is the request's fault, not ours.
_LEDGER_INVALID = frozenset(
    {"unknown_reference", "reference_mismatch", "already_closed", "invalid"}
)


def ledger_reason(reason: str | None) -> ReasonCode:
    """The outbound reason for a ledger refusal (an unexpected one is an internal error)."""
    try:
        return ReasonCode(reason or "")
    except ValueError:
        return ReasonCode.INVALID if reason in _LEDGER_INVALID else ReasonCode.INTERNAL_ERROR
