"""The casino flow's PostgreSQL side: the seamless wallet's calls, one transaction a batch.

The rules are ``rules/casino.py``; this module gives them the state they need and writes
what they decided, all inside one transaction:

1. Positions already answered (a replay after a crash) publish their stored answer again,
   byte for byte.
2. ``guard`` reads the players' standings (locking those with money limits) for player
   protection; the certification of each debit's game is asked of the game registry for
   the player's jurisdiction on the day of the call.
3. The batch's cash accounts are locked (``FOR NO KEY UPDATE``, in player order, as the
   ledger itself locks them), so the balances the rules track are the ledger's and no other
   product can move them before this transaction commits.
4. The transactions, rollbacks and rounds the batch names are read, the calls decided in
   arrival order, and the money moved by one ``ledger_post``. Its results must be what the
   rules foresaw; a difference is a bug and fails the batch (nothing is committed).
5. Every transaction id's first answer is stored (``casino_transactions``, append-only), the
   rounds are opened, credited and closed, every call's answer is stored by position
   (``casino_calls``), and every decided call leaves an audit record (the balance before
   and after, what moved, the RNG build) in its partition's hash chain
   (``sinks/postgres/audit.py``). A retry, a conflict or a ``retry_later`` (an answer that
   does not stick: a credit before its debit) changes nothing and records none.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from rules import ledger_keys
from rules.casino import KnownTx, Round, Verdict, Wallet
from rules.decimals import MONEY_CONTEXT, minor_unit
from rules.games import Catalogue
from rules.policy import Policies
from schemas.casino import CasinoCall, Debit, Rollback
from schemas.outbound import CasinoResult, ReasonCode
from schemas.records import AuditRecord, DeadLetter, SourcePosition
from sinks.postgres import audit, ledger
from sinks.postgres.common import PgSink, stored_outputs
from sinks.postgres.protection import Guarded, guard
from sinks.postgres.sportsbook import Output, retrying


def request_hash(call: CasinoCall) -> str:
    """What a call asks for. The timestamp is left out: an aggregator's retry may restamp
    the same call, and it is still the same call."""
    return hashlib.sha256(call.model_dump_json(exclude={"timestamp"}).encode()).hexdigest()


@dataclass(frozen=True)
class CasinoInput:
    source: SourcePosition
    call: CasinoCall
    key: bytes | None = None
    value: bytes = b""

    @functools.cached_property
    def request_hash(self) -> str:  # hashed once, though three places ask
        return request_hash(self.call)


@dataclass
class CasinoBatch:
    inputs: list[CasinoInput] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, DeadLetter]] = field(default_factory=list)
    progress: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass
class Answered:
    answers: list[Output] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, DeadLetter]] = field(default_factory=list)


class LedgerDisagrees(RuntimeError):
    """The ledger refused a move the casino rules had counted on: a bug, never retried."""


_BALANCES_SQL = """
SELECT owner, currency, balance FROM ledger_accounts
 WHERE owner = ANY(%s) AND kind = 'cash'
 ORDER BY owner, currency FOR NO KEY UPDATE"""

_TX_COLUMNS = """transaction_id, type, player_id, round_id, amount, request_hash, status, moved,
                 reference_id, answer, currency"""

_KNOWN_SQL = f"SELECT {_TX_COLUMNS} FROM casino_transactions WHERE transaction_id = ANY(%s)"  # noqa: S608

_ROLLBACKS_SQL = f"""SELECT {_TX_COLUMNS} FROM casino_transactions
 WHERE reference_id = ANY(%s) AND type = 'rollback' AND status = 'ok'"""  # noqa: S608

_ROUNDS_SQL = """
SELECT round_id, player_id, game_id, currency, opened_at, credited_at IS NOT NULL,
       closed_at IS NOT NULL
  FROM casino_rounds WHERE round_id = ANY(%s) ORDER BY round_id FOR UPDATE"""


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

    async def decide(self, batch: CasinoBatch, now: datetime) -> Answered:
        """Answer a batch in one transaction; what to publish."""

        async def attempt() -> Answered:
            async with self.transaction() as conn:
                return await self._decide(conn, batch, now)

        answered: Answered = await retrying(attempt)
        return answered

    async def _stored(self, conn: Any, batch: CasinoBatch, out: Answered) -> list[CasinoInput]:
        """Publish what replayed positions answered before; the inputs still to decide."""
        sources = [i.source for i in batch.inputs]
        stored = await stored_outputs(conn, "casino_calls", "answer", sources)
        fresh = []
        for item in batch.inputs:
            got = stored.get((item.source.partition, item.source.offset))
            if got is None:
                fresh.append(item)
            else:
                player, answer = got
                out.answers.append((player.encode(), (answer or "").encode()))
        return fresh

    async def _wallet(self, conn: Any, fresh: list[CasinoInput], guarded: Guarded) -> Wallet:
        players = sorted({i.call.player_id for i in fresh})
        cursor = await conn.execute(_BALANCES_SQL, (players,))
        balances: dict[str, Decimal] = {}
        for owner, currency, balance in await cursor.fetchall():
            if currency == (guarded.currency(owner) or currency):
                balances[owner] = Decimal(balance)
        ids = {i.call.transaction_id for i in fresh} | {
            i.call.reference_transaction_id for i in fresh if isinstance(i.call, Rollback)
        }
        cursor = await conn.execute(_KNOWN_SQL, (sorted(ids),))
        known = {tx.transaction_id: tx for tx in map(_known, await cursor.fetchall())}
        debits = sorted(ids)
        cursor = await conn.execute(_ROLLBACKS_SQL, (debits,))
        rollbacks: dict[tuple[str, str], KnownTx] = {}
        for tx in map(_known, await cursor.fetchall()):
            assert tx.reference is not None  # a rollback row has one (CHECK)
            rollbacks.setdefault((tx.reference, tx.player_id), tx)
        round_ids = {i.call.round_id for i in fresh} | {tx.round_id for tx in known.values()}
        cursor = await conn.execute(_ROUNDS_SQL, (sorted(round_ids),))
        rounds = {
            r[0]: Round(r[0], r[1], r[2], r[3], r[4], credited=r[5], closed=r[6])
            for r in await cursor.fetchall()
        }
        return Wallet(balances, known, rounds, rollbacks)

    async def _decide(self, conn: Any, batch: CasinoBatch, now: datetime) -> Answered:
        out = Answered(dead_letters=list(batch.dead_letters))
        if not batch.inputs:  # only dead letters: stored all the same, for croupier check
            await audit.store_dead_letters(conn, [d for _, d in out.dead_letters])
            return out
        fresh = await self._stored(conn, batch, out)
        guarded = await guard(conn, self.policies, [i.call.player_id for i in fresh], now)
        wallet = await self._wallet(conn, fresh, guarded)

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

        decided: list[tuple[CasinoInput, Verdict, str]] = []
        ops: list[ledger.LedgerOp] = []
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
                answer = CasinoResult(
                    transaction_id=call.transaction_id,
                    round_id=call.round_id,
                    player_id=call.player_id,
                    status=verdict.status,
                    # in the currency's minor units, as every amount on the wire ("0.00")
                    balance=balance.quantize(minor_unit(currency), context=MONEY_CONTEXT),
                    currency=currency,
                    error=verdict.error,
                    decided_at=now,
                ).model_dump_json()
                if verdict.sticks:  # the id's answer; retry_later is this call's only
                    wallet.known[call.transaction_id].answer = answer
                    records.append(_audit(item, verdict, before, balance, currency, now))
            decided.append((item, verdict, answer))
            out.answers.append((call.player_id.encode(), answer.encode()))
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
        trail: list[AuditRecord] = []  # the moves' records, then every call's
        for op, result in zip(ops, await ledger.post_on(conn, ops, sources, into=trail),
                              strict=True):  # fmt: skip
            if not result.applied:
                msg = f"the ledger refused {op.key} ({result.reason}), which the rules allowed"
                raise LedgerDisagrees(msg)
        await self._write(conn, decided, wallet, guarded, now)
        await audit.append(conn, trail + records)
        await audit.store_dead_letters(conn, [d for _, d in out.dead_letters])
        return out

    async def _write(
        self,
        conn: Any,
        decided: list[tuple[CasinoInput, Verdict, str]],
        wallet: Wallet,
        guarded: Guarded,
        now: datetime,
    ) -> None:
        txs, calls = [], []
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
                call.amount, call.currency, ref, item.request_hash, verdict.status,
                verdict.error.value if verdict.error else None, verdict.moves is not None,
                call.rng_build, answer, now, src.topic, src.partition, src.offset,
            ))  # fmt: skip
        new = [r for r in wallet.rounds.values() if r.dirty and r.new]
        changed = [r for r in wallet.rounds.values() if r.dirty and not r.new]
        async with conn.cursor() as cur:
            if new:
                await cur.executemany(
                    """INSERT INTO casino_rounds (round_id, player_id, game_id, currency,
                           opened_at, credited_at, closed_at)
                       VALUES (%s, %s, %s, %s, %s, %s, %s)""",
                    [(r.round_id, r.player_id, r.game_id, r.currency, r.opened_at,
                      now if r.credited else None, now if r.closed else None) for r in new],
                )  # fmt: skip
            if changed:
                await cur.executemany(
                    """UPDATE casino_rounds
                          SET credited_at = coalesce(credited_at, %s),
                              closed_at = CASE WHEN %s THEN coalesce(closed_at, %s) END
                        WHERE round_id = %s""",
                    [(now, r.closed, now, r.round_id) for r in changed],
                )
            if txs:
                await cur.executemany(
                    """INSERT INTO casino_transactions (transaction_id, type, player_id,
                           round_id, game_id, amount, currency, reference_id, request_hash,
                           status, error, moved, rng_build, answer, decided_at, source_topic,
                           source_partition, source_offset)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                               %s, %s)""",
                    txs,
                )
            if calls:
                await cur.executemany(
                    """INSERT INTO casino_calls (source_topic, source_partition, source_offset,
                           transaction_id, player_id, outcome, answer, standing_version)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
                    calls,
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
        "reference_transaction_id": getattr(call, "reference_transaction_id", None),
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


def _ledger_op(call: CasinoCall, verdict: Verdict, at: datetime) -> ledger.LedgerOp | None:
    """The ledger operation a decided call moves, dated when Croupier applies it."""
    match verdict.moves:
        case "debit":
            return ledger.casino_debit(call.transaction_id, call.player_id, call.amount,
                                       call.currency, at)  # fmt: skip
        case "credit":
            return ledger.casino_credit(call.transaction_id, call.player_id, call.amount,
                                        call.currency, at)  # fmt: skip
        case "rollback":
            assert isinstance(call, Rollback)  # only a rollback moves so
            return ledger.casino_rollback(call.transaction_id, call.reference_transaction_id,
                                          call.player_id, call.currency, at)  # fmt: skip
    return None
