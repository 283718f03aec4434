"""Writes a batch of player events, the resulting standings, dead letters and progress in one
transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from schemas.players import PlayerState
from schemas.records import AuditRecord, DeadLetter, SourcePosition
from sinks.postgres import audit
from sinks.postgres.common import STATE_COLUMNS, write_progress
from sinks.postgres.sink import PgSink


@dataclass(frozen=True)
class PlayerEventRow:
    """One consumed player event and what became of it."""

    source: SourcePosition
    player_id: str
    event_type: str
    occurred_at: datetime
    outcome: str  # applied | unchanged (a refused event is a dead letter instead)
    payload: str  # the event as JSON


@dataclass(frozen=True)
class SessionChange:
    """A session opening (``end_reason`` None) or closing, in event order."""

    player_id: str
    session_id: str
    at: datetime
    ip: str | None = None
    end_reason: str | None = None  # player | session_limit | replaced; None: it opens


@dataclass
class PlayerBatch:
    """Everything one players batch writes."""

    events: list[PlayerEventRow] = field(default_factory=list)
    sessions: list[SessionChange] = field(default_factory=list)
    audit: list[AuditRecord] = field(default_factory=list)  # appended to the hash chains
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
                     last_event, updated_at, source_partition, source_offset, standing)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)
ON CONFLICT (player_id) DO UPDATE SET
    jurisdiction = EXCLUDED.jurisdiction, currency = EXCLUDED.currency,
    birth_date = EXCLUDED.birth_date, registered_at = EXCLUDED.registered_at,
    version = EXCLUDED.version, last_event = EXCLUDED.last_event,
    updated_at = EXCLUDED.updated_at, source_partition = EXCLUDED.source_partition,
    source_offset = EXCLUDED.source_offset, standing = EXCLUDED.standing
WHERE players.version < EXCLUDED.version"""

_SESSION_OPEN_SQL = """
INSERT INTO player_sessions (player_id, session_id, started_at, ip) VALUES (%s, %s, %s, %s)
ON CONFLICT DO NOTHING"""

_SESSION_CLOSE_SQL = """
UPDATE player_sessions SET ended_at = %s, end_reason = %s
 WHERE player_id = %s AND session_id = %s AND ended_at IS NULL"""


class PostgresPlayerSink(PgSink):
    """The players flow's PostgreSQL sink; idempotent by source position and version."""

    async def write(self, batch: PlayerBatch) -> None:
        # One round trip for the whole batch (sessions are one statement each, in order).
        async with self.transaction() as conn:
            async with conn.pipeline(), conn.cursor() as cur:
                if batch.events:
                    await cur.executemany(_EVENT_SQL, [_event_params(e) for e in batch.events])
                if batch.states:
                    # In player order, as decisions lock players' rows: no lock cycle between them.
                    states = [batch.states[p] for p in sorted(batch.states)]
                    await cur.executemany(_STATE_SQL, [_state_params(s) for s in states])
                for change in batch.sessions:  # in event order: a close follows its open
                    if change.end_reason is None:
                        await cur.execute(
                            _SESSION_OPEN_SQL,
                            (change.player_id, change.session_id, change.at, change.ip),
                        )
                    else:
                        await cur.execute(
                            _SESSION_CLOSE_SQL,
                            (change.at, change.end_reason, change.player_id, change.session_id),
                        )
            # Then the trail, the dead letters and the progress, in the same transaction.
            await audit.append(conn, batch.audit)
            await audit.store_dead_letters(conn, batch.dead_letters)
            await write_progress(conn, self.consumer_group, batch.progress)


def _event_params(row: PlayerEventRow) -> tuple[object, ...]:
    src = row.source
    return (src.topic, src.partition, src.offset, row.player_id, row.event_type,
            row.occurred_at, row.outcome, row.payload)  # fmt: skip


def _state_params(s: PlayerState) -> tuple[object, ...]:
    return (*(getattr(s, column) for column in STATE_COLUMNS), s.model_dump_json())
