"""Signed checkpoints of the audit trail on a timer.

Every ``CROUPIER_AUDIT_CHECKPOINT_INTERVAL`` seconds each worker tries to sign every
chain's head with the Ed25519 key in ``CROUPIER_AUDIT_KEY`` (``sinks/postgres/audit.py``).
A transaction-scoped advisory lock lets one worker sign at a time, and nothing is signed
when no chain moved since the last checkpoint. A regulator's export then always finds a
checkpoint at most one interval after the period it asks for.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

from croupier.settings import Settings
from sinks.postgres.audit import checkpoint_if_moved, load_or_create_key

log = logging.getLogger(__name__)


def register(app: Any, settings: Settings) -> None:
    """Declare the checkpoint timer on ``app`` (nothing when the interval is 0)."""
    if settings.audit_checkpoint_interval <= 0:
        return
    key = load_or_create_key(settings.audit_key)
    dsn, schema = settings.pg_dsn.get_secret_value(), settings.pg_schema

    def sign() -> tuple[int, int] | None:
        with psycopg.connect(dsn, options=f"-c search_path={schema}", connect_timeout=5) as conn:
            return checkpoint_if_moved(conn, key)

    @app.timer(interval=settings.audit_checkpoint_interval)  # type: ignore[untyped-decorator]
    async def audit_checkpoint() -> None:
        try:
            signed = await asyncio.to_thread(sign)
        except psycopg.Error as exc:  # the next tick tries again
            log.warning("audit checkpoint failed: %r", exc)
            return
        if signed is not None:
            log.info("audit checkpoint %d signed %d chain heads", *signed)
