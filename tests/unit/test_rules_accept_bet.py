"""The final verdict of a bet (``accept_bet``) and a ledger refusal's reason, pure."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.compliance import Blocked
from rules.ledger import ledger_reason
from rules.policy import HOUSE_LIABILITY, LiabilityLimits
from rules.sportsbook import Priced, Refused, accept_bet, ledger_refusal
from schemas.bets import BetRequest
from schemas.outbound import ReasonCode

NOW = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)
D = Decimal


def bet(legs: int, stake: str = "10.00") -> BetRequest:
    return BetRequest.model_validate_json(json.dumps({
        "bet_id": "b-1", "player_id": "p-1", "placed_at": NOW.isoformat(), "stake": stake,
        "currency": "EUR", "odds_change": "none",
        "selections": [{"event_id": f"e-{n}", "market_id": "1x2", "outcome_id": "home",
                        "odds": "2.00"} for n in range(legs)],
    }))  # fmt: skip


def priced(legs: int) -> Priced:
    return Priced((D("2.00"),) * legs, D(2) ** legs)


BLOCKED = Blocked(ReasonCode.SELF_EXCLUDED, "self-excluded indefinitely")
ODDS = Refused(ReasonCode.ODDS_CHANGED, "e-0/1x2/home: 2.00 is now 1.90")
TIGHT = LiabilityLimits(max_legs=2, max_stake={"EUR": D("5.00")}, max_odds=D(100),
                        max_payout={"EUR": D(1000)})  # fmt: skip


def test_an_accepted_bet_within_everything_keeps_its_prices() -> None:
    b, p = bet(2), priced(2)
    assert accept_bet(b, p, blocked=None, limits=HOUSE_LIABILITY, closed=set()) is p


def test_protection_overrides_any_verdict_even_a_refusal() -> None:
    for verdict in (priced(1), ODDS):
        got = accept_bet(bet(1), verdict, blocked=BLOCKED, limits=HOUSE_LIABILITY, closed=set())
        assert got == Refused(ReasonCode.SELF_EXCLUDED, "self-excluded indefinitely")


def test_a_refusal_of_the_odds_table_stands_before_limits_and_fence() -> None:
    closed = {("e-0", "1x2")}
    assert accept_bet(bet(3), ODDS, blocked=None, limits=TIGHT, closed=closed) is ODDS


def test_liability_limits_come_before_the_market_fence() -> None:
    got = accept_bet(bet(3), priced(3), blocked=None, limits=TIGHT, closed={("e-0", "1x2")})
    assert isinstance(got, Refused) and got.reason is ReasonCode.MAX_LEGS


def test_a_leg_on_a_closed_market_refuses_the_whole_bet() -> None:
    got = accept_bet(bet(2, "1.00"), priced(2), blocked=None, limits=TIGHT,
                     closed={("e-1", "1x2")})  # fmt: skip
    assert got == Refused(ReasonCode.MARKET_SUSPENDED, "the market is settled")
    other = accept_bet(bet(2, "1.00"), priced(2), blocked=None, limits=TIGHT,
                       closed={("e-1", "ou"), ("e-9", "1x2")})  # fmt: skip
    assert isinstance(other, Priced)


def test_without_limits_no_liability_is_judged() -> None:
    assert isinstance(accept_bet(bet(3), priced(3), blocked=None, limits=None, closed=()), Priced)


@given(
    legs=st.integers(1, 4),
    stake=st.sampled_from(["0.01", "1.00", "5.00", "5.01", "500.00"]),
    blocked=st.booleans(),
    refused=st.booleans(),
    tight=st.booleans(),
    closed_leg=st.none() | st.integers(0, 3),
)
def test_accept_bet_is_the_first_refusal_in_the_documented_order(
    legs: int, stake: str, blocked: bool, refused: bool, tight: bool, closed_leg: int | None
) -> None:
    b = bet(legs, stake)
    verdict: Priced | Refused = ODDS if refused else priced(legs)
    limits = TIGHT if tight else HOUSE_LIABILITY
    closed = set() if closed_leg is None else {(f"e-{closed_leg}", "1x2")}
    got = accept_bet(b, verdict, blocked=BLOCKED if blocked else None, limits=limits,
                     closed=closed)  # fmt: skip
    fenced = closed_leg is not None and closed_leg < legs
    over_limits = tight and (legs > 2 or D(stake) > D("5.00"))
    if blocked:
        assert isinstance(got, Refused) and got.reason is ReasonCode.SELF_EXCLUDED
    elif refused:
        assert got is ODDS
    elif over_limits:
        assert isinstance(got, Refused)
        assert got.reason in (ReasonCode.MAX_LEGS, ReasonCode.MAX_STAKE)
    elif fenced:
        assert isinstance(got, Refused) and got.reason is ReasonCode.MARKET_SUSPENDED
    else:
        assert got is verdict
    # Refusing is all it ever does: an accepted bet keeps the odds table's prices.
    assert isinstance(got, Refused) or got == verdict


@pytest.mark.parametrize(
    ("status", "reason", "want"),
    [
        ("applied", None, None),
        ("rejected", "insufficient_funds", ReasonCode.INSUFFICIENT_FUNDS),
        ("conflict", "duplicate_conflict", ReasonCode.DUPLICATE_CONFLICT),
        ("rejected", "unknown_reference", ReasonCode.INVALID),
        ("rejected", "inconsistent_balance", ReasonCode.INTERNAL_ERROR),
    ],
)
def test_a_ledger_refusal_maps_to_one_reason(
    status: str, reason: str | None, want: ReasonCode | None
) -> None:
    got = ledger_refusal(status, reason)
    assert (got.reason if got else None) is want
    if status == "rejected":
        assert ledger_reason(reason) is want
