"""Decoding player events: a model for good input, a reason code for everything else."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal

import pytest

from schemas.decode import DecodeFailure, decode
from schemas.players import PLAYER_EVENT, LimitSet, Registered

REGISTERED = {
    "type": "registered", "player_id": "p-1", "jurisdiction": "UK", "currency": "EUR",
    "birth_date": "1990-05-01", "timestamp": "2026-11-24T17:00:00Z",
}  # fmt: skip


def raw(doc: Mapping[str, object]) -> bytes:
    return json.dumps(doc).encode()


def test_contract_example_decodes() -> None:
    event = decode(PLAYER_EVENT, raw(REGISTERED))
    assert isinstance(event, Registered)
    assert event.jurisdiction == "UK" and event.timestamp.utcoffset() is not None


def test_limit_amount_is_an_exact_decimal_from_a_string() -> None:
    doc = {"type": "limit_set", "player_id": "p-1", "limit": "loss", "period": "day",
           "amount": "20.10", "currency": "EUR", "timestamp": "2026-11-24T17:01:00Z"}  # fmt: skip
    event = decode(PLAYER_EVENT, raw(doc))
    assert isinstance(event, LimitSet)
    assert event.amount == Decimal("20.10")
    assert json.loads(event.model_dump_json())["amount"] == "20.10"


@pytest.mark.parametrize(
    ("message", "reason", "fragment"),
    [
        (b'{"type": "registered", ', "malformed_json", "not UTF-8 JSON"),
        (b"\xff\xfe", "malformed_json", "not UTF-8 JSON"),
        (None, "malformed_json", "empty message"),
        (raw({**REGISTERED, "colour": "red"}), "invalid", "colour: Extra inputs"),
        (raw({**REGISTERED, "timestamp": "2026-11-24T17:00:00"}), "invalid", "timezone"),
        (raw({**REGISTERED, "currency": "euro"}), "invalid", "currency"),
        (raw({**REGISTERED, "type": "promoted"}), "invalid", "does not match any"),
        (
            b'{"type": "limit_set", "player_id": "p", "limit": "loss", "period": "day",'
            b' "amount": 20.10, "currency": "EUR", "timestamp": "2026-11-24T17:01:00Z"}',
            "invalid",
            "decimal strings",
        ),
    ],
)
def test_bad_input_gets_a_reason(message: bytes | None, reason: str, fragment: str) -> None:
    result = decode(PLAYER_EVENT, message)
    assert isinstance(result, DecodeFailure)
    assert result.reason == reason
    assert fragment in result.error


def test_models_are_frozen() -> None:
    event = decode(PLAYER_EVENT, raw(REGISTERED))
    assert isinstance(event, Registered)
    with pytest.raises(ValueError, match="frozen"):
        event.player_id = "p-2"  # type: ignore[misc]


LOSS = {"type": "limit_set", "player_id": "p-1", "limit": "loss", "period": "day",
        "amount": "20.00", "currency": "EUR", "timestamp": "2026-11-24T17:01:00Z"}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"amount": "20.001"}, "EUR allows 2"),
        ({"amount": 20}, "string"),
        ({"currency": None}, "needs its currency"),
        ({"minutes": 120}, "not minutes"),
        ({"limit": "session", "amount": None, "currency": None, "minutes": 0}, "greater than"),
        ({"limit": "session", "minutes": 120}, "takes minutes, not an amount"),
    ],
)
def test_limits_take_the_right_measure(change: dict[str, object], fragment: str) -> None:
    result = decode(PLAYER_EVENT, raw({**LOSS, **change}))
    assert isinstance(result, DecodeFailure) and fragment in result.error


def test_a_null_amount_removes_a_limit_and_session_limits_take_minutes() -> None:
    removed = decode(PLAYER_EVENT, raw({**LOSS, "amount": None}))
    assert isinstance(removed, LimitSet) and removed.amount is None
    session = {**LOSS, "limit": "session", "amount": None, "currency": None, "minutes": 120}
    limit = decode(PLAYER_EVENT, raw(session))
    assert isinstance(limit, LimitSet) and limit.minutes == 120
