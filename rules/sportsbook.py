"""Bet acceptance against the odds table, and settlement math. Pure: no I/O.

Acceptance (``decide_bet``): the bet's ``placed_at`` must be within the clock tolerance of
the server's decision time (``clock_skew``; ``rules/clock.py``). Then, per selection in
order: the event and market must be known (``market_unknown``), the market open for
betting (``market_suspended``: suspended, stopped, settled, cancelled, or its producer's
feed is down or not yet refreshed), the outcome priced (``market_unknown``), and the
current price acceptable under the bet's
``odds_change`` policy (``odds_changed``): ``none`` takes only the price the player saw,
``higher`` takes the current price when it is at least that, ``any`` takes the current
price. An accepted bet is priced at the current prices; an accumulator's price is their
product, computed in ``MONEY_CONTEXT`` (``rules/decimals.py``); a product above
``ODDS_CEILING``, beyond what any policy accepts, is refused (``max_odds``) before it is
rounded.

Liability (``within_limits``), once the player's jurisdiction is known (the sportsbook
sink reads it with the player's standing, in the placement's transaction): the bet's
jurisdiction policy over the house default (``rules/policy.py``) caps the legs per
accumulator (``max_legs``), the stake (``max_stake``), the combined odds (``max_odds``)
and the potential payout, stake times odds (``max_payout``); stake and payout per currency,
and a currency the limits do not name is refused (``max_stake``).

The final verdict (``accept_bet``), once the placement's transaction has read what only
PostgreSQL knows: in this order, player protection's refusal (``rules/compliance.py``;
self-exclusion, limits, sessions, geolocation) overrides any verdict; a bet the odds
table refused stays refused; a priced bet is held to its player's liability limits
(``within_limits``); and a bet with a leg on a market PostgreSQL already holds as settled
or cancelled (the market fence) is refused (``market_suspended``). A stake the ledger
then refuses (insufficient funds) is refused for the ledger's reason
(``ledger_refusal``).

Settlement (``settle_bet``): each leg contributes a factor: ``win`` its odds (times the
dead-heat factor), ``lose`` 0, ``void`` 1 (the leg drops out), ``half_win`` (odds + 1) / 2,
``half_lose`` 1/2. The payout is the stake times the product, rounded down to the
currency's minor unit (a fraction of a cent is never paid that was not won). A bet
settles when every leg has a result.

The settlement cap: a payout never exceeds the bet's potential payout at acceptance, the
stake times its accepted prices, which acceptance held within ``max_payout`` of the policy
in force then. So no resettlement, dead heat or later policy change pays above the cap a
bet was accepted under (a whole void returns the stake, which is never above it).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from rules.clock import DEFAULT_CLOCK_SKEW, skewed
from rules.compliance import Blocked
from rules.decimals import MONEY_CONTEXT, product
from rules.ledger import ledger_reason
from rules.odds import EventBook, ProducerHealth, market_open
from rules.policy import ODDS_CEILING, LiabilityLimits
from schemas.bets import BetRequest
from schemas.money import to_minor_unit
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
    *,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> Priced | Refused:
    """Price ``bet`` against the odds table at the server's ``now``, or say why it cannot be
    taken."""
    skew = skewed(bet.placed_at, now, clock_skew, what="placed_at")
    if skew is not None:
        return Refused(ReasonCode.CLOCK_SKEW, skew)
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
    for price in prices:
        total = MONEY_CONTEXT.multiply(total, price)
        if total > ODDS_CEILING:  # stop before the product grows past any precision
            return Refused(ReasonCode.MAX_ODDS, f"combined odds above {ODDS_CEILING:,}")
    return Priced(tuple(prices), price_text(total))


def price_text(odds: Decimal) -> Decimal:
    """``odds`` without trailing zeros past the second decimal (3.40 x 1.50 is 5.10)."""
    exact = odds.normalize(MONEY_CONTEXT)
    exponent = exact.as_tuple().exponent
    if isinstance(exponent, int) and exponent <= -2:
        return exact
    return odds.quantize(Decimal("0.01"), context=MONEY_CONTEXT)


def potential_payout(stake: Decimal, odds: Decimal) -> Decimal:
    """What a bet pays if every leg wins: the stake times its odds, unrounded."""
    return MONEY_CONTEXT.multiply(stake, odds)


def within_limits(bet: BetRequest, priced: Priced, limits: LiabilityLimits) -> Refused | None:
    """``None`` when the priced bet is within the liability ``limits``; else the first
    limit it breaks, in the order legs, stake, odds, payout."""
    legs = len(bet.selections)
    if legs > limits.max_legs:
        return Refused(ReasonCode.MAX_LEGS, f"{legs} legs; at most {limits.max_legs}")
    currency = bet.currency
    max_stake = limits.max_stake.get(currency)
    if max_stake is None:
        return Refused(ReasonCode.MAX_STAKE, f"no stake limit is set for {currency}")
    if bet.stake > max_stake:
        return Refused(ReasonCode.MAX_STAKE, f"stake {bet.stake} {currency}; at most {max_stake}")
    if priced.odds > limits.max_odds:
        limit = limits.max_odds
        return Refused(ReasonCode.MAX_ODDS, f"combined odds {priced.odds}; at most {limit}")
    max_payout = limits.max_payout.get(currency)
    if max_payout is None:
        return Refused(ReasonCode.MAX_PAYOUT, f"no payout limit is set for {currency}")
    payout = potential_payout(bet.stake, priced.odds)
    if payout > max_payout:
        shown = to_minor_unit(payout, currency)
        return Refused(
            ReasonCode.MAX_PAYOUT, f"potential payout {shown} {currency}; at most {max_payout}"
        )
    return None


def accept_bet(
    bet: BetRequest,
    verdict: Priced | Refused,
    *,
    blocked: Blocked | None,
    limits: LiabilityLimits | None,
    closed: Collection[tuple[str, str]],
) -> Priced | Refused:
    """The verdict to store for ``bet``, given the odds table's ``verdict``, player
    protection's refusal (``blocked``; None: the player may bet), the liability ``limits``
    of the player's jurisdiction (None: not judged here, as in a replay's scratch run) and
    the ``(event_id, market_id)`` pairs PostgreSQL holds as settled or cancelled."""
    if blocked is not None:
        return Refused(blocked.reason, blocked.detail)
    if isinstance(verdict, Refused):
        return verdict
    if limits is not None:
        over = within_limits(bet, verdict, limits)
        if over is not None:
            return over
    if any((s.event_id, s.market_id) in closed for s in bet.selections):
        return Refused(ReasonCode.MARKET_SUSPENDED, "the market is settled")
    return verdict


def ledger_refusal(status: str, reason: str | None) -> Refused | None:
    """Why the ledger's answer to an accepted bet's stake refuses the bet; None when the
    stake applied. ``conflict``: its key was used before for another request."""
    if status == "applied":
        return None
    if status == "conflict":
        return Refused(ReasonCode.DUPLICATE_CONFLICT, "stake key in use")
    return Refused(ledger_reason(reason), f"ledger: {reason}")


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
    """What one resolved leg multiplies the stake by (in ``MONEY_CONTEXT``)."""
    ctx = MONEY_CONTEXT
    match leg.result:
        case "win":
            return ctx.multiply(leg.odds, leg.dead_heat_factor or Decimal(1))
        case "lose":
            return Decimal(0)
        case "void":
            return Decimal(1)
        case "half_win":
            return ctx.multiply(ctx.add(leg.odds, Decimal(1)), HALF)
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
    """The bet's result and payout, or None while any leg is unresolved.

    The payout is capped at the potential payout the bet was accepted at (stake times the
    legs' prices): see the module's docstring.
    """
    if any(leg.result is None for leg in legs):
        return None
    won = potential_payout(stake, product(leg_factor(leg) for leg in legs))
    cap = potential_payout(stake, product(leg.odds for leg in legs))
    payout = to_minor_unit(min(won, cap), currency)
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
