"""Replay from PostgreSQL: a bet's settlement recomputed beside the ledger
(``settlement.py``), and a time range of the sportsbook re-run into a scratch schema and
compared with the live tables (``range.py``); what both share is in ``common.py``.
"""

from sinks.postgres.replay.common import UnknownBet, connect, decode_settlement_message, money
from sinks.postgres.replay.range import Book, RangeReport, order_steps, read_book, replay_range
from sinks.postgres.replay.settlement import (
    BET_COLUMNS,
    Check,
    LedgerTxn,
    SettlementReport,
    StoredBet,
    StoredLeg,
    StoredSettlement,
    replay_settlement,
    report_for,
    seq_of,
    settlement_checks,
    stored_bet,
)

__all__ = [
    "BET_COLUMNS",
    "Book",
    "Check",
    "LedgerTxn",
    "RangeReport",
    "SettlementReport",
    "StoredBet",
    "StoredLeg",
    "StoredSettlement",
    "UnknownBet",
    "connect",
    "decode_settlement_message",
    "money",
    "order_steps",
    "read_book",
    "replay_range",
    "replay_settlement",
    "report_for",
    "seq_of",
    "settlement_checks",
    "stored_bet",
]
