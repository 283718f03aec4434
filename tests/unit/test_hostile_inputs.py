"""Hostile inputs on every inbound topic: a decision or a dead letter, never an exception.

Per topic, arbitrary bytes, arbitrary JSON and mutations of valid messages (a field of
the wrong type, a huge number, an exponent, a control character or a NUL in an id, a
year 9999, deep nesting, an unknown or missing field, a key given twice) go through the
whole pure decision path the topic's flow takes: ``decode_topic``, then the rules that
decide (pricing, settlement math, the wallet, player events and protection), then the
sinks' pure parts (request hashes, ledger operations) and the outbound messages built
from the decision. Anything that decodes must be decided without an exception; anything
that does not is a ``DecodeFailure`` with a closed reason and a short, printable error.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from config.policies import load_policies
from config.settings import POLICY_DIR
from rules import compliance, ledger
from rules.casino import Wallet
from rules.odds import EventBook, Market, ProducerHealth, apply_alive, apply_odds_message
from rules.odds import set_status as set_market_status
from rules.players import apply_player_event
from rules.sportsbook import Leg, Priced, decide_bet, settle_bet
from schemas.base import request_hash as bet_request_hash
from schemas.bets import BetRequest
from schemas.casino import CasinoCall, Debit
from schemas.decode import MAX_ERROR_CHARS, DecodeFailure
from schemas.money import minor_units
from schemas.odds import Alive, BetSettlement, BetStop, OddsChange
from schemas.outbound import (
    BetDecision,
    CasinoResult,
    PaymentDecision,
    PlayerNotification,
    Settlement,
)
from schemas.payments import Deposit, PaymentEvent, Withdrawal
from schemas.players import PlayerState, Registered, SessionStarted
from schemas.topics import INBOUND_TOPICS, decode_topic
from sinks.postgres.casino import _ledger_op as casino_ledger_op
from sinks.postgres.casino import request_hash as casino_request_hash
from sinks.postgres.payments import ledger_op as payment_ledger_op

NOW = datetime(2026, 11, 24, 19, 5, tzinfo=UTC)
TIMEOUT = timedelta(seconds=30)
POLICIES = load_policies(POLICY_DIR)
HOSTILE = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
REASONS = {"too_large", "malformed_json", "invalid"}
TS = "2026-11-24T19:00:00Z"

# One valid message of every kind, per topic: the seeds of the mutations.
VALID: dict[str, list[dict[str, Any]]] = {
    "odds": [
        {"type": "odds_change", "event_id": "m-1", "timestamp": TS, "producer": "live",
         "markets": [{"market_id": "1x2", "status": "active",
                      "outcomes": [{"outcome_id": "home", "odds": "2.10"},
                                   {"outcome_id": "away", "odds": "3.60"}]},
                     {"market_id": "ou", "status": "active",
                      "outcomes": [{"outcome_id": "over", "odds": "1.85"}]}]},
        {"type": "bet_stop", "event_id": "m-1", "timestamp": TS, "market_ids": ["1x2"]},
        {"type": "bet_settlement", "event_id": "m-1", "timestamp": TS,
         "markets": [{"market_id": "1x2", "outcomes": [
             {"outcome_id": "home", "result": "win", "dead_heat_factor": "0.5"},
             {"outcome_id": "away", "result": "half_lose"}]}]},
        {"type": "bet_cancel", "event_id": "m-1", "timestamp": TS, "market_ids": ["1x2"],
         "start_time": "2026-11-24T18:00:00Z", "end_time": "2026-11-24T19:00:00Z"},
        {"type": "rollback_bet_settlement", "event_id": "m-1", "timestamp": TS},
        {"type": "rollback_bet_cancel", "event_id": "m-1", "timestamp": TS,
         "start_time": "2026-11-24T18:00:00Z"},
        {"type": "alive", "producer": "live", "timestamp": TS},
    ],
    "bets": [
        {"bet_id": "b-1", "player_id": "p-1", "placed_at": TS, "stake": "10.00",
         "currency": "EUR", "odds_change": "higher",
         "selections": [{"event_id": "m-1", "market_id": "1x2", "outcome_id": "home",
                         "odds": "2.10"},
                        {"event_id": "m-2", "market_id": "ou", "outcome_id": "over",
                         "odds": "1.85"}]},
    ],
    "payments": [
        {"type": "deposit", "payment_id": "pay-1", "player_id": "p-1", "amount": "50.00",
         "currency": "EUR", "timestamp": TS},
        {"type": "withdrawal", "payment_id": "pay-2", "player_id": "p-1", "amount": "20.00",
         "currency": "EUR", "timestamp": TS},
        {"type": "withdrawal_completed", "payment_id": "pay-2", "player_id": "p-1",
         "timestamp": TS},
        {"type": "withdrawal_failed", "payment_id": "pay-2", "player_id": "p-1",
         "timestamp": TS, "reason": "card expired"},
    ],
    "casino": [
        {"type": "debit", "transaction_id": "tx-1", "round_id": "r-1", "game_id": "g-1",
         "player_id": "p-1", "amount": "1.00", "currency": "EUR", "timestamp": TS},
        {"type": "credit", "transaction_id": "tx-2", "round_id": "r-1", "game_id": "g-1",
         "player_id": "p-1", "amount": "2.50", "currency": "EUR", "timestamp": TS,
         "round_closed": True},
        {"type": "rollback", "transaction_id": "tx-3", "reference_transaction_id": "tx-1",
         "round_id": "r-1", "game_id": "g-1", "player_id": "p-1", "amount": "1.00",
         "currency": "EUR", "timestamp": TS},
    ],
    "players": [
        {"type": "registered", "player_id": "p-1", "jurisdiction": "UK", "currency": "EUR",
         "birth_date": "1990-05-01", "timestamp": TS},
        {"type": "self_excluded", "player_id": "p-1", "until": None, "timestamp": TS},
        {"type": "limit_set", "player_id": "p-1", "limit": "loss", "period": "day",
         "amount": "20.00", "currency": "EUR", "timestamp": TS},
        {"type": "limit_set", "player_id": "p-1", "limit": "session", "period": "day",
         "minutes": 120, "timestamp": TS},
        {"type": "session_started", "player_id": "p-1", "session_id": "s-1", "timestamp": TS,
         "ip": "203.0.113.7"},
        {"type": "session_ended", "player_id": "p-1", "session_id": "s-1", "timestamp": TS},
        {"type": "geolocation", "player_id": "p-1", "jurisdiction": "UK", "allowed": True,
         "checked_at": TS, "geolocate_in": 3600, "ip": "203.0.113.7", "timestamp": TS},
    ],
}  # fmt: skip


# -- rendering: JSON that may repeat a key, or carry text no encoder would write ---------


class Raw(str):
    """JSON text put in verbatim (a 5000-digit number, 1e5000, deep nesting)."""


class Pairs(list[tuple[str, Any]]):
    """A JSON object written pair by pair, so a key may appear twice."""


def render(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        value = Pairs(value.items())
    if isinstance(value, Pairs):
        return "{" + ", ".join(f"{json.dumps(k)}: {render(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    return json.dumps(value)


NASTY_TEXT = [
    "", "\x00", "p\x00-1", "p 1", "p\n1", "p\u202e1", "é", "\x7f", "x" * 129, "x" * 5000,
    "1e5", "1e33", "1" + "0" * 33 + ".00", "1e5000", "-1.00", "-0", "0", "0.00", "0.0001",
    "999999999999999999.99", "9" * 18 + ".999", "9" * 19, "999999.9999", "1000000",
    "1.00000", "NaN", "Infinity", "yes", "true", "3600", "1",
    "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00", "1970-01-01T00:00:00-23:59",
    "2026-02-30T10:00:00Z", "2026-11-24T19:00Z", "2026-11-24", "2999-12-31T23:59:59-01:00",
    "::1", "999.1.1.1", "EUR", "JPY", "KWD", "UK", "win", "debit", "odds_change",
]  # fmt: skip
NASTY_RAW = [
    Raw("9" * 5000),
    Raw("-" + "9" * 400),
    Raw("1e5000"),
    Raw("1E+33"),
    Raw("2.10"),
    Raw("1.0"),
    Raw("NaN"),
    Raw("-Infinity"),
    Raw("[" * 3000 + "]" * 3000),
    Raw('{"a":' * 300 + "1" + "}" * 300),
    Raw('"\\ud800"'),
    Raw('"a\\u0000b"'),
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(NASTY_TEXT),
    st.sampled_from(NASTY_RAW),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield (*here, key)
            yield from _paths(inner, (*here, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield (*here, i)
            yield from _paths(inner, (*here, i))


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


@st.composite
def mutated(draw: st.DrawFn, topic: str) -> tuple[bytes, bool]:
    """A valid message of ``topic`` with one to three hostile changes, as JSON bytes, and
    whether a key was given twice (which must be refused)."""
    doc = copy.deepcopy(draw(st.sampled_from(VALID[topic])))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _parent(doc, path), path[-1]
        match draw(st.sampled_from(["replace", "replace", "delete", "extra", "nest"])):
            case "replace":
                parent[key] = draw(json_values)
            case "delete":
                del parent[key]
            case "extra" if isinstance(parent, dict):
                parent[draw(st.text(max_size=12))] = draw(json_values)
            case "nest":
                depth = draw(st.integers(1, 3000))
                parent[key] = Raw("[" * depth + render(parent[key]) + "]" * depth)
            case _:
                pass
    twice = False
    objects = [p for p in [(), *_paths(doc)] if isinstance(_at(doc, p), dict) and _at(doc, p)]
    repeat = draw(st.booleans())
    if objects and repeat:
        where = draw(st.sampled_from(objects))
        obj = _at(doc, where)
        pairs = Pairs(obj.items())
        again = (draw(st.sampled_from(sorted(obj))), draw(json_values))
        pairs.insert(draw(st.integers(0, len(pairs))), again)
        if where:
            _parent(doc, where)[where[-1]] = pairs
        else:
            doc = pairs
        twice = True
    return render(doc).encode(), twice


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


# -- valid messages at the edges of the contract: the rules must decide them all -----------

# How many legs (and odds markets) an edge message has at most. Until the rules compute in
# a wide Decimal context and refuse combined odds past a ceiling (issue 15, helper
# "rules"), two legs at the widest odds overflow the 28-digit default in settlement.
EDGE_LEGS = 30

ID_KEYS = {"player_id", "bet_id", "event_id", "market_id", "outcome_id", "producer",
           "payment_id", "transaction_id", "reference_transaction_id", "round_id",
           "game_id", "session_id"}  # fmt: skip
TIME_KEYS = {"timestamp", "placed_at", "start_time", "end_time", "until", "checked_at"}
ids = st.one_of(
    st.from_regex(r"[A-Za-z0-9._:-]{1,8}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9._:-]{120,128}", fullmatch=True),
)
ZONES = [UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12))]
times = st.datetimes(
    min_value=datetime(1970, 1, 2),  # noqa: DTZ001 - hypothesis takes naive bounds, then zones
    max_value=datetime(9999, 12, 31, 23, 59),  # noqa: DTZ001
    timezones=st.sampled_from(ZONES),
).map(lambda t: t.isoformat())
odds_texts = st.one_of(
    st.sampled_from(["1.0001", "2.10", "999999.9999", "100000", "1.5"]),
    st.from_regex(r"[1-9][0-9]{0,5}(\.[0-9]{1,4})?", fullmatch=True),
).filter(lambda t: Decimal(t) > 1)


def amounts(places: int) -> st.SearchStrategy[str]:
    fraction = rf"(\.[0-9]{{{places}}})?" if places else ""
    edges = ["9" * 18 + ("." + "9" * places if places else ""), "1", "0" * 18 + "1"]
    drawn = st.from_regex(rf"[0-9]{{1,18}}{fraction}", fullmatch=True)
    return st.one_of(st.sampled_from(edges), drawn).filter(lambda t: Decimal(t) > 0)


@st.composite
def extreme(draw: st.DrawFn, topic: str) -> bytes:
    """A message of ``topic`` that the contract allows, with values at its edges: the
    longest ids, the biggest amounts and odds, far times, many legs or markets."""
    doc = copy.deepcopy(draw(st.sampled_from(VALID[topic])))
    currency, places = draw(st.sampled_from([("EUR", 2), ("JPY", 0), ("KWD", 3)]))
    if "currency" in doc and doc["currency"] is not None:
        doc["currency"] = currency
    if topic == "bets":
        n = draw(st.integers(1, EDGE_LEGS))
        doc["selections"] = [
            {"event_id": f"m-{i}", "market_id": draw(ids), "outcome_id": draw(ids),
             "odds": draw(odds_texts)} for i in range(n)
        ]  # fmt: skip
    if doc.get("type") == "odds_change":
        n = draw(st.integers(1, EDGE_LEGS))
        doc["markets"] = [
            {"market_id": f"mk-{i}", "status": "active",
             "outcomes": [{"outcome_id": draw(ids), "odds": draw(odds_texts)}]}
            for i in range(n)
        ]  # fmt: skip
    for path in list(_paths(doc)):
        parent, key = _parent(doc, path), path[-1]
        if not isinstance(key, str) or not draw(st.booleans()):
            continue
        if key in ID_KEYS and isinstance(parent[key], str):
            parent[key] = draw(ids)
        elif key in TIME_KEYS and parent[key] is not None:
            parent[key] = draw(times)
        elif key in {"stake", "amount"} and parent[key] is not None:
            parent[key] = draw(amounts(places))
        elif key == "odds":
            parent[key] = draw(odds_texts)
        elif key == "dead_heat_factor":
            parent[key] = draw(st.sampled_from(["0.000001", "0.333333", "1", "1.000000"]))
        elif key in {"minutes", "geolocate_in"}:
            parent[key] = draw(st.integers(1, 366 * 24 * 60))
        elif key == "ip":
            parent[key] = str(draw(st.ip_addresses()))
    return render(doc).encode()


# -- the decision paths, as the flows take them ---------------------------------------------


def _registered(player_id: str, currency: str, jurisdiction: str = "UK") -> PlayerState:
    event = Registered(type="registered", player_id=player_id, jurisdiction=jurisdiction,
                       currency=currency, birth_date=date(1990, 5, 1), timestamp=NOW)  # fmt: skip
    state = apply_player_event(None, event, partition=0, offset=0, policies=POLICIES, now=NOW)
    assert isinstance(state, PlayerState)
    return state


def _book_for(bet: BetRequest) -> dict[str, EventBook]:
    markets: dict[str, dict[str, Market]] = {}
    for leg in bet.selections:
        market = Market("active", {leg.outcome_id: leg.odds}, NOW - timedelta(minutes=1), 1)
        markets.setdefault(leg.event_id, {})[leg.market_id] = market
    return {e: EventBook(e, "live", m) for e, m in markets.items()}


def decide_bets(bet: BetRequest, books: dict[str, EventBook] | None = None) -> None:
    """The bets flow: price, hash, reserve the stake, answer; then settle every way."""
    producers = {"live": ProducerHealth("live", NOW - timedelta(seconds=1))}
    verdict = decide_bet(bet, books or _book_for(bet), producers, NOW, TIMEOUT)
    bet_request_hash(bet)
    standing = _registered(bet.player_id, bet.currency)
    compliance.check(standing, action="bet", currency=bet.currency, at=NOW,
                     policies=POLICIES, amount=bet.stake)  # fmt: skip
    if not isinstance(verdict, Priced):
        BetDecision(bet_id=bet.bet_id, player_id=bet.player_id, status="rejected",
                    reason=verdict.reason, decided_at=NOW).model_dump_json()  # fmt: skip
        return
    ledger.stake(bet.bet_id, bet.player_id, bet.stake, bet.currency, NOW).wire()
    BetDecision(bet_id=bet.bet_id, player_id=bet.player_id, status="accepted",
                odds=verdict.odds, decided_at=NOW).model_dump_json()  # fmt: skip
    for result in ("win", "lose", "void", "half_win", "half_lose"):
        factor = Decimal("0.333333") if result == "win" else None
        legs = [Leg(odds, result, factor) for odds in verdict.leg_odds]
        outcome = settle_bet(bet.stake, bet.currency, legs)
        assert outcome is not None
        settlement_id = f"{bet.bet_id}/1"
        Settlement(bet_id=bet.bet_id, player_id=bet.player_id, settlement_id=settlement_id,
                   kind="settled", result=outcome.result, stake=bet.stake,
                   payout=outcome.payout, currency=bet.currency,
                   ledger_reference=f"settlement:{settlement_id}",
                   settled_at=NOW).model_dump_json()  # fmt: skip
        ledger.settle(settlement_id, bet.bet_id, bet.player_id, bet.currency, outcome.payout,
                      outcome.result, NOW).wire()  # fmt: skip


def decide_odds(msg: Any) -> None:
    """The odds flow: the book and feed health, and what settlement does with results."""
    if isinstance(msg, Alive):
        first = apply_alive(None, msg, TIMEOUT)
        assert first is not None
        ProducerHealth.from_json(first.to_json())
        apply_alive(ProducerHealth(msg.producer, NOW), msg, TIMEOUT)
        return
    book = EventBook(msg.event_id, "live", {"1x2": Market("active", {"home": Decimal("2.10")},
                                                         NOW, 1)})  # fmt: skip
    if isinstance(msg, OddsChange | BetStop):
        for before in (None, book):
            after = apply_odds_message(before, msg)
            if after is not None:
                EventBook.from_json(json.loads(json.dumps(after.to_json())))
        if isinstance(msg, OddsChange):
            # A bet on the first outcome of every market the message prices, at its price.
            priced = apply_odds_message(None, msg)
            assert priced is not None
            legs = [{"event_id": msg.event_id, "market_id": m.market_id,
                     "outcome_id": m.outcomes[0].outcome_id, "odds": m.outcomes[0].odds}
                    for m in msg.markets if m.outcomes]  # fmt: skip
            if legs:
                bet = BetRequest.model_validate({
                    "bet_id": "b-1", "player_id": "p-1", "placed_at": NOW, "stake": "10.00",
                    "currency": "EUR", "odds_change": "any", "selections": legs,
                })  # fmt: skip
                decide_bets(bet, {msg.event_id: priced})
        return
    markets = msg.markets if isinstance(msg, BetSettlement) else []
    for market in markets:
        for outcome in market.outcomes:
            leg = Leg(Decimal("2.10"), outcome.result, outcome.dead_heat_factor)
            settle_bet(Decimal("10.00"), "EUR", [leg])
    market_ids = [m.market_id for m in markets] or list(getattr(msg, "market_ids", None) or [])
    set_market_status(book, msg.event_id, market_ids or ["1x2"], "settled", msg.timestamp)


def decide_payments(event: PaymentEvent) -> None:
    """The payments flow: protection, the ledger operation, the answer."""
    currency = event.currency if isinstance(event, Deposit | Withdrawal) else "EUR"
    standing = _registered(event.player_id, currency)
    if isinstance(event, Deposit | Withdrawal):
        action: compliance.Action = "deposit" if isinstance(event, Deposit) else "withdrawal"
        compliance.check(standing, action=action, currency=event.currency, at=NOW,
                         policies=POLICIES, amount=event.amount)  # fmt: skip
    op = payment_ledger_op(event, NOW, currency)
    op.wire()
    PaymentDecision(payment_id=event.payment_id, player_id=event.player_id, status="accepted",
                    decided_at=NOW).model_dump_json()  # fmt: skip


def decide_casino(call: CasinoCall) -> None:
    """The casino flow: a debit in the call's round first, then the call, each answered."""
    wallet = Wallet(balances={call.player_id: Decimal(1000)})
    opening = Debit(type="debit", transaction_id="opening-debit", round_id=call.round_id,
                    game_id=call.game_id, player_id=call.player_id, amount=Decimal("1"),
                    currency=call.currency, timestamp=NOW)  # fmt: skip
    for c in (opening, call):
        verdict = wallet.decide(c, casino_request_hash(c), NOW, protection=lambda _: None,
                                certified=lambda _: None)  # fmt: skip
        op = casino_ledger_op(c, verdict, NOW)
        if op is not None:
            op.wire()
        # As the sink answers: the balance in the currency's minor units.
        balance = wallet.balance(c.player_id).quantize(Decimal(1).scaleb(-minor_units(c.currency)))
        answer = CasinoResult(transaction_id=c.transaction_id, round_id=c.round_id,
                              player_id=c.player_id, status=verdict.status,
                              error=verdict.error, balance=balance, currency=c.currency,
                              decided_at=NOW)  # fmt: skip
        answer.model_dump_json()


def decide_players(event: Any) -> None:
    """The players flow: the event against no standing and a registered one, protection,
    and the reality check a session it opens will get."""
    for before in (None, _registered(event.player_id, "EUR")):
        after = apply_player_event(before, event, partition=0, offset=1, policies=POLICIES, now=NOW)
        if not isinstance(after, PlayerState):
            continue
        PlayerState.model_validate(json.loads(after.model_dump_json()))
        for action in ("bet", "deposit", "casino_debit"):
            compliance.check(after, action=action, currency="EUR", at=NOW,
                             policies=POLICIES, amount=Decimal("10.00"))  # fmt: skip
    if isinstance(event, SessionStarted):
        PlayerNotification(player_id=event.player_id, session_id=event.session_id,
                           sequence=1, elapsed_seconds=3600, net_position=Decimal("-1.00"),
                           currency="EUR", timestamp=NOW).model_dump_json()  # fmt: skip


DECIDE: dict[str, Callable[[Any], None]] = {
    "odds": decide_odds,
    "bets": decide_bets,
    "payments": decide_payments,
    "casino": decide_casino,
    "players": decide_players,
}


def through_the_flow(topic: str, raw: bytes) -> DecodeFailure | None:
    """Decode and decide ``raw`` as ``topic``'s flow would; the failure, if it is one."""
    decoded = decode_topic(topic, raw)
    if isinstance(decoded, DecodeFailure):
        assert decoded.reason in REASONS, decoded
        assert len(decoded.error) <= MAX_ERROR_CHARS, decoded
        assert decoded.error.isprintable(), decoded
        return decoded
    DECIDE[topic](decoded)
    return None


# -- the properties ----------------------------------------------------------------------


def _count(topic: str, failure: DecodeFailure | None) -> None:
    # Shown by --hypothesis-show-statistics: how many inputs got as far as a decision.
    event(f"{topic}: {failure.reason if failure else 'decided'}")


def test_every_valid_seed_is_decided() -> None:
    for topic, docs in VALID.items():
        for doc in docs:
            assert through_the_flow(topic, render(doc).encode()) is None, (topic, doc)


@HOSTILE
@given(topic=st.sampled_from(list(INBOUND_TOPICS)), raw=st.binary(max_size=600))
def test_arbitrary_bytes(topic: str, raw: bytes) -> None:
    _count(topic, through_the_flow(topic, raw))


@HOSTILE
@given(topic=st.sampled_from(list(INBOUND_TOPICS)), value=json_values)
def test_arbitrary_json(topic: str, value: Any) -> None:
    _count(topic, through_the_flow(topic, render(value).encode()))


@HOSTILE
@given(data=st.data(), topic=st.sampled_from(list(INBOUND_TOPICS)))
def test_mutated_messages(data: st.DataObject, topic: str) -> None:
    raw, twice = data.draw(mutated(topic))
    failure = through_the_flow(topic, raw)
    _count(topic, failure)
    if twice:
        assert failure is not None, raw


@HOSTILE
@given(data=st.data(), topic=st.sampled_from(list(INBOUND_TOPICS)))
def test_messages_at_the_edges_of_the_contract(data: st.DataObject, topic: str) -> None:
    _count(topic, through_the_flow(topic, data.draw(extreme(topic))))
