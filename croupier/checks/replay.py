"""Settlement replays for many bets at once: ``replay_settlement``'s load, chunk by chunk.

``sinks/postgres/replay/settlement.py`` loads one bet with a handful of queries; a check
of every settled bet cannot afford that per bet. This reads the same rows for a chunk of
bets in one query each (the settlement-kind messages once for all), then builds each report
with the same ``stored_bet`` and ``report_for`` and runs the same ``settlement_checks``.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg

from rules import ledger_keys
from sinks.postgres.replay import (
    BET_COLUMNS,
    LedgerTxn,
    SettlementReport,
    StoredLeg,
    StoredSettlement,
    report_for,
    seq_of,
    settlement_checks,
    stored_bet,
)

CHUNK = 2000
Message = tuple[int, Any, Any]  # (processing order, recorded_at, payload)


def settled_reports(conn: psycopg.Connection[Any], like: str) -> Iterator[SettlementReport]:
    """A checked report for every bet with a settlement history whose id matches ``like``."""
    # Every settlement-kind message once, in the order they were processed (as numbered).
    messages: dict[str, list[Message]] = {}
    for n, (event_id, payload, recorded_at) in enumerate(conn.execute(
        """SELECT event_id, payload, recorded_at FROM market_messages
            ORDER BY recorded_at, source_topic, source_partition, source_offset"""
    )):  # fmt: skip
        messages.setdefault(event_id, []).append((n, recorded_at, payload))
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT bet_id FROM bets WHERE settle_seq > 0 AND bet_id LIKE %s ORDER BY bet_id",
            (like,),
        )
    ]
    for start in range(0, len(ids), CHUNK):
        yield from _chunk(conn, ids[start : start + CHUNK], messages)


def _chunk(
    conn: psycopg.Connection[Any], ids: list[str], messages: dict[str, list[Message]]
) -> Iterator[SettlementReport]:
    bets = conn.execute(
        f"SELECT {BET_COLUMNS} FROM bets WHERE bet_id = ANY(%s)",  # noqa: S608 - a constant
        (ids,),
    ).fetchall()
    legs: dict[str, list[StoredLeg]] = {}
    for r in conn.execute(
        """SELECT bet_id, leg, event_id, market_id, outcome_id, odds, result, dead_heat_factor,
                  cancelled
             FROM bet_legs WHERE bet_id = ANY(%s) ORDER BY bet_id, leg""",
        (ids,),
    ):
        legs.setdefault(r[0], []).append(StoredLeg(*r[1:]))
    settlements: dict[str, list[StoredSettlement]] = {}
    for r in conn.execute(
        "SELECT bet_id, settlement_id, kind, result, payout FROM settlements "
        "WHERE bet_id = ANY(%s)",
        (ids,),
    ):
        settlements.setdefault(r[0], []).append(StoredSettlement(*r[1:]))
    # A bet's ledger keys: its stake and settlement:<bet_id>/1 .. /settle_seq+1 (a refused
    # settlement keeps the next number, so it is at most one past the count).
    keys = [ledger_keys.stake(b[0]) for b in bets]
    keys += [ledger_keys.settlement(ledger_keys.settlement_id(b[0], n))
             for b in bets for n in range(1, int(b[14]) + 2)]  # fmt: skip
    txn_rows = conn.execute(
        """SELECT t.txn_id, t.idempotency_key, t.operation, t.status, t.reason, t.amount,
                  t.result, r.idempotency_key, t.recorded_at,
                  coalesce(sum(e.amount) FILTER (WHERE a.kind IN ('cash', 'debt')), 0),
                  coalesce(sum(e.amount) FILTER (WHERE a.kind = 'pending'), 0)
             FROM ledger_transactions t
             LEFT JOIN ledger_transactions r ON r.txn_id = t.reference_id
             LEFT JOIN ledger_entries e ON e.txn_id = t.txn_id
             LEFT JOIN ledger_accounts a ON a.account_id = e.account_id
                   AND a.owner = t.player_id AND a.kind IN ('cash', 'pending', 'debt')
            WHERE t.idempotency_key = ANY(%s)
            GROUP BY t.txn_id, r.idempotency_key""",
        (keys,),
    ).fetchall()
    txns: dict[str, LedgerTxn] = {}
    for r in txn_rows:
        txns[r[1]] = LedgerTxn(
            txn_id=r[0], key=r[1], operation=r[2], status=r[3], reason=r[4], amount=r[5],
            result=r[6], reference=r[7], recorded_at=r[8], cash=Decimal(r[9]),
            pending=Decimal(r[10]),
        )  # fmt: skip
    for row in bets:
        bet_id = row[0]
        bet = stored_bet(row)
        stake = txns.get(ledger_keys.stake(bet_id))
        ledger = sorted(
            (t for k, t in txns.items() if k.startswith(ledger_keys.settlements_of(bet_id))
             and k.removeprefix(ledger_keys.settlements_of(bet_id)).isdigit()),
            key=lambda t: seq_of(t.key),
        )  # fmt: skip
        bet_legs = legs.get(bet_id, [])
        events = sorted({leg.event_id for leg in bet_legs})
        rows = sorted(
            (n, at, event, payload)
            for event in events
            for n, at, payload in messages.get(event, [])
        )
        report = report_for(
            bet, bet_legs,
            sorted(settlements.get(bet_id, []), key=lambda s: seq_of(s.settlement_id)),
            stake, ledger, [(event, payload, at) for _, at, event, payload in rows],
        )  # fmt: skip
        report.checks = settlement_checks(report)
        yield report
