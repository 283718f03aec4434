"""What the gateway reads from PostgreSQL, read-only, as the application's role: wallet
balances from the ledger, a casino transaction's stored first answer, a bet's decision,
who holds a bet id, a Hub88 session token.

Every read runs in a read-only transaction, so a bug here cannot write even where the role
could. The gateway's only writes (a bet's ticket, a webhook's signature) go through the
SECURITY DEFINER functions of migration 0023, on a second, small pool that runs nothing
else."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from croupier.gateway.scoping import Claimed


@dataclass(frozen=True)
class StoredCall:
    """A casino transaction Croupier answered, as ``casino_transactions`` keeps it."""

    transaction_id: str
    type: str
    player_id: str
    round_id: str
    game_id: str
    amount: Decimal
    currency: str
    reference_id: str | None
    request_hash: str
    answer: bytes


BATCH = 500  # keys read in one query at most
# Seconds a token found is trusted without asking PostgreSQL again (the default of
# CROUPIER_GATEWAY_TOKEN_CACHE): a token revoked is refused by every gateway within it.
TOKEN_TTL = 5.0


class Batched:
    """Reads by key, many in one query: the reads asked for while a query is on its way
    go together in the next one. A read always starts after it was asked for, so what it
    answers is never older than the ask (a waiter that asks after an answer came sees
    what the flow committed before publishing that answer)."""

    def __init__(self, fetch: Callable[[list[str]], Awaitable[dict[str, Any]]]) -> None:
        self._fetch = fetch
        self._pending: dict[str, list[asyncio.Future[Any]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def get(self, key: str) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.setdefault(key, []).append(fut)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return await fut

    async def _run(self) -> None:
        while self._pending:
            keys = list(self._pending)[:BATCH]
            batch = {k: self._pending.pop(k) for k in keys}
            try:
                found = await self._fetch(keys)
            except Exception as exc:  # each reader gets the error, none is left waiting
                for futs in batch.values():
                    for fut in futs:
                        if not fut.done():
                            fut.set_exception(exc)
                continue
            for key, futs in batch.items():
                for fut in futs:
                    if not fut.done():
                        fut.set_result(found.get(key))


class Store:
    """A small pool of read-only connections."""

    def __init__(
        self, dsn: str, schema: str, *, size: int = 4, token_ttl: float = TOKEN_TTL
    ) -> None:
        self.schema = schema
        self.token_ttl = token_ttl
        self._currencies: dict[str, str] = {}
        self._calls = Batched(self._casino_calls)
        self._tokens = Batched(self._token_rows)
        self._claims = Batched(self._claim_transactions)
        # Tokens found lately: (player, expiry, partner, when found). A token row is never
        # changed (issued once, then read, then revoked or pruned: deleted); its expiry is
        # checked on every call by the caller, so trusting a found row token_ttl seconds
        # delays a revocation by at most that much.
        self._found_tokens: dict[str, tuple[str, datetime, str, float]] = {}
        # Every read is planned for its own keys (plan_cache_mode): a generic plan cached
        # while a table held a page or two scanned it whole for every read once it had grown
        # (bench/gateway.py on a fresh schema: 209 scans of casino_transactions, 509,376 rows,
        # in ten seconds). The reads are a few simple statements, batched, so planning each
        # costs little.
        self.pool = AsyncConnectionPool(
            dsn, min_size=1, max_size=size, open=False,
            kwargs={"options": f"-c search_path={schema} -c default_transaction_read_only=on "
                               "-c plan_cache_mode=force_custom_plan",
                    "autocommit": True},
        )  # fmt: skip
        self.writer = AsyncConnectionPool(
            dsn, min_size=1, max_size=8, open=False,
            kwargs={"options": f"-c search_path={schema}", "autocommit": True},
        )  # fmt: skip

    async def open(self) -> None:
        await self.pool.open(wait=False)
        await self.writer.open(wait=False)

    async def close(self) -> None:
        await self.writer.close()
        await self.pool.close()

    async def ping(self) -> bool:
        try:
            async with self.pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
        except Exception:
            return False
        return True

    async def currency(self, player_id: str) -> str | None:
        """The player's wallet currency (remembered: a wallet never changes currency)."""
        known = self._currencies.get(player_id)
        if known is None:
            found = await self.balance(player_id, None)
            if found is None:
                return None
            if len(self._currencies) > 1_000_000:
                self._currencies.clear()
            known = self._currencies[player_id] = found[1]
        return known

    async def balance(self, player_id: str, currency: str | None) -> tuple[Decimal, str] | None:
        """The player's cash balance (in ``currency``, or their only currency), or None."""
        query = "SELECT balance, currency FROM ledger_accounts WHERE owner = %s AND kind = 'cash'"
        params: tuple[str, ...] = (player_id,)
        if currency is not None:
            query += " AND currency = %s"
            params = (player_id, currency)
        async with self.pool.connection() as conn:
            cursor = await conn.execute(sql.SQL(query + " ORDER BY currency"), params)
            rows = await cursor.fetchall()
        if not rows:
            return None
        value, cur = rows[0]
        return Decimal(value), str(cur).strip()

    async def casino_call(self, transaction_id: str) -> StoredCall | None:
        """The transaction's stored first call and answer, or None (read with the other
        lookups asked for meanwhile, in one query)."""
        found: StoredCall | None = await self._calls.get(transaction_id)
        return found

    async def _casino_calls(self, transaction_ids: list[str]) -> dict[str, StoredCall]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT transaction_id, type, player_id, round_id, game_id, amount, currency, "
                "reference_id, request_hash, answer FROM casino_transactions "
                "WHERE transaction_id = ANY(%s)",
                (transaction_ids,),
            )).fetchall()  # fmt: skip
        out: dict[str, StoredCall] = {}
        for tx, kind, player, rnd, game, amount, currency, ref, digest, answer in rows:
            out[str(tx)] = StoredCall(str(tx), kind, player, rnd, game, Decimal(amount),
                                      str(currency).strip(), ref, str(digest),
                                      str(answer).encode())  # fmt: skip
        return out

    async def bet_decision(self, bet_id: str) -> bytes | None:
        """The decision published for ``bet_id``, byte for byte, or None."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT decision FROM bets WHERE bet_id = %s", (bet_id,)
            )).fetchone()  # fmt: skip
        return None if row is None else str(row[0]).encode()

    async def claim_tickets(self, claims: list[tuple[str, str, str]]) -> dict[str, tuple[str, str]]:
        """Claim bet ids ``(bet_id, key_name, player_id)`` in one call; each id's holder
        (key name, player) after it: the caller's own unless another key (or another
        player) had it first."""
        async with self.writer.connection() as conn:
            rows = await (await conn.execute(
                "SELECT bet, holder, holder_player FROM gateway_tickets_claim(%s::jsonb)",
                (orjson.dumps(claims).decode(),),
            )).fetchall()  # fmt: skip
        return {str(b): (str(k), str(p)) for b, k, p in rows}

    async def ticket(self, bet_id: str) -> tuple[str, str] | None:
        """(key name, player) holding ``bet_id``, or None."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT key_name, player_id FROM gateway_tickets WHERE bet_id = %s", (bet_id,)
            )).fetchone()  # fmt: skip
        return None if row is None else (str(row[0]), str(row[1]))

    async def webhook_seen_before(self, provider: str, signature: str) -> bool:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT 1 FROM gateway_webhooks_seen WHERE provider = %s AND signature = %s",
                (provider, signature),
            )).fetchone()  # fmt: skip
        return row is not None

    async def webhook_seen(self, provider: str, signature: str, stamped: datetime) -> bool:
        """Record a webhook's signature; False when it was recorded already."""
        async with self.writer.connection() as conn:
            row = await (await conn.execute(
                "SELECT gateway_seen(%s, %s, %s)", (provider, signature, stamped)
            )).fetchone()  # fmt: skip
        return bool(row and row[0])

    async def token(self, token_hash: str) -> tuple[str, datetime, str] | None:
        """(player, expiry, partner) of the session token with this hash, or None."""
        now = time.monotonic()
        known = self._found_tokens.get(token_hash)
        if known is not None and now - known[3] < self.token_ttl:
            return known[0], known[1], known[2]
        found: tuple[str, datetime, str] | None = await self._tokens.get(token_hash)
        if found is not None:
            if len(self._found_tokens) > 100_000:
                self._found_tokens.clear()
            self._found_tokens[token_hash] = (*found, now)
        return found

    async def _token_rows(self, hashes: list[str]) -> dict[str, tuple[str, datetime, str]]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT token_hash, player_id, expires_at, partner FROM gateway_tokens "
                "WHERE token_hash = ANY(%s)",
                (hashes,),
            )).fetchall()  # fmt: skip
        return {str(h): (str(p), at, str(partner)) for h, p, at, partner in rows}

    async def claim_transaction(
        self, transaction_id: str, partner: str, player_id: str, round_id: str,
        reference_id: str | None,
    ) -> Claimed:  # fmt: skip
        """Claim ``transaction_id`` for ``partner`` in ``gateway_transactions`` (the claims
        asked for while one is on its way go together in the next call); who holds it,
        opened its round and sent the transaction it references, after it."""
        key = orjson.dumps([transaction_id, partner, player_id, round_id, reference_id])
        found: Claimed = await self._claims.get(key.decode())
        return found

    async def _claim_transactions(self, keys: list[str]) -> dict[str, Claimed]:
        claims = [orjson.loads(k) for k in keys]
        async with self.writer.connection() as conn:
            rows = await (await conn.execute(
                "SELECT claim, holder, round_holder, reference_holder, fresh "
                "FROM gateway_transactions_claim(%s::jsonb)",
                (orjson.dumps(claims).decode(),),
            )).fetchall()  # fmt: skip
        # By the claim's ordinal: two claims of one id (two partners, two rounds) in one
        # batch each get their own round and reference. A claim with no row (never) is
        # held by nobody, so refused.
        out = {key: Claimed("", None, None) for key in keys}
        for i, holder, round_holder, reference_holder, fresh in rows:
            out[keys[int(i) - 1]] = Claimed(str(holder), round_holder, reference_holder,
                                            bool(fresh))  # fmt: skip
        return out

    async def prune(self, keep_days: float) -> tuple[int, int, int, int]:
        """Delete what the gateway no longer needs (``gateway_prune``): counts of tickets,
        transaction claims, tokens and webhook signatures deleted."""
        async with self.writer.connection() as conn:
            row = await (await conn.execute(
                "SELECT * FROM gateway_prune(make_interval(secs => %s))", (keep_days * 86_400,)
            )).fetchone()  # fmt: skip
        assert row is not None  # the function returns one row
        return int(row[0]), int(row[1]), int(row[2]), int(row[3])
