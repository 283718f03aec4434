"""The ``players`` flow: keep each player's standing in a changelog-backed table.

Every consumed message ends as exactly one row in PostgreSQL: a decided event in
``player_events`` (applied, or unchanged for a producer's retry) or a refusal in
``dead_letters`` (undecodable, or refused by the rules with a reason code), and the
dead letter also goes to the ``dead-letters`` topic.

Per batch: read back any offsets the consumer skipped (``streams/gaps.py``), decode,
apply the pure rules against the table, send dead letters and wait until Kafka has
them, write everything (audit records included) to PostgreSQL in one transaction
(idempotent by Kafka position), and only then update the table and record the
partition's progress. A crash anywhere replays the batch: the dead letters are sent
again if PostgreSQL had not committed (at least once, keyed by source position),
PostgreSQL ignores rows it has, and an event the standing already reflects (its offset
is not past the state's ``source_offset``) is not applied twice.

The table is a cache of PostgreSQL's ``players`` rows: each batch reads the stored
standings of its players, and a newer stored one (a crash between the commit and the
changelog write) wins and is written back to the table. A partition's progress is
recorded only after rows, outputs and table are all done.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from croupier.settings import Settings
from rules.clock import DEFAULT_CLOCK_SKEW
from rules.players import Rejected, Unchanged, apply_player_event
from rules.policy import Policies
from schemas.decode import DecodeFailure, decode
from schemas.players import PLAYER_EVENT, PlayerEvent, PlayerState, SessionEnded
from schemas.records import AuditRecord, DeadLetter
from sinks.base import ProgressSink
from sinks.postgres.players import PlayerBatch, PlayerEventRow, SessionChange
from streams import metrics
from streams.batching import until_available
from streams.context import (
    dead_letter,
    in_partition_of,
    letter_records,
    position,
    publish,
)
from streams.flow import declare_flow

log = logging.getLogger(__name__)


@dataclass
class _Outputs:
    dead_letters: list[tuple[bytes | None, DeadLetter]] = field(default_factory=list)
    table: list[tuple[Any, str, PlayerState]] = field(default_factory=list)


class PlayerStore(ProgressSink[PlayerBatch], Protocol):
    """Where the players flow writes, and the standings it trusts over its table."""

    async def standings(self, player_ids: list[str]) -> dict[str, PlayerState]: ...


Decoded = list[tuple[Any, PlayerEvent | DecodeFailure]]


def decode_batch(events: list[Any]) -> Decoded:
    out: Decoded = []
    for event in events:
        result = decode(PLAYER_EVENT, event.message.value, key=event.message.key)
        out.append((event, result))
    return out


def _state(value: Any) -> PlayerState | None:
    return None if value is None else PlayerState.model_validate(value)


def _newest(cached: PlayerState | None, stored: PlayerState | None) -> PlayerState | None:
    # PostgreSQL is the truth; the table is a cache that a crash can leave behind it.
    if cached is None or (stored is not None and stored.version > cached.version):
        return stored
    return cached


def session_changes(
    before: PlayerState | None, after: PlayerState, event: PlayerEvent, now: datetime
) -> list[SessionChange]:
    """The sessions an applied event opened or closed.

    A session ends when the server applies its end, or at the producer's time if that is
    later (it is within the clock tolerance): a back-dated end would count less play time
    than the player had, against a session limit."""
    old, new = before.session if before else None, after.session
    if old == new:
        return []
    out: list[SessionChange] = []
    if old is not None:
        if new is not None:
            reason = "replaced"
        else:
            reason = event.reason if isinstance(event, SessionEnded) else "player"
        out.append(SessionChange(after.player_id, old.session_id, max(event.timestamp, now),
                                 end_reason=reason))  # fmt: skip
    if new is not None:
        out.append(SessionChange(after.player_id, new.session_id, new.started_at, new.ip))
    return out


def plan_batch(
    items: Decoded,
    table: Any,
    stored: Mapping[str, PlayerState] | None = None,
    *,
    policies: Policies,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> tuple[PlayerBatch, _Outputs]:
    """Decide every event of a batch; no I/O beyond reading the table.

    ``stored`` holds PostgreSQL's standings of the batch's players; where one is newer
    than the table's, it wins.
    """
    stored = stored or {}
    batch = PlayerBatch()
    out = _Outputs()
    seen: dict[str, PlayerState | None] = {}
    now = datetime.now(UTC)
    for event, decoded in items:
        pos = position(event)
        done = batch.progress.get((pos.topic, pos.partition), 0)
        batch.progress[(pos.topic, pos.partition)] = max(done, pos.offset + 1)
        if isinstance(decoded, DecodeFailure):
            dl = dead_letter(event, decoded.reason, decoded.error)
            batch.dead_letters.append(dl)
            out.dead_letters.append((event.message.key, dl))
            continue
        pid = decoded.player_id
        if pid not in seen:
            cached = _state(table.get(pid))
            truth = _newest(cached, stored.get(pid))
            if truth is not None and truth is not cached:
                out.table.append((event, pid, truth))  # heal the table from PostgreSQL
            seen[pid] = truth
        before = seen[pid]
        if (
            before is not None
            and before.source_partition == pos.partition
            and pos.offset <= before.source_offset
        ):
            continue  # applied before a crash; PostgreSQL and the outputs already have it
        result = apply_player_event(
            before, decoded, partition=pos.partition, offset=pos.offset, policies=policies,
            now=now, clock_skew=clock_skew,
        )  # fmt: skip
        row: dict[str, Any] = {
            "source": pos,
            "player_id": pid,
            "event_type": decoded.type,
            "occurred_at": decoded.timestamp,
            "payload": decoded.model_dump_json(),
        }
        if isinstance(result, Rejected):
            dl = dead_letter(event, result.reason, result.error)
            batch.dead_letters.append(dl)
            out.dead_letters.append((event.message.key, dl))
            continue
        if isinstance(result, Unchanged):
            batch.events.append(PlayerEventRow(**row, outcome="unchanged"))
            continue
        batch.events.append(PlayerEventRow(**row, outcome="applied"))
        batch.sessions.extend(session_changes(before, result, decoded, now))
        batch.states[pid] = result
        seen[pid] = result
        out.table.append((event, pid, result))
        record = AuditRecord(
            entity="player",
            entity_id=pid,
            action=f"player.{decoded.type}",
            source=pos,
            occurred_at=decoded.timestamp,
            recorded_at=now,
            before=before.model_dump(mode="json") if before else None,
            after=result.model_dump(mode="json"),
        )
        batch.audit.append(record)
    return batch, out


def register(
    app: Any, settings: Settings, *, table: Any, sink: PlayerStore, policies: Policies
) -> Any:
    """Declare the players agent on ``app``; returns the agent."""
    source_topic = settings.topic("players")
    dead_letters = settings.topic("dead-letters")

    async def process(events: list[Any]) -> None:
        decoded = decode_batch(events)
        players = sorted({d.player_id for _, d in decoded if not isinstance(d, DecodeFailure)})
        stored = await until_available(lambda: sink.standings(players), what="PostgreSQL")
        batch, out = plan_batch(
            decoded, table, stored, policies=policies, clock_skew=settings.clock_skew
        )
        # The dead letters reach Kafka before PostgreSQL commits: a crash before the commit
        # replays the batch and sends them again (keyed by source position); after it,
        # the replay finds the batch committed and they are already out. The audit
        # records go in the same transaction as the standings; the relay publishes them
        # once committed (streams/audit.py).
        await publish(app, dead_letters, letter_records(out.dead_letters))
        await app.producer.flush()
        with metrics.sink_batch("postgres.players", len(batch.events) + len(batch.dead_letters)):
            await until_available(lambda: sink.write(batch), what="PostgreSQL")
        for event, key, state in out.table:
            with in_partition_of(event):
                table[key] = state.model_dump(mode="json")
        # Done means rows, outputs and table: only now does the partition's progress move.
        # A crash before this leaves it behind, and the skipped range is read back.
        await app.producer.flush()
        await until_available(lambda: sink.record_progress(batch.progress), what="PostgreSQL")

    agent = declare_flow(
        app,
        settings,
        name="croupier.players",
        source_topic=source_topic,
        sink=sink,
        process=process,
    )
    return agent
