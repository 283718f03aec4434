"""Liability limits per bet (policy over the house default), the settlement cap, and the
Decimal context that keeps huge accumulators from crashing the maths."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

import pytest

from config.policies import DEFAULT_POLICY_DIR, load_policies
from rules.decimals import MONEY_CONTEXT, product, total
from rules.odds import EventBook, Market
from rules.policy import (
    HOUSE_LIABILITY,
    LiabilityLimits,
    Policies,
    PolicyError,
    parse_policy,
)
from rules.sportsbook import (
    Leg,
    Outcome,
    Priced,
    Refused,
    decide_bet,
    price_text,
    settle_bet,
    within_limits,
)
from schemas.bets import BetRequest
from schemas.money import to_minor_unit
from schemas.outbound import ReasonCode

D = Decimal
NOW = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)
SHIPPED = load_policies(DEFAULT_POLICY_DIR)
UK_TEXT = (DEFAULT_POLICY_DIR / "UK.toml").read_text(encoding="utf-8")


def bet(legs: int, odds: str = "2.00", stake: str = "10.00", currency: str = "EUR") -> BetRequest:
    return BetRequest.model_validate_json(json.dumps({
        "bet_id": "b-1", "player_id": "p-1", "placed_at": NOW.isoformat(), "stake": stake,
        "currency": currency, "odds_change": "none",
        "selections": [{"event_id": f"e-{n}", "market_id": "1x2", "outcome_id": "home",
                        "odds": odds} for n in range(legs)],
    }))  # fmt: skip


def books(legs: int, odds: str = "2.00") -> dict[str, EventBook]:
    return {
        f"e-{n}": EventBook(f"e-{n}", None, {"1x2": Market("active", {"home": D(odds)}, NOW, 1)})
        for n in range(legs)
    }


def priced(b: BetRequest) -> Priced:
    verdict = decide_bet(b, books(len(b.selections), str(b.selections[0].odds)), {}, NOW,
                         timedelta(seconds=20))  # fmt: skip
    assert isinstance(verdict, Priced), verdict
    return verdict


def uk_with(liability: str) -> LiabilityLimits:
    return parse_policy(UK_TEXT + "\n" + liability, "UK.toml").liability_limits


# -- the house default and the policy over it ------------------------------------------------


def test_the_house_default_holds_where_a_policy_says_nothing() -> None:
    assert HOUSE_LIABILITY.max_legs == 20
    assert HOUSE_LIABILITY.max_odds == D(10_000)
    assert HOUSE_LIABILITY.max_stake["EUR"] == D(10_000)
    assert HOUSE_LIABILITY.max_payout["EUR"] == D(250_000)
    for jurisdiction in SHIPPED:
        assert SHIPPED.liability(jurisdiction) == HOUSE_LIABILITY
    assert SHIPPED.liability(None) == HOUSE_LIABILITY  # a player of no known jurisdiction
    assert Policies().liability("UK") == HOUSE_LIABILITY


def test_a_policy_overrides_the_house_key_by_key_and_currency_by_currency() -> None:
    limits = uk_with(
        '[liability]\nmax_legs = 12\nmax_odds = "5000"\n'
        '[liability.max_stake]\nGBP = "5000.00"\n[liability.max_payout]\nPLN = 400000\n'
    )
    assert limits.max_legs == 12
    assert limits.max_odds == D(5000)
    assert limits.max_stake["GBP"] == D("5000.00")
    assert limits.max_stake["EUR"] == HOUSE_LIABILITY.max_stake["EUR"]  # kept from the house
    assert limits.max_payout["PLN"] == D(400_000)
    assert limits.max_payout["EUR"] == HOUSE_LIABILITY.max_payout["EUR"]


@pytest.mark.parametrize(
    ("liability", "problem"),
    [
        ("[liability]\nmax_odds = 1.5", "not a float"),
        ('[liability]\nmax_odds = "1"', "above 1"),
        ('[liability]\nmax_odds = "1e13"', "at most 1,000,000,000,000"),
        ("[liability]\nmax_legs = 0", "greater than or equal to 1"),
        ('[liability]\nmax_stake = { EUR = "10.001" }', "EUR allows 2"),
        ('[liability]\nmax_stake = { EUR = "-5" }', "greater than 0"),
        ('[liability]\nmax_stake = { euro = "5" }', "pattern"),
        ('[liability]\nmax_payout = { EUR = "lots" }', "not a decimal number"),
        ("[liability]\nmax_bets = 3", "unknown key"),
    ],
)
def test_a_bad_liability_table_is_refused_with_the_field_named(
    liability: str, problem: str
) -> None:
    with pytest.raises(PolicyError, match=problem) as caught:
        uk_with(liability)
    assert "liability." in str(caught.value)


# -- each limit at acceptance ----------------------------------------------------------------


def test_within_every_limit_the_bet_stands() -> None:
    b = bet(3)
    assert within_limits(b, priced(b), HOUSE_LIABILITY) is None


def test_max_legs() -> None:
    limits = uk_with("[liability]\nmax_legs = 3")
    assert within_limits(bet(3), priced(bet(3)), limits) is None
    refused = within_limits(bet(4), priced(bet(4)), limits)
    assert refused == Refused(ReasonCode.MAX_LEGS, "4 legs; at most 3")


def test_max_stake_and_a_currency_without_a_limit() -> None:
    limits = uk_with('[liability.max_stake]\nEUR = "100.00"')
    assert within_limits(bet(1, stake="100.00"), priced(bet(1)), limits) is None
    refused = within_limits(bet(1, stake="100.01"), priced(bet(1)), limits)
    assert refused is not None and refused.reason == ReasonCode.MAX_STAKE
    pln = bet(1, currency="PLN")
    refused = within_limits(pln, priced(pln), HOUSE_LIABILITY)
    assert refused == Refused(ReasonCode.MAX_STAKE, "no stake limit is set for PLN")


def test_max_odds() -> None:
    limits = uk_with('[liability]\nmax_odds = "8"')
    assert within_limits(bet(3), priced(bet(3)), limits) is None  # 2 x 2 x 2 = 8
    refused = within_limits(bet(4), priced(bet(4)), limits)
    assert refused == Refused(ReasonCode.MAX_ODDS, "combined odds 16.00; at most 8")


def test_max_payout_is_stake_times_odds() -> None:
    limits = uk_with('[liability.max_payout]\nEUR = "80.00"')
    assert within_limits(bet(3), priced(bet(3)), limits) is None  # 10.00 x 8 = 80.00
    refused = within_limits(bet(3, stake="10.01"), priced(bet(3)), limits)
    assert refused == Refused(ReasonCode.MAX_PAYOUT, "potential payout 80.08 EUR; at most 80.00")


def test_the_seventy_leg_accumulator_at_two_is_refused() -> None:
    seventy = bet(70)
    verdict = decide_bet(seventy, books(70), {}, NOW, timedelta(seconds=20))
    assert isinstance(verdict, Refused) and verdict.reason == ReasonCode.MAX_ODDS
    # Priced anyway (2 ** 70 = 1.18e21), the house limits refuse it on its legs.
    odds = product([D("2.00")] * 70)
    assert odds > D("1.18e21")
    refused = within_limits(seventy, Priced((D("2.00"),) * 70, odds), HOUSE_LIABILITY)
    assert refused is not None and refused.reason == ReasonCode.MAX_LEGS


def test_odds_beyond_any_precision_are_refused_before_they_are_rounded() -> None:
    huge = bet(400, odds="999.99")  # 1e1200: no 28-digit context could quantize it
    verdict = decide_bet(huge, books(400, "999.99"), {}, NOW, timedelta(seconds=20))
    assert isinstance(verdict, Refused) and verdict.reason == ReasonCode.MAX_ODDS


# -- the settlement cap ----------------------------------------------------------------------


def test_a_payout_never_exceeds_the_potential_payout_the_bet_was_accepted_at() -> None:
    legs = [Leg(D("3.00"), "win"), Leg(D("2.50"), "win")]
    assert settle_bet(D("10.00"), "EUR", legs) == Outcome("win", D("75.00"))
    # A dead-heat factor above 1 (refused on the wire; here as a corrupt row) cannot lift it.
    inflated = [Leg(D("3.00"), "win", D("4")), Leg(D("2.50"), "win")]
    assert settle_bet(D("10.00"), "EUR", inflated) == Outcome("win", D("75.00"))
    # A whole void returns the stake, which is within the cap.
    voids = [Leg(D("3.00"), "void"), Leg(D("2.50"), "void")]
    assert settle_bet(D("10.00"), "EUR", voids) == Outcome("void", D("10.00"))


# -- the Decimal context ---------------------------------------------------------------------


def test_money_maths_does_not_depend_on_the_ambient_context() -> None:
    legs = [Leg(D("1.99"), "win")] * 40  # 8.99e15, from an 80-decimal exact product
    with localcontext() as ctx:
        ctx.prec = 6  # a library that changed the thread's context must not matter
        outcome = settle_bet(D("9999.99"), "EUR", legs)
        text = price_text(product([D("1.99")] * 40))
    with localcontext(MONEY_CONTEXT):
        exact = D("9999.99") * product([D("1.99")] * 40)
    assert outcome == Outcome("win", to_minor_unit(exact, "EUR"))
    assert outcome.payout == D("8997515885550057.10")  # exact (1.99 ** 40 x 9999.99)
    assert text == product([D("1.99")] * 40).normalize(MONEY_CONTEXT)


def test_a_payout_beyond_28_digits_quantizes_without_raising() -> None:
    big = D("1180591620717411303424.00") * D("10000.00")
    assert to_minor_unit(big, "EUR") == D("11805916207174113034240000.00")
    assert total([D("1e33"), D("0.01")]) == D("1000000000000000000000000000000000.01")
