"""The audit trail's hash chains, pure: how a record links to the one before it, and how a
run of records is checked. PostgreSQL's trail (``sinks/postgres/audit.py``) and the
regulator's bundle (``sinks/audit_bundle.py``) both use these, and nothing else here.

A chain is one source partition (``<topic>/<partition>``). Each record's hash is SHA-256
over the previous record's hash and the record's exact JSON; a chain starts at
``GENESIS``, 32 zero bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from schemas.records import AuditRecord, SourcePosition

GENESIS = bytes(32)


def chain_of(record: AuditRecord) -> str:
    return chain_at(record.source)


def chain_at(source: SourcePosition) -> str:
    """The chain of the records of an input at ``source``: its topic partition."""
    return f"{source.topic}/{source.partition}"


def link(prev: bytes, body: str) -> bytes:
    """A record's hash: SHA-256 of the previous hash and the record's JSON."""
    return hashlib.sha256(prev + body.encode()).digest()


@dataclass(frozen=True)
class Problem:
    """The first record of a chain that does not hold, and why."""

    chain: str
    seq: int
    what: str


@dataclass
class Verification:
    chains: int = 0
    records: int = 0
    problems: list[Problem] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


Row = tuple[str, int, str, bytes, bytes]  # chain, seq, body, prev_hash, hash


def check_chains(
    rows: Iterable[Row],
    heads: dict[str, tuple[int, bytes]],
    starts: dict[str, tuple[int, bytes]] | None = None,
) -> Verification:
    """Recompute chains from ``rows`` (in chain and sequence order); the first problem of
    each broken one. ``heads`` holds each chain's last (seq, hash) as recorded elsewhere;
    ``starts`` where a chain's records begin, when not at its first (an exported segment:
    the seq before it and that record's hash)."""
    problems: list[Problem] = []
    out = Verification(problems=problems)
    broken: set[str] = set()
    last: dict[str, tuple[int, bytes]] = {}
    for chain, seq, body, prev, digest in rows:
        out.records += 1
        if chain in broken:
            continue
        want_seq, want_prev = last.get(chain) or (starts or {}).get(chain) or (0, GENESIS)
        want_seq += 1
        problem = None
        if seq != want_seq:
            problem = f"sequence {seq} where {want_seq} was due (a record removed or inserted)"
        elif prev != want_prev:
            problem = "its previous hash is not the hash of the record before it"
        elif link(prev, body) != digest:
            problem = "its hash does not match its content (the record was altered)"
        if problem:
            problems.append(Problem(chain, seq, problem))
            broken.add(chain)
        last[chain] = (seq, digest)
    for chain in sorted(set(heads) | set(last)):
        if chain in broken:
            continue
        if heads.get(chain) != last.get(chain):
            seq = heads.get(chain, (0, b""))[0]
            what = ("the chain's head does not match its last record "
                    "(records removed from its end, or a head rewritten)")  # fmt: skip
            problems.append(Problem(chain, seq, what))
    out.chains = len(set(heads) | set(last))
    return out
