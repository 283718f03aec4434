"""A time range of the sportsbook re-run into a scratch schema and compared with the live
tables (``croupier replay --from T1 --to T2``).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from rules import ledger as ledger_ops
from rules import ledger_keys
from rules.decimals import product
from rules.replay import (
    Anchor,
    Difference,
    SettlementMessage,
    diff_rows,
    schedule,
)
from rules.sportsbook import Priced, Refused, price_text
from schemas.bets import BET_REQUEST
from schemas.outbound import SETTLEMENT, ReasonCode
from schemas.records import SourcePosition
from sinks.base import SinkUnavailable
from sinks.postgres import ledger
from sinks.postgres.migrate import migrate
from sinks.postgres.replay.common import connect, decode_settlement_message
from sinks.postgres.sportsbook import BetBatch, BetInput, SportsbookSink


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
# Each section of a book: its table, its key (SQL), its fields, and the ids that select
# its rows (the bets' or the players').
_SECTIONS = (
    ("bet", "bets", "bet_id", _BET_FIELDS, "bet_id"),
    ("leg", "bet_legs", "bet_id || ' leg ' || leg", _LEG_FIELDS, "bet_id"),
    ("settlement", "settlements", "settlement_id", _SETTLEMENT_FIELDS, "bet_id"),
    ("ledger", "ledger_transactions", "idempotency_key", _TXN_FIELDS, "player_id"),
)


def read_book(conn: psycopg.Connection[Any], players: list[str], bet_ids: list[str]) -> Book:
    """What a range replay compares, read from one schema (live or scratch)."""
    book: Book = {"bet": {}, "leg": {}, "settlement": {}, "ledger": {}, "balance": {}}
    for section, table, key, fields, by in _SECTIONS:
        ids = bet_ids if by == "bet_id" else players
        query = f"SELECT {key}, {', '.join(fields)} FROM {table} WHERE {by} = ANY(%s)"  # noqa: S608 - constants
        for r in conn.execute(query.encode(), (ids,)).fetchall():
            book[section][r[0]] = dict(zip(fields, r[1:], strict=True))
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
        verdict = Priced(prices, price_text(product(prices)))
    elif staked:  # the ledger refused it: let the ledger decide again
        prices = tuple(s.odds for s in bet.selections)
        verdict = Priced(prices, price_text(product(prices)))
    else:  # refused before the ledger (odds table, compliance, fence): as recorded
        verdict = Refused(ReasonCode(row[3]), "as recorded")
    source = SourcePosition(topic=row[8], partition=row[9], offset=row[10])
    return BetInput(source, bet, row[6], verdict)


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
