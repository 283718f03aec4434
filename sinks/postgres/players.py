"""Writes a batch of player events, the resulting standings and dead letters in one transaction."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from schemas.players import PlayerState
from schemas.records import DeadLetter, SourcePosition
from sinks.base import SinkUnavailable


@dataclass(frozen=True)
class PlayerEventRow:
    """One consumed player event and what became of it."""

    source: SourcePosition
    player_id: str
    event_type: str
    occurred_at: datetime
    outcome: str  # applied | unchanged (a refused event is a dead letter instead)
    payload: str  # the event as JSON


@dataclass
class PlayerBatch:
    """Everything one agent batch writes."""

    events: list[PlayerEventRow] = field(default_factory=list)
    states: dict[str, PlayerState] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # (topic, partition) -> the offset after the last one this batch processed
    progress: dict[tuple[str, int], int] = field(default_factory=dict)


_EVENT_SQL = """
INSERT INTO player_events (source_topic, source_partition, source_offset, player_id,
                           event_type, occurred_at, outcome, payload)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb)
ON CONFLICT DO NOTHING"""

_STATE_SQL = """
INSERT INTO players (player_id, jurisdiction, currency, birth_date, registered_at, version,
                     last_event, updated_at, source_partition, source_offset)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (player_id) DO UPDATE SET
    jurisdiction = EXCLUDED.jurisdiction, currency = EXCLUDED.currency,
    birth_date = EXCLUDED.birth_date, registered_at = EXCLUDED.registered_at,
    version = EXCLUDED.version, last_event = EXCLUDED.last_event,
    updated_at = EXCLUDED.updated_at, source_partition = EXCLUDED.source_partition,
    source_offset = EXCLUDED.source_offset
WHERE players.version < EXCLUDED.version"""

_PROGRESS_SQL = """
INSERT INTO consumer_progress (consumer_group, topic, partition, next_offset)
VALUES (%s, %s, %s, %s)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE
   SET next_offset = GREATEST(consumer_progress.next_offset, EXCLUDED.next_offset),
       updated_at = now()"""

_DEAD_LETTER_SQL = """
INSERT INTO dead_letters (source_topic, source_partition, source_offset, key, value, reason,
                          error, dead_lettered_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING"""


def dead_letter_params(dl: DeadLetter) -> tuple[object, ...]:
    key = base64.b64decode(dl.key_base64) if dl.key_base64 is not None else None
    src = dl.source
    return (src.topic, src.partition, src.offset, key, dl.value, dl.reason, dl.error,
            dl.dead_lettered_at)  # fmt: skip


class PostgresPlayerSink:
    """The players flow's PostgreSQL sink; idempotent by source position and version."""

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
        # Connect in the background: a database that is down at start is retried by
        # write(), which raises SinkUnavailable until it answers.
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    async def write(self, batch: PlayerBatch) -> None:
        try:
            async with (
                self._pool.connection() as conn,
                conn.transaction(),
                conn.cursor() as cur,
            ):
                if batch.events:
                    await cur.executemany(_EVENT_SQL, [_event_params(e) for e in batch.events])
                if batch.states:
                    await cur.executemany(
                        _STATE_SQL, [_state_params(s) for s in batch.states.values()]
                    )
                if batch.dead_letters:
                    await cur.executemany(
                        _DEAD_LETTER_SQL, [dead_letter_params(d) for d in batch.dead_letters]
                    )

        except (psycopg.OperationalError, PoolTimeout) as exc:
            msg = f"PostgreSQL unavailable: {exc}"
            raise SinkUnavailable(msg) from exc

    async def record_progress(self, progress: dict[tuple[str, int], int]) -> None:
        """Record how far each partition is done: rows, outputs and table alike."""
        try:
            async with self._pool.connection() as conn, conn.cursor() as cur:
                await cur.executemany(
                    _PROGRESS_SQL,
                    [(self.consumer_group, t, p, o) for (t, p), o in progress.items()],
                )
        except (psycopg.OperationalError, PoolTimeout) as exc:
            msg = f"PostgreSQL unavailable: {exc}"
            raise SinkUnavailable(msg) from exc

    async def standings(self, player_ids: list[str]) -> dict[str, PlayerState]:
        """The standings PostgreSQL holds for these players (the truth the table caches)."""
        if not player_ids:
            return {}
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(
                    f"SELECT {', '.join(_STATE_COLUMNS)} FROM players "  # noqa: S608 - fixed columns
                    "WHERE player_id = ANY(%s)",
                    (player_ids,),
                )
                rows = await cursor.fetchall()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            msg = f"PostgreSQL unavailable: {exc}"
            raise SinkUnavailable(msg) from exc
        return {
            row[0]: PlayerState.model_validate(dict(zip(_STATE_COLUMNS, row, strict=True)))
            for row in rows
        }

    async def progress(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """The next offset to process per partition, as recorded with the rows."""
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(
                    """SELECT partition, next_offset FROM consumer_progress
                        WHERE consumer_group = %s AND topic = %s AND partition = ANY(%s)""",
                    (self.consumer_group, topic, partitions),
                )
                return {int(p): int(o) for p, o in await cursor.fetchall()}
        except (psycopg.OperationalError, PoolTimeout) as exc:
            msg = f"PostgreSQL unavailable: {exc}"
            raise SinkUnavailable(msg) from exc


def _event_params(row: PlayerEventRow) -> tuple[object, ...]:
    src = row.source
    return (src.topic, src.partition, src.offset, row.player_id, row.event_type,
            row.occurred_at, row.outcome, row.payload)  # fmt: skip


_STATE_COLUMNS = (
    "player_id", "jurisdiction", "currency", "birth_date", "registered_at", "version",
    "last_event", "updated_at", "source_partition", "source_offset",
)  # fmt: skip


def _state_params(s: PlayerState) -> tuple[object, ...]:
    return tuple(getattr(s, column) for column in _STATE_COLUMNS)
