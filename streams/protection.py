"""The session watcher: reality checks on time, and sessions ended at their time limit.

A timer (``CROUPIER_SESSION_WATCH_INTERVAL``, 1 s by default) reads every open session
with its player's standing and recent activity from PostgreSQL. Every worker runs it; a
transaction-scoped advisory lock lets one pass run at a time and the others skip.

* **Reality checks.** When the n-th interval of the jurisdiction's
  ``reality_check_minutes`` has passed since the session started, a
  ``reality_check_due`` notification (elapsed time, net position: winnings minus stakes
  in the session) goes to ``player-notifications``. Each is recorded in
  ``reality_checks`` (one per session and sequence) in a transaction that commits only
  after Kafka has the message: a crash may send one twice, with the same sequence, but
  never loses one. A worker that was down for several intervals sends the latest only.
* **Session-time limits.** A session whose player has used up a session-time limit is
  ended: a ``session_ended`` event with reason ``session_limit`` is published on the
  ``players`` topic, so the players flow applies it like any other (audited, in order).
  Play is refused ``session_limit`` from the moment the limit is used up, whether or not
  the end has been applied yet (``rules/compliance.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from config.settings import Settings
from rules.limits import Usage, session_breach
from rules.policy import Policies
from schemas.money import to_minor_unit
from schemas.outbound import PlayerNotification
from sinks.base import SinkUnavailable
from sinks.postgres.protection import OpenSessionRow, RealityCheck, SessionSink
from streams.context import app_timer, publish

log = logging.getLogger(__name__)


def plan_sessions(
    rows: Sequence[OpenSessionRow],
    usage: dict[str, Usage],
    loss: dict[str, Decimal],
    policies: Policies,
    at: datetime,
) -> tuple[list[RealityCheck], list[OpenSessionRow]]:
    """The reality checks due at ``at``, and the open sessions over a session-time limit.

    ``loss`` is each player's loss since their session started (stakes minus winnings).
    """
    checks: list[RealityCheck] = []
    over: list[OpenSessionRow] = []
    for row in rows:
        policy = policies.get(row.standing.jurisdiction)
        if policy is None:
            continue
        used = usage.get(row.player_id, Usage())
        if session_breach(row.standing.limits, used.sessions, at) is not None:
            over.append(row)
        elapsed = at - row.started_at
        due = int(elapsed / policy.sessions.reality_check)
        if due < 1 or due <= row.last_check:
            continue
        currency = row.standing.currency
        net = to_minor_unit(-loss.get(row.player_id, Decimal(0)), currency)
        message = PlayerNotification(
            player_id=row.player_id,
            session_id=row.session_id,
            sequence=due,
            elapsed_seconds=int(elapsed.total_seconds()),
            net_position=net,
            currency=currency,
            timestamp=at,
        ).model_dump_json()
        seconds = int(elapsed.total_seconds())
        checks.append(
            RealityCheck(
                row.player_id, row.session_id, row.started_at, due, seconds, net, currency, message
            )
        )
    return checks, over


def session_end_event(row: OpenSessionRow, at: datetime) -> bytes:
    """The ``session_ended`` event that closes a session at its time limit."""
    return json.dumps({
        "type": "session_ended", "player_id": row.player_id, "session_id": row.session_id,
        "reason": "session_limit", "timestamp": at.isoformat(),
    }).encode()  # fmt: skip


def register(app: Any, settings: Settings, *, sink: SessionSink, policies: Policies) -> Any:
    """Declare the session watcher's timer on ``app``; returns it."""
    notifications, players = settings.topic("player-notifications"), settings.topic("players")
    ended: set[tuple[str, str]] = set()  # sessions this process has asked to end
    intervals = {j: p.sessions.reality_check.total_seconds() for j, p in policies.items()}
    opened: list[bool] = []

    async def send(checks: Sequence[RealityCheck], ends: Sequence[OpenSessionRow]) -> None:
        at = datetime.now(UTC)
        new = [r for r in ends if (r.player_id, r.session_id) not in ended]
        await publish(app, players, [(r.player_id.encode(), session_end_event(r, at))
                                     for r in new])  # fmt: skip
        await publish(app, notifications, [(c.player_id.encode(), c.message.encode())
                                           for c in checks])  # fmt: skip
        await app.producer.flush()
        for r in new:
            ended.add((r.player_id, r.session_id))
            log.info("session %s of %s ended: session-time limit used up",
                     r.session_id, r.player_id)  # fmt: skip

    @app_timer(app, settings.session_watch_interval)
    async def watch_sessions() -> None:
        """Send the reality checks that are due; end sessions over their time limit."""
        if not opened:
            await sink.open()
            opened.append(True)
        at = datetime.now(UTC)
        seen: list[tuple[str, str]] = []

        def plan(
            rows: list[OpenSessionRow], usage: dict[str, Usage], loss: dict[str, Decimal]
        ) -> tuple[list[RealityCheck], list[OpenSessionRow]]:
            seen.extend((r.player_id, r.session_id) for r in rows)
            return plan_sessions(rows, usage, loss, policies, at)

        try:
            if await sink.watch(at, intervals, plan, send):
                ended.intersection_update(seen)
        except SinkUnavailable as exc:
            log.warning("session watcher: %s; trying again next tick", exc)

    return watch_sessions
