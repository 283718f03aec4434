"""The debt rule (``rules/ledger.py``) and the trail's replay that checks it
(``sinks/postgres/rebuild.replay``), without a database."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.ledger import DebtRuleError, Split, owed, recover, split, take_back
from sinks.postgres.ledger import Balance, DebtTotals, Reconciliation
from sinks.postgres.rebuild import replay

D = Decimal
money = st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False)


def test_a_correction_takes_what_cash_holds_and_the_rest_becomes_debt() -> None:
    assert take_back(D("5.00"), D("21.00")) == Split(cash=D("-5.00"), debt=D("-16.00"))
    assert take_back(D("30.00"), D("21.00")) == Split(cash=D("-21.00"), debt=D("0.00"))
    assert take_back(D("0"), D("21.00")) == Split(cash=D("0"), debt=D("-21.00"))


def test_money_coming_back_pays_the_debt_first() -> None:
    assert recover(D("16.00"), D("50.00")) == Split(cash=D("34.00"), debt=D("16.00"))
    assert recover(D("16.00"), D("10.00")) == Split(cash=D("0.00"), debt=D("10.00"))
    assert recover(D("0"), D("10.00")) == Split(cash=D("10.00"), debt=D("0"))


@pytest.mark.parametrize(
    ("operation", "moved", "want"),
    [
        ("deposit", "50.00", (D("34.00"), D("16.00"))),
        ("settle", "10.00", (D("0.00"), D("10.00"))),  # a void's stake back
        ("withdrawal_release", "20.00", (D("4.00"), D("16.00"))),
        ("casino_credit", "3.00", (D("3.00"), D(0))),  # casino money goes to cash
        ("casino_rollback", "1.00", (D("1.00"), D(0))),
        ("unsettle", "-21.00", (D("-2.00"), D("-19.00"))),
        ("stake", "-2.00", (D("-2.00"), D(0))),  # never more than cash: the ledger refuses
        ("settle", "0", (D(0), D(0))),  # a loss moves no money
    ],
)
def test_each_operation_splits_as_the_rule_says(
    operation: str, moved: str, want: tuple[Decimal, Decimal]
) -> None:
    got = split(operation, D("2.00"), D("16.00"), D(moved))
    assert (got.cash, got.debt) == want


@given(cash=money, debt=money, amount=money)
def test_the_split_keeps_every_cent_and_no_balance_crosses_zero(
    cash: Decimal, debt: Decimal, amount: Decimal
) -> None:
    back = take_back(cash, amount)
    assert back.cash + back.debt == -amount
    assert cash + back.cash >= 0 and back.debt <= 0
    paid = recover(debt, amount)
    assert paid.cash + paid.debt == amount
    assert debt - paid.debt >= 0 and paid.cash >= 0
    # A debt is only left with empty cash: recovery never leaves both.
    assert paid.cash == 0 or debt - paid.debt == 0


def test_nonsense_is_refused_not_computed() -> None:
    with pytest.raises(DebtRuleError):
        recover(D("-1"), D("1"))
    with pytest.raises(DebtRuleError):
        take_back(D("1"), D("NaN"))
    with pytest.raises(DebtRuleError, match="zero or less"):
        owed(D("0.01"))
    assert owed(D("-16.00")) == D("16.00") and owed(D("0.00")) == 0


def test_the_wallet_shows_its_debt_and_reconcile_counts_it() -> None:
    shown = Balance("p-1", "EUR", D("0"), D("10.00"), D(0), D("16")).as_json()
    assert shown == {"player_id": "p-1", "currency": "EUR", "balance": "0.00",
                     "pending": "10.00", "debt": "16.00"}  # fmt: skip
    assert Balance("p-1", "JPY", D(5), D(0), D(0)).as_json()["debt"] == "0"
    rec = Reconciliation(currencies=[], debts=[DebtTotals("EUR", 2, 1, D("16.00"))])
    assert rec.ok and rec.debts[0].in_debt == 1


def record(txn: int, key: str, operation: str, entries: list[tuple[str, str, str]],
           cash_after: str, pending_after: str = "0") -> dict[str, Any]:  # fmt: skip
    return {
        "txn_id": txn, "key": key, "operation": operation, "status": "applied",
        "currency": "EUR", "cash_after": cash_after, "pending_after": pending_after,
        "entries": [{"owner": o, "account": a, "amount": v} for o, a, v in entries],
    }  # fmt: skip


DEBT_PATH = [
    record(1, "payment:d-1", "deposit",
           [("p-1", "cash", "10.00"), ("house", "house_payments", "-10.00")], "10.00"),
    record(2, "bet:b-1", "stake", [("p-1", "cash", "-10.00"), ("p-1", "pending", "10.00")],
           "0.00", "10.00"),
    record(3, "settlement:b-1/1", "settle",
           [("p-1", "pending", "-10.00"), ("house", "house_stakes", "10.00"),
            ("house", "house_payouts", "-21.00"), ("p-1", "cash", "21.00")], "21.00"),
    record(4, "payment:w-1", "withdrawal_reserve",
           [("p-1", "cash", "-20.00"), ("p-1", "withdrawal_reserve", "20.00")], "1.00"),
    record(5, "settlement:b-1/2", "unsettle",
           [("p-1", "cash", "-1.00"), ("p-1", "debt", "-20.00"),
            ("house", "house_payouts", "21.00"), ("house", "house_stakes", "-10.00"),
            ("p-1", "pending", "10.00")], "0.00", "10.00"),
    record(6, "payment:d-2", "deposit",
           [("p-1", "cash", "30.00"), ("p-1", "debt", "20.00"),
            ("house", "house_payments", "-50.00")], "30.00", "10.00"),
]  # fmt: skip


def test_the_trail_rebuilds_a_wallet_through_its_debt() -> None:
    wallet = replay("p-1", DEBT_PATH)
    assert wallet.ok, wallet.differences
    assert wallet.balances[("EUR", "debt")] == 0
    assert wallet.balances[("EUR", "cash")] == D("30.00")
    assert wallet.balances[("EUR", "withdrawal_reserve")] == D("20.00")
    assert len([e for e in wallet.entries if e[2] == "debt"]) == 2


def test_the_trail_catches_a_split_against_the_rule() -> None:
    # The deposit put everything in cash although the player owed 20.00.
    bent = [
        *DEBT_PATH[:5],
        record(
            6,
            "payment:d-2",
            "deposit",
            [("p-1", "cash", "50.00"), ("house", "house_payments", "-50.00")],
            "50.00",
            "10.00",
        ),
    ]
    wallet = replay("p-1", bent)
    assert any("the debt rule says cash 30.00 and debt 20.00" in d for d in wallet.differences)
    # A rollback that sends to debt what the cash could have paid.
    early = [
        *DEBT_PATH[:4],
        record(
            5,
            "settlement:b-1/2",
            "unsettle",
            [
                ("p-1", "debt", "-21.00"),
                ("house", "house_payouts", "21.00"),
                ("house", "house_stakes", "-10.00"),
                ("p-1", "pending", "10.00"),
            ],
            "1.00",
            "10.00",
        ),
    ]
    assert any("debt rule" in d for d in replay("p-1", early).differences)
    # A debt account that holds credit.
    credit = [
        *DEBT_PATH[:1],
        record(
            2,
            "x:1",
            "casino_credit",
            [("p-1", "debt", "1.00"), ("house", "house_casino", "-1.00")],
            "10.00",
        ),
    ]
    assert any("debt EUR above zero" in d for d in replay("p-1", credit).differences)


def test_balances_print_in_the_currency_minor_units() -> None:
    assert Balance("p", "EUR", D("12.5"), D("0"), D("0")).as_json() == {
        "player_id": "p", "currency": "EUR", "balance": "12.50", "pending": "0.00",
        "debt": "0.00",
    }  # fmt: skip
    assert Balance("p", "JPY", D("1200"), D("0"), D("0")).as_json()["balance"] == "1200"
