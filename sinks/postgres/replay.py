"""Replay from PostgreSQL: a bet's settlement recomputed beside the ledger, and a time range
of the sportsbook re-run into a scratch schema and compared with the live tables.

``replay_settlement`` (``croupier replay settlement BET_ID``)
--------------------------------------------------------------
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

``replay_range`` (``croupier replay --from T1 --to T2``)
---------------------------------------------------------
Selects the bets *decided* in ``[T1, T2)`` (``bets.decided_at``: when the sportsbook took
the decision; ``placed_at`` is the client's claim and may be anything). A wallet is a
chain (a bet's acceptance depends on the balance its earlier bets, settlements and
payments left) and one settlement transaction can move a player's old and new bets
together, so the re-run covers the *whole history of every player with a bet in the
range*: all their bets, all settlement messages of those bets' events, all their other
ledger operations. Into a fresh scratch schema (``migrate``), in the live order:

re-run through the real code
    the placement of every bet of those players (``SportsbookSink.decide``: the market
    fence against the scratch's market states, the stake through ``ledger_post``, the
    refusal the ledger gives, the stored decision and legs); every recorded
    settlement-kind message of their events (``SportsbookSink.apply_market_message``:
    market states, leg results, settlement math, rollbacks and resettlements, their
    ledger postings and the settlement messages).
taken as recorded
    the verdict of the odds table and the compliance checks (neither table is recorded:
    an accepted bet is re-placed at its recorded leg prices, a bet refused before the
    ledger keeps its recorded reason, a bet the ledger refused is re-placed at its
    requested prices so the ledger decides again); the players' other ledger operations
    (deposits, withdrawals, casino, stakes without a bet row), re-posted as the same
    requests (same key, amounts, reference; their request hashes are checked); the
    times (``decided_at`` for a placement, the published ``settled_at`` for a
    settlement); the order (below); the markets a whole-event message closed (the
    odds table's list of an event's markets is not recorded: ``market_messages.changed``
    is used).
the order
    each step at the live ledger transaction it posted first: exact per player, whose
    operations post under a lock on their accounts. A step that posted nothing (a
    settlement-kind message that settled none of its bets) goes by the time its
    transaction started; a bet the fence let through milliseconds before such a
    message could be refused by the replay, which would then report it.

Compared with the live tables (read in one snapshot before the re-run): every re-run
bet (status, reason, odds, the decision JSON byte for byte, settlement in force, result,
payout, settle_seq), its legs (price, result, dead-heat factor, cancelled), its
settlements (kind, result, payout, the published JSON), every ledger transaction of the
players (operation, status, reason, amounts, balances after) and their balances (cash,
pending, withdrawal reserve). The scratch ledger must also reconcile. Market states are
not compared: for a whole-event message they depend on the odds table's list of markets.
The scratch schema is dropped at the end unless asked to keep it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from rules import ledger as ledger_ops
from rules import ledger_keys
from rules.decimals import MONEY_CONTEXT, minor_unit
from rules.replay import (
    Anchor,
    BetReplay,
    Difference,
    LegSpec,
    SettlementMessage,
    diff_rows,
    replay_bet,
    schedule,
)
from rules.sportsbook import Leg, Priced, Refused, price_text
from schemas.base import request_hash
from schemas.bets import BET_REQUEST, BetRequest
from schemas.odds import (
    ODDS_MESSAGE,
    BetCancel,
    BetSettlement,
    RollbackBetCancel,
    RollbackBetSettlement,
)
from schemas.outbound import BET_DECISION, SETTLEMENT, ReasonCode
from schemas.records import SourcePosition
from sinks.base import SinkUnavailable
from sinks.postgres import ledger
from sinks.postgres.migrate import migrate
from sinks.postgres.sportsbook import BetBatch, BetInput, SportsbookSink

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
    return format(value.quantize(minor_unit(currency), context=MONEY_CONTEXT), "f")


def decode_settlement_message(payload: Any) -> SettlementMessage:
    msg = ODDS_MESSAGE.validate_json(json.dumps(payload))
    if not isinstance(msg, _SETTLEMENT_KINDS):
        error = f"market_messages holds a {msg.type} message"
        raise TypeError(error)
    return msg


# -- one bet -------------------------------------------------------------------------------


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
        key=lambda s: _seq_of(s.settlement_id),
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
        (t for t in txns if t.key != stake_key), key=lambda t: _seq_of(t.key)
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


def _seq_of(settlement_id: str) -> int:
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


# -- a time range --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Place:
    now: datetime
    inputs: list[BetInput]


@dataclass(frozen=True)
class _Apply:
    source: SourcePosition
    msg: SettlementMessage
    known: list[str]
    now: datetime


@dataclass(frozen=True)
class _Post:
    ops: list[ledger_ops.LedgerOp]


_Step = _Place | _Apply | _Post


@dataclass
class RangeReport:
    since: datetime | None
    until: datetime | None
    scratch_schema: str | None
    kept: bool
    players: list[str] = field(default_factory=list)
    bets_in_range: int = 0
    bets: int = 0
    messages: int = 0
    recorded_operations: int = 0
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return not self.differences

    def as_json(self) -> dict[str, Any]:
        return {
            "from": None if self.since is None else self.since.isoformat(),
            "to": None if self.until is None else self.until.isoformat(),
            "agree": self.agree,
            "players": self.players,
            "bets_in_range": self.bets_in_range,
            "bets_replayed": self.bets,
            "messages_replayed": self.messages,
            "recorded_operations": self.recorded_operations,
            "scratch_schema": self.scratch_schema if self.kept else None,
            "differences": [
                {"what": d.what, "field": d.field, "live": d.live, "replay": d.replay}
                for d in self.differences
            ],
            "notes": self.notes,
        }


Book = dict[str, dict[str, dict[str, Any]]]
_BET_FIELDS = ("status", "reason", "odds", "decision", "settlement_id", "result", "payout",
               "settle_seq")  # fmt: skip
_LEG_FIELDS = ("event_id", "market_id", "outcome_id", "odds", "result", "dead_heat_factor",
               "cancelled")  # fmt: skip
_SETTLEMENT_FIELDS = ("bet_id", "kind", "result", "payout", "message")
_TXN_FIELDS = ("operation", "status", "reason", "amount", "payout", "result", "cash_after",
               "pending_after")  # fmt: skip


def read_book(conn: psycopg.Connection[Any], players: list[str], bet_ids: list[str]) -> Book:
    """What a range replay compares, read from one schema (live or scratch)."""
    book: Book = {"bet": {}, "leg": {}, "settlement": {}, "ledger": {}, "balance": {}}
    for r in conn.execute(
        """SELECT bet_id, status, reason, odds, decision, settlement_id, result, payout,
                  settle_seq
             FROM bets WHERE bet_id = ANY(%s)""",
        (bet_ids,),
    ).fetchall():
        book["bet"][r[0]] = dict(zip(_BET_FIELDS, r[1:], strict=True))
    for r in conn.execute(
        """SELECT bet_id, leg, event_id, market_id, outcome_id, odds, result, dead_heat_factor,
                  cancelled
             FROM bet_legs WHERE bet_id = ANY(%s)""",
        (bet_ids,),
    ).fetchall():
        book["leg"][f"{r[0]} leg {r[1]}"] = dict(zip(_LEG_FIELDS, r[2:], strict=True))
    for r in conn.execute(
        """SELECT settlement_id, bet_id, kind, result, payout, message
             FROM settlements WHERE bet_id = ANY(%s)""",
        (bet_ids,),
    ).fetchall():
        book["settlement"][r[0]] = dict(zip(_SETTLEMENT_FIELDS, r[1:], strict=True))
    for r in conn.execute(
        """SELECT idempotency_key, operation, status, reason, amount, payout, result, cash_after,
                  pending_after
             FROM ledger_transactions WHERE player_id = ANY(%s)""",
        (players,),
    ).fetchall():
        book["ledger"][r[0]] = dict(zip(_TXN_FIELDS, r[1:], strict=True))
    for owner, currency, kind, balance in conn.execute(
        """SELECT owner, currency, kind, balance FROM ledger_accounts
            WHERE owner = ANY(%s)
              AND kind IN ('cash', 'pending', 'withdrawal_reserve', 'debt')""",
        (players,),
    ).fetchall():
        book["balance"].setdefault(f"{owner} {currency.strip()}", {})[kind] = balance
    return book


@dataclass
class _Inputs:
    players: list[str]
    in_range: set[str]
    steps: list[tuple[Anchor, _Step]]
    book: Book
    messages: int
    recorded: int
    unreconstructed: list[str]


def replay_range(
    dsn: str,
    schema: str,
    since: datetime | None,
    until: datetime | None,
    *,
    keep: bool = False,
    scratch: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> RangeReport:
    """Re-run the sportsbook for the players with a bet decided in ``[since, until)``;
    ``on_progress(done, total)`` after each replayed step."""
    scratch = scratch or f"replay_{uuid.uuid4().hex[:12]}"
    with connect(dsn, schema) as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        inputs = _load_range(conn, since, until)
    report = RangeReport(since, until, scratch, keep)
    if not inputs.players:
        report.kept = False
        report.notes.append("no bet was decided in the range")
        return report
    report.players = inputs.players
    report.bets_in_range = len(inputs.in_range)
    report.bets = len(inputs.book["bet"])
    report.messages = inputs.messages
    report.recorded_operations = inputs.recorded
    for key in inputs.unreconstructed:
        report.notes.append(f"ledger {key}: a refused request that cannot be rebuilt from its "
                            "row (its reference is gone); not re-posted, not compared")  # fmt: skip
    migrate(dsn, scratch)
    try:
        failures = asyncio.run(_rerun(dsn, scratch, order_steps(inputs.steps), on_progress))
        report.differences.extend(failures)
        with connect(dsn, scratch) as conn:
            replayed = read_book(conn, inputs.players, sorted(inputs.book["bet"]))
            books = ledger.Ledger(conn).reconcile()
        skip = set(inputs.unreconstructed)
        for part in ("bet", "leg", "settlement", "ledger", "balance"):
            live = {k: v for k, v in inputs.book[part].items() if k not in skip}
            again = {k: v for k, v in replayed[part].items() if k not in skip}
            report.differences.extend(diff_rows(part, live, again))
        if not books.ok:
            report.differences.append(Difference("scratch ledger", "reconcile", "-", "imbalance"))
    finally:
        if not keep:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(scratch)))  # fmt: skip
    return report


def _load_range(conn: psycopg.Connection[Any], since: datetime | None,
                until: datetime | None) -> _Inputs:  # fmt: skip
    window = {"since": since, "until": until}
    in_range = {
        r[0]: r[1]
        for r in conn.execute(
            """SELECT bet_id, player_id FROM bets
                WHERE (%(since)s::timestamptz IS NULL OR decided_at >= %(since)s)
                  AND (%(until)s::timestamptz IS NULL OR decided_at < %(until)s)""",
            window,
        ).fetchall()
    }
    players = sorted(set(in_range.values()))
    if not players:
        return _Inputs([], set(), [], {}, 0, 0, [])
    bet_rows = conn.execute(
        """SELECT bet_id, player_id, status, reason, odds, request, request_hash, decided_at,
                  source_topic, source_partition, source_offset
             FROM bets WHERE player_id = ANY(%s)
            ORDER BY decided_at, source_topic, source_partition, source_offset""",
        (players,),
    ).fetchall()
    bet_ids = [r[0] for r in bet_rows]
    book = read_book(conn, players, bet_ids)
    legs: dict[str, list[tuple[Any, ...]]] = {}
    for r in conn.execute(
        "SELECT bet_id, event_id, odds FROM bet_legs WHERE bet_id = ANY(%s) ORDER BY bet_id, leg",
        (bet_ids,),
    ).fetchall():
        legs.setdefault(r[0], []).append(r)
    txn_rows = conn.execute(
        """SELECT t.txn_id, t.idempotency_key, t.operation, t.player_id, t.currency, t.amount,
                  t.payout, t.result, r.idempotency_key, t.request_hash, t.occurred_at,
                  t.recorded_at
             FROM ledger_transactions t
             LEFT JOIN ledger_transactions r ON r.txn_id = t.reference_id
            WHERE t.player_id = ANY(%s) ORDER BY t.txn_id""",
        (players,),
    ).fetchall()
    rerun = set(bet_ids)
    stakes = {bet: (r[0], r[11]) for r in txn_rows
              if (bet := ledger_keys.business_id(r[1], "bet") or "") in rerun}  # fmt: skip

    steps: list[tuple[Anchor, _Step]] = []
    # Placements, one per live batch (a batch's bets share their decided_at).
    batches: dict[datetime, list[tuple[Any, ...]]] = {}
    for r in bet_rows:
        batches.setdefault(r[7], []).append(r)
    for n, (decided_at, rows) in enumerate(batches.items()):
        inputs = [_bet_input(r, legs.get(r[0], []), r[0] in stakes) for r in rows]
        posted = [stakes[r[0]] for r in rows if r[0] in stakes]
        first = min(posted) if posted else None
        anchor = Anchor(first[0] if first else None, first[1] if first else decided_at, n)
        steps.append((anchor, _Place(decided_at.astimezone(UTC), inputs)))

    # Every settlement-kind message of the bets' events.
    events = sorted({r[1] for rows in legs.values() for r in rows})
    message_rows = conn.execute(
        """SELECT source_topic, source_partition, source_offset, event_id, payload, changed,
                  recorded_at
             FROM market_messages WHERE event_id = ANY(%s)""",
        (events,),
    ).fetchall()
    positions = [(r[0], r[1], r[2]) for r in message_rows]
    posted_by: dict[tuple[str, int, int], list[tuple[str, str]]] = {}
    for r in conn.execute(
        """SELECT s.source_topic, s.source_partition, s.source_offset, s.settlement_id, s.message
             FROM settlements s
             JOIN unnest(%s::text[], %s::int[], %s::bigint[]) AS p(t, n, o)
               ON s.source_topic = p.t AND s.source_partition = p.n AND s.source_offset = p.o""",
        ([p[0] for p in positions], [p[1] for p in positions], [p[2] for p in positions]),
    ).fetchall():
        posted_by.setdefault((r[0], r[1], r[2]), []).append((r[3], r[4]))
    keys = [ledger_keys.settlement(sid) for rows in posted_by.values() for sid, _ in rows]
    txn_of = {
        k: (t, at)
        for k, t, at in conn.execute(
            """SELECT idempotency_key, txn_id, recorded_at FROM ledger_transactions
                WHERE idempotency_key = ANY(%s)""",
            (keys,),
        ).fetchall()
    }
    for n, r in enumerate(message_rows):
        position = (r[0], r[1], r[2])
        published = posted_by.get(position, [])
        posted = [txn_of[ledger_keys.settlement(sid)] for sid, _ in published
                  if ledger_keys.settlement(sid) in txn_of]  # fmt: skip
        first = min(posted) if posted else None
        now = SETTLEMENT.validate_json(published[0][1]).settled_at if published else r[6]
        source = SourcePosition(topic=r[0], partition=r[1], offset=r[2])
        msg = decode_settlement_message(r[4])
        step = _Apply(source, msg, sorted(r[5]), now.astimezone(UTC))
        steps.append((Anchor(first[0] if first else None, r[6], len(batches) + n), step))

    # Everything else the players' ledger holds, re-posted as recorded.
    recorded = 0
    unreconstructed: list[str] = []
    for r in txn_rows:
        if _rerun_key(r[1], rerun):
            continue
        op = _recorded_op(r)
        if op is None:
            unreconstructed.append(r[1])
            continue
        recorded += 1
        steps.append((Anchor(r[0], r[11]), _Post([op])))
    return _Inputs(players, set(in_range), steps, book, len(message_rows), recorded,
                   unreconstructed)  # fmt: skip


def _bet_input(row: tuple[Any, ...], legs: Sequence[tuple[Any, ...]], staked: bool) -> BetInput:
    bet = BET_REQUEST.validate_json(json.dumps(row[5]))
    verdict: Priced | Refused
    if row[2] != "rejected":  # accepted at its recorded leg prices
        prices = tuple(leg[2] for leg in legs)
        verdict = Priced(prices, price_text(_product(prices)))
    elif staked:  # the ledger refused it: let the ledger decide again
        prices = tuple(s.odds for s in bet.selections)
        verdict = Priced(prices, price_text(_product(prices)))
    else:  # refused before the ledger (odds table, compliance, fence): as recorded
        verdict = Refused(ReasonCode(row[3]), "as recorded")
    source = SourcePosition(topic=row[8], partition=row[9], offset=row[10])
    return BetInput(source, bet, row[6], verdict)


def _product(values: Iterable[Decimal]) -> Decimal:
    total = Decimal(1)
    for v in values:
        total *= v
    return total


def _rerun_key(key: str, rerun: set[str]) -> bool:
    """A key the re-run posts itself: a re-run bet's stake or one of its settlements."""
    stake = ledger_keys.business_id(key, "bet")
    if stake is not None:
        return stake in rerun
    step = ledger_keys.business_id(key, "settlement")
    if step is not None:
        bet_id, _, n = step.rpartition("/")
        return n.isdigit() and bet_id in rerun
    return False


def _recorded_op(r: tuple[Any, ...]) -> ledger_ops.LedgerOp | None:
    """The request a ledger row answered, rebuilt (checked against its request hash)."""
    _, key, operation, player, currency, amount, payout, result, reference, hashed, at, _ = r
    from_reference = operation in ledger_ops.FROM_REFERENCE or operation == "settle"
    try:
        op = ledger_ops.LedgerOp(
            key, operation, player, currency.strip(), at,
            amount=Decimal(0) if from_reference else amount,
            reference=reference,
            payout=payout if operation == "settle" else None,
            result=result,
        )  # fmt: skip
    except ledger_ops.InvalidOperation:
        return None
    return op if op.request_hash == hashed else None


async def _rerun(
    dsn: str, scratch: str, steps: list[_Step], on_progress: Callable[[int, int], None] | None
) -> list[Difference]:
    """Run the steps in order against the scratch schema; a step that fails is reported."""
    ordered = _merge_posts(steps)
    failures: list[Difference] = []
    sink = SportsbookSink(dsn, scratch, consumer_group="croupier-replay", max_connections=1)
    await sink.open()
    try:
        for done, step in enumerate(ordered, 1):
            try:
                await _run_step(sink, step)
            except SinkUnavailable:
                raise
            except (RuntimeError, ValueError, psycopg.Error) as exc:
                failures.append(Difference("step", _describe(step), "ran", f"failed: {exc}"))
            if on_progress is not None:
                on_progress(done, len(ordered))
    finally:
        await sink.close()
    return failures


async def _run_step(sink: SportsbookSink, step: _Step) -> None:
    if isinstance(step, _Place):
        await sink.decide(BetBatch(inputs=step.inputs), step.now)
    elif isinstance(step, _Apply):
        await sink.apply_market_message(step.source, step.msg, step.known, step.now)
    else:
        async with sink.transaction() as conn:
            await ledger.post_on(conn, step.ops)


def _merge_posts(steps: list[_Step]) -> list[_Step]:
    """Consecutive recorded operations go in one posting, as a live batch would."""
    out: list[_Step] = []
    for step in steps:
        last = out[-1] if out else None
        if isinstance(step, _Post) and isinstance(last, _Post):
            out[-1] = _Post([*last.ops, *step.ops])
        else:
            out.append(step)
    return out


def _describe(step: _Step) -> str:
    if isinstance(step, _Place):
        return "placing " + ", ".join(i.bet.bet_id for i in step.inputs)
    if isinstance(step, _Apply):
        s = step.source
        return f"{step.msg.type} of {step.msg.event_id} ({s.topic}/{s.partition}@{s.offset})"
    return "posting " + ", ".join(op.key for op in step.ops)


def order_steps(steps: list[tuple[Anchor, _Step]]) -> list[_Step]:
    """The steps in their live order (``rules.replay.schedule``)."""
    return [s for _, s in schedule(steps, lambda pair: pair[0])]
