"""The ledger's idempotency keys: the one place where they are spelled.

Every ledger operation is keyed ``<kind>:<business id>``. The kind is a fixed word without
a colon, one per kind of operation, so a key's kind is everything before its first colon:
no business id, whatever characters it holds, can make one kind's key equal another's (a
deposit whose ``payment_id`` is ``W1:close`` is ``deposit:W1:close``, never withdrawal
``W1``'s close, ``withdrawal-close:W1``).

=================== ======================================================================
kind                operation(s)
=================== ======================================================================
``deposit``         a confirmed deposit, by ``payment_id``
``withdrawal``      a withdrawal's reserve, by ``payment_id``
``withdrawal-close`` its confirm or release, by ``payment_id`` (one key: only one wins)
``bet``             a bet's stake, by ``bet_id``
``settlement``      a bet's settlements and their rollbacks, by ``<bet_id>/<n>`` (n counts
                    the bet's settlement steps, so settle and unsettle never share one)
``casino-debit``    a seamless-wallet debit, by ``transaction_id``
``casino-credit``   a credit, by ``transaction_id``
``casino-rollback`` a rollback, by its own ``transaction_id``
=================== ======================================================================

Build keys with these functions and read them with ``split``; nobody formats one by hand.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal[
    "deposit",
    "withdrawal",
    "withdrawal-close",
    "bet",
    "settlement",
    "casino-debit",
    "casino-credit",
    "casino-rollback",
]
KINDS: tuple[Kind, ...] = (
    "deposit", "withdrawal", "withdrawal-close", "bet", "settlement", "casino-debit",
    "casino-credit", "casino-rollback",
)  # fmt: skip


class InvalidKey(ValueError):
    """A key that is not ``<kind>:<business id>`` with a known kind and a non-empty id."""


def key(kind: Kind, business_id: str) -> str:
    """The idempotency key of ``kind`` for ``business_id``."""
    if kind not in KINDS:
        msg = f"unknown ledger key kind {kind!r}"
        raise InvalidKey(msg)
    if not business_id:
        msg = f"a {kind} key needs a business id"
        raise InvalidKey(msg)
    return f"{kind}:{business_id}"


def prefix(kind: Kind) -> str:
    """What every key of ``kind`` starts with (for SQL that joins keys to business ids)."""
    return key(kind, "-").removesuffix("-")


def split(idempotency_key: str) -> tuple[Kind, str]:
    """(kind, business id) of a key; ``InvalidKey`` when it is not one of ours."""
    kind, colon, business_id = idempotency_key.partition(":")
    for known in KINDS:
        if kind == known and colon and business_id:
            return known, business_id
    msg = f"{idempotency_key!r} is not a ledger key"
    raise InvalidKey(msg)


def business_id(idempotency_key: str, kind: Kind) -> str | None:
    """The business id of a key of ``kind``; None for a key of another kind."""
    try:
        found, bid = split(idempotency_key)
    except InvalidKey:
        return None
    return bid if found == kind else None


def deposit(payment_id: str) -> str:
    return key("deposit", payment_id)


def withdrawal(payment_id: str) -> str:
    return key("withdrawal", payment_id)


def withdrawal_close(payment_id: str) -> str:
    return key("withdrawal-close", payment_id)


def stake(bet_id: str) -> str:
    return key("bet", bet_id)


def settlement(settlement_id: str) -> str:
    return key("settlement", settlement_id)


def settlement_id(bet_id: str, n: int) -> str:
    """The id of a bet's n-th settlement step (a settlement or its rollback)."""
    return f"{bet_id}/{n}"


def settlements_of(bet_id: str) -> str:
    """The prefix every settlement key of ``bet_id`` starts with (for ``LIKE`` or
    ``startswith``; the rest is the step number)."""
    return prefix("settlement") + settlement_id(bet_id, 0).removesuffix("0")


def casino_debit(transaction_id: str) -> str:
    return key("casino-debit", transaction_id)


def casino_credit(transaction_id: str) -> str:
    return key("casino-credit", transaction_id)


def casino_rollback(transaction_id: str) -> str:
    return key("casino-rollback", transaction_id)


def casino(call_type: str, transaction_id: str) -> str:
    """The key of a casino call of ``call_type`` (``debit``, ``credit``, ``rollback``)."""
    match call_type:
        case "debit":
            return casino_debit(transaction_id)
        case "credit":
            return casino_credit(transaction_id)
        case "rollback":
            return casino_rollback(transaction_id)
    msg = f"no casino call is a {call_type!r}"
    raise InvalidKey(msg)
