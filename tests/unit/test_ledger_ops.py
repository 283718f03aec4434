"""Ledger requests are checked before they reach the database."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from rules import ledger as L
from sinks.postgres.ledger import Balance

NOW = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: L.deposit("p", "x", 1.5, "EUR", NOW), "finite Decimal, not float"),  # type: ignore[arg-type]  # a float is the point
        (lambda: L.deposit("p", "x", Decimal("NaN"), "EUR", NOW), "finite Decimal"),
        (lambda: L.deposit("p", "x", Decimal("0"), "EUR", NOW), "needs a positive amount"),
        (lambda: L.stake("b", "x", Decimal("-1"), "EUR", NOW), "cannot be negative"),
        (lambda: L.stake("b", "x", Decimal("1.001"), "EUR", NOW), "EUR allows 2"),
        (lambda: L.stake("b", "x", Decimal("1.5"), "JPY", NOW), "JPY allows 0"),
        (lambda: L.stake("b", "x", Decimal("1"), "eur", NOW), "not an ISO 4217 code"),
        (lambda: L.stake("b", "x", Decimal("1"), "EUR", NOW.replace(tzinfo=None)), "aware"),
        (lambda: L.LedgerOp("k", "settle", "x", "EUR", NOW, reference="bet:b"), "payout"),
    ],
)
def test_a_malformed_request_is_refused_with_what_to_fix(make: Any, message: str) -> None:
    with pytest.raises(L.InvalidOperation, match=message):
        make()


def test_the_request_hash_ignores_when_it_was_sent_but_not_what_it_asks() -> None:
    a = L.deposit("p-1", "x", Decimal("10.00"), "EUR", NOW)
    assert (
        a.request_hash
        == L.deposit("p-1", "x", Decimal("10.00"), "EUR", NOW.replace(hour=1)).request_hash
    )
    assert a.request_hash != L.deposit("p-1", "x", Decimal("10.01"), "EUR", NOW).request_hash
    assert a.key == "deposit:p-1"
    close = L.withdrawal_close("p-2", "x", "EUR", NOW, completed=True)
    release = L.withdrawal_close("p-2", "x", "EUR", NOW, completed=False)
    assert close.key == release.key and close.request_hash != release.request_hash


def test_balances_print_in_the_currency_minor_units() -> None:
    assert Balance("p", "EUR", Decimal("12.5"), Decimal("0"), Decimal("0")).as_json() == {
        "player_id": "p", "currency": "EUR", "balance": "12.50", "pending": "0.00",
        "debt": "0.00",
    }  # fmt: skip
    assert (
        Balance("p", "JPY", Decimal("1200"), Decimal("0"), Decimal("0")).as_json()["balance"]
        == "1200"
    )
