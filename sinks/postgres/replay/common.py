"""What both replays share: the connection, an amount as shown, a recorded settlement message."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import psycopg

from rules.replay import (
    SettlementMessage,
)
from schemas.money import to_minor_unit
from schemas.odds import (
    ODDS_MESSAGE,
    BetCancel,
    BetSettlement,
    RollbackBetCancel,
    RollbackBetSettlement,
)

_SETTLEMENT_KINDS = (BetSettlement, BetCancel, RollbackBetSettlement, RollbackBetCancel)


class UnknownBet(LookupError):
    """No bet with that id was ever decided."""


def connect(dsn: str, schema: str) -> psycopg.Connection[Any]:
    """A connection to ``schema`` that reads times in UTC (as the flows wrote them)."""
    return psycopg.connect(dsn, options=f"-c search_path={schema} -c TimeZone=UTC")


def money(value: Decimal | None, currency: str) -> str:
    """An amount in its currency's minor units (``21.00``); ``-`` for none."""
    if value is None:
        return "-"
    return format(to_minor_unit(value, currency, ROUND_HALF_EVEN), "f")


def decode_settlement_message(payload: Any) -> SettlementMessage:
    msg = ODDS_MESSAGE.validate_json(json.dumps(payload))
    if not isinstance(msg, _SETTLEMENT_KINDS):
        error = f"market_messages holds a {msg.type} message"
        raise TypeError(error)
    return msg
