"""The strict wire: no coercion, safe ids, bounded numbers, RFC 3339 times, one key once,
a size limit, and a decoder that answers every input with a model or a reason."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import export
from schemas.base import ID_MAX_LENGTH
from schemas.bets import BetRequest
from schemas.decode import (
    MAX_ERROR_CHARS,
    MAX_KEY_BYTES,
    MAX_MESSAGE_BYTES,
    DecodeFailure,
    decode,
)
from schemas.outbound import BetDecision, PlayerNotification, Settlement
from schemas.payments import PAYMENT_EVENT, Deposit
from schemas.players import SessionStarted
from schemas.topics import decode_topic

TS = "2026-11-24T19:00:00Z"
NOW = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)
BET = {"bet_id": "b-1", "player_id": "p-1", "placed_at": TS, "stake": "10.00",
       "currency": "EUR", "odds_change": "none",
       "selections": [{"event_id": "m-1", "market_id": "1x2", "outcome_id": "home",
                       "odds": "2.10"}]}  # fmt: skip
DEPOSIT = {"type": "deposit", "payment_id": "pay-1", "player_id": "p-1", "amount": "50.00",
           "currency": "EUR", "timestamp": TS}  # fmt: skip
GEO = {"type": "geolocation", "player_id": "p-1", "jurisdiction": "UK", "allowed": True,
       "checked_at": TS, "geolocate_in": 3600, "ip": "203.0.113.7", "timestamp": TS}  # fmt: skip
CREDIT = {"type": "credit", "transaction_id": "tx-2", "round_id": "r-1", "game_id": "g-1",
          "player_id": "p-1", "amount": "2.50", "currency": "EUR", "timestamp": TS}  # fmt: skip
ROLLBACK = {**CREDIT, "type": "rollback", "transaction_id": "tx-3",
            "reference_transaction_id": "tx-1", "amount": "1.00"}  # fmt: skip
HALF_WIN = {"outcome_id": "home", "result": "win", "dead_heat_factor": "0.5"}
SETTLEMENT = {"type": "bet_settlement", "event_id": "m-1", "timestamp": TS,
              "markets": [{"market_id": "1x2", "outcomes": [HALF_WIN]}]}  # fmt: skip
SESSION = {"type": "session_started", "player_id": "p-1", "session_id": "s-1", "timestamp": TS}
LIMIT = {"type": "limit_set", "player_id": "p-1", "limit": "session", "period": "day",
         "minutes": 120, "timestamp": TS}  # fmt: skip
ALIVE = {"type": "alive", "producer": "live", "timestamp": TS}
FAILED = {"type": "withdrawal_failed", "payment_id": "pay-2", "player_id": "p-1",
          "timestamp": TS, "reason": "card expired"}  # fmt: skip


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def refused(topic: str, body: bytes | None, reason: str = "invalid") -> str:
    result = decode_topic(topic, body)
    assert isinstance(result, DecodeFailure), result
    assert result.reason == reason, result
    assert len(result.error) <= MAX_ERROR_CHARS and result.error.isprintable(), result
    return result.error


def accepted(topic: str, body: bytes) -> Any:
    result = decode_topic(topic, body)
    assert not isinstance(result, DecodeFailure), result
    return result


# -- no coercion ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "doc", "fragment"),
    [
        ("players", {**GEO, "allowed": "yes"}, "allowed: Input should be a valid boolean"),
        ("players", {**GEO, "allowed": 1}, "allowed: Input should be a valid boolean"),
        ("players", {**GEO, "allowed": "true"}, "allowed: Input should be a valid boolean"),
        ("players", {**GEO, "geolocate_in": "3600"}, "geolocate_in: Input should be a valid int"),
        ("players", {**GEO, "geolocate_in": 3600.0}, "geolocate_in: Input should be a valid int"),
        ("players", {**GEO, "geolocate_in": True}, "geolocate_in: Input should be a valid int"),
        ("players", {**LIMIT, "minutes": "120"}, "minutes: Input should be a valid integer"),
        ("players", {**GEO, "timestamp": 1764010800}, "timestamp: Value error, must be an RFC"),
        ("bets", {**BET, "placed_at": 1764010800}, "placed_at: Value error, must be an RFC"),
        ("casino", {**CREDIT, "round_closed": "false"}, "round_closed: Input should be a valid"),
        ("casino", {**CREDIT, "round_closed": 0}, "round_closed: Input should be a valid"),
        ("bets", {**BET, "schema_version": "1"}, "schema_version must be the integer 1"),
        ("bets", {**BET, "schema_version": True}, "schema_version must be the integer 1"),
        ("bets", {**BET, "schema_version": 1.0}, "schema_version must be the integer 1"),
        ("bets", {**BET, "bet_id": 17}, "bet_id: Input should be a valid string"),
        ("payments", {**DEPOSIT, "amount": 50}, "must be a decimal string such as '10.50', not"),
        ("payments", {**DEPOSIT, "amount": 1e33}, "not float"),
    ],
)
def test_a_value_of_another_type_is_refused_not_coerced(
    topic: str, doc: dict[str, Any], fragment: str
) -> None:
    assert fragment in refused(topic, raw(doc))


def test_python_code_still_builds_models_from_python_values() -> None:
    bet = BetRequest.model_validate({**BET, "placed_at": NOW, "stake": Decimal("10.00")})
    assert bet.placed_at == NOW and bet.stake == Decimal("10.00")
    assert BetRequest.model_validate(BET) == bet  # the wire's strings, given in Python
    with pytest.raises(ValueError, match="RFC 3339"):
        BetRequest.model_validate({**BET, "placed_at": 1764010800})


# -- ids ----------------------------------------------------------------------------------

BAD_IDS = ["", "p\x00", "p\n1", "p 1", "p\t", "pé", "p/1", "p\u202e", "x" * (ID_MAX_LENGTH + 1)]
ID_FIELDS = [
    ("bets", BET, "bet_id"), ("bets", BET, "player_id"),
    ("odds", SETTLEMENT, "event_id"), ("odds", ALIVE, "producer"),
    ("payments", DEPOSIT, "payment_id"), ("casino", ROLLBACK, "transaction_id"),
    ("casino", ROLLBACK, "reference_transaction_id"), ("casino", ROLLBACK, "round_id"),
    ("casino", ROLLBACK, "game_id"), ("players", SESSION, "session_id"),
]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
@pytest.mark.parametrize(
    ("topic", "doc", "field"),
    ID_FIELDS,
    ids=[f"{topic}.{field}" for topic, _, field in ID_FIELDS],
)
def test_an_id_outside_the_safe_characters_or_too_long_is_refused(
    topic: str, doc: dict[str, Any], field: str, bad: str
) -> None:
    assert field in refused(topic, raw({**doc, field: bad}))


@pytest.mark.parametrize(
    ("where", "leg"),
    [("market_id", {"market_id": "1 x 2"}), ("outcome_id", {"outcome_id": "home\x00"}),
     ("event_id", {"event_id": "m" * 129})],
)  # fmt: skip
def test_ids_inside_a_bet_are_just_as_safe(where: str, leg: dict[str, str]) -> None:
    body = {**BET, "selections": [{**BET["selections"][0], **leg}]}  # type: ignore[dict-item]
    assert f"selections.0.{where}" in refused("bets", raw(body))


def test_safe_ids_of_the_longest_length_and_every_allowed_character_decode() -> None:
    longest = "A-z.0_9:" * (ID_MAX_LENGTH // 8)
    assert len(longest) == ID_MAX_LENGTH
    bet = accepted("bets", raw({**BET, "bet_id": longest, "player_id": "W1:close"}))
    assert bet.bet_id == longest
    assert "producer" in refused("odds", raw({**ALIVE, "producer": "p" * 65}))


@given(session_id=st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True))
def test_every_session_id_the_wire_takes_fits_its_reality_check(session_id: str) -> None:
    started = accepted("players", raw({**SESSION, "session_id": session_id}))
    assert isinstance(started, SessionStarted)
    PlayerNotification(player_id="p-1", session_id=started.session_id, sequence=1,
                       elapsed_seconds=60, net_position=Decimal("0.00"), currency="EUR",
                       timestamp=NOW)  # fmt: skip


def test_free_text_and_ip_addresses_are_checked() -> None:
    assert "reason" in refused("payments", raw({**FAILED, "reason": "declined\x00"}))
    assert "reason" in refused("payments", raw({**FAILED, "reason": "x" * 1001}))
    assert "not an IPv4 or IPv6" in refused("players", raw({**GEO, "ip": "999.1.1.1"}))
    assert "ip" in refused("players", raw({**GEO, "ip": "localhost"}))
    assert accepted("players", raw({**GEO, "ip": "2001:db8::7"})).ip == "2001:db8::7"


# -- numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "fragment"),
    [
        ("1" + "0" * 33 + ".00", "34 digits before the point; at most 18"),
        ("1" + "0" * 5000, "5001 digits before the point; at most 18"),
        ("1e33", "not a plain decimal string"),
        ("1e5000", "not a plain decimal string"),
        ("1E+5", "not a plain decimal string"),
        ("NaN", "not a plain decimal string"),
        ("10.00000", "5 decimal places; at most 4"),
    ],
)
def test_an_amount_with_too_many_digits_is_refused(amount: str, fragment: str) -> None:
    assert fragment in refused("payments", raw({**DEPOSIT, "amount": amount}))


def test_the_largest_amounts_decode_exactly() -> None:
    deposit = accepted("payments", raw({**DEPOSIT, "amount": "999999999999999999.99"}))
    assert isinstance(deposit, Deposit) and deposit.amount == Decimal("999999999999999999.99")
    dinar = accepted("payments", raw({**DEPOSIT, "amount": "1.250", "currency": "KWD"}))
    assert dinar.amount == Decimal("1.250")


@pytest.mark.parametrize(
    ("odds", "fragment"),
    [("1000000", "7 digits before the point; at most 6"),
     ("2.12345", "5 decimal places; at most 4"), ("1.0000", "greater than 1")],
)  # fmt: skip
def test_odds_are_bounded(odds: str, fragment: str) -> None:
    body = {**BET, "selections": [{**BET["selections"][0], "odds": odds}]}  # type: ignore[dict-item]
    assert fragment in refused("bets", raw(body))


def test_the_widest_odds_and_finest_dead_heat_factor_decode() -> None:
    body = {**BET, "selections": [{**BET["selections"][0], "odds": "999999.9999"}]}  # type: ignore[dict-item]
    assert accepted("bets", raw(body)).selections[0].odds == Decimal("999999.9999")
    fine = json.loads(json.dumps(SETTLEMENT))
    fine["markets"][0]["outcomes"][0]["dead_heat_factor"] = "0.333333"
    assert accepted("odds", raw(fine)).markets[0].outcomes[0].dead_heat_factor == Decimal(
        "0.333333"
    )
    fine["markets"][0]["outcomes"][0]["dead_heat_factor"] = "0.3333333"
    assert "7 decimal places; at most 6" in refused("odds", raw(fine))


def test_totals_croupier_writes_are_wider_than_what_comes_in() -> None:
    payout = Decimal("9" * 30 + ".00")  # an 18-digit stake at odds of a trillion
    Settlement(bet_id="b-1", player_id="p-1", settlement_id="b-1/1", kind="settled",
               result="win", stake=Decimal("1.00"), payout=payout, currency="EUR",
               ledger_reference="settlement:b-1/1", settled_at=NOW)  # fmt: skip
    with pytest.raises(ValueError, match="33 digits before the point; at most 32"):
        Settlement(bet_id="b-1", player_id="p-1", settlement_id="b-1/1", kind="settled",
                   result="win", stake=Decimal("1.00"), payout=Decimal("1" + "0" * 32),
                   currency="EUR", ledger_reference="settlement:b-1/1",
                   settled_at=NOW)  # fmt: skip
    accumulator = Decimal("2.10") ** 30  # every leg's places kept: 60 of them
    decision = BetDecision(bet_id="b-1", player_id="p-1", status="accepted",
                           odds=accumulator, decided_at=NOW)  # fmt: skip
    assert json.loads(decision.model_dump_json())["odds"] == format(accumulator, "f")


# -- times --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when",
    ["2026-11-24T19:00Z", "2026-11-24t19:00:00z", "2026-11-24T19:00:00", "2026-11-24",
     "2026-02-30T10:00:00Z", "2026-11-24T24:00:00Z", "1969-12-31T23:59:59Z",
     "9999-12-31T23:00:00-05:00", "+2026-11-24T19:00:00Z", "2026-11-24T19:00:00+0100",
     "2026-11-24T19:00:00.1234567890Z", " 2026-11-24T19:00:00Z"],
)  # fmt: skip
def test_a_time_that_is_not_rfc_3339_with_a_zone_is_refused(when: str) -> None:
    assert "timestamp" in refused("payments", raw({**DEPOSIT, "timestamp": when}))


@pytest.mark.parametrize(
    ("when", "utc"),
    [("2026-11-24T19:00:00Z", datetime(2026, 11, 24, 19, tzinfo=UTC)),
     ("2026-11-24 20:00:00+01:00", datetime(2026, 11, 24, 19, tzinfo=UTC)),
     ("2026-11-24T19:00:00.123456789Z", datetime(2026, 11, 24, 19, 0, 0, 123456, tzinfo=UTC)),
     ("9999-12-30T00:00:00Z", datetime(9999, 12, 30, tzinfo=UTC))],
)  # fmt: skip
def test_rfc_3339_times_decode_to_aware_datetimes(when: str, utc: datetime) -> None:
    deposit = accepted("payments", raw({**DEPOSIT, "timestamp": when}))
    assert deposit.timestamp == utc and deposit.timestamp.utcoffset() is not None


# -- keys given twice ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "body", "key"),
    [
        ("bets", raw(BET)[:-1] + b', "stake": "90.00"}', "stake"),
        ("bets", raw(BET).replace(b'"odds": "2.10"', b'"odds": "2.10", "odds": "9.10"'), "odds"),
        ("odds", raw(SETTLEMENT).replace(b'"result": "win"', b'"result": "lose", "result": "win"'),
         "result"),
        ("payments", raw(DEPOSIT)[:-1] + b', "\\u0061mount": "90.00"}', "amount"),
    ],
)  # fmt: skip
def test_a_key_given_twice_in_one_object_is_refused(topic: str, body: bytes, key: str) -> None:
    assert refused(topic, body) == f"{key}: a key appears twice in one object"


def test_the_same_key_in_sibling_objects_is_fine() -> None:
    two_legs = {**BET, "selections": [
        BET["selections"][0],
        {"event_id": "m-2", "market_id": "1x2", "outcome_id": "home", "odds": "2.10"},
    ]}  # fmt: skip
    assert len(accepted("bets", raw(two_legs)).selections) == 2


# -- size, depth, big numbers, bytes ------------------------------------------------------


def test_a_message_over_the_size_limit_is_too_large_before_it_is_parsed() -> None:
    padded = raw(DEPOSIT)[:-1] + b" " * (MAX_MESSAGE_BYTES - len(raw(DEPOSIT))) + b"}"
    assert len(padded) == MAX_MESSAGE_BYTES
    assert isinstance(accepted("payments", padded), Deposit)
    error = refused("payments", padded + b" ", "too_large")
    assert error == f"message of {MAX_MESSAGE_BYTES + 1} bytes; at most {MAX_MESSAGE_BYTES}"
    assert "at most" in refused("payments", b"\xff" * (MAX_MESSAGE_BYTES + 1), "too_large")


def test_a_key_over_its_limit_is_too_large() -> None:
    longest = decode(PAYMENT_EVENT, raw(DEPOSIT), key=b"p" * MAX_KEY_BYTES)
    assert isinstance(longest, Deposit)
    result = decode(PAYMENT_EVENT, raw(DEPOSIT), key=b"p" * (MAX_KEY_BYTES + 1))
    assert isinstance(result, DecodeFailure)
    assert (result.reason, result.error) == ("too_large", "key of 1025 bytes; at most 1024")


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b"[" * 50_000 + b"]" * 50_000, b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
     b'{"type": "deposit", "amount": ' + b"9" * 5000 + b"}", b'"\\ud800"', b"\xef\xbb\xbf{}",
     b"", b"null", b"NaN", b"\x00"],
)  # fmt: skip
def test_hostile_json_is_malformed_never_an_exception(body: bytes) -> None:
    result = decode_topic("payments", body)
    assert isinstance(result, DecodeFailure) and result.reason in {"malformed_json", "invalid"}


def test_the_error_text_is_short_and_printable_whatever_the_input() -> None:
    nasty_key = "\x1b[31m" + "k\x00" * 5000
    error = refused("payments", raw({**DEPOSIT, nasty_key: 1}))
    assert "Extra inputs" in error and "\x1b" not in error and "\x00" not in error
    tag = refused("payments", raw({**DEPOSIT, "type": "\x00" * 10_000}))
    assert len(tag) <= MAX_ERROR_CHARS


# -- the published schema and the decoder agree ----------------------------------------------

PAYMENTS_SCHEMA = json.loads(
    (export.SCHEMA_DIR / "payments.schema.json").read_text(encoding="utf-8")
)
DEPOSIT_FIELDS = PAYMENTS_SCHEMA["$defs"]["Deposit"]["properties"]
near_misses = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"-?[0-9]{1,20}(\.[0-9]{0,4})?", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9._:/ -]{0,130}", fullmatch=True),
    st.from_regex(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2})?(\.[0-9]{1,10})?"
        r"(Z|z|[+-][0-9]{2}:?[0-9]{2})?",
        fullmatch=True,
    ),
)


@given(field=st.sampled_from(["amount", "payment_id", "timestamp"]), value=near_misses)
def test_whatever_the_decoder_accepts_matches_the_published_pattern(field: str, value: str) -> None:
    result = decode_topic("payments", raw({**DEPOSIT, field: value}))
    if not isinstance(result, DecodeFailure):
        assert re.search(DEPOSIT_FIELDS[field]["pattern"], value), (field, value)
