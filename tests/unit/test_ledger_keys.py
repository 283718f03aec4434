"""The ledger's key namespaces: no business id makes one kind's key another's."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules import ledger as L
from rules import ledger_keys as keys

NOW = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
ids = st.text(min_size=1, max_size=20)
BUILDERS = [keys.deposit, keys.withdrawal, keys.withdrawal_close, keys.stake, keys.settlement,
            keys.casino_debit, keys.casino_credit, keys.casino_rollback]  # fmt: skip


def test_a_deposit_named_like_a_close_does_not_take_the_close_key() -> None:
    deposit = L.deposit("W1:close", "p-1", Decimal("5.00"), "EUR", NOW)
    close = L.withdrawal_close("W1", "p-1", "EUR", NOW, completed=True)
    assert deposit.key == "deposit:W1:close"
    assert close.key == "withdrawal-close:W1" and close.reference == "withdrawal:W1"
    assert deposit.key != close.key


def test_every_operation_builds_its_key_in_its_own_kind() -> None:
    ops = {
        L.deposit("x", "p", Decimal(1), "EUR", NOW).key: "deposit",
        L.withdrawal_reserve("x", "p", Decimal(1), "EUR", NOW).key: "withdrawal",
        L.withdrawal_close("x", "p", "EUR", NOW, completed=False).key: "withdrawal-close",
        L.stake("x", "p", Decimal(1), "EUR", NOW).key: "bet",
        L.casino_debit("x", "p", Decimal(1), "EUR", NOW).key: "casino-debit",
        L.casino_credit("x", "p", Decimal(1), "EUR", NOW).key: "casino-credit",
        L.casino_rollback("x", "y", "p", "EUR", NOW).key: "casino-rollback",
    }
    assert len(ops) == 7
    for key, kind in ops.items():
        assert keys.split(key) == (kind, "x")
    assert L.casino_rollback("x", "y", "p", "EUR", NOW).reference == "casino-debit:y"


@given(st.sampled_from(range(len(BUILDERS))), ids, st.sampled_from(range(len(BUILDERS))), ids)
def test_keys_of_different_kinds_never_collide(i: int, a: str, j: int, b: str) -> None:
    if i != j:
        assert BUILDERS[i](a) != BUILDERS[j](b)
    kind, bid = keys.split(BUILDERS[i](a))
    assert bid == a and BUILDERS[i](a) == keys.key(kind, bid)


def test_kinds_hold_no_colon_and_keys_read_back() -> None:
    assert all(":" not in k for k in keys.KINDS)
    assert keys.business_id("bet:b-1", "bet") == "b-1"
    assert keys.business_id("bet:b-1", "settlement") is None
    assert keys.business_id("payment:p-1", "deposit") is None  # the old form is no key
    assert keys.settlements_of("b-1") == "settlement:b-1/"
    assert keys.prefix("withdrawal-close") + "W1" == keys.withdrawal_close("W1")
    assert keys.settlement(keys.settlement_id("b-1", 3)) == "settlement:b-1/3"
    assert keys.casino("rollback", "t") == "casino-rollback:t"
    for bad in ("", "bet:", "nokind:x", "bet"):
        with pytest.raises(keys.InvalidKey):
            keys.split(bad)
    with pytest.raises(keys.InvalidKey):
        keys.deposit("")
    with pytest.raises(keys.InvalidKey):
        keys.casino("refund", "t")
