"""Every topic of the wire contract and the schema of its messages; bytes to a model."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from schemas.bets import BET_REQUEST
from schemas.casino import CASINO_CALL
from schemas.decode import DecodeFailure, decode
from schemas.odds import ODDS_MESSAGE
from schemas.outbound import (
    BET_DECISION,
    CASINO_RESULT,
    PAYMENT_DECISION,
    PLAYER_NOTIFICATION,
    SETTLEMENT,
)
from schemas.payments import PAYMENT_EVENT
from schemas.players import PLAYER_EVENT
from schemas.records import AuditRecord, DeadLetter

INBOUND_TOPICS: dict[str, TypeAdapter[Any]] = {
    "odds": ODDS_MESSAGE,
    "bets": BET_REQUEST,
    "payments": PAYMENT_EVENT,
    "casino": CASINO_CALL,
    "players": PLAYER_EVENT,
}
OUTBOUND_TOPICS: dict[str, TypeAdapter[Any]] = {
    "bet-decisions": BET_DECISION,
    "settlements": SETTLEMENT,
    "payment-decisions": PAYMENT_DECISION,
    "casino-results": CASINO_RESULT,
    "player-notifications": PLAYER_NOTIFICATION,
    "audit": TypeAdapter(AuditRecord),
    "dead-letters": TypeAdapter(DeadLetter),
}
TOPICS: dict[str, TypeAdapter[Any]] = {**INBOUND_TOPICS, **OUTBOUND_TOPICS}


def decode_topic(topic: str, raw: bytes | None) -> Any | DecodeFailure:
    """Decode one message of ``topic`` (its unprefixed contract name) to its model.

    Returns a ``DecodeFailure`` for bad bytes, which belong on the dead-letter topic; an
    unknown topic is a programming error and raises ValueError.
    """
    adapter = TOPICS.get(topic)
    if adapter is None:
        msg = f"no schema for topic {topic!r}; known topics: {', '.join(TOPICS)}"
        raise ValueError(msg)
    return decode(adapter, raw)
