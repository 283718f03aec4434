"""The payments rules by payment id, with no database (``rules/payments.py``)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from rules.payments import Book, Prior, phase_of, request_hash
from schemas.outbound import ReasonCode
from schemas.payments import PAYMENT_EVENT, Deposit, PaymentEvent, Withdrawal


def event(kind: str, pid: str, player: str = "p-1", amount: str | None = "10.00",
          at: str = "2026-11-30T12:00:00Z", **extra: Any) -> PaymentEvent:  # fmt: skip
    body: dict[str, Any] = {"type": kind, "payment_id": pid, "player_id": player,
                            "timestamp": at, **extra}  # fmt: skip
    if kind in ("deposit", "withdrawal"):
        body |= {"amount": amount, "currency": "EUR"}
    return PAYMENT_EVENT.validate_python(body)


def allow(_: Deposit | Withdrawal) -> ReasonCode | None:
    return None


def excluded(_: Deposit | Withdrawal) -> ReasonCode | None:
    return ReasonCode.SELF_EXCLUDED


def decide(book: Book, ev: PaymentEvent, protection: Any = allow) -> str:
    v = book.decide(ev, request_hash(ev), protection)
    if v.kind == "move":
        book.settle(ev, accepted=True, decision=f"decision of {ev.payment_id}/{phase_of(ev)}")
    elif v.kind == "refuse":
        book.answered(ev, f"refusal of {ev.payment_id}/{phase_of(ev)}")
    reason = f":{v.reason.value}" if v.reason else ""
    repeated = f"={v.prior.decision}" if v.kind == "repeat" and v.prior else ""
    return f"{v.kind}{reason}{repeated}"


def test_a_refused_payment_is_decided_once_by_its_id() -> None:
    book = Book()
    assert decide(book, event("deposit", "P1"), excluded) == "refuse:self_excluded"
    # The same deposit again, even once protection would let it through: the first answer.
    again = event("deposit", "P1", at="2026-12-01T09:00:00Z")
    assert decide(book, again) == "repeat=refusal of P1/open"
    # The same id with another amount, or as a withdrawal: a conflict.
    assert decide(book, event("deposit", "P1", amount="11.00")) == "conflict:duplicate_conflict"
    assert decide(book, event("withdrawal", "P1")) == "conflict:duplicate_conflict"
    assert decide(book, event("deposit", "P1", player="p-2")) == "conflict:duplicate_conflict"


def test_a_close_before_its_request_is_retryable_and_does_not_stick() -> None:
    book = Book()
    assert decide(book, event("withdrawal_completed", "W1")) == "answer:retry_later"
    assert ("W1", "close") not in book.known
    assert decide(book, event("withdrawal_completed", "W1")) == "answer:retry_later"
    assert decide(book, event("withdrawal", "W1")) == "move"
    assert decide(book, event("withdrawal_completed", "W1")) == "move"
    assert decide(book, event("withdrawal_completed", "W1")) == "repeat=decision of W1/close"
    assert decide(book, event("withdrawal_failed", "W1")) == "conflict:duplicate_conflict"


def test_a_deposit_named_like_a_close_is_its_own_payment() -> None:
    book = Book()
    assert decide(book, event("withdrawal", "W1")) == "move"
    assert decide(book, event("deposit", "W1:close")) == "move"
    assert decide(book, event("withdrawal_failed", "W1")) == "move"


def test_closes_of_what_is_no_accepted_withdrawal() -> None:
    book = Book()
    assert decide(book, event("deposit", "D1")) == "move"
    assert decide(book, event("withdrawal_completed", "D1")) == "refuse:invalid"
    assert decide(book, event("withdrawal", "W2"), excluded) == "refuse:self_excluded"
    assert decide(book, event("withdrawal_failed", "W2")) == "refuse:invalid"
    # Another player's close is answered invalid and does not stick: the owner's close works.
    assert decide(book, event("withdrawal", "W3")) == "move"
    assert decide(book, event("withdrawal_completed", "W3", player="p-2")) == "answer:invalid"
    assert decide(book, event("withdrawal_completed", "W3")) == "move"


def test_a_withdrawal_the_ledger_refused_is_closed_invalid() -> None:
    book = Book()
    ev = event("withdrawal", "W4", amount="1000.00")
    assert book.decide(ev, request_hash(ev), allow).kind == "move"
    book.settle(ev, accepted=False, decision="insufficient")
    assert decide(book, event("withdrawal_completed", "W4")) == "refuse:invalid"


def test_a_decision_from_before_hashes_answers_any_resend_and_closes_carry_the_currency() -> None:
    book = Book({("W5", "open"): Prior("W5", "open", "withdrawal", "p-1", None, "accepted",
                                       "SEK", "old")})  # fmt: skip
    assert decide(book, event("withdrawal", "W5", amount="3.00")) == "repeat=old"
    ev = event("withdrawal_failed", "W5", reason="bank said no")
    verdict = book.decide(ev, request_hash(ev), allow)
    assert verdict.kind == "move" and verdict.currency == "SEK"


def test_the_request_hash_ignores_the_timestamp_only() -> None:
    a = event("deposit", "P1")
    assert request_hash(a) == request_hash(event("deposit", "P1", at="2027-01-01T00:00:00Z"))
    assert request_hash(a) != request_hash(event("deposit", "P1", amount="10.01"))
    assert phase_of(a) == "open" and phase_of(event("withdrawal_failed", "P1")) == "close"


KINDS = ["deposit", "withdrawal", "withdrawal_completed", "withdrawal_failed"]
events = st.tuples(
    st.sampled_from(KINDS), st.sampled_from(["P1", "P2", "P1:close"]),
    st.sampled_from(["p-1", "p-2"]), st.sampled_from(["5.00", "6.00"]), st.booleans(),
)  # fmt: skip


@given(st.lists(events, max_size=25), st.randoms(use_true_random=False))
def test_each_phase_of_a_payment_id_is_decided_once_whatever_the_order(
    items: list[tuple[str, str, str, str, bool]], rng: Any
) -> None:
    book = Book()
    first: dict[tuple[str, str], tuple[str, str]] = {}  # (id, phase) -> (hash, decision)
    for kind, pid, player, amount, refused in items:
        ev = event(kind, pid, player, amount)
        hashed = request_hash(ev)
        key = (pid, phase_of(ev))
        before = dict(book.known)
        v = book.decide(ev, hashed, excluded if refused else allow)
        if key in first:
            # Decided before: the same content repeats that decision, other content conflicts.
            assert v.kind == ("repeat" if first[key][0] == hashed else "conflict")
            if v.kind == "repeat":
                assert v.prior is not None and v.prior.decision == first[key][1]
            assert book.known == before
            continue
        if v.kind == "answer":  # does not stick: nothing remembered
            assert book.known == before and v.reason in (ReasonCode.RETRY_LATER,
                                                         ReasonCode.INVALID)  # fmt: skip
            opened = book.known.get((pid, "open"))
            assert (opened is None) == (v.reason is ReasonCode.RETRY_LATER)
            continue
        assert v.kind in ("move", "refuse")
        if v.kind == "move" and phase_of(ev) == "close":
            opened = book.known[(pid, "open")]
            assert opened.type == "withdrawal" and opened.player_id == player
            assert opened.status != "rejected"
        decision = f"{pid}/{kind}/{len(first)}"
        if v.kind == "move":
            book.settle(ev, accepted=rng.random() < 0.8, decision=decision)
        else:
            book.answered(ev, decision)
        first[key] = (hashed, decision)
