"""The ``players`` flow: each player's standing, kept in PostgreSQL.

Every consumed message ends as exactly one row in PostgreSQL: a decided event in
``player_events`` (applied, or unchanged for a producer's retry) or a refusal in
``dead_letters`` (undecodable, or refused by the rules with a reason code), and the
dead letter also goes to the ``dead-letters`` topic.

Per batch (``streams/flow.py`` runs the protocol): decode, read the batch's players'
standings from PostgreSQL (the only copy: every product reads them there, in its own
transaction), apply the pure rules (``rules/players.py``), and write events, standings,
sessions, audit records, dead letters and the partition's progress in one transaction.
A crash replays the batch: an event the standing already reflects (its offset is not past
the state's ``source_offset``) is not applied twice, and PostgreSQL ignores rows it has.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from config.settings import Settings
from rules.clock import DEFAULT_CLOCK_SKEW
from rules.players import Rejected, Unchanged, apply_player_event
from rules.policy import Policies
from schemas.decode import DecodeFailure, decode
from schemas.players import PLAYER_EVENT, PlayerEvent, PlayerState, SessionEnded
from schemas.records import AuditRecord
from sinks.base import Store
from sinks.postgres.players import PlayerBatch, PlayerEventRow, SessionChange
from streams import metrics
from streams.batching import until_available
from streams.context import Letters, dead_letter, letter_records, position
from streams.flow import Flow, Outputs, declare_flow
from streams.kafka import Message

log = logging.getLogger(__name__)


class PlayerStore(Store, Protocol):
    """Where the players flow reads its players' standings and writes a batch."""

    async def write(self, batch: PlayerBatch) -> None: ...

    async def standings(self, player_ids: list[str]) -> dict[str, PlayerState]: ...


Decoded = list[tuple[Message, PlayerEvent | DecodeFailure]]


def decode_batch(messages: list[Message]) -> Decoded:
    out: Decoded = []
    for m in messages:
        result = decode(PLAYER_EVENT, m.value, key=m.key)
        out.append((m, result))
    metrics.count_wrongly_keyed(
        (m.topic, m.key, r) for m, r in out if not isinstance(r, DecodeFailure)
    )
    return out


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
    stored: Mapping[str, PlayerState],
    *,
    policies: Policies,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> tuple[PlayerBatch, Letters]:
    """Decide every event of a batch against PostgreSQL's standings of its players (``stored``);
    no I/O. What to write, and the dead letters to publish."""
    batch = PlayerBatch()
    out: Letters = []
    seen: dict[str, PlayerState | None] = {}
    now = datetime.now(UTC)
    for message, decoded in items:
        pos = position(message)
        done = batch.progress.get((pos.topic, pos.partition), 0)
        batch.progress[(pos.topic, pos.partition)] = max(done, pos.offset + 1)
        if isinstance(decoded, DecodeFailure):
            dl = dead_letter(message, decoded.reason, decoded.error)
            batch.dead_letters.append(dl)
            out.append((message.key, dl))
            continue
        pid = decoded.player_id
        if pid not in seen:
            seen[pid] = stored.get(pid)
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
            dl = dead_letter(message, result.reason, result.error)
            batch.dead_letters.append(dl)
            out.append((message.key, dl))
            continue
        if isinstance(result, Unchanged):
            batch.events.append(PlayerEventRow(**row, outcome="unchanged"))
            continue
        batch.events.append(PlayerEventRow(**row, outcome="applied"))
        batch.sessions.extend(session_changes(before, result, decoded, now))
        batch.states[pid] = result
        seen[pid] = result
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


def register(app: Any, settings: Settings, *, sink: PlayerStore, policies: Policies) -> Flow:
    """Run the players flow in ``app``."""
    dead_letters = settings.topic("dead-letters")

    async def handle(messages: list[Message]) -> Outputs:
        decoded = decode_batch(messages)
        players = sorted({d.player_id for _, d in decoded if not isinstance(d, DecodeFailure)})
        stored = await until_available(lambda: sink.standings(players), what="PostgreSQL")
        batch, letters = plan_batch(decoded, stored, policies=policies,
                                    clock_skew=settings.clock_skew)  # fmt: skip
        with metrics.sink_batch("postgres.players", len(batch.events) + len(batch.dead_letters)):
            await until_available(lambda: sink.write(batch), what="PostgreSQL")
        out = Outputs()
        out.add(dead_letters, letter_records(letters))
        return out

    return declare_flow(app, settings, name="players", topic=settings.topic("players"),
                        store=sink, handle=handle)  # fmt: skip
