"""The market state machine (``rules/markets.py``): examples, then properties.

The properties run the rules over an in-memory book (markets, legs, bets: what
``SportsbookSink`` stores) and hold them against the replay's independent fold of the same
feed (``rules/replay.py``), which the replay check relies on to agree with the sink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules import markets as M
from rules import replay
from rules.sportsbook import Outcome
from schemas.odds import ODDS_MESSAGE, BetSettlement

D = Decimal
T0 = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)
WIN = M.OutcomeResult("win")
LOSE = M.OutcomeResult("lose")


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def msg(kind: str, minutes: int, **fields: Any) -> M.SettlementMessage:
    parsed = ODDS_MESSAGE.validate_python(
        {"type": kind, "event_id": "m-1", "timestamp": at(minutes), **fields}
    )
    assert not isinstance(parsed, str)
    return parsed  # type: ignore[return-value]  # the four settlement kinds only


def settle(minutes: int, results: dict[str, str], market: str = "1x2") -> M.SettlementMessage:
    outcomes = [{"outcome_id": o, "result": r} for o, r in results.items()]
    return msg("bet_settlement", minutes, markets=[{"market_id": market, "outcomes": outcomes}])


def fold(*messages: M.SettlementMessage, market: str = "1x2") -> M.MarketState:
    state = M.MarketState()
    for m in messages:
        change = M.step(market, state, m)
        if change is not None:
            state = change.state
    return state


# -- examples ---------------------------------------------------------------------------------


def test_targets_are_the_named_markets_or_every_known_one_sorted_once() -> None:
    two = msg("bet_settlement", 0, markets=[
        {"market_id": "ou", "outcomes": [{"outcome_id": "over", "result": "win"}]},
        {"market_id": "1x2", "outcomes": [{"outcome_id": "home", "result": "win"}]},
    ])  # fmt: skip
    assert M.named_markets(two) == ["1x2", "ou"]
    assert M.targets(two, ["other"]) == ["1x2", "ou"]  # known markets are not read
    listed = msg("rollback_bet_settlement", 0, market_ids=["ou", "1x2"])
    assert M.targets(listed, ["other"]) == ["1x2", "ou"]
    whole = msg("bet_cancel", 0)
    assert M.named_markets(whole) is None
    assert M.targets(whole, ["ou", "1x2", "ou"]) == ["1x2", "ou"]
    assert M.targets(whole) == []


def test_a_settlement_settles_and_a_repeat_or_an_older_message_changes_nothing() -> None:
    change = M.step("1x2", M.MarketState(), settle(10, {"home": "win", "away": "lose"}))
    assert change is not None
    assert change.state == M.MarketState({"home": WIN, "away": LOSE}, False, 1, at(10),
                                         "bet_settlement")  # fmt: skip
    assert change.legs == M.SetResults({"home": WIN, "away": LOSE})
    assert change.status == "settled"
    state = change.state
    assert M.step("1x2", state, settle(10, {"home": "lose"})) is None  # a repeat: same time, type
    assert M.step("1x2", state, msg("rollback_bet_settlement", 9)) is None  # older
    assert M.step("1x2", state, settle(11, {"away": "lose", "home": "win"})) is None  # the same
    # Another kind at the same feed time is not a repeat.
    same_time = M.step("1x2", state, msg("rollback_bet_settlement", 10))
    assert same_time is not None and same_time.state.results is None


def test_the_dead_heat_factor_is_kept_as_sent() -> None:
    message = msg("bet_settlement", 0, markets=[{"market_id": "1x2", "outcomes": [
        {"outcome_id": "home", "result": "win", "dead_heat_factor": "0.50"}]}])  # fmt: skip
    change = M.step("1x2", M.MarketState(), message)
    assert change is not None
    assert change.state.results == {"home": M.OutcomeResult("win", "0.50")}
    text = M.results_json({"home": M.OutcomeResult("win", "0.50")})
    assert text == '{"home": {"result": "win", "dead_heat_factor": "0.50"}}'
    assert M.results_from_json({"home": {"result": "win", "dead_heat_factor": "0.50"}}) == {
        "home": M.OutcomeResult("win", "0.50")
    }


def test_a_rollback_opens_the_market_again_and_only_when_it_has_results() -> None:
    assert M.step("1x2", M.MarketState(), msg("rollback_bet_settlement", 0)) is None
    settled = fold(settle(0, {"home": "win"}))
    change = M.step("1x2", settled, msg("rollback_bet_settlement", 5))
    assert change is not None
    assert (change.state.results, change.state.generation) == (None, 2)
    assert (change.legs, change.status) == (M.ClearResults(), "suspended")
    cancelled = fold(settle(0, {"home": "win"}), msg("bet_cancel", 1))
    change = M.step("1x2", cancelled, msg("rollback_bet_settlement", 5))
    assert change is not None and change.status == "cancelled"  # still cancelled


def test_whole_cancels_flip_the_market_and_windowed_ones_only_its_legs() -> None:
    change = M.step("1x2", M.MarketState(), msg("bet_cancel", 0))
    assert change is not None
    assert (change.state.cancelled, change.status) == (True, "cancelled")
    assert change.legs == M.SetCancelled(True)
    assert M.step("1x2", change.state, msg("bet_cancel", 5)) is None  # already cancelled
    back = M.step("1x2", change.state, msg("rollback_bet_cancel", 5))
    assert back is not None and (back.state.cancelled, back.status) == (False, "suspended")
    settled = fold(settle(0, {"home": "win"}), msg("bet_cancel", 1))
    back = M.step("1x2", settled, msg("rollback_bet_cancel", 5))
    assert back is not None and back.status == "settled"
    assert M.step("1x2", M.MarketState(), msg("rollback_bet_cancel", 5)) is None

    windowed = msg("bet_cancel", 5, start_time=at(1).isoformat(), end_time=at(2).isoformat())
    change = M.step("1x2", settled, windowed)
    assert change is not None
    assert (change.state.cancelled, change.status, change.state.generation) == (True, None, 3)
    assert change.legs == M.SetCancelled(True, at(1), at(2))
    assert isinstance(change.legs, M.SetCancelled)
    assert [change.legs.covers(at(n)) for n in (0, 1, 2)] == [False, True, False]
    # A windowed rollback of a cancel is never "already so": the legs decide.
    again = M.step("1x2", fold(), msg("rollback_bet_cancel", 1, start_time=at(0).isoformat()))
    assert again is not None and again.status is None and not again.state.cancelled


def test_apply_message_goes_market_by_market_and_reports_the_statuses() -> None:
    states = {"a": fold(settle(0, {"home": "win"}, "a"), market="a")}
    changes = M.apply_message(msg("rollback_bet_settlement", 5), states, ["a", "b"])
    assert [c.market_id for c in changes] == ["a"]  # b has no results to roll back
    assert M.statuses(changes) == {"a": "suspended"}
    windowed = msg("bet_cancel", 6, start_time=at(0).isoformat())
    assert M.statuses(M.apply_message(windowed, states, ["a", "b"])) == {}


def test_a_no_op_does_not_move_the_clock_so_an_older_message_delivered_later_applies() -> None:
    # Feed order: settle at 1, roll it back at 2. Delivered the other way round, the
    # rollback finds nothing to roll back and leaves the clock alone, so the settlement
    # then applies and the market stays settled: the feed's order is the producer's to
    # keep (one partition per event), the rules do not restore it.
    rollback, win = msg("rollback_bet_settlement", 2), settle(1, {"home": "win"})
    assert fold(win, rollback).results is None
    assert fold(rollback, win).results == {"home": WIN}


def test_a_bet_is_settled_resettled_rolled_back_and_voided_under_new_numbers() -> None:
    bet = M.BookedBet("b-1", "p-1", "EUR", D("10.00"))
    home = M.BookLeg("1x2", "home", D("2.10"), at(0))
    assert M.plan_bet(bet, [home.leg()]) is None  # open, and no result yet

    plan = M.plan_bet(bet, [M.BookLeg("1x2", "home", D("2.10"), at(0), "win").leg()])
    assert plan is not None and not plan.rolls_back and plan.next_id() == "b-1/1"
    plan, message = plan.settled(NOW)
    assert (message.settlement_id, message.kind, message.result, message.payout) == (
        "b-1/1", "settled", "win", D("21.00"))  # fmt: skip
    assert message.ledger_reference == "settlement:b-1/1"
    assert plan.row() == ("settled", "b-1/1", "win", D("21.00"), 1)

    settled = M.BookedBet("b-1", "p-1", "EUR", D("10.00"), "b-1/1", "win", D("21.00"), 1)
    assert M.plan_bet(settled, [M.BookLeg("1x2", "home", D("2.10"), at(0), "win").leg()]) is None
    lost = M.plan_bet(settled, [M.BookLeg("1x2", "home", D("2.10"), at(0), "lose").leg()])
    assert lost is not None and lost.rolls_back
    lost, undone = lost.rolled_back(NOW)
    assert (undone.settlement_id, undone.kind, undone.result, undone.payout) == (
        "b-1/2", "rolled_back", None, D("0.00"))  # fmt: skip
    lost, message = lost.settled(NOW)
    assert (message.settlement_id, message.kind, message.payout) == ("b-1/3", "resettled", D(0))
    assert lost.row() == ("settled", "b-1/3", "lose", D("0.00"), 3)

    reopened = M.plan_bet(settled, [home.leg()])  # the market's settlement rolled back
    assert reopened is not None and reopened.want is None
    reopened, _ = reopened.rolled_back(NOW)
    assert reopened.row() == ("open", None, None, None, 2)
    with pytest.raises(ValueError, match="no outcome"):
        reopened.settled(NOW)

    void = M.plan_bet(bet, [M.BookLeg("1x2", "home", D("2.10"), at(0), cancelled=True).leg()])
    assert void is not None
    _, message = void.settled(NOW)
    assert (message.kind, message.result, message.payout) == ("voided", "void", D("10.00"))


def test_a_burnt_number_is_skipped_and_the_step_takes_the_next() -> None:
    settled = M.BookedBet("b-1", "p-1", "EUR", D("10.00"), "b-1/1", "win", D("21.00"), 1)
    plan = M.plan_bet(settled, [M.BookLeg("1x2", "home", D("2.10"), at(0)).leg()])
    assert plan is not None
    plan = plan.skip()
    assert plan.next_id() == "b-1/3"
    plan, message = plan.rolled_back(NOW)
    assert message.settlement_id == "b-1/3" and plan.row() == ("open", None, None, None, 3)
    # A first settlement under a later number than 1 counts as a resettlement.
    first = M.plan_bet(M.BookedBet("b-2", "p-1", "EUR", D("1.00")),
                       [M.BookLeg("1x2", "home", D("2"), at(0), "win").leg()])  # fmt: skip
    assert first is not None
    assert first.skip().settled(NOW)[1].kind == "resettled"


def test_zero_is_written_in_the_currencys_minor_units() -> None:
    assert (str(M.zero("EUR")), str(M.zero("JPY")), str(M.zero("BHD"))) == ("0.00", "0", "0.000")


def test_leg_updates_touch_what_the_sinks_sql_touches() -> None:
    leg = M.BookLeg("1x2", "home", D("2.10"), at(1), "win")
    assert M.update_leg(leg, "ou", M.ClearResults()) is None  # another market
    assert M.update_leg(leg, "1x2", M.SetResults({"away": LOSE})) is None  # outcome not named
    same = M.update_leg(leg, "1x2", M.SetResults({"home": WIN}))
    assert same == leg  # returned (its bet is priced again) though unchanged
    dead_heat = M.update_leg(leg, "1x2", M.SetResults({"home": M.OutcomeResult("win", "0.5")}))
    assert dead_heat is not None and dead_heat.dead_heat_factor == D("0.5")
    assert M.update_leg(M.BookLeg("1x2", "home", D(2), at(1)), "1x2", M.ClearResults()) is None
    assert M.update_leg(leg, "1x2", M.SetCancelled(False)) is None  # stands already
    assert M.update_leg(leg, "1x2", M.SetCancelled(True, at(2))) is None  # before the window
    voided = M.update_leg(leg, "1x2", M.SetCancelled(True, at(1), at(2)))
    assert voided is not None and voided.leg().result == "void"


# -- properties -------------------------------------------------------------------------------

NOW = at(600)
MARKETS = ("a", "b")
OUTCOMES = ("home", "away")


@st.composite
def feed_messages(draw: st.DrawFn, size: int = 8) -> list[M.SettlementMessage]:
    """Settlement-kind messages of event m-1 at distinct feed times (minutes 1..60)."""
    times = draw(st.lists(st.integers(1, 60), min_size=1, max_size=size, unique=True))
    out = []
    for minute in sorted(times):
        kind = draw(st.sampled_from(["bet_settlement", "rollback_bet_settlement", "bet_cancel",
                                     "rollback_bet_cancel"]))  # fmt: skip
        named = draw(st.lists(st.sampled_from(MARKETS), unique=True, min_size=1))
        if kind == "bet_settlement":
            markets = [
                {"market_id": m, "outcomes": [
                    {"outcome_id": o, "result": draw(st.sampled_from(["win", "lose", "void"]))}
                    for o in draw(st.lists(st.sampled_from(OUTCOMES), unique=True, min_size=1))
                ]}
                for m in named
            ]  # fmt: skip
            out.append(msg(kind, minute, markets=markets))
            continue
        fields: dict[str, Any] = {}
        if draw(st.booleans()):
            fields["market_ids"] = named
        if kind != "rollback_bet_settlement" and draw(st.booleans()):
            start, end = sorted(draw(st.lists(st.integers(0, 4), min_size=2, max_size=2,
                                              unique=True)))  # fmt: skip
            if draw(st.booleans()):
                fields["start_time"] = at(start).isoformat()
            if draw(st.booleans()):
                fields["end_time"] = at(end).isoformat()
        out.append(msg(kind, minute, **fields))
    return out


@dataclass
class Book:
    """What the sink stores, in memory: market states, legs (one bet per leg) and bets."""

    states: dict[str, M.MarketState] = field(default_factory=dict)
    legs: dict[str, M.BookLeg] = field(default_factory=dict)  # by bet id
    bets: dict[str, M.BookedBet] = field(default_factory=dict)
    history: dict[str, list[tuple[str, str, str | None, Decimal]]] = field(default_factory=dict)
    changes: list[M.MarketChange] = field(default_factory=list)

    @classmethod
    def with_bets(cls) -> Book:
        """A bet on every outcome of every market, placed at minutes 0..3."""
        book = cls()
        for i, (m, o, placed) in enumerate(
            (m, o, p) for m in MARKETS for o in OUTCOMES for p in (0, 3)
        ):
            bet_id = f"b-{i}"
            book.legs[bet_id] = M.BookLeg(m, o, D("2.50"), at(placed))
            book.bets[bet_id] = M.BookedBet(bet_id, "p-1", "EUR", D("10.00"))
            book.history[bet_id] = []
        return book

    def apply(self, message: M.SettlementMessage) -> list[M.MarketChange]:
        """``SportsbookSink._apply`` without SQL (and without the ledger's burnt numbers)."""
        known = {leg.market_id for leg in self.legs.values()} | set(self.states)
        changes = M.apply_message(message, self.states, M.targets(message, known))
        touched = set()
        for change in changes:
            self.states[change.market_id] = change.state
            for bet_id, leg in self.legs.items():
                moved = M.update_leg(leg, change.market_id, change.legs)
                if moved is not None:
                    self.legs[bet_id] = moved
                    touched.add(bet_id)
        for bet_id in sorted(touched):
            bet = self.bets[bet_id]
            plan = M.plan_bet(bet, [self.legs[bet_id].leg()])
            if plan is None:
                continue
            messages = []
            if plan.rolls_back:
                plan, undone = plan.rolled_back(NOW)
                messages.append(undone)
            if plan.want is not None:
                plan, settled = plan.settled(NOW)
                messages.append(settled)
            self.history[bet_id] += [(s.settlement_id, s.kind, s.result, s.payout)
                                     for s in messages]  # fmt: skip
            _, current, result, payout, seq = plan.row()
            self.bets[bet_id] = M.BookedBet(bet_id, bet.player_id, bet.currency, bet.stake,
                                            current, result, payout, seq)  # fmt: skip
        self.changes += changes
        return changes


def replayed(book: Book, bet_id: str, messages: list[M.SettlementMessage]) -> replay.BetReplay:
    leg = book.legs[bet_id]
    spec = replay.LegSpec("m-1", leg.market_id, leg.outcome_id, leg.odds, leg.placed_at)
    return replay_bet(bet_id, spec, messages)


def replay_bet(
    bet_id: str, spec: replay.LegSpec, messages: list[M.SettlementMessage]
) -> replay.BetReplay:
    return replay.replay_bet(bet_id, D("10.00"), "EUR", [spec], [("m-1", m) for m in messages])


def state_of(book: Book, market: str) -> M.MarketState:
    return book.states.get(market, M.MarketState())


@given(st.data(), feed_messages())
def test_any_order_agrees_with_the_replays_fold_of_the_same_feed(
    data: st.DataObject, messages: list[M.SettlementMessage]
) -> None:
    delivered = data.draw(st.permutations(messages))
    book = Book.with_bets()
    for message in delivered:
        book.apply(message)
    for bet_id in book.bets:
        theirs = replayed(book, bet_id, delivered)
        ours = book.bets[bet_id]
        assert book.legs[bet_id].leg() == theirs.legs[0]
        assert ours.in_force() == theirs.outcome
        assert book.history[bet_id] == [(s.settlement_id, s.kind, s.result, s.payout)
                                        for s in theirs.history]  # fmt: skip


@given(feed_messages(size=12))
def test_in_feed_order_every_market_ends_at_the_feeds_latest(
    messages: list[M.SettlementMessage],
) -> None:
    book = Book.with_bets()
    for message in messages:
        book.apply(message)
    for market in MARKETS:
        about = [m for m in messages if market in M.targets(m, MARKETS)]
        state = state_of(book, market)
        settling = [m for m in about if m.type in ("bet_settlement", "rollback_bet_settlement")]
        if settling and isinstance(latest := settling[-1], BetSettlement):
            outcomes = next(x for x in latest.markets if x.market_id == market).outcomes
            assert state.results == {o.outcome_id: M.OutcomeResult(o.result) for o in outcomes}
        else:
            assert state.results is None
        whole = [m for m in about if m.type in ("bet_cancel", "rollback_bet_cancel")
                 and m.start_time is None and m.end_time is None]  # fmt: skip
        assert state.cancelled == bool(whole and whole[-1].type == "bet_cancel")
    # The whole feed delivered again changes nothing, nor posts anything.
    before = (dict(book.states), dict(book.legs), dict(book.bets))
    for message in messages:
        assert book.apply(message) == []
    assert (book.states, book.legs, book.bets) == before


@given(st.data(), feed_messages())
def test_a_repeat_changes_nothing_and_generations_and_clocks_only_grow(
    data: st.DataObject, messages: list[M.SettlementMessage]
) -> None:
    book = Book.with_bets()
    for message in data.draw(st.permutations(messages)):
        before = dict(book.states)
        changes = book.apply(message)
        for change in changes:
            old = before.get(change.market_id, M.MarketState())
            assert change.state.generation == old.generation + 1
            assert change.state.last_at == message.timestamp
            assert old.last_at is None or message.timestamp >= old.last_at
        # The same message again (a redelivery at a new position): nothing moves.
        state, legs, bets = dict(book.states), dict(book.legs), dict(book.bets)
        assert book.apply(message) == []
        assert (book.states, book.legs, book.bets) == (state, legs, bets)
    for market in MARKETS:
        assert state_of(book, market).generation == sum(
            1 for c in book.changes if c.market_id == market
        )


@given(st.data(), feed_messages())
def test_rolling_back_a_settlement_restores_the_open_market_and_its_bets(
    data: st.DataObject, messages: list[M.SettlementMessage]
) -> None:
    book = Book.with_bets()
    for message in messages:
        book.apply(message)
    market = data.draw(st.sampled_from(MARKETS))
    before = state_of(book, market)
    win = settle(100, {"home": "win", "away": "lose"}, market)
    book.apply(win)
    book.apply(msg("rollback_bet_settlement", 101, market_ids=[market]))
    after = state_of(book, market)
    assert (after.results, after.cancelled) == (None, before.cancelled)
    for bet_id, leg in book.legs.items():
        if leg.market_id == market:
            assert leg.result is None
            bet = book.bets[bet_id]
            if leg.cancelled:  # voided: settled at its stake whatever the result
                assert bet.in_force() == Outcome("void", D("10.00"))
            else:
                assert bet.in_force() is None and bet.settlement_id is None
            numbers = [int(sid.rsplit("/", 1)[1]) for sid, *_ in book.history[bet_id]]
            assert numbers == list(range(1, len(numbers) + 1))  # one number per step, in order


@given(feed_messages())
def test_a_market_without_results_has_no_leg_with_one_and_settled_legs_show_its_results(
    messages: list[M.SettlementMessage],
) -> None:
    book = Book.with_bets()
    for message in messages:
        book.apply(message)
        for leg in book.legs.values():
            results = state_of(book, leg.market_id).results
            if results is None:
                assert leg.result is None
            elif leg.outcome_id in results:
                assert leg.result == results[leg.outcome_id].result
