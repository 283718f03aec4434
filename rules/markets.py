"""The market state machine: settle, roll back and cancel markets, then the bets on them. Pure.

A settlement-kind message (``bet_settlement``, ``rollback_bet_settlement``, ``bet_cancel``,
``rollback_bet_cancel``) is about markets of one event. ``SportsbookSink`` locks the
markets, loads their states, legs and bets, and writes what these rules return.

Targets (``targets``): a ``bet_settlement`` applies to the markets it lists; the others to
their ``market_ids``, or, when absent, to every market of the event known anywhere (legs,
stored market states, the odds table). Targets are sorted and unique.

A market's state (``MarketState``, a row of ``market_states``) holds its results (per
outcome, as the feed sent them), whether the whole market is cancelled, a generation (how
many messages changed it) and the feed time and type of the last message that did.

Feed time orders a market (``step``): a message older than the market's last one, or a
repeat of it (same time, same type), changes nothing. Neither does a settlement equal to
the market's results, a rollback of a market without results, or a whole-market cancel
(or rollback of a cancel) of a market already in that state. A message that changes
nothing leaves the market as it is: its generation and clock too (so an older message
delivered after it may still apply: the feed's order holds as far as it is delivered in
order, one partition per event). One that changes it adds one to the generation and moves
the clock to the message. Per kind:

* ``bet_settlement``: the market takes the listed results; each leg on a listed outcome
  takes that outcome's result and dead-heat factor (a leg on an outcome not listed keeps
  what it had). The odds table shows the market ``settled`` (``cancelled`` while it is).
* ``rollback_bet_settlement``: the market has no results again and every leg with a
  result loses it; the market shows ``suspended`` (``cancelled`` while it is).
* ``bet_cancel`` voids the legs placed in ``[start_time, end_time)`` (placed: when the
  house decided the bet, never the player's claim); ``rollback_bet_cancel`` makes them
  stand again. Without a window it is about the whole market: the market is cancelled
  (shows ``cancelled``) or stands again (shows ``settled`` with results, else
  ``suspended``). A windowed one leaves the market's cancelled flag and shown status
  alone. A voided leg counts as ``void`` whatever its result.

Bets (``plan_bet``): a bet whose legs moved is priced again with ``settle_bet``
(``rules/sportsbook.py``). When that differs from the settlement in force, the bet's plan
is: roll back the settlement in force (if any), then settle at the new outcome (if every
leg has a result). Each step takes the bet's next settlement number, ``<bet_id>/<n>``
(ledger key ``settlement:<bet_id>/<n>``, ``rules/ledger_keys.py``): n counts the bet's
settlement steps, rollbacks included, so every version of a bet posts once and settle
and rollback never share a key. A number the ledger already holds a refusal under (an
older version's) is skipped (``BetPlan.skip``): it stays burnt. A settlement is
``voided`` when the bet's result is void, ``resettled`` when it is not the bet's first
number, else ``settled``; a rollback is ``rolled_back``, with no result and paying 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from rules import ledger_keys
from rules.sportsbook import Leg, Outcome, settle_bet
from schemas.money import to_minor_unit
from schemas.odds import BetCancel, BetSettlement, RollbackBetCancel, RollbackBetSettlement
from schemas.outbound import Settlement

SettlementMessage = BetSettlement | BetCancel | RollbackBetSettlement | RollbackBetCancel
Status = Literal["settled", "suspended", "cancelled"]


@dataclass(frozen=True)
class OutcomeResult:
    """How one outcome of a market resolved, as the feed sent it (the factor's text too)."""

    result: str
    dead_heat_factor: str | None = None


Results = Mapping[str, OutcomeResult]  # outcome id -> its result


def results_json(results: Results) -> str:
    """``results`` as ``market_states.results`` and the leg update hold them."""
    return json.dumps(
        {
            o: {"result": r.result, "dead_heat_factor": r.dead_heat_factor}
            for o, r in results.items()
        }
    )


def results_from_json(value: Mapping[str, Any]) -> dict[str, OutcomeResult]:
    """Stored results (``market_states.results``, decoded) back as ``Results``."""
    return {o: OutcomeResult(v["result"], v.get("dead_heat_factor")) for o, v in value.items()}


@dataclass(frozen=True)
class MarketState:
    """A market's settlement state; ``MarketState()`` is a market no message changed yet."""

    results: Results | None = None
    cancelled: bool = False  # the whole market is cancelled
    generation: int = 0  # messages that changed the market
    last_at: datetime | None = None  # the feed time of the last of them
    last_type: str | None = None


@dataclass(frozen=True)
class SetResults:
    """Each leg on one of these outcomes takes its result and dead-heat factor."""

    results: Results


@dataclass(frozen=True)
class ClearResults:
    """Every leg with a result loses it."""


@dataclass(frozen=True)
class SetCancelled:
    """Legs placed in ``[start, end)`` (a missing bound is open) are voided, or stand again."""

    cancelled: bool
    start: datetime | None = None
    end: datetime | None = None

    def covers(self, placed_at: datetime) -> bool:
        """Whether a leg the house took at ``placed_at`` is in the window."""
        return (self.start is None or placed_at >= self.start) and (
            self.end is None or placed_at < self.end
        )


LegUpdate = SetResults | ClearResults | SetCancelled


@dataclass(frozen=True)
class MarketChange:
    """What one message does to one market: its new state, its legs, what the odds table
    shows (None: leave it)."""

    market_id: str
    state: MarketState
    legs: LegUpdate
    status: Status | None


def named_markets(msg: SettlementMessage) -> list[str] | None:
    """The markets ``msg`` names, sorted; None when it is about every market of its event."""
    if isinstance(msg, BetSettlement):
        return sorted({m.market_id for m in msg.markets})
    if msg.market_ids is not None:
        return sorted(set(msg.market_ids))
    return None


def targets(msg: SettlementMessage, known: Iterable[str] = ()) -> list[str]:
    """The markets ``msg`` applies to; ``known``: every market of its event known anywhere
    (only read when the message names none)."""
    named = named_markets(msg)
    return named if named is not None else sorted(set(known))


def stale(state: MarketState, msg: SettlementMessage) -> bool:
    """Whether ``msg`` is older than, or a repeat of, the last message that changed the
    market."""
    if state.last_at is None:
        return False
    return msg.timestamp < state.last_at or (
        msg.timestamp == state.last_at and msg.type == state.last_type
    )


def step(market_id: str, state: MarketState, msg: SettlementMessage) -> MarketChange | None:
    """What ``msg`` does to the market ``market_id`` in ``state``; None when nothing."""
    if stale(state, msg):
        return None
    results, cancelled = state.results, state.cancelled
    legs: LegUpdate
    status: Status | None
    if isinstance(msg, BetSettlement):
        market = next(m for m in msg.markets if m.market_id == market_id)
        new = {
            o.outcome_id: OutcomeResult(
                o.result, None if o.dead_heat_factor is None else str(o.dead_heat_factor)
            )
            for o in market.outcomes
        }
        if new == results:
            return None
        results, legs = new, SetResults(new)
        status = "cancelled" if cancelled else "settled"
    elif isinstance(msg, RollbackBetSettlement):
        if results is None:
            return None
        results, legs = None, ClearResults()
        status = "cancelled" if cancelled else "suspended"
    else:
        voiding = isinstance(msg, BetCancel)
        whole = msg.start_time is None and msg.end_time is None
        if whole and cancelled == voiding:
            return None
        legs = SetCancelled(voiding, msg.start_time, msg.end_time)
        if whole:
            cancelled = voiding
            status = "cancelled" if voiding else ("settled" if results else "suspended")
        else:
            status = None
    new_state = MarketState(results, cancelled, state.generation + 1, msg.timestamp, msg.type)
    return MarketChange(market_id, new_state, legs, status)


def apply_message(
    msg: SettlementMessage, states: Mapping[str, MarketState], markets: Sequence[str]
) -> list[MarketChange]:
    """What ``msg`` does to each of ``markets`` (its targets), in their order; a market
    missing from ``states`` is one no message changed yet."""
    changes = []
    for market_id in markets:
        change = step(market_id, states.get(market_id, MarketState()), msg)
        if change is not None:
            changes.append(change)
    return changes


def statuses(changes: Iterable[MarketChange]) -> dict[str, Status]:
    """What the odds table should show, per market whose shown status changes."""
    return {c.market_id: c.status for c in changes if c.status is not None}


# -- the bets on the markets ----------------------------------------------------------------


@dataclass(frozen=True)
class BookLeg:
    """A leg as the book holds it: where it is, its price, when the house took it, and what
    the feed has said of it."""

    market_id: str
    outcome_id: str
    odds: Decimal
    placed_at: datetime
    result: str | None = None
    dead_heat_factor: Decimal | None = None
    cancelled: bool = False

    def leg(self) -> Leg:
        """The leg as settlement prices it (a voided leg is ``void`` whatever its result)."""
        if self.cancelled:
            return Leg(self.odds, "void")
        return Leg(self.odds, self.result, self.dead_heat_factor)


def update_leg(leg: BookLeg, market_id: str, update: LegUpdate) -> BookLeg | None:
    """``leg`` after ``update`` of ``market_id``; None when the update does not touch it
    (the legs the sink's update returns, whose bets are priced again)."""
    if leg.market_id != market_id:
        return None
    match update:
        case SetResults(results):
            named = results.get(leg.outcome_id)
            if named is None:
                return None
            factor = named.dead_heat_factor
            return replace(
                leg,
                result=named.result,
                dead_heat_factor=None if factor is None else Decimal(factor),
            )
        case ClearResults():
            if leg.result is None:
                return None
            return replace(leg, result=None, dead_heat_factor=None)
        case SetCancelled(cancelled):
            if leg.cancelled == cancelled or not update.covers(leg.placed_at):
                return None
            return replace(leg, cancelled=cancelled)
    msg = f"not a leg update: {update!r}"  # pragma: no cover
    raise TypeError(msg)  # pragma: no cover


@dataclass(frozen=True)
class BookedBet:
    """A bet as the book holds it: its stake and the settlement in force (if any)."""

    bet_id: str
    player_id: str
    currency: str
    stake: Decimal
    settlement_id: str | None = None  # the settlement in force; None while open
    result: str | None = None
    payout: Decimal | None = None
    settle_seq: int = 0  # settlement numbers taken so far

    def in_force(self) -> Outcome | None:
        """The outcome the bet is settled at; None while it is open."""
        if self.settlement_id is None:
            return None
        # A settled row always holds both; one without would agree with no outcome.
        return Outcome(self.result or "", self.payout if self.payout is not None else Decimal(0))


@dataclass(frozen=True)
class BetPlan:
    """One bet's way from the settlement in force to ``want``: roll back, then settle.

    ``current_id`` is the settlement in force and ``seq`` the numbers taken so far; each
    step returns the plan after it.
    """

    bet_id: str
    player_id: str
    currency: str
    stake: Decimal
    current_id: str | None
    seq: int
    want: Outcome | None

    @property
    def rolls_back(self) -> bool:
        """Whether the plan starts by rolling back the settlement in force."""
        return self.current_id is not None

    def next_id(self) -> str:
        """The settlement id the next step takes."""
        return ledger_keys.settlement_id(self.bet_id, self.seq + 1)

    def skip(self) -> BetPlan:
        """The plan with the next number burnt (the ledger holds an older refusal there)."""
        return replace(self, seq=self.seq + 1)

    def rolled_back(self, now: datetime) -> tuple[BetPlan, Settlement]:
        """The plan after rolling back the settlement in force, and the message saying so."""
        done = replace(self, seq=self.seq + 1, current_id=None)
        return done, done._message("rolled_back", None, zero(self.currency), now)

    def settled(self, now: datetime) -> tuple[BetPlan, Settlement]:
        """The plan after settling at ``want``, and the message saying so."""
        if self.want is None:
            msg = f"bet {self.bet_id} has no outcome to settle"
            raise ValueError(msg)
        seq = self.seq + 1
        done = replace(self, seq=seq, current_id=ledger_keys.settlement_id(self.bet_id, seq))
        want = self.want
        kind = "voided" if want.result == "void" else ("resettled" if seq > 1 else "settled")
        return done, done._message(kind, want.result, want.payout, now)

    def row(self) -> tuple[str, str | None, str | None, Decimal | None, int]:
        """The bet's book after the plan: status, settlement id, result, payout, number."""
        if self.current_id is not None and self.want is not None:
            return "settled", self.current_id, self.want.result, self.want.payout, self.seq
        return ("settled" if self.current_id else "open"), self.current_id, None, None, self.seq

    def _message(self, kind: str, result: str | None, payout: Decimal, now: datetime) -> Settlement:
        sid = ledger_keys.settlement_id(self.bet_id, self.seq)
        return Settlement(
            bet_id=self.bet_id,
            player_id=self.player_id,
            settlement_id=sid,
            kind=kind,
            result=result,
            stake=self.stake,
            payout=payout,
            currency=self.currency,
            ledger_reference=ledger_keys.settlement(sid),
            settled_at=now,
        )


def plan_bet(bet: BookedBet, legs: Sequence[Leg]) -> BetPlan | None:
    """The bet's plan when its ``legs`` price it other than the settlement in force; None
    when they agree (nothing to post)."""
    want = settle_bet(bet.stake, bet.currency, legs)
    if want == bet.in_force():
        return None
    return BetPlan(
        bet.bet_id, bet.player_id, bet.currency, bet.stake, bet.settlement_id, bet.settle_seq, want
    )


def zero(currency: str) -> Decimal:
    """Nothing, written in the currency's minor units as every amount on the wire is."""
    return to_minor_unit(Decimal(0), currency)
