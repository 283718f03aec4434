"""The audit relay: committed audit records to the ``audit`` topic, each chain in order.

A pass takes an advisory lock (so any number of auditors and workers may run it and each
record is still published in order, at least once), reads what each chain holds past its
published position, publishes it and moves the positions, in one transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sinks.postgres.sink import PgSink

_RELAY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended('croupier.audit.relay', 0))"
_UNPUBLISHED_SQL = """
SELECT r.chain, r.seq, r.entity_id, r.body
  FROM audit_heads h
  LEFT JOIN audit_published p USING (chain)
  JOIN LATERAL (SELECT a.chain, a.seq, a.entity_id, a.body FROM audit_records a
                 WHERE a.chain = h.chain AND a.seq > coalesce(p.seq, 0)
                 ORDER BY a.seq LIMIT %s) r ON true
 WHERE h.seq > coalesce(p.seq, 0)
 ORDER BY r.chain, r.seq"""
_PUBLISHED_SQL = """
INSERT INTO audit_published (chain, seq) VALUES (%s, %s)
ON CONFLICT (chain) DO UPDATE SET seq = EXCLUDED.seq"""

Publish = Callable[[list[tuple[bytes, bytes]]], Awaitable[None]]


class AuditRelay(PgSink):
    """Committed audit records to the ``audit`` topic (keyed by entity id), each chain in
    sequence order, one worker's pass at a time."""

    async def relay(self, publish: Publish, *, limit: int = 2000) -> int:
        """Publish what is committed and not yet published (up to ``limit`` per chain);
        how many. ``publish`` must return only once Kafka has them."""
        async with self.transaction() as conn:
            cursor = await conn.execute(_RELAY_LOCK)
            locked = await cursor.fetchone()
            if not locked or not locked[0]:
                return 0  # another worker's pass
            cursor = await conn.execute(_UNPUBLISHED_SQL, (limit,))
            rows = await cursor.fetchall()
            if not rows:
                return 0
            await publish([(entity_id.encode(), body.encode()) for _, _, entity_id, body in rows])
            last = {chain: int(seq) for chain, seq, _, _ in rows}
            async with conn.cursor() as cur:
                await cur.executemany(_PUBLISHED_SQL, sorted(last.items()))
        return len(rows)
