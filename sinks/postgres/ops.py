"""What operators watch, read from PostgreSQL in one short read-only transaction.

``read_state`` answers the questions the platform's metrics ask (``streams/metrics.py``,
``Platform``): how far the audit relay and the reporter are behind, when the last
checkpoint was signed, which markets carry the most open liability, the gross gaming
revenue booked today and the dead letters stored. Amounts stay ``Decimal``; each query
is bounded (a statement timeout, the top ``top`` markets per currency).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

from sinks.signing import Pin

RELAY_BACKLOG = """
SELECT coalesce(sum(h.seq - coalesce(p.seq, 0)), 0)
  FROM audit_heads h LEFT JOIN audit_published p USING (chain)"""
DERIVE_BACKLOG = """
SELECT coalesce(sum(h.seq - coalesce(p.seq, 0)), 0)
  FROM audit_heads h LEFT JOIN report_progress p USING (chain)"""
REPORT_LAG = """
SELECT h.jurisdiction, h.seq - coalesce(p.seq, 0)
  FROM report_heads h LEFT JOIN report_published p USING (jurisdiction) ORDER BY 1"""
LAST_CHECKPOINT = "SELECT extract(epoch FROM max(created_at)) FROM audit_checkpoints"
LAST_SIGNED = """
SELECT document, public_key, signature FROM audit_checkpoints
 ORDER BY checkpoint_id DESC LIMIT 1"""
# Per market and currency: what the house pays beyond the stakes if every open bet on it
# wins at its accepted price; an accumulator's whole exposure counts on each live leg.
LIABILITY = """
SELECT market, currency, exposure FROM (
    SELECT l.event_id || '/' || l.market_id AS market, b.currency,
           sum(b.stake * b.odds - b.stake) AS exposure,
           row_number() OVER (PARTITION BY b.currency
                              ORDER BY sum(b.stake * b.odds - b.stake) DESC,
                                       l.event_id || '/' || l.market_id) AS rank
      FROM bets b JOIN bet_legs l USING (bet_id)
     WHERE b.status = 'open' AND NOT l.cancelled AND l.result IS NULL
     GROUP BY 1, 2
) ranked WHERE rank <= %s ORDER BY currency, exposure DESC, market"""
# The house's gaming accounts: stakes taken at settlement (+), payouts (-), casino debits
# (+) and credits (-); today is since 00:00 UTC.
GGR_TODAY = """
SELECT e.currency, sum(e.amount)
  FROM ledger_transactions t
  JOIN ledger_entries e USING (txn_id)
  JOIN ledger_accounts a ON a.account_id = e.account_id
 WHERE t.recorded_at >= (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
   AND a.kind IN ('house_stakes', 'house_payouts', 'house_casino')
 GROUP BY 1 ORDER BY 1"""
DEAD_LETTERS = """
SELECT source_topic, reason, count(*) FROM dead_letters GROUP BY 1, 2 ORDER BY 1, 2"""


@dataclass
class PlatformState:
    relay_backlog: int = 0
    derive_backlog: int = 0
    last_checkpoint: float = 0.0  # Unix seconds; 0 when none was signed
    report_lag: dict[str, int] = field(default_factory=dict)
    liability: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    ggr_today: dict[str, Decimal] = field(default_factory=dict)
    dead_letters: dict[tuple[str, str], int] = field(default_factory=dict)
    checkpoint_verified: bool | None = None  # None: no checkpoint yet
    ggr_unread: bool = False  # GGR today could not be summed within the time limit


def checkpoint_verified(document: str, named: bytes, signature: bytes, pin: Pin | None) -> bool:
    """Whether a checkpoint's signature over its document is the pinned key's (without a
    pin: the key the row names, which proves only that the row is whole)."""
    trusted = pin if pin is not None else Pin(bytes(named))
    return trusted.verifies(bytes(named), bytes(signature), document.encode())


def read_state(
    dsn: str,
    schema: str,
    *,
    top: int = 10,
    timeout_ms: int = 2000,
    pin: Pin | None = None,
    ggr: bool = True,
) -> PlatformState:
    """The platform's state now (raises ``psycopg.Error`` when the database cannot say);
    without ``ggr``, GGR today is left out (the costliest read: the caller reads it less
    often)."""
    options = f"-c search_path={schema} -c statement_timeout={timeout_ms}"
    with psycopg.connect(dsn, options=options, connect_timeout=2) as conn:
        conn.read_only = True
        state = PlatformState()
        state.relay_backlog = int(_one(conn, RELAY_BACKLOG) or 0)
        state.derive_backlog = int(_one(conn, DERIVE_BACKLOG) or 0)
        state.last_checkpoint = float(_one(conn, LAST_CHECKPOINT) or 0.0)
        signed = conn.execute(LAST_SIGNED).fetchone()
        if signed is not None:
            document, named, signature = signed
            state.checkpoint_verified = checkpoint_verified(document, named, signature, pin)
        state.report_lag = {j: int(n) for j, n in conn.execute(REPORT_LAG).fetchall()}
        state.liability = {
            (market, currency.strip()): Decimal(amount)
            for market, currency, amount in conn.execute(LIABILITY, (top,)).fetchall()
        }
        state.dead_letters = {
            (topic, reason): int(n) for topic, reason, n in conn.execute(DEAD_LETTERS).fetchall()
        }
        if ggr:  # last: a day too big to sum in the time limit costs GGR alone
            try:
                rows = conn.execute(GGR_TODAY).fetchall()
                state.ggr_today = {c.strip(): Decimal(a) for c, a in rows}
            except psycopg.errors.QueryCanceled:
                state.ggr_unread = True
        return state


def _one(conn: psycopg.Connection[tuple[Any, ...]], sql: str) -> Any:
    row = conn.execute(sql).fetchone()
    return row[0] if row else None
