"""The casino flow's PostgreSQL side: the seamless wallet's calls, one transaction a batch.

The rules are ``rules/casino.py``; this module gives them the state they need and writes
what they decided, all inside one transaction, in a few round trips whatever the batch's
size (no statement per call):

1. One round trip: what the batch's positions answered before (a replay after a crash:
   published again, byte for byte, not decided again) and, by ``guard``, the players'
   standings for player protection (locking those with money limits and reading what
   their limits count: a round trip or two more, for batches that have such players).
   The certification of each debit's game is asked of the game registry for the
   player's jurisdiction on the day of the call.
2. One round trip: the batch's cash accounts are locked (``FOR NO KEY UPDATE``, in player
   order, as the ledger itself locks them), so the balances the rules track are the
   ledger's and no other product can move them before this transaction commits; then,
   under that lock, the transactions, rollbacks and rounds the batch names are read.
3. The calls are decided in arrival order, in Python.
4. One round trip: the money moved by one ``ledger_post`` and the batch's progress
   (``consumer_progress``). The ledger's results must be what the rules foresaw; a
   difference is a bug and fails the batch (nothing is committed).
5. Sent with the COMMIT, in one ``casino_record`` call (migration 0021: the application
   writes no decision itself, and the function refuses a transaction that says it moved
   money the ledger did not move): the rounds opened, credited and closed, every
   transaction id's first answer (``casino_transactions``, append-only), every call's
   answer by position (``casino_calls``); and every decided call's audit record (the balance before
   and after, what moved, the RNG build) in its partition's hash chain
   (``sinks/postgres/audit.py``), after the ledger's own. A retry, a conflict or a
   ``retry_later`` (an answer that does not stick: a credit before its debit) changes
   nothing and records none.

The whole transaction runs on a connection in pipeline mode: four round trips in all.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from pydantic import AwareDatetime, TypeAdapter

from rules import ledger as ledger_ops
from rules import ledger_keys
from rules.casino import KnownTx, Round, Verdict, Wallet
from rules.games import Catalogue
from rules.policy import Policies
from schemas.base import request_hash as base_request_hash
from schemas.casino import CasinoCall, Debit, Rollback
from schemas.money import to_minor_unit
from schemas.outbound import ReasonCode
from schemas.records import AuditRecord, SourcePosition
from sinks.base import Batch, Stored
from sinks.postgres import audit, ledger
from sinks.postgres.common import jsonb, retrying, write_progress
from sinks.postgres.protection import Guarded, guard
from sinks.postgres.sink import PgSink


def request_hash(call: CasinoCall) -> str:
    """What a call asks for. The timestamp is left out: an aggregator's retry may restamp
    the same call, and it is still the same call."""
    return base_request_hash(call, exclude={"timestamp"})


@dataclass(frozen=True)
class CasinoInput:
    source: SourcePosition
    call: CasinoCall
    key: bytes | None = None
    value: bytes = b""

    @functools.cached_property
    def request_hash(self) -> str:  # hashed once, though three places ask
        return request_hash(self.call)


CasinoBatch = Batch[CasinoInput]


# A fresh call decided: what it was, the verdict, the answer (its JSON).
Decided = tuple[CasinoInput, Verdict, str]


class LedgerDisagrees(RuntimeError):
    """The ledger refused a move the casino rules had counted on: a bug, never retried."""


# ``FOR NO KEY UPDATE`` on the cash accounts, by the ledger's owner (migration 0018): the
# application has no UPDATE right on the ledger to lock them itself.
_BALANCES_SQL = "SELECT owner, currency, balance FROM ledger_lock_cash(%s)"

# A batch's positions are a few runs of offsets per partition: asked as ranges (a handful
# of parameters instead of two arrays of the batch's size), the rows kept by position. Each
# range is its own index scan (OFFSET 0 keeps the lateral subquery from becoming a join,
# which a plan made while the table was small answered by reading all of it).
_STORED_SQL = """
SELECT c.source_partition, c.source_offset, c.player_id, c.answer
  FROM unnest(%s::int[], %s::bigint[], %s::bigint[]) AS r(p, lo, hi)
 CROSS JOIN LATERAL (SELECT x.source_partition, x.source_offset, x.player_id, x.answer
                       FROM casino_calls x
                      WHERE x.source_topic = %s AND x.source_partition = r.p
                        AND x.source_offset BETWEEN r.lo AND r.hi OFFSET 0) c"""

# The transactions the batch names and the rollbacks naming them, probed by index in one
# statement (migration 0031: sent from Python, a plan cached while the table was small read
# all of it for every batch).
_NAMED_SQL = """
SELECT named, transaction_id, type, player_id, round_id, amount, request_hash, status, moved,
       reference_id, answer, currency
  FROM casino_named(%s)"""

# The rounds the calls name and those of the transactions they name (a rollback's debit
# may be in another round), locked by their owner (migration 0021) in the same round trip
# as those transactions.
_ROUNDS_SQL = """
SELECT round_id, player_id, game_id, currency, opened_at, credited, closed
  FROM casino_lock_rounds(%s, %s)"""

# The batch's writes in one call (migration 0021: the application has no INSERT or UPDATE
# on them): the rounds opened, credited and closed, the transactions and the calls, each
# a jsonb array of positional rows (parsed once; unlike COPY, it travels in the pipeline).
_RECORD_SQL = "SELECT casino_record(%s::jsonb, %s::jsonb, %s::jsonb, %s, %s, %s)"


def _ids(ids: Iterable[str]) -> str:
    """Ids as one parameter, ``string_to_array(%s, ',')`` in SQL, sorted (one lock order).
    An id has no comma (``schemas.base.ID_PATTERN``), and one string costs psycopg a
    hundredth of what a list of a batch's ids does (~0.3 ms each)."""
    return ",".join(sorted(ids))


def _runs(sources: list[SourcePosition]) -> tuple[list[int], list[int], list[int]]:
    """The positions as runs of consecutive offsets: (partitions, firsts, lasts)."""
    parts: list[int] = []
    firsts: list[int] = []
    lasts: list[int] = []
    for partition, offset in sorted({(s.partition, s.offset) for s in sources}):
        if parts and parts[-1] == partition and lasts[-1] == offset - 1:
            lasts[-1] = offset
        else:
            parts.append(partition)
            firsts.append(offset)
            lasts.append(offset)
    return parts, firsts, lasts


def _known(row: Any) -> KnownTx:
    tx_id, kind, player, round_id, amount, req, status, moved, ref, answer, currency = row
    return KnownTx(tx_id, kind, player, round_id, Decimal(amount), req, status, moved, ref,
                   answer, currency.strip())  # fmt: skip


class CasinoSink(PgSink):
    """Seamless-wallet calls through the ledger, debits asking player protection and the
    game registry first, in the same transaction."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        consumer_group: str,
        policies: Policies,
        catalogue: Catalogue,
        max_connections: int = 4,
    ) -> None:
        super().__init__(
            dsn, schema, consumer_group=consumer_group, max_connections=max_connections
        )
        self.policies = policies
        self.catalogue = catalogue

    async def decide(self, batch: CasinoBatch, now: datetime) -> Stored:
        """Answer a batch in one transaction; what to publish."""

        async def attempt() -> Stored:
            # One pipeline for the whole transaction: the loads, the moves, then every
            # write sent with the COMMIT.
            async with self.connection() as conn, conn.pipeline(), conn.transaction():
                return await self._decide(conn, batch, now)

        answered: Stored = await retrying(attempt)
        return answered

    async def _decide(self, conn: Any, batch: CasinoBatch, now: datetime) -> Stored:
        out = Stored(dead_letters=list(batch.dead_letters))
        async with conn.pipeline():
            fresh, guarded, wallet = await self._load(conn, batch, now, out)
            decided, ops, sources, records = self._decide_calls(fresh, wallet, guarded, now)
            trail = await self._post(conn, batch, wallet, ops, sources, now)
        out.outputs += [(item.call.player_id.encode(), answer.encode())
                        for item, _, answer in decided]  # fmt: skip
        await self._write(conn, decided, wallet, guarded, now)
        await audit.append(conn, trail + records)
        # The batch's undecodable messages (a batch of nothing else too, for croupier check).
        await audit.store_dead_letters(conn, [d for _, d in out.dead_letters])
        return out

    async def _load(
        self, conn: Any, batch: CasinoBatch, now: datetime, out: Stored
    ) -> tuple[list[CasinoInput], Guarded, Wallet]:
        """Publish what replayed positions answered before; the inputs still to decide,
        their players' standings and the wallet they are decided against."""
        inputs = batch.inputs
        if not inputs:
            return [], Guarded(self.policies), Wallet({})
        # Round trip 1: the stored answers go with guard's standings (its fetch sends both).
        topic = inputs[0].source.topic
        stored_cursor = await conn.execute(_STORED_SQL, (*_runs([i.source for i in inputs]),
                                                         topic))  # fmt: skip
        players = sorted({i.call.player_id for i in inputs})
        guarded = await guard(conn, self.policies, players, now)
        stored = {(p, o): (player, answer) for p, o, player, answer
                  in await stored_cursor.fetchall()}  # fmt: skip
        fresh = []
        for item in inputs:
            got = stored.get((item.source.partition, item.source.offset))
            if got is None:
                fresh.append(item)
            else:
                player, answer = got
                out.outputs.append((player.encode(), (answer or "").encode()))
        if not fresh:
            return [], guarded, Wallet({})
        # Round trip 2: the balances locked first, then (read after the lock is granted, so
        # nothing another worker committed for these players is missed) the transactions,
        # the rollbacks naming them and the rounds.
        cursors = [await conn.execute(_BALANCES_SQL, (_ids({i.call.player_id for i in fresh}),))]
        ids = _ids({i.call.transaction_id for i in fresh} | {
            i.call.reference_transaction_id for i in fresh if isinstance(i.call, Rollback)
        })  # fmt: skip
        round_ids = _ids({i.call.round_id for i in fresh})
        for query, params in ((_NAMED_SQL, (ids,)), (_ROUNDS_SQL, (round_ids, ids))):
            cursors.append(await conn.execute(query, params))
        balance_rows, named_rows, round_rows = [await c.fetchall() for c in cursors]
        balances: dict[str, Decimal] = {}
        for owner, currency, balance in balance_rows:
            if currency == (guarded.currency(owner) or currency):
                balances[owner] = Decimal(balance)
        known: dict[str, KnownTx] = {}
        rollbacks: dict[tuple[str, str], KnownTx] = {}
        for named, *row in named_rows:
            tx = _known(row)
            if named:
                known[tx.transaction_id] = tx
            else:
                assert tx.reference is not None  # a rollback row has one (CHECK)
                rollbacks.setdefault((tx.reference, tx.player_id), tx)
        rounds = {
            r[0]: Round(r[0], r[1], r[2], r[3], r[4], credited=r[5], closed=r[6])
            for r in round_rows
        }
        return fresh, guarded, Wallet(balances, known, rounds, rollbacks)

    def _decide_calls(
        self, fresh: list[CasinoInput], wallet: Wallet, guarded: Guarded, now: datetime
    ) -> tuple[list[Decided], list[ledger_ops.LedgerOp], list[SourcePosition], list[AuditRecord]]:
        """Decide the calls in arrival order: each one's answer, the ledger operations and
        their positions, the calls' audit records."""

        def protection(call: Debit) -> ReasonCode | None:
            refused = guarded.check(
                call.player_id, action="casino_debit", currency=call.currency,
                amount=call.amount, at=now,
            )  # fmt: skip
            return refused.reason if refused is not None else None

        def certified(call: Debit) -> ReasonCode | None:
            standing = guarded.standings.get(call.player_id)
            jurisdiction = standing.jurisdiction if standing else ""
            reason = self.catalogue.check(call.game_id, jurisdiction, now.date())
            return ReasonCode(reason) if reason else None

        decided_at = _TIME.dump_json(now).decode()  # every answer of the batch has it
        decided: list[Decided] = []
        ops: list[ledger_ops.LedgerOp] = []
        sources: list[SourcePosition] = []
        records: list[AuditRecord] = []
        for item in fresh:
            call = item.call
            before = wallet.balance(call.player_id)
            verdict = wallet.decide(
                call, item.request_hash, now, protection=protection, certified=certified
            )
            if verdict.duplicate_of is not None:
                answer = verdict.duplicate_of.answer
                assert answer is not None  # stored, or set below
            else:
                currency = guarded.currency(call.player_id) or call.currency
                balance = wallet.balance(call.player_id)
                # in the currency's minor units, as every amount on the wire ("0.00")
                shown = to_minor_unit(balance, currency, ROUND_HALF_EVEN)
                answer = answer_json(call, verdict, shown, currency, decided_at)
                if verdict.sticks:  # the id's answer; retry_later is this call's only
                    wallet.known[call.transaction_id].answer = answer
                    records.append(_audit(item, verdict, before, balance, currency, now))
            decided.append((item, verdict, answer))
            op = _ledger_op(call, verdict, now)
            if op is not None:
                ops.append(op)
                sources.append(item.source)
                # What moves counts at once for the player's later debits in the batch: the
                # rules know it moves (the balances are locked), so the count is exact.
                if verdict.moves == "debit":
                    guarded.count(call.player_id, action="casino_debit", amount=call.amount,
                                  at=now)  # fmt: skip
                else:
                    guarded.count_win(call.player_id, amount=call.amount, at=now)
        return decided, ops, sources, records

    async def _post(
        self,
        conn: Any,
        batch: CasinoBatch,
        wallet: Wallet,
        ops: list[ledger_ops.LedgerOp],
        sources: list[SourcePosition],
        now: datetime,
    ) -> list[AuditRecord]:
        """Round trip 3 (in the pipeline): the progress, the money moved; the ledger's
        audit records."""
        await write_progress(conn, self.consumer_group, batch.progress)
        trail: list[AuditRecord] = []  # the moves' records, then every call's
        results = await ledger.post_on(conn, ops, sources, into=trail)
        for op, result in zip(ops, results, strict=True):
            if not result.applied:
                msg = f"the ledger refused {op.key} ({result.reason}), which the rules allowed"
                raise LedgerDisagrees(msg)
        return trail

    async def _write(
        self, conn: Any, decided: list[Decided], wallet: Wallet, guarded: Guarded, now: datetime
    ) -> None:
        """The rounds opened, credited and closed, every id's first answer and every call's
        answer: one ``casino_record`` call, queued in the pipeline."""
        stamp = now.isoformat()
        txs: list[tuple[object, ...]] = []
        calls: list[tuple[object, ...]] = []
        for item, verdict, answer in decided:
            call, src = item.call, item.source
            outcome = "duplicate" if verdict.duplicate_of else "decided"
            if verdict.conflict:
                outcome = "conflict"
            elif not verdict.sticks:
                outcome = "retry"
            version = guarded.version(call.player_id)
            calls.append((src.topic, src.partition, src.offset, call.transaction_id,
                          call.player_id, outcome, answer, version))  # fmt: skip
            if outcome != "decided":
                continue
            ref = call.reference_transaction_id if isinstance(call, Rollback) else None
            txs.append((
                call.transaction_id, call.type, call.player_id, call.round_id, call.game_id,
                str(call.amount), call.currency, ref, item.request_hash, verdict.status,
                verdict.error.value if verdict.error else None, verdict.moves is not None,
                call.rng_build, answer, stamp, src.topic, src.partition, src.offset,
            ))  # fmt: skip
        opened = [(r.round_id, r.player_id, r.game_id, r.currency, r.opened_at.isoformat(),
                   stamp if r.credited else None, stamp if r.closed else None)
                  for r in wallet.rounds.values() if r.dirty and r.new]  # fmt: skip
        credited = [r for r in wallet.rounds.values() if r.dirty and not r.new]
        closed = _ids(r.round_id for r in credited if r.closed)
        still_open = _ids(r.round_id for r in credited if not r.closed)
        if opened or txs or calls or closed or still_open:
            rows = (jsonb(opened), jsonb(txs), jsonb(calls))
            await conn.execute(_RECORD_SQL, (*rows, now, still_open, closed))


_TIME: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)


def answer_json(
    call: CasinoCall, verdict: Verdict, balance: Decimal, currency: str, decided_at: str
) -> str:
    """The answer to ``call``: the JSON of ``schemas.outbound.CasinoResult``, byte for byte
    (a unit test holds them equal), written directly at a tenth of the model's cost.
    ``balance`` is in ``currency``'s minor units, ``decided_at`` the time's JSON. Every
    string in it is an id, a currency or a reason code, none of which has a character JSON
    escapes (``schemas.base.ID_PATTERN``)."""
    error = "null" if verdict.error is None else f'"{verdict.error.value}"'
    return (
        f'{{"currency":"{currency}","transaction_id":"{call.transaction_id}",'
        f'"round_id":"{call.round_id}","player_id":"{call.player_id}",'
        f'"status":"{verdict.status}","balance":"{balance:f}","error":{error},'
        f'"decided_at":{decided_at},"schema_version":1}}'
    )


def _audit(
    item: CasinoInput, verdict: Verdict, before: Decimal, after: Decimal, currency: str,
    now: datetime,
) -> AuditRecord:  # fmt: skip
    """The audit record of a decided call: who, what, the balance before and after."""
    call = item.call
    what: dict[str, Any] = {
        "type": call.type, "player_id": call.player_id, "round_id": call.round_id,
        "game_id": call.game_id, "amount": str(call.amount), "currency": call.currency,
        "reference_transaction_id":
            call.reference_transaction_id if isinstance(call, Rollback) else None,
        "rng_build": call.rng_build, "request_hash": item.request_hash,
    }  # fmt: skip
    return AuditRecord(
        entity="casino_transaction",
        entity_id=call.transaction_id,
        action=f"casino.{call.type}",
        source=item.source,
        occurred_at=call.timestamp,
        recorded_at=now,
        before={"balance": str(before), "currency": currency},
        after={
            **what, "status": verdict.status,
            "error": verdict.error.value if verdict.error else None,
            "moved": verdict.moves is not None,
            "ledger_key": ledger_keys.casino(call.type, call.transaction_id)
                          if verdict.moves else None,
            "balance": str(after),
        },
    )  # fmt: skip


def _ledger_op(call: CasinoCall, verdict: Verdict, at: datetime) -> ledger_ops.LedgerOp | None:
    """The ledger operation a decided call moves, dated when Croupier applies it."""
    match verdict.moves:
        case "debit":
            return ledger_ops.casino_debit(call.transaction_id, call.player_id, call.amount,
                                       call.currency, at)  # fmt: skip
        case "credit":
            return ledger_ops.casino_credit(call.transaction_id, call.player_id, call.amount,
                                        call.currency, at)  # fmt: skip
        case "rollback":
            assert isinstance(call, Rollback)  # only a rollback moves so
            return ledger_ops.casino_rollback(call.transaction_id, call.reference_transaction_id,
                                          call.player_id, call.currency, at)  # fmt: skip
    return None
