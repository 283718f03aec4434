"""The wire contract: every example decodes, bad input gets a reason, schemas cannot drift."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

import schemas.outbound
from schemas import export
from schemas.bets import BetRequest
from schemas.casino import Credit, Debit, Rollback
from schemas.decode import DecodeFailure
from schemas.money import (
    MINOR_UNITS,
    CurrencyMismatch,
    Money,
    check_scale,
    minor_units,
)
from schemas.odds import (
    Alive,
    BetCancel,
    BetSettlement,
    BetStop,
    OddsChange,
    RollbackBetCancel,
    RollbackBetSettlement,
)
from schemas.outbound import (
    BetDecision,
    CasinoResult,
    PaymentDecision,
    PlayerNotification,
    ReasonCode,
    Settlement,
)
from schemas.payments import Deposit, Withdrawal, WithdrawalCompleted, WithdrawalFailed
from schemas.players import (
    Geolocation,
    LimitSet,
    Registered,
    SelfExcluded,
    SessionEnded,
    SessionStarted,
)
from schemas.records import AuditRecord, DeadLetter, SourcePosition
from schemas.topics import INBOUND_TOPICS, OUTBOUND_TOPICS, TOPICS, decode_topic
from topologies.topics import INBOUND, OUTBOUND

# The examples of ARCHITECTURE.md's "Wire contract (inbound)" section, verbatim, plus the
# two it only describes in words (withdrawal_failed, alive) and the odds messages it names.
EXAMPLES: list[tuple[str, type[BaseModel], bytes]] = [
    ("odds", OddsChange, b"""
{"type": "odds_change", "event_id": "m-1", "timestamp": "2026-11-24T19:00:00Z",
 "markets": [{"market_id": "1x2", "status": "active",
              "outcomes": [{"outcome_id": "home", "odds": "2.10"},
                           {"outcome_id": "draw", "odds": "3.40"},
                           {"outcome_id": "away", "odds": "3.60"}]}]}"""),
    ("odds", BetStop, b"""
{"type": "bet_stop", "event_id": "m-1", "timestamp": "2026-11-24T19:45:00Z"}"""),
    ("odds", BetSettlement, b"""
{"type": "bet_settlement", "event_id": "m-1", "timestamp": "2026-11-24T20:50:00Z",
 "markets": [{"market_id": "1x2", "outcomes": [{"outcome_id": "home", "result": "win"},
             {"outcome_id": "draw", "result": "lose"}, {"outcome_id": "away", "result": "lose"}]}]}"""),  # noqa: E501 (verbatim from the contract)
    ("bets", BetRequest, b"""
{"bet_id": "b-1", "player_id": "p-1", "placed_at": "2026-11-24T19:01:00Z",
 "stake": "10.00", "currency": "EUR", "odds_change": "none",
 "selections": [{"event_id": "m-1", "market_id": "1x2", "outcome_id": "home", "odds": "2.10"}]}"""),
    ("payments", Deposit, b"""
{"type": "deposit", "payment_id": "pay-1", "player_id": "p-1", "amount": "50.00",
 "currency": "EUR", "timestamp": "2026-11-24T18:00:00Z"}"""),
    ("casino", Debit, b"""
{"type": "debit", "transaction_id": "tx-1", "round_id": "r-1", "game_id": "g-1",
 "player_id": "p-1", "amount": "1.00", "currency": "EUR", "timestamp": "2026-11-24T18:05:00Z"}"""),
    ("payments", Withdrawal, b"""
{"type": "withdrawal", "payment_id": "pay-2", "player_id": "p-1", "amount": "20.00",
 "currency": "EUR", "timestamp": "2026-11-24T21:00:00Z"}"""),
    ("payments", WithdrawalCompleted, b"""
{"type": "withdrawal_completed", "payment_id": "pay-2", "player_id": "p-1",
 "timestamp": "2026-11-24T21:05:00Z"}"""),
    ("payments", WithdrawalFailed, b"""
{"type": "withdrawal_failed", "payment_id": "pay-2", "player_id": "p-1",
 "timestamp": "2026-11-24T21:05:00Z"}"""),
    ("casino", Credit, b"""
{"type": "credit", "transaction_id": "tx-2", "round_id": "r-1", "game_id": "g-1",
 "player_id": "p-1", "amount": "2.50", "currency": "EUR", "timestamp": "2026-11-24T18:05:02Z"}"""),
    ("casino", Rollback, b"""
{"type": "rollback", "transaction_id": "tx-3", "reference_transaction_id": "tx-1",
 "round_id": "r-1", "game_id": "g-1", "player_id": "p-1", "amount": "1.00", "currency": "EUR",
 "timestamp": "2026-11-24T18:05:03Z"}"""),
    ("players", Registered, b"""
{"type": "registered", "player_id": "p-1", "jurisdiction": "UK", "currency": "EUR",
 "birth_date": "1990-05-01", "timestamp": "2026-11-24T17:00:00Z"}"""),
    ("players", SelfExcluded, b"""
{"type": "self_excluded", "player_id": "p-1", "until": null, "timestamp": "2026-11-24T19:30:00Z"}"""),  # noqa: E501 (verbatim from the contract)
    ("players", LimitSet, b"""
{"type": "limit_set", "player_id": "p-1", "limit": "loss", "period": "day", "amount": "20.00",
 "currency": "EUR", "timestamp": "2026-11-24T17:01:00Z"}"""),
    ("players", LimitSet, b"""
{"type": "limit_set", "player_id": "p-1", "limit": "session", "period": "day", "minutes": 120,
 "timestamp": "2026-11-24T17:01:00Z"}"""),
    ("players", SessionStarted, b"""
{"type": "session_started", "player_id": "p-1", "session_id": "s-1", "timestamp": "2026-11-24T17:02:00Z"}"""),  # noqa: E501 (verbatim from the contract)
    ("players", SessionEnded, b"""
{"type": "session_ended", "player_id": "p-1", "session_id": "s-1", "timestamp": "2026-11-24T23:00:00Z"}"""),  # noqa: E501 (verbatim from the contract)
    ("players", Geolocation, b"""
{"type": "geolocation", "player_id": "p-1", "jurisdiction": "UK", "allowed": true,
 "checked_at": "2026-11-24T17:02:00Z", "geolocate_in": 3600, "ip": "203.0.113.7",
 "timestamp": "2026-11-24T17:02:00Z"}"""),
    ("odds", Alive, b"""
{"type": "alive", "producer": "live", "timestamp": "2026-11-24T19:00:05Z"}"""),
    ("odds", BetCancel, b"""
{"type": "bet_cancel", "event_id": "m-1", "producer": "prematch", "market_ids": ["1x2"],
 "start_time": "2026-11-24T19:40:00Z", "end_time": "2026-11-24T19:45:00Z",
 "timestamp": "2026-11-24T19:50:00Z"}"""),
    ("odds", RollbackBetCancel, b"""
{"type": "rollback_bet_cancel", "event_id": "m-1", "timestamp": "2026-11-24T19:55:00Z"}"""),
    ("odds", RollbackBetSettlement, b"""
{"type": "rollback_bet_settlement", "event_id": "m-1", "market_ids": ["1x2"],
 "timestamp": "2026-11-24T21:00:00Z"}"""),
]  # fmt: skip


def doc(raw: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(raw)
    return parsed


def dumps(message: Mapping[str, object]) -> bytes:
    return json.dumps(message).encode()


def example(model: type[BaseModel], nth: int = 0) -> dict[str, Any]:
    """The ``nth`` example of ``model`` as a dict, to derive bad inputs from."""
    return [doc(raw) for _, m, raw in EXAMPLES if m is model][nth]


@pytest.mark.parametrize(
    ("topic", "model", "raw"), EXAMPLES, ids=[f"{t}-{m.__name__}" for t, m, _ in EXAMPLES]
)
def test_every_contract_example_decodes_to_its_model(
    topic: str, model: type[BaseModel], raw: bytes
) -> None:
    decoded = decode_topic(topic, raw)
    assert isinstance(decoded, model), decoded
    for name, value in doc(raw).items():
        if isinstance(value, str) and re.fullmatch(r"-?\d+\.\d+", value):
            assert getattr(decoded, name) == Decimal(value)  # exact, never through a float


def test_example_values_arrive_exactly() -> None:
    bet = decode_topic("bets", EXAMPLES[3][2])
    assert isinstance(bet, BetRequest)
    assert bet.stake == Decimal("10.00") and str(bet.stake) == "10.00"
    assert bet.selections[0].odds == Decimal("2.10") and not bet.is_accumulator
    assert bet.placed_at == datetime(2026, 11, 24, 19, 1, tzinfo=UTC)
    assert bet.schema_version == 1
    change = decode_topic("odds", EXAMPLES[0][2])
    assert isinstance(change, OddsChange)
    assert [o.odds for o in change.markets[0].outcomes] == [
        Decimal("2.10"),
        Decimal("3.40"),
        Decimal("3.60"),
    ]
    assert change.producer is None


def test_a_zero_credit_closes_a_lost_round() -> None:
    credit = {**example(Credit), "amount": "0.00", "round_closed": True}
    decoded = decode_topic("casino", dumps(credit))
    assert isinstance(decoded, Credit)
    assert decoded.amount == 0 and decoded.round_closed


def test_market_ids_absent_means_every_market() -> None:
    stop = decode_topic("odds", EXAMPLES[1][2])
    assert isinstance(stop, BetStop) and stop.market_ids is None


def test_dead_heat_and_half_results_decode() -> None:
    message = {
        **example(BetSettlement),
        "producer": "live",
        "markets": [
            {"market_id": "top-3", "outcomes": [
                {"outcome_id": "a", "result": "win", "dead_heat_factor": "0.5"},
                {"outcome_id": "b", "result": "half_win"},
                {"outcome_id": "c", "result": "half_lose"},
                {"outcome_id": "d", "result": "void"},
            ]},
        ],
    }  # fmt: skip
    decoded = decode_topic("odds", dumps(message))
    assert isinstance(decoded, BetSettlement)
    assert decoded.markets[0].outcomes[0].dead_heat_factor == Decimal("0.5")


def test_amounts_scale_by_currency() -> None:
    yen = {**example(Deposit), "amount": "5000", "currency": "JPY"}
    dinar = {**example(Deposit), "amount": "12.345", "currency": "KWD"}
    assert isinstance(decode_topic("payments", dumps(yen)), Deposit)
    assert isinstance(decode_topic("payments", dumps(dinar)), Deposit)


def _with(model: type[BaseModel], nth: int = 0, **changes: object) -> bytes:
    return dumps({**example(model, nth), **changes})


def _without(model: type[BaseModel], field: str) -> bytes:
    message = example(model)
    del message[field]
    return dumps(message)


def _selection(**changes: object) -> dict[str, object]:
    leg: dict[str, object] = example(BetRequest)["selections"][0]
    return {**leg, **changes}


def _market(**changes: object) -> list[dict[str, object]]:
    market: dict[str, object] = example(OddsChange)["markets"][0]
    return [{**market, **changes}]


BAD_INPUTS: list[tuple[str, str, bytes | None, str, str]] = [
    # (case, topic, raw, reason, fragment of the error)
    ("odds: not JSON", "odds", b'{"type": "odds_change"', "malformed_json", "not UTF-8 JSON"),
    ("odds: null value", "odds", None, "malformed_json", "empty message"),
    ("odds: unknown type", "odds", _with(OddsChange, type="odds_moved"), "invalid",
     "does not match any of the expected tags"),
    ("odds: unknown field", "odds", _with(BetStop, colour="red"), "invalid",
     "colour: Extra inputs are not permitted"),
    ("odds: naive datetime", "odds", _with(BetStop, timestamp="2026-11-24T19:45:00"), "invalid",
     "timezone"),
    ("odds: odds of 1", "odds", _with(OddsChange, markets=_market(outcomes=[
        {"outcome_id": "home", "odds": "1.00"}])), "invalid", "greater than 1"),
    ("odds: odds below 1", "odds", _with(OddsChange, markets=_market(outcomes=[
        {"outcome_id": "home", "odds": "0.95"}])), "invalid", "greater than 1"),
    ("odds: odds as a float", "odds",
     b'{"type": "odds_change", "event_id": "m-1", "timestamp": "2026-11-24T19:00:00Z",'
     b' "markets": [{"market_id": "1x2", "status": "active",'
     b' "outcomes": [{"outcome_id": "home", "odds": 2.10}]}]}',
     "invalid", "decimal strings"),
    ("odds: unknown market status", "odds", _with(OddsChange, markets=_market(status="open")),
     "invalid", "status"),
    ("odds: active market without prices", "odds", _with(OddsChange, markets=_market(outcomes=[])),
     "invalid", "at least one outcome"),
    ("odds: market twice", "odds", _with(OddsChange, markets=_market() * 2), "invalid",
     "appears twice"),
    ("odds: dead heat factor above 1", "odds", _with(BetSettlement, markets=[
        {"market_id": "1x2", "outcomes": [
            {"outcome_id": "home", "result": "win", "dead_heat_factor": "1.5"}]}]),
     "invalid", "less than or equal to 1"),
    ("odds: dead heat factor on a loss", "odds", _with(BetSettlement, markets=[
        {"market_id": "1x2", "outcomes": [
            {"outcome_id": "home", "result": "lose", "dead_heat_factor": "0.5"}]}]),
     "invalid", "only applies to a win"),
    ("odds: unknown result", "odds", _with(BetSettlement, markets=[
        {"market_id": "1x2", "outcomes": [{"outcome_id": "home", "result": "push"}]}]),
     "invalid", "result"),
    ("odds: empty market_ids", "odds", _with(BetStop, market_ids=[]), "invalid",
     "at least 1 item"),
    ("odds: cancel window backwards", "odds",
     _with(BetCancel, start_time="2026-11-24T19:45:00Z", end_time="2026-11-24T19:40:00Z"),
     "invalid", "start_time must be before end_time"),
    ("odds: alive without producer", "odds", _without(Alive, "producer"), "invalid",
     "producer: Field required"),
    ("odds: alive with an event", "odds", _with(Alive, event_id="m-1"), "invalid",
     "event_id: Extra inputs"),
    ("bets: not UTF-8", "bets", b"\xff\xfe", "malformed_json", "not UTF-8 JSON"),
    ("bets: unknown field", "bets", _with(BetRequest, bonus="yes"), "invalid",
     "bonus: Extra inputs are not permitted"),
    ("bets: naive placed_at", "bets", _with(BetRequest, placed_at="2026-11-24T19:01:00"),
     "invalid", "timezone"),
    ("bets: float stake", "bets",
     b'{"bet_id": "b-1", "player_id": "p-1", "placed_at": "2026-11-24T19:01:00Z",'
     b' "stake": 10.00, "currency": "EUR", "odds_change": "none", "selections": []}',
     "invalid", "must be decimal strings"),
    ("bets: whole-number stake", "bets", _with(BetRequest, stake=10), "invalid",
     "must be a decimal string"),
    ("bets: exponent stake", "bets", _with(BetRequest, stake="1e1"), "invalid",
     "not a plain decimal string"),
    ("bets: negative stake", "bets", _with(BetRequest, stake="-10.00"), "invalid",
     "stake: Value error, -10.00 must not be negative"),
    ("bets: zero stake", "bets", _with(BetRequest, stake="0.00"), "invalid",
     "greater than 0"),
    ("bets: three decimals in EUR", "bets", _with(BetRequest, stake="10.001"), "invalid",
     "stake: 10.001 has 3 decimal places; EUR allows 2"),
    ("bets: JPY with decimals", "bets", _with(BetRequest, stake="100.50", currency="JPY"),
     "invalid", "JPY allows 0"),
    ("bets: lower-case currency", "bets", _with(BetRequest, currency="eur"), "invalid",
     "currency"),
    ("bets: odds of 1", "bets", _with(BetRequest, selections=[_selection(odds="1")]), "invalid",
     "greater than 1"),
    ("bets: empty selections", "bets", _with(BetRequest, selections=[]), "invalid",
     "at least 1 item"),
    ("bets: duplicate selection", "bets", _with(BetRequest, selections=[_selection()] * 2),
     "invalid", "two selections on market '1x2' of event 'm-1'"),
    ("bets: two outcomes of one market", "bets",
     _with(BetRequest, selections=[_selection(), _selection(outcome_id="draw", odds="3.40")]),
     "invalid", "two selections on market"),
    ("bets: unknown odds_change policy", "bets", _with(BetRequest, odds_change="lower"),
     "invalid", "odds_change"),
    ("payments: unknown type", "payments", _with(Deposit, type="refund"), "invalid",
     "does not match any of the expected tags"),
    ("payments: negative deposit", "payments", _with(Deposit, amount="-50.00"), "invalid",
     "amount"),
    ("payments: zero withdrawal", "payments", _with(Withdrawal, amount="0"), "invalid",
     "greater than 0"),
    ("payments: four decimals in KWD", "payments",
     _with(Deposit, amount="1.2345", currency="KWD"), "invalid", "KWD allows 3"),
    ("payments: amount on a completion", "payments",
     _with(WithdrawalCompleted, amount="20.00"), "invalid", "amount: Extra inputs"),
    ("payments: missing payment_id", "payments", _without(Deposit, "payment_id"), "invalid",
     "payment_id: Field required"),
    ("casino: zero debit", "casino", _with(Debit, amount="0.00"), "invalid", "greater than 0"),
    ("casino: negative credit", "casino", _with(Credit, amount="-2.50"), "invalid", "amount"),
    ("casino: float amount", "casino",
     b'{"type": "debit", "transaction_id": "tx-1", "round_id": "r-1", "game_id": "g-1",'
     b' "player_id": "p-1", "amount": 1.5, "currency": "EUR",'
     b' "timestamp": "2026-11-24T18:05:00Z"}',
     "invalid", "decimal strings"),
    ("casino: rollback of itself", "casino", _with(Rollback, reference_transaction_id="tx-3"),
     "invalid", "its own transaction_id"),
    ("casino: rollback without reference", "casino",
     _without(Rollback, "reference_transaction_id"), "invalid",
     "reference_transaction_id: Field required"),
    ("casino: naive timestamp", "casino", _with(Debit, timestamp="2026-11-24 18:05:00"),
     "invalid", "timezone"),
    ("players: unknown type", "players", _with(Registered, type="promoted"), "invalid",
     "does not match any"),
    ("bet-decisions: accepted with a reason", "bet-decisions",
     dumps({"bet_id": "b-1", "player_id": "p-1", "status": "accepted", "reason": "invalid",
            "odds": "2.10", "decided_at": "2026-11-24T19:01:01Z"}),
     "invalid", "reason is required when rejected"),
    ("bet-decisions: unknown reason code", "bet-decisions",
     dumps({"bet_id": "b-1", "player_id": "p-1", "status": "rejected", "reason": "bad_luck",
            "odds": None, "decided_at": "2026-11-24T19:01:01Z"}),
     "invalid", "reason"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("topic", "raw", "reason", "fragment"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_gets_a_reason(topic: str, raw: bytes | None, reason: str, fragment: str) -> None:
    result = decode_topic(topic, raw)
    assert isinstance(result, DecodeFailure), result
    assert result.reason == reason
    assert fragment in result.error, result.error
    assert result.reason in set(ReasonCode)


def test_an_unknown_topic_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match=r"no schema for topic 'reports\.UK'"):
        decode_topic("reports.UK", b"{}")


def test_topics_are_the_contract() -> None:
    assert tuple(INBOUND_TOPICS) == INBOUND
    assert tuple(OUTBOUND_TOPICS) == OUTBOUND
    assert set(TOPICS) == set(INBOUND) | set(OUTBOUND)


# Outbound: what Croupier writes comes back identical, with money as strings.

NOW = datetime(2026, 11, 24, 19, 1, 1, tzinfo=UTC)
OUTBOUND_EXAMPLES: list[tuple[str, BaseModel]] = [
    ("bet-decisions", BetDecision(bet_id="b-1", player_id="p-1", status="accepted",
                                  odds=Decimal("2.10"), decided_at=NOW)),
    ("bet-decisions", BetDecision(bet_id="b-2", player_id="p-1", status="rejected",
                                  reason=ReasonCode.ODDS_CHANGED, decided_at=NOW)),
    ("settlements", Settlement(bet_id="b-1", player_id="p-1", settlement_id="m-1:1x2:1",
                               kind="settled", result="win", stake=Decimal("10.00"),
                               payout=Decimal("21.00"), currency="EUR",
                               ledger_reference="led-1", settled_at=NOW)),
    ("settlements", Settlement(bet_id="b-1", player_id="p-1", settlement_id="m-1:1x2:2",
                               kind="rolled_back", result=None, stake=Decimal("10.00"),
                               payout=Decimal("0.00"), currency="EUR",
                               ledger_reference="led-2", settled_at=NOW)),
    ("settlements", Settlement(bet_id="b-3", player_id="p-1", settlement_id="m-1:cancel",
                               kind="voided", result="void", stake=Decimal("500"),
                               payout=Decimal("500"), currency="JPY",
                               ledger_reference="led-3", settled_at=NOW)),
    ("payment-decisions", PaymentDecision(payment_id="pay-1", player_id="p-1",
                                          status="rejected", reason=ReasonCode.DEPOSIT_LIMIT,
                                          decided_at=NOW)),
    ("casino-results", CasinoResult(transaction_id="tx-1", round_id="r-1", player_id="p-1",
                                    status="ok", balance=Decimal("49.00"), currency="EUR",
                                    decided_at=NOW)),
    ("casino-results", CasinoResult(transaction_id="tx-9", round_id="r-2", player_id="p-1",
                                    status="rejected", balance=Decimal("0.500"),
                                    currency="BHD", error=ReasonCode.INSUFFICIENT_FUNDS,
                                    decided_at=NOW)),
    ("player-notifications", PlayerNotification(player_id="p-1", session_id="s-1", sequence=1,
                                                elapsed_seconds=3600,
                                                net_position=Decimal("-12.50"), currency="EUR",
                                                timestamp=NOW)),
    ("dead-letters", DeadLetter(source=SourcePosition(topic="bets", partition=0, offset=7),
                                key_base64=None, value_base64="e30=", reason="invalid",
                                error="stake: Field required", dead_lettered_at=NOW)),
    ("audit", AuditRecord(entity="bet", entity_id="b-1", action="accepted",
                          source=SourcePosition(topic="bets", partition=0, offset=7),
                          occurred_at=NOW, recorded_at=NOW, before=None,
                          after={"stake": "10.00"})),
]  # fmt: skip


@pytest.mark.parametrize(
    ("topic", "model"),
    OUTBOUND_EXAMPLES,
    ids=[f"{t}-{i}" for i, (t, _) in enumerate(OUTBOUND_EXAMPLES)],
)
def test_outbound_messages_round_trip(topic: str, model: BaseModel) -> None:
    raw = model.model_dump_json().encode()
    assert decode_topic(topic, raw) == model
    written = json.loads(raw)
    for name, value in model:
        if isinstance(value, Decimal):
            assert written[name] == format(value, "f")  # a string, exactly as computed
    assert written.get("schema_version") == 1


def test_a_settlement_states_a_consistent_result() -> None:
    good = OUTBOUND_EXAMPLES[2][1]
    assert isinstance(good, Settlement)
    cases: list[tuple[dict[str, object], str]] = [
        ({"result": "lose"}, "a lost bet pays 0"),
        ({"result": "void"}, "a void bet pays its stake back"),
        ({"kind": "voided"}, "a voided bet has result void"),
        ({"result": None}, "needs a result"),
        ({"kind": "rolled_back"}, "no result and pays 0"),
        ({"payout": Decimal("21.005")}, "payout: 21.005 has 3 decimal places"),
    ]
    for changes, fragment in cases:
        with pytest.raises(ValidationError, match=re.escape(fragment)):
            Settlement.model_validate({**good.model_dump(), **changes})


def test_outbound_models_refuse_floats_and_stay_frozen() -> None:
    with pytest.raises(ValidationError, match=r"decimal string .*, not float"):
        CasinoResult(transaction_id="tx-1", round_id="r-1", player_id="p-1", status="ok",
                     balance=49.0, currency="EUR", decided_at=NOW)  # fmt: skip
    decision = OUTBOUND_EXAMPLES[0][1]
    with pytest.raises(ValidationError, match="frozen"):
        decision.status = "rejected"  # type: ignore[attr-defined]


def test_every_reason_code_is_documented_once() -> None:
    doc_lines = (schemas.outbound.__doc__ or "").splitlines()
    for code in ReasonCode:
        documented = [ln for ln in doc_lines if ln.startswith(f"- ``{code.value}``: ")]
        assert len(documented) == 1, code
    documented_codes = re.findall(r"^- ``([a-z_]+)``", schemas.outbound.__doc__ or "", re.M)
    assert documented_codes == [c.value for c in ReasonCode]


# Money.


def test_money_adds_and_subtracts_exactly_in_one_currency() -> None:
    ten = Money(Decimal("10.00"), "EUR")
    assert ten + Money(Decimal("0.10"), "EUR") == Money(Decimal("10.10"), "EUR")
    assert ten - Money(Decimal("10.50"), "EUR") == Money(Decimal("-0.50"), "EUR")
    assert str(Money(Decimal("10.5"), "EUR") + Money(Decimal(1), "EUR")) == "11.50 EUR"
    assert -ten == Money(Decimal("-10"), "EUR")
    assert Money.zero("EUR") < ten <= ten and ten >= ten > Money.zero("EUR")
    huge = Money(Decimal("12345678901234567890123456789.01"), "EUR")
    assert (huge + Money(Decimal("0.01"), "EUR")).to_minor() == 1234567890123456789012345678902


def test_mixing_currencies_is_a_named_error() -> None:
    eur, gbp = Money(Decimal("1.00"), "EUR"), Money(Decimal("1.00"), "GBP")
    with pytest.raises(CurrencyMismatch, match="cannot add GBP and EUR"):
        eur + gbp
    with pytest.raises(CurrencyMismatch, match="cannot subtract"):
        eur - gbp
    with pytest.raises(CurrencyMismatch, match="cannot compare"):
        _ = eur < gbp
    assert issubclass(CurrencyMismatch, ValueError)


def test_money_refuses_floats_and_bad_scales() -> None:
    with pytest.raises(TypeError, match="not float"):
        Money(1.5, "EUR")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not int"):
        Money(1, "EUR")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not float"):
        Money.from_minor(150.0, "EUR")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not float"):
        check_scale(1.5, "EUR")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _ = Money(Decimal(1), "EUR") + 1  # type: ignore[operator]
    with pytest.raises(ValueError, match="JPY allows 0"):
        Money(Decimal("1.5"), "JPY")
    with pytest.raises(ValueError, match="not an ISO 4217 code"):
        Money(Decimal(1), "eur")
    with pytest.raises(ValueError, match="not a finite decimal"):
        check_scale(Decimal("NaN"), "EUR")
    # Decimals count as written: three places for a two-place currency is a producer bug.
    with pytest.raises(ValueError, match="3 decimal places; EUR allows 2"):
        check_scale(Decimal("10.000"), "EUR")


def test_minor_units() -> None:
    assert Money(Decimal("10.05"), "EUR").to_minor() == 1005
    assert Money(Decimal("1E+2"), "EUR").to_minor() == 10000
    assert Money.from_minor(-5, "KWD") == Money(Decimal("-0.005"), "KWD")
    assert str(Money.from_minor(12345, "JPY")) == "12345 JPY"
    assert str(Money.from_minor(7, "EUR")) == "0.07 EUR"
    assert (minor_units("JPY"), minor_units("BHD"), minor_units("XTS")) == (0, 3, 2)
    deposit = decode_topic("payments", EXAMPLES[4][2])
    assert isinstance(deposit, Deposit)
    assert deposit.money() == Money(Decimal("50.00"), "EUR")
    with pytest.raises(ValueError, match="Deposit has no amount 'payment_id'"):
        deposit.money("payment_id")


CURRENCIES = [*sorted(MINOR_UNITS), "XTS"]  # XTS: a code we don't list, so 2 places


@st.composite
def money(draw: st.DrawFn) -> Money:
    """Any amount with no more decimals than its currency allows, written any valid way."""
    currency = draw(st.sampled_from(CURRENCIES))
    places = draw(st.integers(0, minor_units(currency)))
    coefficient = draw(st.integers(-(10**40), 10**40))
    digits = tuple(int(d) for d in str(abs(coefficient)))
    return Money(Decimal((int(coefficient < 0), digits, -places)), currency)


@given(money())
def test_minor_units_round_trip_exactly(amount: Money) -> None:
    units = amount.to_minor()
    back = Money.from_minor(units, amount.currency)
    assert back == amount
    assert back.to_minor() == units
    assert -units == (-amount).to_minor()


@given(money(), st.integers(-(10**30), 10**30))
def test_sums_are_exact(amount: Money, units: int) -> None:
    other = Money.from_minor(units, amount.currency)
    assert (amount + other).to_minor() == amount.to_minor() + units
    assert (amount + other - other) == amount


# Exported JSON Schemas.


def test_exported_schemas_are_up_to_date() -> None:
    assert export.check() == [], "run: python -m schemas.export"


def test_export_check_reports_drift(tmp_path: Path) -> None:
    assert export.main(["--dir", str(tmp_path)]) == 0
    assert export.check(tmp_path) == []
    (tmp_path / "bets.schema.json").write_text("{}\n")
    (tmp_path / "odds.schema.json").unlink()
    (tmp_path / "retired.schema.json").write_text("{}\n")
    problems = export.check(tmp_path)
    assert [p.split(":")[0] for p in problems] == [
        "missing",
        "differs",
        "unexpected (no such topic)",
    ]
    assert export.main(["--check", "--dir", str(tmp_path)]) == 1
    assert export.main(["--dir", str(tmp_path)]) == 0
    assert export.check(tmp_path) == []


def _schema(topic: str) -> dict[str, Any]:
    text = (export.SCHEMA_DIR / f"{topic}.schema.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    resolved: dict[str, Any] = schema["$defs"][ref.removeprefix("#/$defs/")]
    return resolved


def _variant(schema: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """The object schema a message must match: by discriminator for unions."""
    if "discriminator" in schema:
        ref = schema["discriminator"]["mapping"][message["type"]]
        return _resolve(schema, {"$ref": ref})
    return schema


@pytest.mark.parametrize("topic", list(TOPICS))
def test_every_schema_file_is_identified_and_closed(topic: str) -> None:
    schema = _schema(topic)
    assert schema["$id"] == f"https://croupier.dev/schemas/{topic}.schema.json"
    assert topic in schema["title"]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    objects = list(_objects(schema))
    assert objects
    for obj in objects:
        if topic not in INBOUND_TOPICS:
            # Outbound schemas are open: Croupier may add fields (the evolution policy).
            assert obj.get("additionalProperties") is not False, obj.get("title")
        elif obj.get("additionalProperties") is not True:  # True: a free-form payload
            assert obj.get("additionalProperties") is False, obj.get("title")
        assert set(obj.get("required", [])) <= set(obj.get("properties", {}))


@pytest.mark.parametrize(
    ("topic", "model", "raw"), EXAMPLES, ids=[f"{t}-{m.__name__}" for t, m, _ in EXAMPLES]
)
def test_examples_fit_the_exported_schema(topic: str, model: type[BaseModel], raw: bytes) -> None:
    # jsonschema is not installed, so check the structure the examples rely on.
    schema = _schema(topic)
    message = doc(raw)
    variant = _variant(schema, message)
    assert set(variant["required"]) <= set(message), "example lacks a required field"
    assert set(message) <= set(variant["properties"]), "example has a field the schema lacks"
    for name, value in message.items():
        prop = variant["properties"][name]
        pattern = prop.get("pattern")
        if pattern is not None:
            assert re.search(pattern, value), (name, value, pattern)


def test_decimal_fields_are_strings_in_every_schema() -> None:
    # Producers must send money and odds as strings; the schema must not offer a number.
    for topic in (*INBOUND_TOPICS, *OUTBOUND_TOPICS):
        text = json.dumps(_schema(topic))
        assert '"type": "number"' not in text, topic


def test_outbound_schemas_promise_every_field() -> None:
    for topic in ("bet-decisions", "settlements", "payment-decisions", "casino-results",
                  "player-notifications"):  # fmt: skip
        schema = _schema(topic)
        assert set(schema["required"]) == set(schema["properties"]), topic
    # An open set (the evolution policy): today's codes are the examples, any code passes.
    reasons = _schema("bet-decisions")["$defs"]["ReasonCode"]
    assert reasons["examples"] == [c.value for c in ReasonCode]
    assert "enum" not in reasons and reasons["type"] == "string"
