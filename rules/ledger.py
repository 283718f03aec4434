"""The debt rule of the wallet ledger, as pure arithmetic (PostgreSQL's ``ledger_post``
applies it; ``sinks/postgres/rebuild.py`` checks the audit trail against it).

A player's money sits on two accounts per currency: ``cash`` (zero or more) and ``debt``
(zero or less: what the player owes, negated). The rule, house-wide:

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

from dataclasses import dataclass
from decimal import Decimal

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
