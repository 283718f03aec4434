"""The pure comparisons behind ``croupier check`` (no I/O)."""

from __future__ import annotations

import hashlib
from decimal import Decimal

from croupier.checks import (
    Aggregate,
    Decisions,
    Row,
    audit_trail,
    books_balance,
    classify_outcomes,
    compare_decisions,
    diff_aggregates,
    diff_keys,
    like_prefix,
    run_prefix,
    table,
)


def test_each_input_needs_exactly_one_outcome_and_beyond_progress_is_pending() -> None:
    inputs = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    outcomes = {(0, 0): 1, (0, 1): 2, (1, 0): 1}
    got = classify_outcomes("bets", inputs, outcomes, progress={0: 3, 1: 1})
    assert got.inputs == 5 and got.decided == 2
    assert got.several == [((0, 1), 2)]
    assert got.missing == [(0, 2)]  # the flow says it is done past it
    assert got.pending == [(0, 3)]  # not reached yet


def test_a_partition_without_progress_is_all_pending() -> None:
    got = classify_outcomes("odds", [(2, 0), (2, 1)], {}, progress={})
    assert got.pending == [(2, 0), (2, 1)] and not got.missing


def digest(value: bytes) -> str:
    return hashlib.md5(value).hexdigest()


def test_identical_republished_decisions_are_counted_not_breaches() -> None:
    d = Decisions()
    d.add("b-1", b'{"a":1}')
    d.add("b-1", b'{"a":1}')
    d.add("b-2", b'{"b":2}')
    assert d.messages == 3 and d.republished() == 1 and d.conflicting() == {}
    twice, unstored, unpublished = compare_decisions(
        d, {"b-1": digest(b'{"a":1}'), "b-2": digest(b'{"b":2}'), "b-3": "x"}, digest
    )
    assert twice == {} and unstored == [] and unpublished == ["b-3"]


def test_two_different_decisions_and_unstored_ones_are_breaches() -> None:
    d = Decisions()
    d.add("b-1", b'{"status":"accepted"}')
    d.add("b-1", b'{"status":"rejected"}')
    d.add("b-2", b'{"other":1}')
    twice, unstored, _ = compare_decisions(d, {"b-1": "?", "b-2": digest(b"stored")}, digest)
    assert list(twice) == ["b-1"] and len(twice["b-1"]) == 2
    assert unstored == ["b-2"]


def test_aggregates_and_keys_differences() -> None:
    one = (1, Decimal("10.00"), Decimal(0))
    ledger: Aggregate = {("EUR", "stake", "applied"): one, ("EUR", "deposit", "applied"): one}
    same: Aggregate = {("EUR", "stake", "applied"): (1, Decimal("10.000000"), Decimal("0.000000")),
            ("EUR", "deposit", "applied"): one}  # fmt: skip
    assert diff_aggregates(ledger, same) == []
    extra: Aggregate = {**same, ("EUR", "stake", "applied"): (2, Decimal("11.00"), Decimal(0))}
    (d,) = diff_aggregates(ledger, extra)
    assert d.startswith("EUR/stake/applied: ledger 1 rows")
    assert diff_keys({"a", "b"}, {"b", "c"}) == (["a"], ["c"])


def test_run_prefix_is_matched_literally() -> None:
    assert run_prefix(None) is None and like_prefix(None) == "%"
    assert like_prefix(run_prefix("r_1%")) == "r\\_1\\%-%"


def test_a_row_fails_on_a_breach_and_the_table_shows_examples() -> None:
    good, bad = Row("fine", checked=3), Row("broken", checked=2)
    for i in range(7):
        bad.breach(f"thing {i}")
    assert good.ok and not bad.ok and bad.breaches == 7 and len(bad.examples) == 5
    text = table([good, bad, Row("later", skipped=True)])
    assert "PASS" in text and "FAIL" in text and "SKIP" in text
    assert "BREACH thing 0" in text and "... and 2 more" in text
    assert bad.as_json()["ok"] is False


def test_the_books_verdict_names_every_kind_of_imbalance() -> None:
    from sinks.postgres.ledger import CurrencyTotals, Reconciliation

    d = Decimal
    good = Reconciliation([CurrencyTotals("EUR", d("10.00"), d("10.00"), 2)])
    assert books_balance(good).ok and books_balance(good).checked == 2
    bad = Reconciliation(
        [CurrencyTotals("EUR", d("10.00"), d("9.99"), 3), CurrencyTotals("GBP", d(1), d(1), 2)],
        unbalanced_transactions=[(7, "EUR", d("0.01"))],
        balance_drift=[("p-1", "cash", "EUR", d("5.00"), d("4.99"))],
    )
    row = books_balance(bad)
    assert not row.ok and row.breaches == 3 and row.checked == 5
    assert row.examples == [
        "EUR: debits 10.00, credits 9.99",
        "ledger transaction 7 does not balance in EUR: 0.01",
        "p-1 cash EUR: stored 5.00, entries say 4.99",
    ]


def test_the_trail_verdict_counts_broken_chains_checkpoints_and_wallets() -> None:
    from sinks.chain import Problem, Verification
    from sinks.postgres.rebuild import Wallet

    whole = Verification(chains=2, records=10)
    assert audit_trail(whole, [Wallet("p-1")]).ok
    row = audit_trail(
        Verification(chains=2, records=10, problems=[Problem("bets/0", 4, "hash differs")]),
        [Wallet("p-1"), Wallet("p-2", differences=["cash EUR: trail 5, ledger 6"])],
        [Problem("checkpoint 3", 0, "signature does not verify")],
    )
    assert row.breaches == 3
    assert row.examples == [
        "chain bets/0 record 4: hash differs",
        "chain checkpoint 3 record 0: signature does not verify",
        "wallet p-2: cash EUR: trail 5, ledger 6",
    ]
