"""The base of every PostgreSQL sink: a pool, ``SinkUnavailable`` whenever the database
cannot answer, and the writes every flow shares (dead letters, the trail's records for
state kept elsewhere, the partitions' progress)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from schemas.players import PlayerState
from schemas.records import AuditRecord, DeadLetter
from sinks.base import SinkUnavailable, caused_by_data
from sinks.postgres.audit import append_new, store_dead_letters
from sinks.postgres.common import write_progress


class PgSink:
    """A pooled PostgreSQL sink: ``SinkUnavailable`` whenever the database cannot answer."""

    def __init__(
        self, dsn: str, schema: str, *, consumer_group: str, max_connections: int = 4
    ) -> None:
        self.consumer_group = consumer_group
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=max_connections,
            kwargs={"options": f"-c search_path={schema}"},
            timeout=10,
            open=False,
        )

    async def open(self) -> None:
        # Connect in the background: a database that is down at start is retried by the
        # writes, which raise SinkUnavailable until it answers.
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            if caused_by_data(exc):  # e.g. an index row too large: the data, not the server
                raise
            msg = f"PostgreSQL unavailable: {exc}"
            raise SinkUnavailable(msg) from exc

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def set_aside(self, letter: DeadLetter, progress: dict[tuple[str, int], int]) -> None:
        """Store a message's dead letter and move its partition past it, in one transaction."""
        async with self.transaction() as conn:
            await store_dead_letters(conn, [letter])
            await write_progress(conn, self.consumer_group, progress)

    async def record_batch(
        self,
        records: list[AuditRecord],
        letters: list[DeadLetter],
        progress: dict[tuple[str, int], int],
    ) -> None:
        """Audit records for state kept elsewhere (a replay's skipped), dead letters and the
        batch's progress, in one transaction."""
        # One pipeline: the trail's reads and locks, then the writes sent with the COMMIT.
        async with self.connection() as conn, conn.pipeline(), conn.transaction():
            await append_new(conn, records)
            await store_dead_letters(conn, letters)
            await write_progress(conn, self.consumer_group, progress)

    async def standings(self, player_ids: list[str]) -> dict[str, PlayerState]:
        """The standings PostgreSQL holds for these players (the truth tables cache)."""
        if not player_ids:
            return {}
        async with self.connection() as conn:
            cursor = await conn.execute(
                "SELECT player_id, standing FROM players WHERE player_id = ANY(%s)", (player_ids,)
            )
            rows = await cursor.fetchall()
        return {pid: PlayerState.model_validate(standing) for pid, standing in rows}
