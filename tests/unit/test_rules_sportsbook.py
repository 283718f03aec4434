"""The sportsbook's pure rules: odds table changes, feed health, acceptance, settlement math."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.odds import (
    EventBook,
    Market,
    ProducerHealth,
    apply_alive,
    apply_odds_message,
    market_open,
    set_status,
)
from rules.sportsbook import Leg, Outcome, Priced, Refused, decide_bet, settle_bet
from schemas.bets import BetRequest
from schemas.odds import Alive, BetStop, OddsChange
from schemas.outbound import ReasonCode

T0 = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)
TIMEOUT = timedelta(seconds=20)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def odds_change(
    seconds: float, prices: dict[str, str], *, market: str = "1x2", status: str = "active",
    producer: str | None = None, event: str = "m-1",
) -> OddsChange:  # fmt: skip
    doc: dict[str, Any] = {
        "type": "odds_change", "event_id": event, "timestamp": at(seconds).isoformat(),
        "markets": [{"market_id": market, "status": status,
                     "outcomes": [{"outcome_id": o, "odds": p} for o, p in prices.items()]}],
    }  # fmt: skip
    if producer:
        doc["producer"] = producer
    return OddsChange.model_validate_json(json.dumps(doc))


def bet_stop(seconds: float, event: str = "m-1") -> BetStop:
    doc = {"type": "bet_stop", "event_id": event, "timestamp": at(seconds).isoformat()}
    return BetStop.model_validate_json(json.dumps(doc))


def alive(seconds: float, producer: str = "live") -> Alive:
    doc = {"type": "alive", "producer": producer, "timestamp": at(seconds).isoformat()}
    return Alive.model_validate_json(json.dumps(doc))


def bet(legs: list[tuple[str, str, str, str]], policy: str = "none") -> BetRequest:
    return BetRequest.model_validate_json(json.dumps({
        "bet_id": "b-1", "player_id": "p-1", "placed_at": T0.isoformat(), "stake": "10.00",
        "currency": "EUR", "odds_change": policy,
        "selections": [{"event_id": e, "market_id": m, "outcome_id": o, "odds": p}
                       for e, m, o, p in legs],
    }))  # fmt: skip


def book_after(*messages: OddsChange | BetStop) -> EventBook | None:
    book: EventBook | None = None
    for msg in messages:
        book = apply_odds_message(book, msg) or book
    return book


# -- the odds table ---------------------------------------------------------------------


def test_a_stale_or_duplicate_odds_change_never_overwrites_newer_prices() -> None:
    book = book_after(odds_change(10, {"home": "2.10"}), odds_change(5, {"home": "1.50"}))
    assert book is not None and book.markets["1x2"].odds == {"home": Decimal("2.10")}
    assert apply_odds_message(book, odds_change(10, {"home": "9.00"})) is None  # same time
    assert apply_odds_message(book, odds_change(5, {"home": "9.00"})) is None  # older
    newer = apply_odds_message(book, odds_change(11, {"home": "2.20"}))
    assert newer is not None and newer.markets["1x2"].odds == {"home": Decimal("2.20")}
    assert newer.markets["1x2"].version == 2


def test_bet_stop_suspends_and_only_newer_odds_reopen() -> None:
    book = book_after(odds_change(0, {"home": "2.10"}), bet_stop(10))
    assert book is not None and book.markets["1x2"].status == "suspended"
    assert apply_odds_message(book, odds_change(9, {"home": "2.10"})) is None
    reopened = apply_odds_message(book, odds_change(11, {"home": "2.30"}))
    assert reopened is not None and reopened.markets["1x2"].status == "active"


def test_settled_and_cancelled_markets_take_no_more_prices() -> None:
    book = book_after(odds_change(0, {"home": "2.10"}))
    settled = set_status(book, "m-1", ["1x2"], "settled", at(60))
    assert settled is not None and settled.markets["1x2"].status == "settled"
    assert apply_odds_message(settled, odds_change(120, {"home": "5.00"})) is None
    assert set_status(settled, "m-1", ["1x2"], "settled", at(61)) is None  # nothing to change


@given(st.permutations(range(8)))
def test_any_delivery_order_ends_at_the_newest_prices(order: list[int]) -> None:
    messages = [odds_change(n, {"home": f"{2 + n / 10:.2f}"}) for n in range(8)]
    book = book_after(*(messages[i] for i in order))
    assert book is not None
    market = book.markets["1x2"]
    assert (market.odds, market.updated_at) == ({"home": Decimal("2.70")}, at(7))


def test_feed_health_heartbeats_silence_and_recovery() -> None:
    health = apply_alive(None, alive(0), TIMEOUT)
    assert health is not None and health.recovered_at is None
    assert apply_alive(health, alive(0), TIMEOUT) is None  # a duplicate changes nothing
    steady = apply_alive(health, alive(5), TIMEOUT)
    assert steady is not None and steady.recovered_at is None
    back = apply_alive(steady, alive(60), TIMEOUT)  # 55 s of silence
    assert back is not None and back.recovered_at == at(60)
    assert steady.is_up(at(25), TIMEOUT) and not steady.is_up(at(25.1), TIMEOUT)


def test_a_market_is_open_only_while_its_producer_is_up_and_priced_after_recovery() -> None:
    book = book_after(odds_change(0, {"home": "2.10"}, producer="live"))
    assert book is not None
    market = book.markets["1x2"]
    up = ProducerHealth("live", at(10))
    assert market_open(book, market, {"live": up}, at(20), TIMEOUT)
    assert not market_open(book, market, {"live": up}, at(31), TIMEOUT)  # silent 21 s
    recovered = ProducerHealth("live", at(100), recovered_at=at(100))
    assert not market_open(book, market, {"live": recovered}, at(101), TIMEOUT)  # old prices
    fresh = book_after(odds_change(0, {"home": "2.10"}, producer="live"),
                       odds_change(101, {"home": "2.00"}, producer="live"))  # fmt: skip
    assert fresh is not None
    assert market_open(fresh, fresh.markets["1x2"], {"live": recovered}, at(102), TIMEOUT)
    # A producer that never sent a heartbeat is not monitored.
    assert market_open(book, market, {}, at(10_000), TIMEOUT)


# -- acceptance -------------------------------------------------------------------------


def books(*changes: OddsChange | BetStop) -> dict[str, EventBook]:
    out: dict[str, EventBook] = {}
    for msg in changes:
        new = apply_odds_message(out.get(msg.event_id), msg)
        if new is not None:
            out[msg.event_id] = new
    return out


PRICES = books(
    odds_change(0, {"home": "2.10", "draw": "3.40"}),
    odds_change(0, {"over": "1.50"}, event="m-2", market="ou"),
)


@pytest.mark.parametrize(
    ("policy", "asked", "verdict"),
    [
        ("none", "2.10", "2.10"),
        ("none", "2.00", ReasonCode.ODDS_CHANGED),
        ("none", "2.20", ReasonCode.ODDS_CHANGED),
        ("higher", "2.00", "2.10"),  # the current price is better for the player
        ("higher", "2.10", "2.10"),
        ("higher", "2.20", ReasonCode.ODDS_CHANGED),
        ("any", "9.00", "2.10"),
    ],
)
def test_odds_change_policies(policy: str, asked: str, verdict: str | ReasonCode) -> None:
    got = decide_bet(bet([("m-1", "1x2", "home", asked)], policy), PRICES, {}, T0, TIMEOUT)
    if isinstance(verdict, ReasonCode):
        assert isinstance(got, Refused) and got.reason == verdict
    else:
        assert got == Priced((Decimal(verdict),), Decimal(verdict))


def test_an_accumulator_is_priced_at_the_product_of_its_current_prices() -> None:
    legs = [("m-1", "1x2", "draw", "3.40"), ("m-2", "ou", "over", "1.50")]
    got = decide_bet(bet(legs), PRICES, {}, T0, TIMEOUT)
    assert got == Priced((Decimal("3.40"), Decimal("1.50")), Decimal("5.10"))


@pytest.mark.parametrize(
    ("leg", "reason"),
    [
        (("m-9", "1x2", "home", "2.10"), ReasonCode.MARKET_UNKNOWN),  # unknown event
        (("m-1", "ah", "home", "2.10"), ReasonCode.MARKET_UNKNOWN),  # unknown market
        (("m-1", "1x2", "away", "2.10"), ReasonCode.MARKET_UNKNOWN),  # unpriced outcome
    ],
)
def test_unknown_markets_and_outcomes_are_refused(
    leg: tuple[str, str, str, str], reason: ReasonCode
) -> None:
    got = decide_bet(bet([leg]), PRICES, {}, T0, TIMEOUT)
    assert isinstance(got, Refused) and got.reason == reason


def test_one_suspended_leg_refuses_the_whole_accumulator() -> None:
    stopped = books(
        odds_change(0, {"home": "2.10"}),
        odds_change(0, {"over": "1.50"}, event="m-2", market="ou"),
        bet_stop(5, event="m-2"),
    )
    legs = [("m-1", "1x2", "home", "2.10"), ("m-2", "ou", "over", "1.50")]
    got = decide_bet(bet(legs), stopped, {}, T0, TIMEOUT)
    assert isinstance(got, Refused) and got.reason == ReasonCode.MARKET_SUSPENDED


def test_a_silent_producer_suspends_its_markets_for_betting() -> None:
    live = books(odds_change(0, {"home": "2.10"}, producer="live"))
    health = {"live": ProducerHealth("live", at(0))}
    leg = [("m-1", "1x2", "home", "2.10")]
    assert isinstance(decide_bet(bet(leg), live, health, at(20), TIMEOUT), Priced)
    got = decide_bet(bet(leg), live, health, at(21), TIMEOUT)
    assert isinstance(got, Refused) and got.reason == ReasonCode.MARKET_SUSPENDED


def test_a_market_round_trips_through_its_table_json() -> None:
    book = book_after(odds_change(0, {"home": "2.10"}, producer="live"))
    assert book is not None
    assert EventBook.from_json(json.loads(json.dumps(book.to_json()))) == book
    health = ProducerHealth("live", at(1), at(1))
    assert ProducerHealth.from_json(json.loads(json.dumps(health.to_json()))) == health
    market = Market("active", {"home": Decimal("2.10")}, T0, 3)
    assert Market.from_json(market.to_json()) == market


# -- settlement -------------------------------------------------------------------------

D = Decimal


@pytest.mark.parametrize(
    ("legs", "outcome"),
    [
        ([Leg(D("2.10"), "win")], Outcome("win", D("21.00"))),
        ([Leg(D("2.10"), "lose")], Outcome("lose", D("0"))),
        ([Leg(D("2.10"), "void")], Outcome("void", D("10.00"))),
        ([Leg(D("1.90"), "half_win")], Outcome("half_win", D("14.50"))),  # 5 x 1.90 + 5
        ([Leg(D("1.90"), "half_lose")], Outcome("half_lose", D("5.00"))),
        ([Leg(D("5.00"), "win", D("0.5"))], Outcome("win", D("25.00"))),  # dead heat
        ([Leg(D("2.10"), "win"), Leg(D("1.50"), "win")], Outcome("win", D("31.50"))),
        ([Leg(D("2.10"), "win"), Leg(D("1.50"), "void")], Outcome("win", D("21.00"))),
        ([Leg(D("2.10"), "win"), Leg(D("1.50"), "lose")], Outcome("lose", D("0"))),
        ([Leg(D("2.10"), "void"), Leg(D("1.50"), "void")], Outcome("void", D("10.00"))),
        ([Leg(D("3.33"), "win"), Leg(D("3.33"), "win")], Outcome("win", D("110.88"))),  # down
        ([Leg(D("2.10"), "win"), Leg(D("1.50"), None)], None),  # a leg still open
    ],
)
def test_settlement_math(legs: list[Leg], outcome: Outcome | None) -> None:
    assert settle_bet(D("10.00"), "EUR", legs) == outcome


def test_payouts_round_down_to_the_currency_minor_unit() -> None:
    assert settle_bet(D("1000"), "JPY", [Leg(D("1.555"), "win")]) == Outcome("win", D("1555"))
    assert settle_bet(D("1"), "JPY", [Leg(D("1.99"), "win")]) == Outcome("win", D("1"))
    assert settle_bet(D("1.000"), "BHD", [Leg(D("1.0005"), "win")]) == Outcome("win", D("1.000"))


@given(
    st.lists(
        st.tuples(
            st.decimals(min_value=D("1.01"), max_value=D("50"), places=2),
            st.sampled_from(["win", "lose", "void", "half_win", "half_lose"]),
        ),
        min_size=1,
        max_size=6,
    ),
    st.decimals(min_value=D("0.01"), max_value=D("10000"), places=2),
)
def test_a_payout_is_never_negative_and_never_more_than_the_exact_amount(
    legs: list[tuple[Decimal, str]], stake: Decimal
) -> None:
    outcome = settle_bet(stake, "EUR", [Leg(o, r) for o, r in legs])
    assert outcome is not None
    exact = stake
    for odds, result in legs:
        exact *= {"win": odds, "lose": D(0), "void": D(1), "half_win": (odds + 1) / 2,
                  "half_lose": D("0.5")}[result]  # fmt: skip
    assert D(0) <= outcome.payout <= exact
    assert exact - outcome.payout < D("0.01")
    assert (outcome.result == "lose") == any(r == "lose" for _, r in legs)


# -- the worker's read of the odds table (streams/bets.py) -------------------------------


def test_books_are_parsed_once_per_change_and_read_as_without_the_cache() -> None:
    from streams.bets import read_books

    first = book_after(odds_change(10, {"home": "2.10", "away": "3.40"}))
    assert first is not None
    table = {first.event_id: first.to_json()}
    market = next(iter(first.markets))
    bets = [bet([(first.event_id, market, "home", "2.10")])]
    parsed: dict[str, tuple[object, dict[str, Any]]] = {}

    one = read_books(table, bets, parsed)
    two = read_books(table, bets, parsed)
    assert one == two == read_books(table, bets)  # the same books as a fresh parse
    assert two[first.event_id].markets[market] is one[first.event_id].markets[market]

    # A change replaces the event's value: the next read parses the new prices.
    moved = book_after(odds_change(10, {"home": "2.10"}), odds_change(20, {"home": "1.90"}))
    assert moved is not None
    table[first.event_id] = moved.to_json()
    three = read_books(table, bets, parsed)
    assert three == read_books(table, bets)
    assert three[first.event_id].markets[market].odds["home"] == Decimal("1.90")
    # An event gone from the table is no book, cached or not.
    del table[first.event_id]
    assert read_books(table, bets, parsed) == {}
