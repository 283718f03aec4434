"""The sportsbook's PostgreSQL side: placing bets and settling markets, one transaction each.

Placing a batch of bets (``decide``) is one transaction: the bets' markets are fenced,
stakes are reserved in the ledger (key ``bet:<bet_id>``), and every decision is stored
with the exact JSON that is then published. A bet id seen before is never decided again:
a replay of the same Kafka position gets the stored decision back (to publish again, byte
for byte), a producer's retry at a new position is recorded as a duplicate and answered
with the first decision again, byte for byte, and the same id with other content is a
dead letter (``duplicate_conflict``).

Settling (``apply_market_message``) is one transaction per settlement, cancel or rollback
message: the market's state moves (in feed-time order; a repeat or an older message
changes nothing), its legs take their results, and every bet whose outcome changes is
unsettled and/or settled in the ledger (key ``settlement:<bet_id>/<n>``, n counting the
bet's settlements and rollbacks, so each settlement version of a bet posts once). A
rollback is never refused for want of cash: what the player no longer holds becomes their
debt (``rules/ledger.py``), so every bet ends at the feed's latest result, in order.

The fence. A bet accepted against the odds table could race a settlement of its market
processed by another flow. Each placement takes a shared advisory lock per market and
refuses markets PostgreSQL already knows as settled or cancelled; a settlement takes the
same locks exclusively, in the same (sorted) order. Either the settlement sees the bet's
legs, or the bet sees the settled market: no bet is left open on a settled market.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from rules import ledger as ledger_ops
from rules import markets
from rules.limits import earliest_start
from rules.policy import LiabilityLimits, Policies
from rules.sportsbook import Leg, Priced, Refused, accept_bet, ledger_refusal
from schemas.bets import BetRequest
from schemas.odds import BetCancel, BetSettlement, RollbackBetCancel, RollbackBetSettlement
from schemas.outbound import BetDecision, Settlement
from schemas.records import AuditRecord, SourcePosition
from sinks.base import Batch, Output, Stored
from sinks.chain import chain_at
from sinks.postgres import audit, ledger
from sinks.postgres.common import conflict_letter, jsonb, retrying
from sinks.postgres.protection import guard_kinds, guarded_from
from sinks.postgres.sink import PgSink

log = logging.getLogger(__name__)

SettlementMessage = BetSettlement | BetCancel | RollbackBetSettlement | RollbackBetCancel

_LOCK_SQL = """SELECT count(pg_advisory_xact_lock{shared}(hashtextextended(e || chr(31) || m, 0)))
                 FROM unnest(%s::text[], %s::text[]) AS t(e, m)"""

# A placement's reads and locks in one statement (migration 0029): the bets already
# stored, the markets' fence and which are closed, player protection's reads and locks,
# the audit chains' heads locked, and the batch's progress written.
_LOAD_SQL = """SELECT bets_load(%s::text[], %s::text[], %s::text[], %s::text[], %s::jsonb[],
                                %s::jsonb[], %s::timestamptz, %s::text[], %s::text,
                                %s::text[], %s::int[], %s::bigint[])::text"""
# The batch's decisions in one call (migration 0021: the application has no INSERT on
# them): bets, legs and producers' retries, each a jsonb array of positional rows. Unlike
# COPY, a statement travels in the transaction's pipeline, and jsonb is parsed once: each
# bet's request goes inside it as JSON (``orjson.Fragment``), not as a string to parse
# again (migration 0022).
_RECORD_SQL = "SELECT bets_record(%s::jsonb, %s::jsonb, %s::jsonb)"


@dataclass(frozen=True)
class BetInput:
    """A decoded bet and the rules' verdict against the odds table and the player."""

    source: SourcePosition
    bet: BetRequest
    request_hash: str
    verdict: Priced | Refused
    key: bytes | None = None  # the original message, for a dead letter
    value: bytes = b""
    request_json: str | None = None  # ``bet.model_dump_json()``, when the caller has it


BetBatch = Batch[BetInput]


@dataclass
class MarketOutcome:
    """What a settlement-kind message did: table statuses to set, settlements to publish."""

    changed: dict[str, str] = field(default_factory=dict)
    settlements: list[Output] = field(default_factory=list)


def _sorted_markets(pairs: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    ordered = sorted(set(pairs))
    return [e for e, _ in ordered], [m for _, m in ordered]


async def _lock_markets(conn: Any, pairs: Sequence[tuple[str, str]], *, shared: bool) -> None:
    if pairs:
        sql = _LOCK_SQL.format(shared="_shared" if shared else "")
        await conn.execute(sql, _sorted_markets(pairs))


class SportsbookSink(PgSink):
    """Bets, settlements and their ledger postings.

    With ``policies``, every placement asks player protection in its transaction
    (``sinks/postgres/protection.py``); without (the replay's scratch runs), the verdicts
    it is given stand as recorded.
    """

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        consumer_group: str,
        policies: Policies | None = None,
        max_connections: int = 4,
    ) -> None:
        super().__init__(
            dsn, schema, consumer_group=consumer_group, max_connections=max_connections
        )
        self.policies = policies

    # -- placing -------------------------------------------------------------------------

    async def decide(self, batch: BetBatch, now: datetime) -> Stored:
        """Decide and store a batch of bets in one transaction; what to publish."""

        async def attempt() -> Stored:
            # One pipeline for the whole transaction: three round trips (the loads, the
            # stakes, then every write with the COMMIT), whatever the batch holds.
            async with self.connection() as conn, conn.pipeline(), conn.transaction():
                return await self._place(conn, batch, now)

        placed: Stored = await retrying(attempt)
        return placed

    async def _place(self, conn: Any, batch: BetBatch, now: datetime) -> Stored:
        """The placement transaction, on a connection in pipeline mode: load and lock (one
        statement, sent with the BEGIN), decide (``rules.sportsbook.accept_bet``), post the
        stakes (one statement), write (statements queued, sent with the COMMIT).

        1. ``bets_load`` (migration 0029): the batch's bet ids already stored; a shared
           advisory lock per market of every priced bet (sorted, the fence); which of
           those markets PostgreSQL holds as settled or cancelled; player protection's
           reads and locks (``guard``'s, in its order); the audit chains' heads,
           locked; and the batch's progress (it commits with the rest or not at all).
        2. Known ids are answered from what is stored (replay, duplicate, conflict); every
           fresh bet gets its final verdict in ``accept_bet``, and what goes ahead counts
           against the player's later bets in the batch.
        3. ``ledger_post`` takes the accepted stakes; a refused stake refuses its bet
           (``ledger_refusal``). The stakes' audit records need no second query.
        4. Insert the bets and their legs; append the audit records (the stakes', then
           every decision's) to the locked chains; dead letters and producers' retries,
           when there are any. Nothing waits here: the caller's COMMIT sends them.
        """
        out = Stored(dead_letters=list(batch.dead_letters))
        inputs = batch.inputs
        pairs = [(s.event_id, s.market_id) for i in inputs if isinstance(i.verdict, Priced)
                 for s in i.bet.selections]  # fmt: skip
        # The reads and locks in one statement (migration 0029), sent with the BEGIN.
        players = sorted({i.bet.player_id for i in inputs}) if self.policies is not None else []
        events, market_ids = _sorted_markets(pairs)
        money, session = guard_kinds()
        progress = sorted(batch.progress.items())  # one lock order for every writer
        chains = sorted({chain_at(i.source) for i in inputs})
        cursor = await conn.execute(_LOAD_SQL, (
            sorted({i.bet.bet_id for i in inputs}), events, market_ids, players, money, session,
            earliest_start(now), chains,
            self.consumer_group, [t for (t, _), _ in progress], [p for (_, p), _ in progress],
            [o for _, o in progress]))  # fmt: skip
        loaded = await cursor.fetchone()
        known_rows, closed_rows, every, locked, activity, sessions, head_rows = orjson.loads(
            loaded[0]
        )
        known: dict[str, tuple[str, SourcePosition, str | None, str]] = {
            row[0]: (row[1], SourcePosition(topic=row[2], partition=row[3], offset=row[4]),
                     row[5], row[6])
            for row in known_rows
        }  # fmt: skip
        closed: set[tuple[str, str]] = {(e, m) for e, m in closed_rows}
        guarded = None
        if self.policies is not None:  # player protection, read in this transaction
            guarded = guarded_from(self.policies, now, every, locked, activity, sessions)
        heads = audit.Heads(
            frozenset(chains),
            heads={c: (int(seq), bytes.fromhex(h)) for c, seq, h in head_rows},
        )

        fresh: list[BetInput] = []
        duplicates: list[tuple[SourcePosition, str]] = []
        again: list[tuple[str, str, str | None]] = []  # (bet id, player, stored decision)
        for item in inputs:
            bet = item.bet
            prev = known.get(bet.bet_id)
            if prev is None:
                known[bet.bet_id] = (item.request_hash, item.source, None, bet.player_id)
                fresh.append(item)
                continue
            prev_hash, prev_source, prev_decision, player = prev
            if prev_hash != item.request_hash:
                error = f"bet_id {bet.bet_id} was decided before for a different bet"
                out.dead_letters.append(
                    (item.key, conflict_letter(item.source, item.key, item.value, error))
                )
            elif prev_source == item.source:
                if prev_decision is not None:  # a replay: publish the stored decision again
                    out.outputs.append((player.encode(), prev_decision.encode()))
            else:  # a producer's retry: the first answer again, stored or decided now
                duplicates.append((item.source, bet.bet_id))
                again.append((bet.bet_id, player, prev_decision))

        verdicts: dict[str, Priced | Refused] = {}
        ops, sources, staked = [], [], []
        liability: dict[str | None, LiabilityLimits] = {}  # per jurisdiction, made once
        for item in fresh:
            b = item.bet
            blocked, limits = None, None
            if guarded is not None:
                blocked = guarded.check(
                    b.player_id, action="bet", currency=b.currency, amount=b.stake, at=now
                )
                where = guarded.jurisdiction(b.player_id)
                limits = liability.get(where)
                if limits is None:
                    limits = liability[where] = guarded.policies.liability(where)
            verdict = accept_bet(b, item.verdict, blocked=blocked, limits=limits, closed=closed)
            verdicts[b.bet_id] = verdict
            if isinstance(verdict, Priced):
                if guarded is not None:
                    guarded.count(b.player_id, action="bet", amount=b.stake, at=now)
                ops.append(ledger_ops.stake(b.bet_id, b.player_id, b.stake, b.currency, now))
                sources.append(item.source)
                staked.append(b.bet_id)
        trail: list[AuditRecord] = []  # the stakes' records, then every decision's
        posted = await ledger.post_on(conn, ops, sources, into=trail)
        for bet_id, result in zip(staked, posted, strict=True):
            refused = ledger_refusal(result.status, result.reason)
            if refused is not None:
                verdicts[bet_id] = refused

        bet_rows: list[tuple[object, ...]] = []
        leg_rows: list[tuple[object, ...]] = []
        stamp = now.isoformat()
        first: dict[str, str] = {}  # bet id -> the decision made in this batch
        for item in fresh:
            b = item.bet
            verdict = verdicts[b.bet_id]
            accepted = isinstance(verdict, Priced)
            decided = BetDecision(
                bet_id=b.bet_id,
                player_id=b.player_id,
                status="accepted" if accepted else "rejected",
                reason=None if isinstance(verdict, Priced) else verdict.reason,
                odds=verdict.odds if isinstance(verdict, Priced) else None,
                decided_at=now,
            )
            decision = decided.model_dump_json()
            out.outputs.append((b.player_id.encode(), decision.encode()))
            first[b.bet_id] = decision
            src = item.source
            version = guarded.version(b.player_id) if guarded is not None else None
            trail.append(AuditRecord(
                entity="bet", entity_id=b.bet_id,
                action=f"bet.{'accepted' if accepted else 'rejected'}", source=src,
                occurred_at=b.placed_at, recorded_at=now, before=None,
                after={**decided.model_dump(mode="json"), "stake": str(b.stake),
                       "currency": b.currency,
                       "selections": [s.model_dump(mode="json") for s in b.selections],
                       "standing_version": version},
            ))  # fmt: skip
            bet_rows.append((
                b.bet_id, b.player_id, b.currency, str(b.stake),
                str(verdict.odds) if isinstance(verdict, Priced) else None, b.placed_at.isoformat(),
                "open" if accepted else "rejected",
                None if isinstance(verdict, Priced) else verdict.reason.value,
                item.request_hash, orjson.Fragment(item.request_json or b.model_dump_json()),
                decision, stamp,
                src.topic, src.partition, src.offset, version,
            ))  # fmt: skip
            if isinstance(verdict, Priced):
                # A leg's placed_at is when the house took the bet (the decision time), not
                # the player's claim: a time-windowed bet_cancel voids by it.
                for n, (sel, price) in enumerate(zip(b.selections, verdict.leg_odds, strict=True)):
                    leg_rows.append((b.bet_id, n, sel.event_id, sel.market_id, sel.outcome_id,
                                     str(price), stamp))  # fmt: skip
        for bet_id, player, stored in again:
            answer = stored if stored is not None else first.get(bet_id)
            if answer is not None:
                out.outputs.append((player.encode(), answer.encode()))
        dups = [(s.topic, s.partition, s.offset, bet_id) for s, bet_id in duplicates]
        if bet_rows or dups:
            await conn.execute(_RECORD_SQL, (jsonb(bet_rows), jsonb(leg_rows), jsonb(dups)))
        await audit.append(conn, trail, heads=heads)
        await audit.store_dead_letters(conn, [d for _, d in out.dead_letters])
        return out

    # -- settling ------------------------------------------------------------------------

    async def apply_market_message(
        self,
        source: SourcePosition,
        msg: SettlementMessage,
        known_markets: Sequence[str],
        now: datetime,
    ) -> MarketOutcome:
        """Apply one settlement, cancel or rollback message; idempotent by its position."""

        async def attempt() -> MarketOutcome:
            async with self.transaction() as conn:
                return await self._apply(conn, source, msg, known_markets, now)

        outcome: MarketOutcome = await retrying(attempt)
        return outcome

    async def _apply(
        self,
        conn: Any,
        source: SourcePosition,
        msg: SettlementMessage,
        known_markets: Sequence[str],
        now: datetime,
    ) -> MarketOutcome:
        """The message's one transaction: a replay publishes what the first run stored;
        else lock the targets (exclusively, sorted), load their states, write what
        ``markets.apply_message`` changes (states, legs), resettle the legs' bets and
        record the message with the statuses it changed."""
        pos = (source.topic, source.partition, source.offset)
        cursor = await conn.execute(
            """SELECT changed FROM market_messages
                WHERE source_topic = %s AND source_partition = %s AND source_offset = %s""",
            pos,
        )
        row = await cursor.fetchone()
        if row is not None:  # a replay: publish what the first run stored
            cursor = await conn.execute(
                """SELECT player_id, message FROM settlements
                    WHERE source_topic = %s AND source_partition = %s AND source_offset = %s
                    ORDER BY settlement_id""",
                pos,
            )
            return MarketOutcome(
                changed=dict(row[0]),
                settlements=[(p.encode(), m.encode()) for p, m in await cursor.fetchall()],
            )
        event = msg.event_id
        known: list[str] = []
        if markets.named_markets(msg) is None:  # every market of the event known anywhere
            cursor = await conn.execute(
                """SELECT market_id FROM bet_legs WHERE event_id = %s
                   UNION SELECT market_id FROM market_states WHERE event_id = %s""",
                (event, event),
            )
            known = [r[0] for r in await cursor.fetchall()] + list(known_markets)
        targets = markets.targets(msg, known)
        await _lock_markets(conn, [(event, m) for m in targets], shared=False)
        cursor = await conn.execute(
            """SELECT market_id, results, cancelled, generation, last_at, last_type
                 FROM market_states WHERE event_id = %s AND market_id = ANY(%s)""",
            (event, targets),
        )
        states = {
            market_id: markets.MarketState(
                None if results is None else markets.results_from_json(results),
                cancelled, generation, last_at, last_type,
            )
            for market_id, results, cancelled, generation, last_at, last_type
            in await cursor.fetchall()
        }  # fmt: skip
        changes = markets.apply_message(msg, states, targets)
        outcome = MarketOutcome(changed=dict(markets.statuses(changes)))
        touched: set[str] = set()
        for change in changes:
            touched.update(await _update_legs(conn, event, change))
        if changes:
            async with conn.cursor() as cur:
                await cur.executemany(
                    """INSERT INTO market_states (event_id, market_id, results, cancelled,
                                                  generation, last_at, last_type)
                       VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s)
                       ON CONFLICT (event_id, market_id) DO UPDATE SET
                           results = EXCLUDED.results, cancelled = EXCLUDED.cancelled,
                           generation = EXCLUDED.generation, last_at = EXCLUDED.last_at,
                           last_type = EXCLUDED.last_type""",
                    [
                        (event, c.market_id,
                         None if c.state.results is None else markets.results_json(c.state.results),
                         c.state.cancelled, c.state.generation, c.state.last_at, c.state.last_type)
                        for c in changes
                    ],
                )  # fmt: skip
        await self._resettle(conn, sorted(touched), source, now, outcome)
        await conn.execute(
            "SELECT market_message_record(%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)",
            (*pos, event, msg.type, msg.model_dump_json(), jsonb(outcome.changed)),
        )
        return outcome

    async def _resettle(
        self,
        conn: Any,
        bet_ids: list[str],
        source: SourcePosition,
        now: datetime,
        outcome: MarketOutcome,
    ) -> None:
        """Bring each bet's ledger settlement in line with its legs' results: load and lock
        the bets and their legs, post each ``markets.plan_bet`` plan (every rollback first,
        then every settlement), store the bets and the settlements published."""
        if not bet_ids:
            return
        cursor = await conn.execute(
            """SELECT bet_id, player_id, currency, stake, settlement_id, result, payout,
                      settle_seq FROM bets_lock(%s)""",
            (bet_ids,),
        )
        bets = [
            markets.BookedBet(bet_id, player, currency.strip(), stake, current, result, payout, seq)
            for bet_id, player, currency, stake, current, result, payout, seq
            in await cursor.fetchall()
        ]  # fmt: skip
        cursor = await conn.execute(
            """SELECT bet_id, odds, CASE WHEN cancelled THEN 'void' ELSE result END,
                      CASE WHEN cancelled THEN NULL ELSE dead_heat_factor END
                 FROM bet_legs WHERE bet_id = ANY(%s) ORDER BY bet_id, leg""",
            (bet_ids,),
        )
        legs: dict[str, list[Leg]] = {}
        for bet_id, odds, result, dhf in await cursor.fetchall():
            legs.setdefault(bet_id, []).append(Leg(odds, result, dhf))

        plans: dict[str, markets.BetPlan] = {}  # by bet id, in bet id order
        for bet in bets:
            plan = markets.plan_bet(bet, legs.get(bet.bet_id, []))
            if plan is not None:
                plans[bet.bet_id] = plan
        published: list[Settlement] = []

        # Rollbacks first. The ledger never refuses one for want of cash: a payout the
        # player no longer holds becomes their debt (migration 0014), so every bet moves to
        # the feed's latest result.
        undo = [p for p in plans.values() if p.rolls_back]
        for plan in await _post_steps(conn, undo, _unsettle_op(now), source):
            plans[plan.bet_id], message = plan.rolled_back(now)
            published.append(message)
        settle = [p for p in plans.values() if p.want is not None]
        for plan in await _post_steps(conn, settle, _settle_op(now), source):
            plans[plan.bet_id], message = plan.settled(now)
            published.append(message)
        texts = [s.model_dump_json() for s in published]  # published and stored, byte for byte
        outcome.settlements += [
            (s.player_id.encode(), text.encode()) for s, text in zip(published, texts, strict=True)
        ]
        await conn.execute(
            "SELECT bets_settle(%s::jsonb, %s::jsonb)",
            (jsonb([(p.bet_id, *p.row()) for p in plans.values()]),
             jsonb([(s.settlement_id, s.bet_id, s.player_id, s.kind, s.result,
                          str(s.payout), text, source.topic, source.partition, source.offset)
                         for s, text in zip(published, texts, strict=True)])),
        )  # fmt: skip


async def _update_legs(conn: Any, event: str, change: markets.MarketChange) -> list[str]:
    """Apply a market change to its legs (``markets.update_leg`` in SQL); the bets of the
    legs it touched."""
    match change.legs:
        case markets.SetResults(results):
            cursor = await conn.execute(
                "SELECT legs_set_results(%s, %s, %s::jsonb)",
                (event, change.market_id, markets.results_json(results)),
            )
        case markets.ClearResults():
            cursor = await conn.execute(
                "SELECT legs_clear_results(%s, %s)", (event, change.market_id)
            )
        case markets.SetCancelled(cancelled, start, end):
            cursor = await conn.execute(
                "SELECT legs_set_cancelled(%s, %s, %s, %s, %s)",
                (event, change.market_id, cancelled, start, end),
            )
    return [r[0] for r in await cursor.fetchall()]


class SettlementRefused(RuntimeError):
    """The ledger refused a settlement step the book needs: a bug (the book and the ledger
    disagree), never a balance. It fails the transaction, so the refusal is not stored and
    its key stays free for the correct retry."""


# Each call builds one plan's next settlement step (``settlement:<plan.next_id()>``).
StepOp = Callable[[markets.BetPlan], ledger_ops.LedgerOp]


def _unsettle_op(now: datetime) -> StepOp:
    def build(p: markets.BetPlan) -> ledger_ops.LedgerOp:
        if p.current_id is None:
            msg = f"bet {p.bet_id} has no settlement to roll back"
            raise SettlementRefused(msg)
        return ledger_ops.unsettle(p.next_id(), p.current_id, p.player_id, p.currency, now)

    return build


def _settle_op(now: datetime) -> StepOp:
    def build(p: markets.BetPlan) -> ledger_ops.LedgerOp:
        if p.want is None:
            msg = f"bet {p.bet_id} has no outcome to settle"
            raise SettlementRefused(msg)
        return ledger_ops.settle(
            p.next_id(), p.bet_id, p.player_id, p.currency, p.want.payout, p.want.result, now
        )

    return build


# How many refused keys of an older version one step may skip (one per bet at most: the
# older version retried the same key, so it stored one refusal).
_STALE_KEYS = 3


async def _post_steps(
    conn: Any, plans: list[markets.BetPlan], build: StepOp, source: SourcePosition
) -> list[markets.BetPlan]:
    """Post each plan's next settlement step; every one must apply. The plans, with the
    numbers they skipped, ready to take the step.

    A key is never reused after a refusal: a refusal fails the transaction (nothing is
    stored), and a refusal an older version stored under a step's key (before the debt
    account, a rollback was refused when the player had spent the payout) is skipped: that
    settlement number stays burnt and the step takes the next one.
    """
    plans = list(plans)
    results = await ledger.post_on(conn, [build(p) for p in plans], [source] * len(plans))
    for _ in range(_STALE_KEYS):
        stale = [i for i, r in enumerate(results) if r.duplicate and not r.applied]
        if not stale:
            break
        for i in stale:
            log.warning("settlement key %s holds an earlier refusal (%s); using the next",
                        results[i].key, results[i].reason)  # fmt: skip
            plans[i] = plans[i].skip()
        again = await ledger.post_on(conn, [build(plans[i]) for i in stale], [source] * len(stale))
        for i, r in zip(stale, again, strict=True):
            results[i] = r
    for plan, result in zip(plans, results, strict=True):
        if not result.applied:
            msg = f"{result.key} of bet {plan.bet_id} refused by the ledger: {result.reason}"
            raise SettlementRefused(msg)
    return plans
