"""The audit trail's PostgreSQL side: append hash-chained records, and verify the chains.

A chain is one source partition (``<topic>/<partition>``): the flow that consumes it
appends its audit records in offset order, inside the same transaction as the state
change they record, so a record exists exactly when its change does. Each record's hash
is SHA-256 over the previous record's hash and the record's exact JSON (``body``); the
chain's head (last sequence number and hash) is kept in ``audit_heads``, locked while a
batch appends. The three tables belong to ``croupier_audit`` (migration 0019): the
application locks heads, appends and adds checkpoints only through its functions, and
``audit_append`` refuses a record that does not follow its chain's head. ``verify``
recomputes every chain and names the first record that does not hold: altered, removed,
reordered or inserted.

A chain alone cannot catch someone who rewrites it whole, recomputing every hash.
``checkpoint`` signs every chain's head with an Ed25519 key the database never sees
(``audit_checkpoints``); ``verify_checkpoints`` checks each signature against the pinned
public key (``sinks/signing.py``), never the key the row names, and that every chain
still holds the head it signed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.records import AuditRecord, DeadLetter, audit_json
from sinks.audit_bundle import checkpoint_line, header_line, record_line
from sinks.chain import GENESIS, Problem, Verification, chain_of, check_chains, link
from sinks.postgres.common import DEAD_LETTER_SQL, dead_letter_params, jsonb
from sinks.signing import Pin, fingerprint, public_bytes

# The trail belongs to croupier_audit: the application locks heads and appends only
# through its SECURITY DEFINER functions (migration 0019), which refuse a record that does
# not extend its chain.
_HEADS_SQL = "SELECT chain, seq, hash FROM audit_lock_heads(%s::text[])"
# One call a batch, the rows in one JSON parameter (hashes in hex): psycopg adapts eleven
# arrays of a batch's size about six times slower than json.dumps writes them.
_APPEND_SQL = "SELECT audit_append(%s::jsonb)"


@dataclass
class Heads:
    """Chains' heads locked in this transaction (``lock_heads``): (seq, hash) per chain
    that has records; a locked chain without one starts at the genesis."""

    locked: frozenset[str]
    cursor: Any = None  # the SELECT sent, until ``read``
    heads: dict[str, tuple[int, bytes]] | None = None

    async def read(self) -> dict[str, tuple[int, bytes]]:
        if self.heads is None:
            rows = await self.cursor.fetchall() if self.cursor is not None else []
            self.heads = {c: (int(s), bytes(h)) for c, s, h in rows}
        return self.heads


async def lock_heads(conn: Any, chains: Iterable[str]) -> Heads:
    """Lock the heads of ``chains`` (in chain order) for an ``append`` later in this
    transaction. Sends the statement without waiting for it, so in a pipeline it travels
    with the caller's other reads."""
    ordered = sorted(set(chains))
    if not ordered:
        return Heads(frozenset())
    return Heads(frozenset(ordered), await conn.execute(_HEADS_SQL, (ordered,)))


async def append(conn: Any, records: Sequence[AuditRecord], *, heads: Heads | None = None) -> None:
    """Append ``records`` (in their order) to their chains, in ``conn``'s transaction;
    ``heads`` are those the caller locked already (any other chain is locked here)."""
    if not records:
        return
    chains = {chain_of(r) for r in records}
    if heads is None:
        heads = Heads(frozenset())
    current = await heads.read()
    missing = chains - heads.locked
    if missing:
        current.update(await (await lock_heads(conn, missing)).read())
        heads.locked |= missing
    await _write(conn, records, current)


async def _write(
    conn: Any,
    records: Sequence[AuditRecord],
    heads: dict[str, tuple[int, bytes]],
) -> None:
    """Chain ``records`` on from ``heads`` (which move to the new heads) and store them."""
    rows = []
    for record in records:
        chain = chain_of(record)
        seq, prev = heads.get(chain, (0, GENESIS))
        body = audit_json(record)
        digest = link(prev, body)
        src = record.source
        rows.append((chain, seq + 1, record.entity, record.entity_id, record.action, src.topic,
                     src.partition, src.offset, body, prev.hex(), digest.hex()))  # fmt: skip
        heads[chain] = (seq + 1, digest)
    await conn.execute(_APPEND_SQL, (jsonb(rows),))


async def append_new(conn: Any, records: Sequence[AuditRecord]) -> None:
    """``append`` the records the trail does not hold yet (same input, entity and action).

    For flows whose state is idempotent somewhere else (a table keyed by feed time, a
    dead-letter table keyed by position): a replayed input finds its record there.
    """
    if not records:
        return
    cursor = await conn.execute(
        """SELECT source_topic, source_partition, source_offset, entity, entity_id, action
             FROM audit_records
            WHERE (source_topic, source_partition, source_offset) IN
                  (SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[]))""",
        ([r.source.topic for r in records], [r.source.partition for r in records],
         [r.source.offset for r in records]),
    )  # fmt: skip
    # The chains' heads are locked in the same round trip (in a pipeline): a record held
    # already leaves its chain locked for nothing, which costs less than a second trip.
    heads = await lock_heads(conn, {chain_of(r) for r in records})
    held = {tuple(row) for row in await cursor.fetchall()}
    await append(conn, [r for r in records if _identity(r) not in held], heads=heads)


def _identity(r: AuditRecord) -> tuple[object, ...]:
    s = r.source
    return (s.topic, s.partition, s.offset, r.entity, r.entity_id, r.action)


def dead_letter_record(letter: DeadLetter) -> AuditRecord:
    """The audit record of a dead letter: where the input was, why it was refused, its bytes."""
    src = letter.source
    return AuditRecord(
        entity="dead_letter",
        entity_id=f"{src.topic}/{src.partition}/{src.offset}",
        action="dead_letter.recorded",
        source=src,
        occurred_at=letter.dead_lettered_at,
        recorded_at=letter.dead_lettered_at,
        before=None,
        after={"reason": letter.reason, "error": letter.error, "key_base64": letter.key_base64,
               "value_base64": letter.value_base64,
               **({"value_size": letter.value_size, "value_sha256": letter.value_sha256,
                   "key_size": letter.key_size} if letter.truncated else {})},
    )  # fmt: skip


async def store_dead_letters(conn: Any, letters: Sequence[DeadLetter]) -> None:
    """Store dead letters (a position's first only) with their audit records, in ``conn``'s
    transaction."""
    if not letters:
        return
    async with conn.cursor() as cur:
        await cur.executemany(DEAD_LETTER_SQL, [dead_letter_params(d) for d in letters])
    await append_new(conn, [dead_letter_record(d) for d in letters])


def _rows(conn: psycopg.Connection[Any]) -> Iterator[tuple[str, int, str, bytes, bytes]]:
    with conn.cursor(name="audit_verify") as cur:  # server-side: the trail may be large
        cur.execute("SELECT chain, seq, body, prev_hash, hash FROM audit_records "
                    "ORDER BY chain, seq")  # fmt: skip
        for chain, seq, body, prev, digest in cur:
            yield chain, int(seq), body, bytes(prev), bytes(digest)


def verify(conn: psycopg.Connection[Any]) -> Verification:
    """Recompute every chain in PostgreSQL; the first problem of each broken one."""
    heads = {c: (int(s), bytes(h)) for c, s, h in
             conn.execute("SELECT chain, seq, hash FROM audit_heads").fetchall()}  # fmt: skip
    return check_chains(_rows(conn), heads)


# -- signed checkpoints -------------------------------------------------------------------


def checkpoint(conn: psycopg.Connection[Any], key: Ed25519PrivateKey) -> tuple[int, int]:
    """Sign every chain's head now; (checkpoint id, chains covered). Commits."""
    with conn.transaction():
        heads = conn.execute("SELECT chain, seq, hash FROM audit_heads ORDER BY chain").fetchall()
        at = conn.execute("SELECT now()").fetchone()
        document = json.dumps(
            {"created_at": at[0].isoformat() if at else "",
             "heads": {c: {"seq": int(s), "hash": bytes(h).hex()} for c, s, h in heads}},
            sort_keys=True, separators=(",", ":"),
        )  # fmt: skip
        row = conn.execute(
            "SELECT audit_add_checkpoint(%s, %s, %s)",
            (document, public_bytes(key), key.sign(document.encode())),
        ).fetchone()
    return (int(row[0]) if row else 0), len(heads)


_CHECKPOINT_LOCK = (
    "SELECT pg_try_advisory_xact_lock(hashtextextended('croupier.audit.checkpoint', 0))"
)


def checkpoint_if_moved(
    conn: psycopg.Connection[Any], key: Ed25519PrivateKey
) -> tuple[int, int] | None:
    """Sign a checkpoint when a chain moved since the last one; None when nothing moved or
    another worker is signing right now. For the workers' timer. Commits."""
    with conn.transaction():
        locked = conn.execute(_CHECKPOINT_LOCK).fetchone()
        if not locked or not locked[0]:
            return None
        last = conn.execute("SELECT document FROM audit_checkpoints "
                            "ORDER BY checkpoint_id DESC LIMIT 1").fetchone()  # fmt: skip
        signed = json.loads(last[0])["heads"] if last else {}
        heads = {c: {"seq": int(s), "hash": bytes(h).hex()} for c, s, h in
                 conn.execute("SELECT chain, seq, hash FROM audit_heads").fetchall()}  # fmt: skip
        if heads == signed:
            return None
        return checkpoint(conn, key)


def verify_checkpoints(conn: psycopg.Connection[Any], pin: Pin) -> tuple[int, list[Problem]]:
    """Check every checkpoint's signature by the pinned key and that every chain still
    holds the head it signed; (checkpoints, problems). A checkpoint whose row names
    another key is a problem of its own: the key changed."""
    problems: list[Problem] = []
    rows = conn.execute(
        "SELECT checkpoint_id, document, public_key, signature FROM audit_checkpoints "
        "ORDER BY checkpoint_id"
    ).fetchall()
    for cid, document, stored_key, signature in rows:
        named = bytes(stored_key)
        if not pin.matches(named):
            what = (f"its row names key {fingerprint(named)}, not the pinned key "
                    f"{pin.fingerprint} (the signing key changed)")  # fmt: skip
            problems.append(Problem(f"checkpoint {cid}", 0, what))
        if not pin.verifies(named, bytes(signature), document.encode()):
            what = f"its signature does not verify with the pinned key {pin.fingerprint}"
            problems.append(Problem(f"checkpoint {cid}", 0, what))
            continue
        heads = json.loads(document)["heads"]
        for chain, head in sorted(heads.items()):
            got = conn.execute(
                "SELECT hash FROM audit_records WHERE chain = %s AND seq = %s",
                (chain, head["seq"]),
            ).fetchone()
            if got is None or bytes(got[0]).hex() != head["hash"]:
                what = (f"checkpoint {cid} signed this record's hash, and the chain no longer "
                        "holds it (the chain was rewritten)")  # fmt: skip
                problems.append(Problem(chain, int(head["seq"]), what))
    return len(rows), problems


def checkpoint_keys(conn: psycopg.Connection[Any], after: int) -> list[tuple[int, bytes]]:
    """(checkpoint id, the public key its row names) of the checkpoints after ``after``."""
    rows = conn.execute(
        "SELECT checkpoint_id, public_key FROM audit_checkpoints WHERE checkpoint_id > %s "
        "ORDER BY checkpoint_id",
        (after,),
    ).fetchall()
    return [(int(cid), bytes(key)) for cid, key in rows]


# -- export -------------------------------------------------------------------------------


def export_lines(
    conn: psycopg.Connection[Any],
    key: Ed25519PrivateKey,
    start: datetime,
    end: datetime,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> Iterator[str]:
    """The lines of an audit bundle (``sinks/audit_bundle.py``) for records of
    ``[start, end)``: each chain from its first record in the period to the head signed by
    the first checkpoint made at or after ``end`` (signed now with ``key`` when none is).
    ``on_progress(done, total)`` after each record line."""
    found = conn.execute(
        "SELECT checkpoint_id FROM audit_checkpoints WHERE created_at >= %s "
        "ORDER BY checkpoint_id LIMIT 1",
        (end,),
    ).fetchone()
    cid = int(found[0]) if found else checkpoint(conn, key)[0]
    row = conn.execute(
        "SELECT document, public_key, signature FROM audit_checkpoints WHERE checkpoint_id = %s",
        (cid,),
    ).fetchone()
    assert row is not None  # just found or made
    document, signer, signature = str(row[0]), bytes(row[1]), bytes(row[2])
    chains: dict[str, tuple[int, bytes, int, bytes]] = {}
    for chain, head in sorted(json.loads(document)["heads"].items()):
        first = conn.execute(
            "SELECT seq, prev_hash FROM audit_records WHERE chain = %s AND seq <= %s "
            "AND recorded_at >= %s AND recorded_at < %s ORDER BY seq LIMIT 1",
            (chain, head["seq"], start, end),
        ).fetchone()
        if first is not None:
            chains[chain] = (int(first[0]), bytes(first[1]), int(head["seq"]),
                             bytes.fromhex(head["hash"]))  # fmt: skip
    now = conn.execute("SELECT now()").fetchone()
    yield header_line(start=start.isoformat(), end=end.isoformat(),
                      created_at=now[0].isoformat() if now else "", public_key=signer,
                      chains=chains)  # fmt: skip
    yield checkpoint_line(cid, document, signature, signer)
    total, done = sum(last - first + 1 for first, _, last, _ in chains.values()), 0
    for chain, (first_seq, _, last_seq, _) in chains.items():
        rows = conn.execute(
            "SELECT chain, seq, body, prev_hash, hash FROM audit_records "
            "WHERE chain = %s AND seq BETWEEN %s AND %s ORDER BY seq",
            (chain, first_seq, last_seq),
        )
        for c, seq, body, prev, digest in rows:
            yield record_line((c, int(seq), body, bytes(prev), bytes(digest)))
            done += 1
            if on_progress is not None:
                on_progress(done, total)


# -- the relay to the audit topic ---------------------------------------------------------
