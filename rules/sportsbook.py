"""Bet acceptance against the odds table, and settlement math. Pure: no I/O.

Acceptance (``decide_bet``), per selection in order: the event and market must be known
(``market_unknown``), the market open for betting (``market_suspended``: suspended,
stopped, settled, cancelled, or its producer's feed is down or not yet refreshed), the
outcome priced (``market_unknown``), and the current price acceptable under the bet's
``odds_change`` policy (``odds_changed``): ``none`` takes only the price the player saw,
``higher`` takes the current price when it is at least that, ``any`` takes the current
price. An accepted bet is priced at the current prices; an accumulator's price is their
product.

Settlement (``settle_bet``): each leg contributes a factor: ``win`` its odds (times the
dead-heat factor), ``lose`` 0, ``void`` 1 (the leg drops out), ``half_win`` (odds + 1) / 2,
``half_lose`` 1/2. The payout is the stake times the product, rounded down to the
currency's minor unit (a fraction of a cent is never paid that was not won). A bet
settles when every leg has a result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from rules.odds import EventBook, ProducerHealth, market_open
from schemas.bets import BetRequest
from schemas.money import minor_units
from schemas.outbound import ReasonCode

HALF = Decimal("0.5")


@dataclass(frozen=True)
class Priced:
    """The bet can be accepted at these prices (one per leg) and this total."""

    leg_odds: tuple[Decimal, ...]
    odds: Decimal


@dataclass(frozen=True)
class Refused:
    reason: ReasonCode
    detail: str


def decide_bet(
    bet: BetRequest,
    books: Mapping[str, EventBook],
    producers: Mapping[str, ProducerHealth],
    now: datetime,
    heartbeat_timeout: timedelta,
) -> Priced | Refused:
    """Price ``bet`` against the odds table, or say why it cannot be taken."""
    prices: list[Decimal] = []
    for leg in bet.selections:
        where = f"{leg.event_id}/{leg.market_id}"
        book = books.get(leg.event_id)
        market = book.markets.get(leg.market_id) if book else None
        if book is None or market is None:
            return Refused(ReasonCode.MARKET_UNKNOWN, f"no odds seen for market {where}")
        if not market_open(book, market, producers, now, heartbeat_timeout):
            why = f"feed of {where} is down" if market.status == "active" else market.status
            return Refused(ReasonCode.MARKET_SUSPENDED, f"market {where}: {why}")
        current = market.odds.get(leg.outcome_id)
        if current is None:
            return Refused(ReasonCode.MARKET_UNKNOWN, f"outcome {leg.outcome_id} of {where}")
        if not acceptable(leg.odds, current, bet.odds_change):
            return Refused(
                ReasonCode.ODDS_CHANGED, f"{where}/{leg.outcome_id}: {leg.odds} is now {current}"
            )
        prices.append(current)
    total = Decimal(1)
    for p in prices:
        total *= p
    return Priced(tuple(prices), price_text(total))


def price_text(odds: Decimal) -> Decimal:
    """``odds`` without trailing zeros past the second decimal (3.40 x 1.50 is 5.10)."""
    exact = odds.normalize()
    exponent = exact.as_tuple().exponent
    return exact if isinstance(exponent, int) and exponent <= -2 else odds.quantize(Decimal("0.01"))


def acceptable(requested: Decimal, current: Decimal, policy: str) -> bool:
    if policy == "any":
        return True
    if policy == "higher":
        return current >= requested
    return current == requested


@dataclass(frozen=True)
class Leg:
    """A leg as settlement sees it; ``result`` is None while its market is unresolved."""

    odds: Decimal
    result: str | None
    dead_heat_factor: Decimal | None = None


def leg_factor(leg: Leg) -> Decimal:
    match leg.result:
        case "win":
            return leg.odds * (leg.dead_heat_factor or 1)
        case "lose":
            return Decimal(0)
        case "void":
            return Decimal(1)
        case "half_win":
            return (leg.odds + 1) * HALF
        case "half_lose":
            return HALF
    msg = f"leg has no result: {leg.result!r}"
    raise ValueError(msg)


@dataclass(frozen=True)
class Outcome:
    """What a fully resolved bet pays, and the result the settlement message names."""

    result: str
    payout: Decimal


def settle_bet(stake: Decimal, currency: str, legs: Sequence[Leg]) -> Outcome | None:
    """The bet's result and payout, or None while any leg is unresolved."""
    if any(leg.result is None for leg in legs):
        return None
    factor = Decimal(1)
    for leg in legs:
        factor *= leg_factor(leg)
    payout = (stake * factor).quantize(Decimal(1).scaleb(-minor_units(currency)), ROUND_DOWN)
    results = {leg.result for leg in legs}
    if "lose" in results:
        result = "lose"  # the factor is 0: the payout is 0 in the currency's minor units
    elif results == {"void"}:
        result, payout = "void", stake
    elif "half_lose" in results:
        result = "half_lose"
    elif "half_win" in results:
        result = "half_win"
    else:
        result = "win"
    return Outcome(result, payout)
