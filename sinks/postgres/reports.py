"""Regulator streams from the audit trail: report records, a signed chain per jurisdiction.

The reporter reads the audit records it has not read yet (chain by chain, in sequence
order), keeps those about a player, and appends one report record for each to the chain
of the player's jurisdiction (``report_records``): numbered from 1 without a gap, each
signed with the operator's Ed25519 report key over the jurisdiction, the previous
signature and the record's exact JSON (``schemas/reports.py``). A bet is reported from its
decision's record (accepted or refused, with its stake), a casino move from the casino
transaction's record (which also says what was refused); every other ledger operation
(settlements and their rollbacks, payments) from its own. Reading, appending and recording
how far it read happen in one transaction, so a crash repeats a pass and never reports a
change twice or skips one. A second pass publishes the new report records to
``reports.<J>`` (keyed by entity id) and records how far it got: at least once on the
topic, the same bytes, with ``seq`` telling a reader a repeat from a gap. One worker runs
each pass at a time (advisory locks).

An audit record the reporter cannot turn into a report record (a shape it does not
expect, a value ``ReportRecord`` refuses) is set aside in ``report_rejections`` with the
error, in the same transaction, and the pass goes on: the turning is pure, so trying again
would fail again, and one record must never stop every jurisdiction's stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.reports import (
    GENESIS_SIGNATURE,
    AuditRef,
    ReportRecord,
    envelope_json,
    signed_message,
)
from sinks.postgres.common import jsonb
from sinks.postgres.sink import PgSink
from sinks.signing import public_bytes

log = logging.getLogger(__name__)

_DERIVE_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended('croupier.reports', 0))"
_PUBLISH_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended('croupier.reports.publish', 0))"
_UNREAD_SQL = """
SELECT r.chain, r.seq, r.body, r.hash
  FROM audit_heads h
  LEFT JOIN report_progress p USING (chain)
  JOIN LATERAL (SELECT a.chain, a.seq, a.hash,
                       -- only what _reportable may report is read and parsed: a stake's
                       -- or a casino move's ledger record is reported from its bet's or
                       -- its casino transaction's own record
                       CASE WHEN a.entity IN ('player', 'casino_transaction', 'bet')
                              OR (a.entity = 'ledger_transaction'
                                  AND a.action NOT IN ('ledger.stake', 'ledger.casino_debit',
                                                       'ledger.casino_credit',
                                                       'ledger.casino_rollback'))
                            THEN a.body END AS body
                  FROM audit_records a
                 WHERE a.chain = h.chain AND a.seq > coalesce(p.seq, 0)
                 ORDER BY a.seq LIMIT %s) r ON true
 WHERE h.seq > coalesce(p.seq, 0)
 ORDER BY r.chain, r.seq"""
# Per jurisdiction from its head, by the primary key: a plain join of report_records with
# report_published filtered every record the chains ever held (a whole scan a pass, which
# grew with the trail until the reporter was PostgreSQL's busiest client).
_UNPUBLISHED_SQL = """
SELECT r.jurisdiction, r.seq, r.entity_id, r.record_json, r.prev_signature, r.signature,
       r.public_key
  FROM report_heads h
  LEFT JOIN report_published p USING (jurisdiction)
  JOIN LATERAL (SELECT * FROM report_records r
                 WHERE r.jurisdiction = h.jurisdiction AND r.seq > coalesce(p.seq, 0)
                 ORDER BY r.seq LIMIT %s) r ON true
 WHERE h.seq > coalesce(p.seq, 0)
 ORDER BY r.jurisdiction, r.seq LIMIT %s"""

Send = Callable[[str, list[tuple[bytes, bytes]]], Awaitable[None]]  # jurisdiction, items


class OldReportChain(Exception):
    """A jurisdiction's chain was MAC-chained by an older version: it cannot be extended
    with signatures (its head is not a signature), and is never rewritten."""


def _reportable(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The report fields of an audit record (player id first), or None: not reported."""
    entity = doc["entity"]
    after: dict[str, Any] = doc.get("after") or {}
    kept: tuple[str, ...]
    if entity == "player":
        kept = ("jurisdiction", "exclusion", "limits", "session", "geolocation", "version")
        return {"player_id": doc["entity_id"], "kind": "player", "status": "applied",
                "details": {k: after[k] for k in kept if k in after}}  # fmt: skip
    if entity == "casino_transaction":
        kept = ("type", "round_id", "game_id", "error", "balance", "moved", "rng_build",
                "reference_transaction_id")  # fmt: skip
        return {"player_id": after["player_id"], "kind": "casino", "amount": after["amount"],
                "currency": after["currency"], "status": after["status"],
                "details": {k: after.get(k) for k in kept}}  # fmt: skip
    if entity == "bet":
        kept = ("reason", "odds", "selections", "decided_at")
        return {"player_id": after["player_id"], "kind": "bet", "amount": after["stake"],
                "currency": after["currency"], "status": after["status"],
                "details": {k: after.get(k) for k in kept}}  # fmt: skip
    if entity == "ledger_transaction":
        op = str(after["operation"])
        if op.startswith("casino_") or op == "stake":
            return None  # reported from the casino transaction's or the bet's own record
        kind = "bet" if op == "stake" else "settlement" if op in ("settle", "unsettle") else (
            "payment")  # fmt: skip
        kept = ("key", "operation", "reason", "reference", "result", "cash_after",
                "pending_after")  # fmt: skip
        amount = after["payout"] if op == "settle" else after["amount"]
        return {"player_id": after["player_id"], "kind": kind, "amount": amount,
                "currency": after["currency"], "status": after["status"],
                "details": {k: after.get(k) for k in kept}}  # fmt: skip
    return None


def _loads(body: Any) -> dict[str, Any]:
    """An audit record's body as a dict (psycopg may hand jsonb over already decoded).

    orjson reads a body several times faster than ``json``; what it refuses and ``json``
    takes (an integer beyond 64 bits, NaN, a lone surrogate's escape) goes to ``json``."""
    if isinstance(body, str | bytes):
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = json.loads(body)
    else:
        doc = body
    return doc if isinstance(doc, dict) else {"entity": None, "after": doc}


def _error(exc: Exception) -> str:
    """A short, one-line account of what a record raised (never its whole content)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500].replace("\x00", "?")


class ReportSink(PgSink):
    """The reporter's two passes (see the module docstring)."""

    async def derive(
        self, key: Ed25519PrivateKey, jurisdictions: Collection[str], *, limit: int = 2000
    ) -> int:
        """Append report records for unread audit records, signed with ``key`` (the
        operator's report key), for ``jurisdictions``; how many audit records read."""
        public = public_bytes(key)
        async with self.transaction() as conn:
            locked = await (await conn.execute(_DERIVE_LOCK)).fetchone()
            if not locked or not locked[0]:
                return 0
            rows = await (await conn.execute(_UNREAD_SQL, (limit,))).fetchall()
            if not rows:
                return 0
            docs = [(chain, int(seq), None if body is None else _loads(body), bytes(h))
                    for chain, seq, body, h in rows]  # fmt: skip
            rejected: list[tuple[str, int, str]] = []
            wanted = []
            for c, s, d, h in docs:
                if d is None:
                    continue  # not reportable: its body was not even read
                try:
                    fields = _reportable(d)
                    if fields is not None and not isinstance(fields["player_id"], str):
                        msg = f"player_id is {type(fields['player_id']).__name__}, not a string"
                        raise TypeError(msg)
                except Exception as exc:  # pure: it would fail again; set it aside
                    rejected.append((c, s, _error(exc)))
                    continue
                wanted.append((c, s, d, h, fields))
            players = sorted({f["player_id"] for *_, f in wanted if f is not None})
            cursor = await conn.execute(
                "SELECT player_id, jurisdiction FROM players WHERE player_id = ANY(%s)",
                (players,),
            )
            where = {p: j for p, j in await cursor.fetchall()}
            cursor = await conn.execute(
                "SELECT jurisdiction, seq, signature FROM report_lock_heads()"
            )
            heads = {j: (int(s), bytes(m)) for j, s, m in await cursor.fetchall()}
            old = sorted(j for j, (_, m) in heads.items() if len(m) != len(GENESIS_SIGNATURE))
            if old:
                msg = (f"the report chain of {', '.join(old)} was MAC-chained by an older "
                       "version (stream v1) and cannot be extended with signatures; start "
                       "the reports of a fresh schema (see README, Regulator reports)")  # fmt: skip
                raise OldReportChain(msg)
            out = []
            for chain, seq, doc, digest, fields in wanted:
                if fields is None:
                    continue
                after = doc.get("after")
                j = where.get(fields["player_id"]) or (
                    after.get("jurisdiction") if isinstance(after, dict) else None
                )
                if not isinstance(j, str) or j not in jurisdictions:
                    continue  # a player Croupier never registered: nobody to report to
                last, prev = heads.get(j, (0, GENESIS_SIGNATURE))
                try:
                    record = ReportRecord(
                        jurisdiction=j, seq=last + 1, record_id=f"{j}-{last + 1}",
                        action=doc["action"], entity_id=doc["entity_id"],
                        occurred_at=doc["occurred_at"], recorded_at=doc["recorded_at"],
                        audit=AuditRef(chain=chain, seq=seq, hash=digest.hex()), **fields,
                    )  # fmt: skip
                    body = record.record_json()
                except Exception as exc:  # pure: it would fail again; set it aside
                    rejected.append((chain, seq, _error(exc)))
                    continue
                signature = key.sign(signed_message(j, prev, body))
                heads[j] = (last + 1, signature)
                out.append((j, last + 1, record.entity_id, body.decode(), prev, signature,
                            public, chain, seq))  # fmt: skip
            done = {chain: seq for chain, seq, *_ in docs}
            # The chain's owner appends (migration 0021): each record must follow its
            # head and come from a record the trail holds; then the heads move.
            if out:
                await conn.execute("SELECT report_append(%s::jsonb)", (jsonb([
                    (j, s, entity, body, bytes(prev).hex(), bytes(sig).hex(),
                     bytes(pub).hex(), chain, seq)
                    for j, s, entity, body, prev, sig, pub, chain, seq in out]),))  # fmt: skip
            if rejected:
                await conn.execute("SELECT report_reject(%s::jsonb)", (jsonb(rejected),))
            async with conn.cursor() as cur:
                await cur.executemany(
                    """INSERT INTO report_progress (chain, seq) VALUES (%s, %s)
                       ON CONFLICT (chain) DO UPDATE SET seq = EXCLUDED.seq""",
                    sorted(done.items()),
                )
        for chain, seq, error in rejected:
            log.warning("reporter: audit record %s/%d set aside in report_rejections: %s",
                        chain, seq, error)  # fmt: skip
        return len(docs)  # audit records read: a pass that read some may have more to read

    async def publish(self, send: Send, *, limit: int = 2000) -> int:
        """Publish report records not yet published, each chain in order; how many."""
        async with self.transaction() as conn:
            locked = await (await conn.execute(_PUBLISH_LOCK)).fetchone()
            if not locked or not locked[0]:
                return 0
            rows = await (await conn.execute(_UNPUBLISHED_SQL, (limit, limit))).fetchall()
            if not rows:
                return 0
            by_j: dict[str, list[tuple[bytes, bytes]]] = {}
            last: dict[str, int] = {}
            for j, seq, entity_id, record_json, prev, signature, public in rows:
                envelope = envelope_json(j, int(seq), record_json, bytes(prev).hex(),
                                         bytes(signature).hex(), bytes(public).hex())  # fmt: skip
                by_j.setdefault(j, []).append((entity_id.encode(), envelope))
                last[j] = int(seq)
            for j, items in sorted(by_j.items()):
                await send(j, items)
            async with conn.cursor() as cur:
                await cur.executemany(
                    """INSERT INTO report_published (jurisdiction, seq) VALUES (%s, %s)
                       ON CONFLICT (jurisdiction) DO UPDATE SET seq = EXCLUDED.seq""",
                    sorted(last.items()),
                )
        return len(rows)
