"""Ledger requests (``rules/ledger.py``) are checked before they reach the database, and
hash and travel exactly as the databases that stored them expect."""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules import ledger as L

D = Decimal
NOW = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: L.deposit("p", "x", 1.5, "EUR", NOW), "finite Decimal, not float"),  # type: ignore[arg-type]  # a float is the point
        (lambda: L.deposit("p", "x", 2, "EUR", NOW), "finite Decimal, not int"),  # type: ignore[arg-type]  # an int is the point
        (lambda: L.deposit("p", "x", D("NaN"), "EUR", NOW), "finite Decimal"),
        (lambda: L.deposit("p", "x", D("Infinity"), "EUR", NOW), "finite Decimal"),
        (lambda: L.deposit("p", "x", D("0"), "EUR", NOW), "needs a positive amount"),
        (lambda: L.stake("b", "x", D("-1"), "EUR", NOW), "cannot be negative"),
        (lambda: L.casino_credit("c", "x", D("-0.01"), "EUR", NOW), "cannot be negative"),
        (lambda: L.stake("b", "x", D("1.001"), "EUR", NOW), "EUR allows 2"),
        (lambda: L.stake("b", "x", D("1.000"), "EUR", NOW), "EUR allows 2"),
        (lambda: L.stake("b", "x", D("1E-3"), "EUR", NOW), "EUR allows 2"),
        (lambda: L.stake("b", "x", D("1.5"), "JPY", NOW), "JPY allows 0"),
        (lambda: L.stake("b", "x", D("1.0001"), "KWD", NOW), "KWD allows 3"),
        (lambda: L.stake("b", "x", D("1"), "eur", NOW), "not an ISO 4217 code"),
        (lambda: L.stake("b", "x", D("1"), "EURO", NOW), "not an ISO 4217 code"),
        (lambda: L.stake("b", "x", D("1"), "A1B", NOW), "three capital letters"),
        (lambda: L.stake("b", "x", D("1"), "ÄBC", NOW), "three capital letters"),
        (lambda: L.stake("b", "x", D("1"), "EUR", NOW.replace(tzinfo=None)), "aware"),
        (lambda: L.stake("b", "", D("1"), "EUR", NOW), "key and player_id are required"),
        (lambda: L.LedgerOp("", "stake", "x", "EUR", NOW, D("1")), "are required"),
        (lambda: L.LedgerOp("k", "settle", "x", "EUR", NOW, reference="bet:b"), "payout"),
        (lambda: L.LedgerOp("k", "stake", "x", "EUR", NOW, D("1"), payout=D("1")), "payout"),
        (lambda: L.LedgerOp("k", "stake", "x", "EUR", NOW, D("1"), reference="r"), "takes no"),
        (lambda: L.LedgerOp("k", "unsettle", "x", "EUR", NOW), "needs reference"),
        (lambda: L.settle("s", "b", "x", "EUR", D("-1"), "win", NOW), "payout cannot be"),
        (lambda: L.settle("s", "b", "x", "EUR", D("sNaN"), "win", NOW), "payout must be"),
        (lambda: L.settle("s", "b", "x", "EUR", D("1.005"), "win", NOW), "EUR allows 2"),
        (lambda: L.settle("s", "b", "x", "JPY", D("1.5"), "win", NOW), "JPY allows 0"),
    ],
)
def test_a_malformed_request_is_refused_with_what_to_fix(make: Any, message: str) -> None:
    with pytest.raises(L.InvalidOperation, match=message):
        make()


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(L.InvalidOperation) as refused:
        L.LedgerOp("k", "stake", "", "eur", NOW.replace(tzinfo=None), D("-1"), reference="r")
    assert str(refused.value) == (
        "stake k: amount cannot be negative; stake needs a positive amount; stake takes no "
        "reference; currency 'eur' is not an ISO 4217 code; occurred_at must be "
        "timezone-aware; key and player_id are required"
    )


def test_well_formed_requests_of_every_kind_are_accepted() -> None:
    at = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    L.deposit("p", "x", D("1E+2"), "EUR", at)
    L.stake("b", "x", D("1"), "XYZ", NOW)  # an unknown code has two places
    L.stake("b", "x", D("0.01"), "XYZ", NOW)
    L.casino_credit("c", "x", D("-0.00"), "EUR", NOW)
    L.casino_credit("c", "x", D("0"), "KWD", NOW)
    L.settle("s", "b", "x", "JPY", D("0"), "lose", NOW)
    L.unsettle("s/2", "s/1", "x", "EUR", NOW)
    L.withdrawal_close("w", "x", "EUR", NOW, completed=True)
    L.casino_rollback("r", "c", "x", "EUR", NOW)

    class Money(Decimal):
        pass

    L.stake("b", "x", Money("1.50"), "EUR", NOW)  # a Decimal subclass: the full check


def test_the_request_hash_ignores_when_it_was_sent_but_not_what_it_asks() -> None:
    a = L.deposit("p-1", "x", D("10.00"), "EUR", NOW)
    assert (
        a.request_hash == L.deposit("p-1", "x", D("10.00"), "EUR", NOW.replace(hour=1)).request_hash
    )
    assert a.request_hash != L.deposit("p-1", "x", D("10.01"), "EUR", NOW).request_hash
    assert a.key == "deposit:p-1"
    close = L.withdrawal_close("p-2", "x", "EUR", NOW, completed=True)
    release = L.withdrawal_close("p-2", "x", "EUR", NOW, completed=False)
    assert close.key == release.key and close.request_hash != release.request_hash


# What the code of 2026-12-06 (before the move to rules/) sent; databases store these hashes.
GOLDEN = [
    (L.deposit("p-1", "player-1", D("10.00"), "EUR", NOW),
     ('{"key": "deposit:p-1", "op": "deposit", "player": "player-1", "currency": "EUR", '
      '"amount": "10.00", "payout": null, "result": null, "reference": null, '
      '"hash": "f9dfb67f8911fea34efd1a149cad5039f57335c7f4fe395b5331d04add569be2", '
      '"at": "2026-11-24T19:00:00+00:00"}')),
    (L.stake("b-1", "player-1", D("2.5"), "EUR", NOW),
     ('{"key": "bet:b-1", "op": "stake", "player": "player-1", "currency": "EUR", '
      '"amount": "2.5", "payout": null, "result": null, "reference": null, '
      '"hash": "6d5c4e5fdcfb9332a1b0caa4cc889f1e1cb652260b5042be0032a6afe5d416af", '
      '"at": "2026-11-24T19:00:00+00:00"}')),
    (L.settle("b-1/1", "b-1", "player-1", "EUR", D("5.00"), "win", NOW),
     ('{"key": "settlement:b-1/1", "op": "settle", "player": "player-1", '
      '"currency": "EUR", "amount": "0", "payout": "5.00", "result": "win", '
      '"reference": "bet:b-1", '
      '"hash": "e484add756da2ed9bafde2cda6db2408632e57bc9915c335fafddf2955f5a6d9", '
      '"at": "2026-11-24T19:00:00+00:00"}')),
    (L.unsettle("b-1/2", "b-1/1", "player-1", "EUR", NOW),
     ('{"key": "settlement:b-1/2", "op": "unsettle", "player": "player-1", '
      '"currency": "EUR", "amount": "0", "payout": null, "result": null, '
      '"reference": "settlement:b-1/1", '
      '"hash": "5e8a7d405d1a3851e3e21751bea97e7b2e52f039cd0e74b16681aa9e39de9831", '
      '"at": "2026-11-24T19:00:00+00:00"}')),
    (L.withdrawal_close("w:1", "pläyer", "JPY", NOW.replace(year=2026, month=1, day=1, hour=0,
                        tzinfo=timezone(timedelta(hours=2))), completed=False),
     ('{"key": "withdrawal-close:w:1", "op": "withdrawal_release", '
      '"player": "pl\\u00e4yer", "currency": "JPY", "amount": "0", "payout": null, '
      '"result": null, "reference": "withdrawal:w:1", '
      '"hash": "118d294404a331d7c80358826846fe84e66d44e4e4a9822d1e3038af77a7f088", '
      '"at": "2026-01-01T00:00:00+02:00"}')),
    (L.casino_credit("c-1", "p", D("0"), "KWD", NOW),
     ('{"key": "casino-credit:c-1", "op": "casino_credit", "player": "p", '
      '"currency": "KWD", "amount": "0", "payout": null, "result": null, '
      '"reference": null, '
      '"hash": "4abab07f1607c8132fb936c16930b5468b7d113b7c7f53c1bdac767bb5c0f687", '
      '"at": "2026-11-24T19:00:00+00:00"}')),
    (L.casino_rollback("r-1", "c-0", "p", "KWD", NOW),
     ('{"key": "casino-rollback:r-1", "op": "casino_rollback", "player": "p", '
      '"currency": "KWD", "amount": "0", "payout": null, "result": null, '
      '"reference": "casino-debit:c-0", '
      '"hash": "af3b9c3fe54b68d065ec1e0e4da061a1c08cf29c492cb212d036e9222e81ebc2", '
      '"at": "2026-11-24T19:00:00+00:00"}')),
    (L.stake("b-2", "p", D("1E+2"), "EUR", NOW),
     ('{"key": "bet:b-2", "op": "stake", "player": "p", "currency": "EUR", '
      '"amount": "1E+2", "payout": null, "result": null, "reference": null, '
      '"hash": "91050e215254920051787c83825e54d764472940a107608ebe67b6eee6ab9e40", '
      '"at": "2026-11-24T19:00:00+00:00"}')),
]  # fmt: skip


@pytest.mark.parametrize(("op", "sent"), GOLDEN)
def test_the_wire_and_the_hash_are_what_stored_databases_hold(op: L.LedgerOp, sent: str) -> None:
    assert json.dumps(op.wire()) == sent
    assert op.request_hash == json.loads(sent)["hash"]
    again = L.LedgerOp(op.key, op.operation, op.player_id, op.currency, op.occurred_at,
                       op.amount, op.reference, op.payout, op.result)  # fmt: skip
    assert again.request_hash == op.request_hash  # hash first, then the wire
    assert json.dumps(again.wire()) == sent


def test_the_common_request_takes_the_quick_check() -> None:
    assert all(op._plainly_valid() for op, _ in GOLDEN)


def test_one_instant_in_two_offsets_is_sent_as_written() -> None:
    # The wire remembers the last instant it printed: by identity, never by equality.
    east = NOW.astimezone(timezone(timedelta(hours=1)))
    assert east == NOW
    assert L.stake("b", "x", D("1"), "EUR", NOW).wire()["at"] == "2026-11-24T19:00:00+00:00"
    assert L.stake("b", "x", D("1"), "EUR", east).wire()["at"] == "2026-11-24T20:00:00+01:00"
    assert L.stake("b", "x", D("1"), "EUR", NOW).wire()["at"] == "2026-11-24T19:00:00+00:00"


def test_the_cached_hash_is_no_part_of_the_request() -> None:
    a = L.stake("b", "x", D("1"), "EUR", NOW)
    b = L.stake("b", "x", D("1"), "EUR", NOW)
    a.wire()
    assert a == b and hash(a) == hash(b) and "_hash" not in repr(a)
    with pytest.raises(AttributeError):
        a.amount = D("2")  # type: ignore[misc]  # frozen is the point


# -- properties ----------------------------------------------------------------------------

OPERATIONS = [
    "deposit", "withdrawal_reserve", "withdrawal_confirm", "withdrawal_release", "stake",
    "settle", "unsettle", "casino_debit", "casino_credit", "casino_rollback",
]  # fmt: skip
text = st.text(max_size=12)
amounts = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True, places=None),
    st.decimals(min_value=-5, max_value=10**6, places=3),
    st.sampled_from([D("0"), D("-0"), D("1E+2"), D("1E-7"), D("1.00"), D("0.000")]),
)
currencies = st.one_of(st.sampled_from(["EUR", "JPY", "KWD", "XYZ", "eur", "A1B", "ÄBC", "EU"]),
                       st.text(min_size=3, max_size=3))  # fmt: skip
instants = st.sampled_from([NOW, NOW.replace(tzinfo=None), NOW.astimezone(timezone.min)])


def _unchecked(**values: Any) -> L.LedgerOp:
    """An operation with these fields, bypassing the checks (to ask both of them)."""
    op = object.__new__(L.LedgerOp)
    for f in fields(L.LedgerOp):
        object.__setattr__(op, f.name, values.get(f.name, f.default))
    return op


@given(text, st.sampled_from(OPERATIONS), text, currencies, instants, amounts,
       st.none() | text, st.none() | amounts, st.none() | text)  # fmt: skip
def test_the_quick_check_passes_only_what_the_full_check_passes(
    key: str, operation: str, player: str, currency: str, at: datetime, amount: Decimal,
    reference: str | None, payout: Decimal | None, result: str | None,
) -> None:  # fmt: skip
    _both_checks_agree({
        "key": key, "operation": operation, "player_id": player, "currency": currency,
        "occurred_at": at, "amount": amount, "reference": reference, "payout": payout,
        "result": result,
    })  # fmt: skip


def _both_checks_agree(values: dict[str, Any]) -> None:
    problems = _unchecked(**values)._problems()
    if _unchecked(**values)._plainly_valid():
        assert problems == []
    try:
        L.LedgerOp(**values)
    except L.InvalidOperation:
        assert problems
    else:
        assert not problems


@st.composite
def _near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed request, or one with a single field drawn from anything."""
    operation = draw(st.sampled_from(OPERATIONS))
    currency = draw(st.sampled_from(["EUR", "JPY", "KWD", "XYZ"]))
    places = {"JPY": 0, "KWD": 3}.get(currency, 2)
    fine = st.decimals(min_value=0, max_value=10**6, places=places)
    values: dict[str, Any] = {
        "key": draw(st.text(min_size=1, max_size=6)), "operation": operation,
        "player_id": draw(st.text(min_size=1, max_size=6)), "currency": currency,
        "occurred_at": draw(st.sampled_from([NOW, NOW.astimezone(timezone.min)])),
        "amount": draw(fine.filter(lambda d: d > 0 or operation in L._MAY_BE_ZERO)),
        "reference": draw(st.text(max_size=6)) if operation in L._NEEDS_REFERENCE else None,
        "payout": draw(fine) if operation == "settle" else None,
        "result": draw(st.none() | st.text(max_size=6)),
    }  # fmt: skip
    anything = {"key": text, "player_id": text, "currency": currencies,
                "occurred_at": instants, "amount": amounts, "reference": st.none() | text,
                "payout": st.none() | amounts}  # fmt: skip
    changed = draw(st.none() | st.sampled_from(sorted(anything)))
    if changed is not None:
        values[changed] = draw(anything[changed])
    return values


@given(_near_valid())
def test_the_quick_check_agrees_with_the_full_check_near_the_edge(values: dict[str, Any]) -> None:
    _both_checks_agree(values)


def _reference_hash(op: L.LedgerOp) -> str:
    """The request hash as first written (a join of length-prefixed fields)."""
    fields_ = (op.operation, op.player_id, op.currency, str(op.amount), op.reference or "",
               "" if op.payout is None else str(op.payout), op.result or "")  # fmt: skip
    return hashlib.sha256("".join(f"{len(f)}:{f}" for f in fields_).encode()).hexdigest()


def _valid(draw: st.DrawFn) -> L.LedgerOp:
    """A well-formed request of one of the kinds (drawn so as to be valid: filtering
    invalid ones out made Hypothesis give up)."""
    kinds: list[L.Operation] = ["stake", "casino_credit", "settle", "unsettle"]
    operation = draw(st.sampled_from(kinds))
    currency = draw(st.sampled_from(["EUR", "JPY"]))
    amounts = [D("1"), D("10")] + ([D("1.0"), D("1.00")] if currency == "EUR" else [])
    may_be_zero = operation != "stake"
    referenced = operation in ("settle", "unsettle")
    return L.LedgerOp(
        key="k",
        operation=operation,
        player_id=draw(st.text(min_size=1, max_size=8)),
        currency=currency,
        occurred_at=NOW,
        amount=draw(st.sampled_from(amounts + ([D("0")] if may_be_zero else []))),
        reference=draw(st.text(min_size=1, max_size=8)) if referenced else None,
        payout=draw(st.sampled_from([*amounts, D("0")])) if operation == "settle" else None,
        result=draw(st.none() | st.text(max_size=8)),
    )


valid_requests = st.composite(_valid)()


@given(valid_requests, valid_requests)
def test_distinct_requests_never_share_a_hash(a: L.LedgerOp, b: L.LedgerOp) -> None:
    assert (a.request_hash == b.request_hash) == (_canonical(a) == _canonical(b))


def test_ids_that_spell_a_length_prefix_do_not_collide() -> None:
    a = L.settle("s", "b", "p", "EUR", D("1"), "1:x", NOW)
    b = L.LedgerOp("settlement:s", "settle", "p", "EUR", NOW, reference="bet:b1:1", payout=D("1"),
                   result="x")  # fmt: skip
    assert a.request_hash != b.request_hash


def _canonical(op: L.LedgerOp) -> tuple[str, ...]:
    # What the hash is defined over: an absent reference, payout or result reads as "".
    return (op.operation, op.player_id, op.currency, str(op.amount), op.reference or "",
            "" if op.payout is None else str(op.payout), op.result or "")  # fmt: skip


@given(valid_requests)
def test_the_hash_is_the_one_first_written(op: L.LedgerOp) -> None:
    assert op.request_hash == _reference_hash(op)
    assert op.wire()["hash"] == op.request_hash


# -- the rest of the pure part -------------------------------------------------------------


def test_a_stakes_entries_are_known_without_asking_the_database() -> None:
    applied = L.LedgerResult("bet:b", "applied", None, False, 7, D("8.50"), D("1.50"))
    rejected = L.LedgerResult("bet:b", "rejected", "insufficient_funds", False, 7, D(0), D(0))
    conflict = L.LedgerResult("bet:b", "conflict", None, True, 7, D(0), D(0))
    stake = L.stake("b", "p", D("1.50"), "EUR", NOW)
    assert L.known_entries(stake, applied) == [
        {"owner": "p", "account": "cash", "amount": "-1.50"},
        {"owner": "p", "account": "pending", "amount": "1.50"},
    ]
    assert L.known_entries(stake, rejected) == []
    assert L.known_entries(stake, conflict) is None
    assert L.known_entries(L.stake("b", "p", D("1E+2"), "EUR", NOW), applied) is None
    assert L.known_entries(L.deposit("d", "p", D("1"), "EUR", NOW), applied) is None
    assert applied.applied and not rejected.applied


def test_a_batch_is_posted_in_player_order_and_each_player_keeps_theirs() -> None:
    ops = [L.stake(str(i), p, D("1"), "EUR", NOW) for i, p in enumerate("bab ca")]
    assert L.player_order(ops) == [3, 1, 5, 0, 2, 4]
