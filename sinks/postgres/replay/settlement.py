"""One bet's settlement recomputed beside the ledger (``croupier replay settlement BET_ID``).

Recomputed, with the pure rules (``rules/replay.py``, ``rules/sportsbook.py``), from the
recorded events only: the bet as received (``bets.request``), the price of each leg as
accepted (``bet_legs.odds``) and every settlement-kind message recorded for the bet's
events (``market_messages.payload``, in the order they were processed). Shown beside it:

* the book (``bets``: status, settlement in force, result, payout; ``settlements``: every
  settlement, rollback and resettlement published);
* the ledger: the stake transaction ``bet:<bet_id>`` and every ``settlement:<bet_id>/<n>``
  transaction, with the payout read from the entries on the player's cash account (not
  from the stored ``payout`` column), and the settlement in force (applied, not undone).

They agree when the request still hashes to its ``request_hash``; the legs are the
request's selections and their prices multiply to the accepted price the decision
published; the stake is reserved in the ledger; every leg's result, the settlement in
force, and the whole history of settlement ids (kind, result, payout) are the same in the
replay, the book and the ledger. A rejected bet agrees when nothing was staked or settled.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg

from rules import ledger_keys
from rules.replay import (
    BetReplay,
    LegSpec,
    replay_bet,
)
from rules.sportsbook import Leg, price_text
from schemas.base import request_hash
from schemas.bets import BET_REQUEST, BetRequest
from schemas.outbound import BET_DECISION
from sinks.postgres.replay.common import UnknownBet, connect, decode_settlement_message, money


@dataclass(frozen=True)
class StoredBet:
    bet_id: str
    player_id: str
    currency: str
    stake: Decimal
    odds: Decimal | None
    status: str
    reason: str | None
    request: BetRequest
    request_hash: str
    decision: str
    decided_at: datetime
    settlement_id: str | None
    result: str | None
    payout: Decimal | None
    settle_seq: int


@dataclass(frozen=True)
class StoredLeg:
    leg: int
    event_id: str
    market_id: str
    outcome_id: str
    odds: Decimal
    result: str | None
    dead_heat_factor: Decimal | None
    cancelled: bool

    def as_leg(self) -> Leg:
        if self.cancelled:
            return Leg(self.odds, "void")
        return Leg(self.odds, self.result, self.dead_heat_factor)


@dataclass(frozen=True)
class LedgerTxn:
    """A ledger transaction of the bet, with what its entries moved on the player's rows."""

    txn_id: int
    key: str
    operation: str
    status: str
    reason: str | None
    amount: Decimal
    result: str | None
    reference: str | None
    # The sum of its entries on the player's cash and debt accounts: what the player's money
    # moved (a payout that paid a debt down, or a rollback that ran into debt, moved it all).
    cash: Decimal
    pending: Decimal  # ... and on the pending account
    recorded_at: datetime


@dataclass(frozen=True)
class StoredSettlement:
    settlement_id: str
    kind: str
    result: str | None
    payout: Decimal


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class SettlementReport:
    """A bet replayed beside its book and its ledger."""

    bet: StoredBet
    legs: list[StoredLeg]
    replay: BetReplay | None  # None for a rejected bet
    stake: LedgerTxn | None
    ledger: list[LedgerTxn]  # settlement:<bet_id>/<n>, in n order
    settlements: list[StoredSettlement]
    messages: int
    checks: list[Check] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def ledger_in_force(self) -> LedgerTxn | None:
        """The applied settlement no applied unsettle undid."""
        undone = {t.reference for t in self.ledger if t.operation == "unsettle" and _ok(t)}
        live = [t for t in self.ledger if t.operation == "settle" and _ok(t)]
        standing = [t for t in live if t.key not in undone]
        return standing[-1] if standing else None

    def as_json(self) -> dict[str, Any]:
        b, cur = self.bet, self.bet.currency
        replay = self.replay
        in_force = self.ledger_in_force
        return {
            "bet_id": b.bet_id, "player_id": b.player_id, "currency": cur,
            "stake": money(b.stake, cur), "status": b.status, "reason": b.reason,
            "odds": None if b.odds is None else str(b.odds), "agree": self.agree,
            "messages_replayed": self.messages,
            "replay": None if replay is None else {
                "result": replay.outcome.result if replay.outcome else None,
                "payout": money(replay.outcome.payout, cur) if replay.outcome else None,
                "settlement_id": replay.in_force.settlement_id if replay.in_force else None,
                "legs": [_leg_json(leg) for leg in replay.legs],
                "history": [{"settlement_id": s.settlement_id, "kind": s.kind,
                             "result": s.result, "payout": money(s.payout, cur)}
                            for s in replay.history],
            },
            "book": {
                "status": b.status, "settlement_id": b.settlement_id, "result": b.result,
                "payout": None if b.payout is None else money(b.payout, cur),
                "legs": [_leg_json(leg.as_leg()) for leg in self.legs],
                "settlements": [{"settlement_id": s.settlement_id, "kind": s.kind,
                                 "result": s.result, "payout": money(s.payout, cur)}
                                for s in self.settlements],
            },
            "ledger": {
                "stake": None if self.stake is None else _txn_json(self.stake, cur),
                "in_force": None if in_force is None else _txn_json(in_force, cur),
                "settlements": [_txn_json(t, cur) for t in self.ledger],
            },
            "checks": [{"check": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }  # fmt: skip


def _ok(t: LedgerTxn) -> bool:
    return t.status == "applied"


def _leg_json(leg: Leg) -> dict[str, Any]:
    factor = leg.dead_heat_factor
    return {"odds": str(leg.odds), "result": leg.result,
            "dead_heat_factor": None if factor is None else str(factor)}  # fmt: skip


def _txn_json(t: LedgerTxn, currency: str) -> dict[str, Any]:
    return {"key": t.key, "operation": t.operation, "status": t.status, "reason": t.reason,
            "result": t.result, "cash": money(t.cash, currency),
            "pending": money(t.pending, currency)}  # fmt: skip


def replay_settlement(dsn: str, schema: str, bet_id: str) -> SettlementReport:
    """Replay one bet's settlement from the recorded events; raise ``UnknownBet``."""
    with connect(dsn, schema) as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        report = _load_bet(conn, bet_id)
    report.checks = settlement_checks(report)
    return report


def _load_bet(conn: psycopg.Connection[Any], bet_id: str) -> SettlementReport:
    row = conn.execute(
        f"SELECT {BET_COLUMNS} FROM bets WHERE bet_id = %s",  # noqa: S608 - a constant
        (bet_id,),
    ).fetchone()
    if row is None:
        msg = f"no bet {bet_id!r} was ever decided"
        raise UnknownBet(msg)
    bet = stored_bet(row)
    legs = [
        StoredLeg(*r)
        for r in conn.execute(
            """SELECT leg, event_id, market_id, outcome_id, odds, result, dead_heat_factor,
                      cancelled
                 FROM bet_legs WHERE bet_id = %s ORDER BY leg""",
            (bet_id,),
        ).fetchall()
    ]
    settlements = sorted(
        (
            StoredSettlement(*r)
            for r in conn.execute(
                "SELECT settlement_id, kind, result, payout FROM settlements WHERE bet_id = %s",
                (bet_id,),
            ).fetchall()
        ),
        key=lambda s: seq_of(s.settlement_id),
    )
    stake_key = ledger_keys.stake(bet_id)
    prefix = ledger_keys.settlements_of(bet_id)
    keys = [stake_key, *(ledger_keys.settlement(s.settlement_id) for s in settlements)]
    # Settlement transactions hang off the stake (settle) and off a settle (unsettle); the
    # settlements table names the rest, refusals included.
    txn_rows = conn.execute(
        """WITH stake AS (SELECT txn_id FROM ledger_transactions WHERE idempotency_key = %s),
                settles AS (SELECT txn_id FROM ledger_transactions
                             WHERE reference_id IN (SELECT txn_id FROM stake))
           SELECT t.txn_id, t.idempotency_key, t.operation, t.status, t.reason, t.amount,
                  t.result, r.idempotency_key, t.recorded_at
             FROM ledger_transactions t
             LEFT JOIN ledger_transactions r ON r.txn_id = t.reference_id
            WHERE t.idempotency_key = ANY(%s)
               OR t.reference_id IN (SELECT txn_id FROM stake)
               OR t.reference_id IN (SELECT txn_id FROM settles)""",
        (stake_key, keys),
    ).fetchall()
    txn_rows = [r for r in txn_rows if r[1] == stake_key or _is_settlement_of(r[1], prefix)]
    moved = _moved(conn, bet.player_id, bet.currency, [r[0] for r in txn_rows])
    zero = Decimal(0)
    txns = [
        LedgerTxn(
            txn_id=r[0],
            key=r[1],
            operation=r[2],
            status=r[3],
            reason=r[4],
            amount=r[5],
            result=r[6],
            reference=r[7],
            cash=moved.get((r[0], "cash"), zero),
            pending=moved.get((r[0], "pending"), zero),
            recorded_at=r[8],
        )
        for r in txn_rows
    ]
    stake = next((t for t in txns if t.key == stake_key), None)
    ledger_settlements = sorted(
        (t for t in txns if t.key != stake_key), key=lambda t: seq_of(t.key)
    )

    events = sorted({leg.event_id for leg in legs})
    message_rows = conn.execute(
        """SELECT event_id, payload, recorded_at FROM market_messages
            WHERE event_id = ANY(%s)
            ORDER BY recorded_at, source_topic, source_partition, source_offset""",
        (events,),
    ).fetchall()
    return report_for(bet, legs, settlements, stake, ledger_settlements, message_rows)


# The columns of ``bets`` a report reads, in ``stored_bet``'s order.
BET_COLUMNS = """bet_id, player_id, currency, stake, odds, status, reason, request,
                  request_hash, decision, decided_at, settlement_id, result, payout, settle_seq"""


def stored_bet(row: Sequence[Any]) -> StoredBet:
    """A ``bets`` row (``BET_COLUMNS``) as stored."""
    request = BET_REQUEST.validate_json(json.dumps(row[7]))
    return StoredBet(row[0], row[1], row[2].strip(), row[3], row[4], row[5], row[6], request,
                     *row[8:])  # fmt: skip


def report_for(
    bet: StoredBet,
    legs: list[StoredLeg],
    settlements: list[StoredSettlement],
    stake: LedgerTxn | None,
    ledger_settlements: list[LedgerTxn],
    messages: Sequence[tuple[str, Any, datetime]],
) -> SettlementReport:
    """A bet's stored rows beside its replay from ``messages``: its events' settlement
    messages (event id, payload, recorded at) in the order they were processed. Messages
    recorded before the stake are history the bet was placed after."""
    replay = None
    if bet.status != "rejected":
        specs = [
            LegSpec(leg.event_id, leg.market_id, leg.outcome_id, leg.odds, bet.decided_at)
            for leg in legs
        ]
        decoded = [(event, decode_settlement_message(payload)) for event, payload, _ in messages]
        placed = stake.recorded_at if stake is not None else bet.decided_at
        placed_after = bisect_left([m[2] for m in messages], placed)
        replay = replay_bet(bet.bet_id, bet.stake, bet.currency, specs, decoded, placed_after)
    return SettlementReport(bet, legs, replay, stake, ledger_settlements, settlements,
                            len(messages))  # fmt: skip


def seq_of(settlement_id: str) -> int:
    tail = settlement_id.rpartition("/")[2]
    return int(tail) if tail.isdigit() else -1


def _is_settlement_of(key: str, prefix: str) -> bool:
    return key.startswith(prefix) and key.removeprefix(prefix).isdigit()


def _moved(
    conn: psycopg.Connection[Any], player: str, currency: str, txn_ids: list[int]
) -> dict[tuple[int, str], Decimal]:
    """What each transaction moved on the player's money (cash and debt: ``cash``) and
    pending accounts."""
    rows = conn.execute(
        """SELECT e.txn_id, CASE a.kind WHEN 'debt' THEN 'cash' ELSE a.kind END, sum(e.amount)
             FROM ledger_accounts a JOIN ledger_entries e USING (account_id)
            WHERE a.owner = %s AND a.currency = %s AND a.kind IN ('cash', 'pending', 'debt')
              AND e.txn_id = ANY(%s)
            GROUP BY 1, 2""",
        (player, currency, txn_ids),
    ).fetchall()
    return {(r[0], r[1]): r[2] for r in rows}


def settlement_checks(report: SettlementReport) -> list[Check]:
    """Does the replay agree with the book and the ledger, piece by piece?"""
    b, cur = report.bet, report.bet.currency
    checks = [
        Check("request", request_hash(b.request) == b.request_hash,
              "the stored request hashes to its request_hash"
              if request_hash(b.request) == b.request_hash
              else "the stored request no longer hashes to its request_hash"),
    ]  # fmt: skip
    decision = BET_DECISION.validate_json(b.decision)
    replay = report.replay
    if replay is None:  # rejected: nothing staked, nothing settled
        staked = report.stake is not None and _ok(report.stake)
        checks.append(Check(
            "decision",
            decision.status == "rejected" and decision.reason == b.reason and not report.legs,
            f"rejected ({b.reason}); the decision published says {decision.status} "
            f"({decision.reason})",
        ))  # fmt: skip
        quiet = not staked and not report.ledger and not report.settlements
        stake = report.stake
        if not quiet:
            detail = "a rejected bet has an applied stake, ledger settlements or settlements"
        elif stake is not None:
            detail = f"bet:{b.bet_id} {stake.status} by the ledger ({stake.reason}); no settlement"
        else:
            detail = "refused before the ledger: no stake, no settlement"
        checks.append(Check("nothing moved", quiet, detail))
        return checks

    selections = [(s.event_id, s.market_id, s.outcome_id) for s in b.request.selections]
    placed = [(leg.event_id, leg.market_id, leg.outcome_id) for leg in report.legs]
    same = selections == placed
    detail = (f"{len(placed)} leg(s) on the request's selections" if same
              else f"legs {placed} are not the request's selections {selections}")  # fmt: skip
    checks.append(Check("legs", same, detail))
    total = Decimal(1)
    for leg in report.legs:
        total *= leg.odds
    price = price_text(total)
    price_ok = price == b.odds and decision.odds == b.odds and decision.status == "accepted"
    detail = f"leg prices multiply to {price}; book {b.odds}; decision {decision.odds}"
    checks.append(Check("price", price_ok, detail))
    stake = report.stake
    stake_ok = (stake is not None and _ok(stake) and stake.operation == "stake"
                and stake.amount == b.stake and stake.pending == b.stake
                and stake.cash == -b.stake)  # fmt: skip
    checks.append(Check(
        "stake", stake_ok,
        f"bet:{b.bet_id} {stake.status} {stake.operation}: cash {money(stake.cash, cur)}, "
        f"pending {money(stake.pending, cur)} (stake {money(b.stake, cur)})"
        if stake is not None else f"no ledger transaction bet:{b.bet_id}",
    ))  # fmt: skip
    stored_legs = [leg.as_leg() for leg in report.legs]
    checks.append(Check(
        "leg results", list(replay.legs) == stored_legs,
        "; ".join(f"{r.result or 'open'}{_dh(r)} (book {s.result or 'open'}{_dh(s)})"
                  for r, s in zip(replay.legs, stored_legs, strict=False)),
    ))  # fmt: skip
    checks.append(_in_force_check(report, replay))
    checks.append(_history_check(report, replay))
    return checks


def _dh(leg: Leg) -> str:
    return "" if leg.dead_heat_factor is None else f" x{leg.dead_heat_factor}"


def _in_force_check(report: SettlementReport, replay: BetReplay) -> Check:
    b, cur = report.bet, report.bet.currency
    want = replay.in_force
    txn = report.ledger_in_force
    replay_view = (
        ("open", None, None, None)
        if want is None
        else ("settled", want.settlement_id, want.result, want.payout)
    )
    book_view = (b.status, b.settlement_id, b.result, b.payout)
    ledger_view = (
        ("open", None, None, None)
        if txn is None
        else ("settled", ledger_keys.business_id(txn.key, "settlement"), txn.result, txn.cash)
    )
    ok = replay_view == book_view == ledger_view

    def show(view: tuple[str, str | None, str | None, Decimal | None]) -> str:
        if view[0] == "open":
            return "open"
        return f"{view[2]} pays {money(view[3], cur)} ({view[1]})"

    return Check(
        "settlement in force",
        ok,
        f"replay {show(replay_view)}; book {show(book_view)}; ledger {show(ledger_view)}",
    )


def _history_check(report: SettlementReport, replay: BetReplay) -> Check:
    cur = report.bet.currency
    want = [(s.settlement_id, s.kind, s.result, s.payout) for s in replay.history]
    book = [(s.settlement_id, s.kind, s.result, s.payout) for s in report.settlements]
    by_key = {t.key: t for t in report.ledger}
    ledger_view: list[tuple[str, str, str | None, Decimal]] = []
    for t in report.ledger:
        sid = ledger_keys.business_id(t.key, "settlement") or t.key
        if not _ok(t):
            ledger_view.append((sid, f"{t.operation} {t.status}: {t.reason}", None, Decimal(0)))
        elif t.operation == "unsettle":
            undone = by_key.get(t.reference or "")
            back = undone is not None and t.cash == -undone.cash and t.pending == -undone.pending
            ledger_view.append((sid, "rolled_back" if back else "unsettle (partial)", None,
                                Decimal(0)))  # fmt: skip
        else:
            ledger_view.append((sid, t.operation, t.result, t.cash))
    as_ledger = [(s, "rolled_back" if k == "rolled_back" else "settle", r, p)
                 for s, k, r, p in want]  # fmt: skip
    ok = want == book and as_ledger == ledger_view
    lines = [f"{s} {k} {r or ''} {money(p, cur)}".replace("  ", " ") for s, k, r, p in want]
    detail = "replay " + (", ".join(lines) or "none")
    if want != book:
        detail += "; settlements table " + (
            ", ".join(f"{s} {k} {r or ''} {money(p, cur)}" for s, k, r, p in book) or "none"
        )
    if as_ledger != ledger_view:
        detail += "; ledger " + (
            ", ".join(f"{s} {k} {r or ''} {money(p, cur)}" for s, k, r, p in ledger_view) or "none"
        )
    return Check("history", ok, detail)
