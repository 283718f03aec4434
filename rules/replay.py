"""Replay: a bet's settlement recomputed from the recorded feed, and a replay's order. Pure.

A bet's settlement depends on three recorded things: the bet as received (stake, currency,
selections), the price each leg was accepted at, and the settlement-kind messages of its
markets (``bet_settlement``, ``bet_cancel``, ``rollback_bet_settlement``,
``rollback_bet_cancel``). ``replay_bet`` folds those messages, in the order they were
processed, through the market rules below and prices the legs with ``settle_bet``; it
also derives the settlement history the sportsbook must have posted (``<bet_id>/<n>``,
one number per settlement and per rollback).

The market rules, per market (folded here on their own, as ``rules/markets.py`` states them
for ``SportsbookSink``; ``tests/unit/test_rules_markets.py`` holds the two together):

* A message applies to the markets it names (``bet_settlement``: its markets; the others:
  ``market_ids``, or every market of the event when absent).
* Feed time orders a market: a message older than the last one applied to the market, or
  a repeat of it (same time, same type), changes nothing. So does a settlement equal to
  the market's current results, a rollback of a market with no results, and a
  whole-market cancel (or rollback of a cancel) of a market already in that state. A
  message that changes nothing does not move the market's clock.
* ``bet_settlement`` gives each leg on a named outcome that outcome's result and dead-heat
  factor (a leg whose outcome it does not name keeps what it had);
  ``rollback_bet_settlement`` clears every leg's result; ``bet_cancel`` voids the legs
  placed in ``[start_time, end_time)`` (the whole market when neither is given; placed
  means when the house decided the bet, never the player's ``placed_at``) and
  ``rollback_bet_cancel`` makes them stand again. A voided leg counts as ``void``
  whatever its result.

One deliberate difference from the live sink: the live sink can only touch legs that
exist when a message is applied, whereas the replay applies every recorded message of
the market to the leg, as the feed defines them. The two agree except for a bet decided
after a windowed ``bet_cancel`` whose window covers its decision time: the feed says such
a bet is void, and the replay says so too (and so disagrees with the live book). No
settlement is expected for the messages processed before the bet was placed
(``placed_after``): the history starts with the bet.

``schedule`` orders the steps of a time-range replay (``sinks/postgres/replay.py``): by
the live ledger transaction each step posted first (exact per player: a player's
operations post under a lock on their accounts, so their transaction ids follow their
order), and a step that posted nothing by the time it started, after every posting step
that had started by then.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from rules.sportsbook import Leg, Outcome, settle_bet
from schemas.odds import BetCancel, BetSettlement, RollbackBetCancel, RollbackBetSettlement

SettlementMessage = BetSettlement | BetCancel | RollbackBetSettlement | RollbackBetCancel
Results = dict[str, tuple[str, str | None]]  # outcome -> (result, dead-heat factor as sent)


@dataclass(frozen=True)
class LegSpec:
    """A leg as placed: where it is, the price taken, and when the house took the bet
    (its decision time, by the server's clock)."""

    event_id: str
    market_id: str
    outcome_id: str
    odds: Decimal
    placed_at: datetime


@dataclass
class LegState:
    """What the feed has said about one leg so far."""

    result: str | None = None
    dead_heat_factor: Decimal | None = None
    cancelled: bool = False

    def leg(self, odds: Decimal) -> Leg:
        if self.cancelled:
            return Leg(odds, "void")
        return Leg(odds, self.result, self.dead_heat_factor)


@dataclass
class MarketState:
    """A market's settlement state, as ``market_states`` holds it."""

    results: Results | None = None
    cancelled: bool = False
    last_at: datetime | None = None  # None: no message applied yet
    last_type: str | None = None


def names_market(msg: SettlementMessage, market_id: str) -> bool:
    """Whether ``msg`` is about ``market_id`` (of its event)."""
    if isinstance(msg, BetSettlement):
        return any(m.market_id == market_id for m in msg.markets)
    return msg.market_ids is None or market_id in msg.market_ids


def apply_to_market(
    market_id: str,
    state: MarketState,
    legs: Sequence[tuple[LegSpec, LegState]],
    msg: SettlementMessage,
) -> bool:
    """Apply one message to a market it names and the legs on it; whether it applied."""
    if state.last_at is not None and (
        msg.timestamp < state.last_at
        or (msg.timestamp == state.last_at and msg.type == state.last_type)
    ):
        return False
    if isinstance(msg, BetSettlement):
        market = next(m for m in msg.markets if m.market_id == market_id)
        new: Results = {
            o.outcome_id: (
                o.result,
                None if o.dead_heat_factor is None else str(o.dead_heat_factor),
            )
            for o in market.outcomes
        }
        if new == state.results:
            return False
        state.results = new
        for spec, leg in legs:
            if spec.outcome_id in new:
                result, factor = new[spec.outcome_id]
                leg.result = result
                leg.dead_heat_factor = None if factor is None else Decimal(factor)
    elif isinstance(msg, RollbackBetSettlement):
        if state.results is None:
            return False
        state.results = None
        for _, leg in legs:
            leg.result = None
            leg.dead_heat_factor = None
    else:
        voiding = isinstance(msg, BetCancel)
        whole = msg.start_time is None and msg.end_time is None
        if whole and state.cancelled == voiding:
            return False
        for spec, leg in legs:
            after_start = msg.start_time is None or spec.placed_at >= msg.start_time
            before_end = msg.end_time is None or spec.placed_at < msg.end_time
            if after_start and before_end:
                leg.cancelled = voiding
        if whole:
            state.cancelled = voiding
    state.last_at = msg.timestamp
    state.last_type = msg.type
    return True


@dataclass(frozen=True)
class SettlementStep:
    """One settlement version the sportsbook posts for a bet (key ``settlement:<id>``)."""

    settlement_id: str
    kind: str  # settled, resettled, voided, rolled_back
    result: str | None
    payout: Decimal
    cause: int  # index of the message that caused it; -1: the bet's placement


@dataclass(frozen=True)
class BetReplay:
    """A bet replayed through the feed: its legs now, what it pays, and its history."""

    legs: tuple[Leg, ...]
    outcome: Outcome | None
    history: tuple[SettlementStep, ...]

    @property
    def in_force(self) -> SettlementStep | None:
        """The settlement in force (None while the bet is open)."""
        if self.outcome is None or not self.history:
            return None
        return self.history[-1]


@dataclass
class _History:
    bet_id: str
    stake: Decimal
    have: Outcome | None = None
    seq: int = 0
    steps: list[SettlementStep] = field(default_factory=list)

    def move_to(self, want: Outcome | None, cause: int) -> None:
        """What ``SportsbookSink._resettle`` posts when the bet's outcome becomes ``want``."""
        if want == self.have:
            return
        if self.have is not None:
            self.seq += 1
            self.steps.append(
                SettlementStep(f"{self.bet_id}/{self.seq}", "rolled_back", None, Decimal(0), cause)
            )
            self.have = None
        if want is not None:
            self.seq += 1
            kind = "voided" if want.result == "void" else "resettled" if self.seq > 1 else "settled"
            self.steps.append(
                SettlementStep(f"{self.bet_id}/{self.seq}", kind, want.result, want.payout, cause)
            )
            self.have = want


def replay_bet(
    bet_id: str,
    stake: Decimal,
    currency: str,
    legs: Sequence[LegSpec],
    messages: Sequence[tuple[str, SettlementMessage]],
    placed_after: int = 0,
) -> BetReplay:
    """Replay ``messages`` (``(event_id, message)``, in processing order) over ``legs``.

    ``messages[:placed_after]`` were processed before the bet was placed: they shape the
    markets (and, by the feed's rules, the legs), but no settlement is posted for them.
    """
    markets: dict[tuple[str, str], MarketState] = {}
    states = [LegState() for _ in legs]
    on_market: dict[tuple[str, str], list[tuple[LegSpec, LegState]]] = {}
    for spec, leg_state in zip(legs, states, strict=True):
        on_market.setdefault((spec.event_id, spec.market_id), []).append((spec, leg_state))

    def now() -> Outcome | None:
        priced = [s.leg(spec.odds) for spec, s in zip(legs, states, strict=True)]
        return settle_bet(stake, currency, priced)

    history = _History(bet_id, stake)
    for index, (event_id, msg) in enumerate(messages):
        if index == placed_after:
            history.move_to(now(), -1)
        for (event, market_id), market_legs in on_market.items():
            if event == event_id and names_market(msg, market_id):
                market = markets.setdefault((event, market_id), MarketState())
                apply_to_market(market_id, market, market_legs, msg)
        if index >= placed_after:
            history.move_to(now(), index)
    if placed_after >= len(messages):
        history.move_to(now(), -1)
    final = tuple(s.leg(spec.odds) for spec, s in zip(legs, states, strict=True))
    return BetReplay(final, now(), tuple(history.steps))


# -- ordering a time-range replay ------------------------------------------------------------

T = TypeVar("T")


@dataclass(frozen=True)
class Anchor:
    """Where a step sat in the live run.

    ``txn_id`` is the first live ledger transaction it posted (None when it posted none);
    ``at`` is when its database transaction started; ``tiebreak`` orders steps that are
    otherwise equal (their order in the source).
    """

    txn_id: int | None
    at: datetime
    tiebreak: int = 0


def schedule(steps: Sequence[T], anchor: Callable[[T], Anchor]) -> list[T]:
    """``steps`` in the order they ran live (see the module docstring)."""
    anchors = [anchor(s) for s in steps]
    posting = sorted(
        (i for i, a in enumerate(anchors) if a.txn_id is not None),
        key=lambda i: (anchors[i].txn_id, anchors[i].tiebreak),
    )
    started: list[datetime] = []  # the latest start among the posting steps so far
    for i in posting:
        at = anchors[i].at
        started.append(at if not started or at > started[-1] else started[-1])
    keys: dict[int, tuple[int, int, datetime, int]] = {}
    for rank, i in enumerate(posting):
        keys[i] = (rank, 1, anchors[i].at, anchors[i].tiebreak)
    for i, a in enumerate(anchors):
        if a.txn_id is None:
            keys[i] = (bisect_right(started, a.at), 0, a.at, a.tiebreak)
    return [steps[i] for i in sorted(range(len(steps)), key=lambda i: keys[i])]


# -- comparing a replay with the live tables ---------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """One way the replay differs from what the live tables hold."""

    what: str  # e.g. "bet b-1", "ledger settlement:b-1/3", "balance p-1 EUR"
    field: str
    live: str
    replay: str


def show(value: object) -> str:
    return "null" if value is None else str(value)


def diff_rows(
    part: str,
    live: Mapping[str, Mapping[str, object]],
    replay: Mapping[str, Mapping[str, object]],
) -> list[Difference]:
    """Every row missing on one side and every field that differs (``Decimal`` by value)."""
    out: list[Difference] = []
    for key in sorted(live.keys() | replay.keys()):
        what = f"{part} {key}"
        mine, theirs = live.get(key), replay.get(key)
        if mine is None or theirs is None:
            out.append(Difference(what, "row", "missing" if mine is None else "present",
                                  "missing" if theirs is None else "present"))  # fmt: skip
            continue
        for name in sorted(mine.keys() | theirs.keys()):
            if mine.get(name) != theirs.get(name):
                out.append(Difference(what, name, show(mine.get(name)), show(theirs.get(name))))
    return out
