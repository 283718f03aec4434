"""The audit trail's timers: the relay to the ``audit`` topic, and signed checkpoints.

**Relay.** The flows write audit records only to PostgreSQL, in the transaction of the
change they record. Every ``CROUPIER_AUDIT_RELAY_INTERVAL`` seconds a worker publishes
what is committed and not yet published, each chain in sequence order, keyed by entity
id, and then records how far it got (``audit_published``): the topic carries exactly the
committed records, at least once (a crash between the publish and that record sends some
again, the same bytes). One worker's pass at a time (an advisory lock).

**Checkpoints.**
Every ``CROUPIER_AUDIT_CHECKPOINT_INTERVAL`` seconds each worker tries to sign every
chain's head with the Ed25519 key in ``CROUPIER_AUDIT_KEY`` (``sinks/postgres/audit.py``),
and alerts on a checkpoint signed by another key than the pinned one
(``streams/audit_keys.py``).
A transaction-scoped advisory lock lets one worker sign at a time, and nothing is signed
when no chain moved since the last checkpoint. A regulator's export then always finds a
checkpoint at most one interval after the period it asks for.

Both timers run on every worker; a pass that fails is logged by ``app_timer`` and the
next tick tries again; what it did not do waits in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

from config.settings import Settings
from sinks.base import SinkUnavailable
from sinks.postgres.relay import AuditRelay
from streams.audit_keys import KeyWatch
from streams.context import app_timer, publish

log = logging.getLogger(__name__)


def register(app: Any, settings: Settings, *, relay: AuditRelay) -> None:
    """Declare the relay and checkpoint timers on ``app`` (each off when its interval is 0)."""
    topic = settings.topic("audit")

    async def to_kafka(records: list[tuple[bytes, bytes]]) -> None:
        await publish(app, topic, records)
        await app.producer.flush()

    relay_open: list[bool] = []
    if settings.audit_relay_interval > 0:

        @app_timer(app, settings.audit_relay_interval)
        async def audit_relay() -> None:
            if not relay_open:
                await relay.open()
                relay_open.append(True)
            try:
                while await relay.relay(to_kafka) > 0:
                    pass  # a backlog: keep going until it is out
            except SinkUnavailable as exc:  # the next tick tries again
                log.warning("audit relay: %s", exc)

    if settings.audit_checkpoint_interval <= 0:
        return
    watch = KeyWatch(settings)  # a missing or too open key file stops the worker here
    dsn, schema = settings.pg_dsn.get_secret_value(), settings.pg_schema

    def sign() -> tuple[int, int] | None:
        with psycopg.connect(dsn, options=f"-c search_path={schema}", connect_timeout=5) as conn:
            return watch.sign(conn)

    @app_timer(app, settings.audit_checkpoint_interval)
    async def audit_checkpoint() -> None:
        try:
            signed = await asyncio.to_thread(sign)
        except psycopg.Error as exc:  # the next tick tries again
            log.warning("audit checkpoint failed: %r", exc)
            return
        if signed is not None:
            log.info("audit checkpoint %d signed %d chain heads", *signed)
