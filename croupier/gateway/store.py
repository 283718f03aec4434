"""What the gateway reads from PostgreSQL, read-only, as the application's role: wallet
balances from the ledger, a casino transaction's stored first answer, a bet's decision.

Every statement runs in a read-only transaction, so a bug here cannot write even where
the role could."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from psycopg import sql
from psycopg_pool import AsyncConnectionPool


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


class Store:
    """A small pool of read-only connections."""

    def __init__(self, dsn: str, schema: str, *, size: int = 4) -> None:
        self.schema = schema
        self._currencies: dict[str, str] = {}
        self.pool = AsyncConnectionPool(
            dsn, min_size=1, max_size=size, open=False,
            kwargs={"options": f"-c search_path={schema} -c default_transaction_read_only=on",
                    "autocommit": True},
        )  # fmt: skip

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
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
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT transaction_id, type, player_id, round_id, game_id, amount, currency, "
                "reference_id, request_hash, answer FROM casino_transactions "
                "WHERE transaction_id = %s",
                (transaction_id,),
            )).fetchone()  # fmt: skip
        if row is None:
            return None
        tx, kind, player, rnd, game, amount, currency, ref, digest, answer = row
        return StoredCall(tx, kind, player, rnd, game, Decimal(amount), str(currency).strip(),
                          ref, str(digest), str(answer).encode())  # fmt: skip

    async def bet_decision(self, bet_id: str) -> bytes | None:
        """The decision published for ``bet_id``, byte for byte, or None."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT decision FROM bets WHERE bet_id = %s", (bet_id,)
            )).fetchone()  # fmt: skip
        return None if row is None else str(row[0]).encode()
