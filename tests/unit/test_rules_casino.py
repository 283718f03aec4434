"""The seamless wallet's rules, call by call, with no database (``rules/casino.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from rules.casino import Verdict, Wallet
from schemas.casino import CASINO_CALL, CasinoCall, Debit
from schemas.outbound import ReasonCode

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
D = Decimal


def call(kind: str, tx: str, rnd: str = "r-1", amount: str = "1.00", **extra: Any) -> CasinoCall:
    body = {"type": kind, "transaction_id": tx, "round_id": rnd, "game_id": "g-1",
            "player_id": "p-1", "amount": amount, "currency": "EUR",
            "timestamp": "2026-11-30T12:00:00Z", **extra}  # fmt: skip
    return CASINO_CALL.validate_python(body)


def allow(_: Debit) -> ReasonCode | None:
    return None


class Play:
    def __init__(self, balance: str = "10.00") -> None:
        self.wallet = Wallet({"p-1": D(balance)})

    def __call__(self, c: CasinoCall, *, protection: Any = allow, certified: Any = allow) -> str:
        v: Verdict = self.wallet.decide(
            c, c.model_dump_json(exclude={"timestamp"}), AT, protection=protection,
            certified=certified,
        )  # fmt: skip
        if v.duplicate_of is None and v.sticks:
            self.wallet.known[c.transaction_id].answer = f"answer of {c.transaction_id}"
        what = v.status if v.error is None else v.error.value
        return f"{what}{'(dup)' if v.duplicate_of else ''}:{self.wallet.balance('p-1')}"


def test_debit_credit_and_a_retry_that_moves_nothing() -> None:
    play = Play()
    assert play(call("debit", "t1", amount="4.00")) == "ok:6.00"
    assert play(call("debit", "t1", amount="4.00")) == "ok(dup):6.00"
    assert play(call("debit", "t1", amount="5.00")) == "duplicate_conflict:6.00"
    assert play(call("credit", "t2", amount="0.00", round_closed=True)) == "ok:6.00"
    assert play(call("debit", "t3", amount="1.00")) == "round_closed:6.00"
    assert play(call("credit", "t4", amount="1.00")) == "round_closed:6.00"


def test_insufficient_funds_answers_the_balance_and_opens_no_round() -> None:
    play = Play("3.00")
    assert play(call("debit", "t1", "r-9", amount="3.01")) == "insufficient_funds:3.00"
    assert play(call("credit", "t2", "r-9", amount="9.00")) == "retry_later:3.00"
    # The refused debit is answered the same way again.
    assert play(call("debit", "t1", "r-9", amount="3.01")) == "rejected(dup):3.00"


def test_rollbacks() -> None:
    play = Play()
    assert play(call("debit", "t1", amount="2.00")) == "ok:8.00"
    assert play(call("rollback", "t2", reference_transaction_id="t1", amount="2.00")) == "ok:10.00"
    # A second rollback of the same debit gives nothing back again.
    assert play(call("rollback", "t3", reference_transaction_id="t1", amount="2.00")) == "ok:10.00"
    # A rollback of a debit never seen is recorded; the late debit is then refused.
    assert play(call("rollback", "t4", "r-2", reference_transaction_id="t5", amount="1.00")) == (
        "ok:10.00"
    )
    assert play(call("debit", "t5", "r-2", amount="1.00")) == "transaction_rolled_back:10.00"
    # Once the round is credited the stake stays taken.
    assert play(call("debit", "t6", "r-3", amount="1.00")) == "ok:9.00"
    assert play(call("credit", "t7", "r-3", amount="3.00")) == "ok:12.00"
    assert play(call("rollback", "t8", "r-3", reference_transaction_id="t6", amount="1.00")) == (
        "rollback_after_credit:12.00"
    )
    # A rollback that does not match its debit, or names a credit, is invalid.
    assert play(call("debit", "t9", "r-4", amount="1.00")) == "ok:11.00"
    assert play(call("rollback", "t10", "r-4", reference_transaction_id="t9", amount="2.00")) == (
        "invalid:11.00"
    )
    assert play(call("rollback", "t11", "r-3", reference_transaction_id="t7", amount="3.00")) == (
        "invalid:11.00"
    )


def test_protection_asks_debits_only_and_the_registry_after_it() -> None:
    play = Play()

    def excluded(_: Debit) -> ReasonCode:
        return ReasonCode.SELF_EXCLUDED

    def uncertified(_: Debit) -> ReasonCode:
        return ReasonCode.GAME_NOT_CERTIFIED

    assert play(call("debit", "t1", amount="2.00")) == "ok:8.00"
    assert play(call("debit", "t2", amount="1.00"), protection=excluded) == "self_excluded:8.00"
    assert play(call("debit", "t3", amount="1.00"), protection=excluded,
                certified=uncertified) == "self_excluded:8.00"  # fmt: skip
    assert play(call("debit", "t4", amount="1.00"), certified=uncertified) == (
        "game_not_certified:8.00"
    )
    # Credits and rollbacks are paid whatever protection would say.
    assert play(call("credit", "t5", amount="5.00"), protection=excluded) == "ok:13.00"


def test_a_round_belongs_to_one_player_game_and_currency() -> None:
    play = Play()
    assert play(call("debit", "t1", amount="1.00")) == "ok:9.00"
    assert play(call("debit", "t2", amount="1.00", game_id="g-2")) == "invalid:9.00"


def test_a_credit_before_its_debit_is_retryable_and_does_not_stick() -> None:
    play = Play()
    credit = call("credit", "t2", "r-5", amount="3.00")
    assert play(credit) == "retry_later:10.00"
    assert "t2" not in play.wallet.known and "r-5" not in play.wallet.rounds
    assert play(credit) == "retry_later:10.00"  # the aggregator's retry: still too early
    assert play(call("debit", "t1", "r-5", amount="1.00")) == "ok:9.00"
    assert play(credit) == "ok:12.00"  # decided on its merits now
    assert play(credit) == "ok(dup):12.00"


def test_a_rollback_tombstone_blocks_its_own_player_only() -> None:
    wallet = Wallet({"p-1": D("10.00"), "p-2": D("10.00")})

    def decide(c: CasinoCall) -> str:
        v = wallet.decide(c, c.model_dump_json(exclude={"timestamp"}), AT, protection=allow,
                          certified=allow)  # fmt: skip
        return v.status if v.error is None else v.error.value

    # p-1 rolls back a debit no one has seen: recorded, nothing moves.
    assert decide(call("rollback", "rb-1", "r-1", reference_transaction_id="tx-9")) == "ok"
    # p-2's debit with that transaction id is p-2's own: it goes ahead.
    assert decide(call("debit", "tx-9", "r-2", player_id="p-2")) == "ok"
    assert wallet.balance("p-2") == D("9.00")
    # p-1's late debit tx-8, rolled back first by p-1 itself, is refused.
    assert decide(call("rollback", "rb-2", "r-3", reference_transaction_id="tx-8")) == "ok"
    assert decide(call("debit", "tx-8", "r-3")) == "transaction_rolled_back"
    assert wallet.balance("p-1") == D("10.00")


def test_a_rollback_in_another_currency_than_its_debit_is_invalid() -> None:
    play = Play()
    assert play(call("debit", "t1", amount="2.00")) == "ok:8.00"
    usd = call("rollback", "t2", reference_transaction_id="t1", amount="2.00", currency="USD")
    assert play(usd) == "invalid:8.00"
    # The right rollback still gives the stake back.
    assert play(call("rollback", "t3", reference_transaction_id="t1", amount="2.00")) == (
        "ok:10.00"
    )


calls = st.tuples(
    st.sampled_from(["debit", "credit", "rollback"]), st.sampled_from(["t1", "t2", "t3"]),
    st.sampled_from(["p-1", "p-2"]), st.sampled_from(["t1", "t2", "t3"]),
    st.sampled_from(["r-1", "r-2"]),
)  # fmt: skip


@given(st.lists(calls, max_size=20))
def test_no_player_blocks_another_and_a_retry_later_never_sticks(
    items: list[tuple[str, str, str, str, str]],
) -> None:
    wallet = Wallet({"p-1": D("10.00"), "p-2": D("10.00")})
    named: set[tuple[str, str]] = set()  # (debit id, player) a rollback of that player named
    for kind, tx, player, ref, rnd in items:
        extra = {"reference_transaction_id": ref} if kind == "rollback" else {}
        if kind == "rollback" and ref == tx:
            continue  # the wire contract refuses a rollback of itself
        c = call(kind, tx, rnd, player_id=player, **extra)
        before = dict(wallet.known)
        v = wallet.decide(c, c.model_dump_json(exclude={"timestamp"}), AT, protection=allow,
                          certified=allow)  # fmt: skip
        if v.error is ReasonCode.TRANSACTION_ROLLED_BACK:
            assert (tx, player) in named
        if v.error is ReasonCode.RETRY_LATER:
            assert kind == "credit" and wallet.known == before
        if kind == "rollback" and v.status == "ok" and v.duplicate_of is None:
            named.add((ref, player))
        assert all(b >= 0 for b in wallet.balances.values())
