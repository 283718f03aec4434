"""Audit bundles: a period of the audit trail a regulator verifies alone, with no database.

A bundle is one JSON Lines file:

1. a header: ``{"bundle": "croupier-audit", "version": 1, "from", "to", "created_at",
   "public_key", "chains": {chain: {"first_seq", "prev_hash", "last_seq", "hash"}}}``;
2. the signed checkpoint that anchors it: ``{"checkpoint": {"id", "document",
   "signature", "public_key"}}`` (``document`` is the exact JSON that was signed);
3. the records, by chain and sequence: ``{"chain", "seq", "body", "prev_hash", "hash"}``,
   ``body`` the record's exact JSON (hashes and keys in hex).

Why it verifies on its own. Each record's hash covers the hash before it, so the last
record of a chain commits to every record back to the segment's start. The export ends
every chain exactly at the head a checkpoint signed (the first checkpoint made at or
after ``to``, or one signed for the export), so one Ed25519 signature, checked against a
public key the regulator already holds (pinned: ``--public-key``, never the key the
bundle names; ``sinks/signing.py``), authenticates every record in the file: an
altered, removed, reordered or inserted record breaks the chain at that record, and a
chain rebuilt with fresh hashes no longer ends at the signed head. A segment starts at
the first record of the period, so it may include records after ``to`` up to the
checkpoint; each record's own JSON says when it happened.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sinks.chain import Problem, Row, Verification, check_chains
from sinks.signing import Pin, fingerprint

KIND = "croupier-audit"
VERSION = 1


class BundleError(ValueError):
    """The file is not a bundle this version can read; the message says what is wrong."""


def header_line(
    *, start: str, end: str, created_at: str, public_key: bytes,
    chains: dict[str, tuple[int, bytes, int, bytes]],
) -> str:  # fmt: skip
    """The bundle's first line; ``chains`` maps a chain to (first seq, prev hash, last seq,
    last hash)."""
    return json.dumps({
        "bundle": KIND, "version": VERSION, "from": start, "to": end, "created_at": created_at,
        "public_key": public_key.hex(),
        "chains": {c: {"first_seq": f, "prev_hash": p.hex(), "last_seq": n, "hash": h.hex()}
                   for c, (f, p, n, h) in sorted(chains.items())},
    }, sort_keys=True)  # fmt: skip


def checkpoint_line(cid: int, document: str, signature: bytes, public_key: bytes) -> str:
    return json.dumps({"checkpoint": {"id": cid, "document": document,
                                      "signature": signature.hex(),
                                      "public_key": public_key.hex()}})  # fmt: skip


def record_line(row: Row) -> str:
    chain, seq, body, prev, digest = row
    return json.dumps({"chain": chain, "seq": seq, "body": body, "prev_hash": prev.hex(),
                       "hash": digest.hex()})  # fmt: skip


@dataclass
class BundleReport:
    """What verifying a bundle found."""

    header: dict[str, Any]
    trusted_key: str  # the pinned key's fingerprint
    chains: Verification
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "from": self.header.get("from"), "to": self.header.get("to"),
            "fingerprint": self.trusted_key,
            "chains": self.chains.chains, "records": self.chains.records,
            "problems": [{"chain": p.chain, "seq": p.seq, "problem": p.what}
                         for p in self.problems],
        }  # fmt: skip


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    doc = json.loads(line)
                    if not isinstance(doc, dict):
                        msg = f"{path}:{n}: a JSON object was expected"
                        raise BundleError(msg)
                    yield n, doc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{path}: not a readable audit bundle ({exc})"
        raise BundleError(msg) from exc


def _hex(value: object, what: str) -> bytes:
    try:
        return bytes.fromhex(str(value))
    except ValueError as exc:
        msg = f"{what} is not hex"
        raise BundleError(msg) from exc


def verify_bundle(path: Path, pin: Pin) -> BundleReport:
    """Verify a bundle file: its signature by the pinned key, and every chain."""
    lines = _lines(path)
    first = next(lines, None)
    if first is None or first[1].get("bundle") != KIND:
        msg = f"{path}: no {KIND} header on the first line"
        raise BundleError(msg)
    header = first[1]
    if header.get("version") != VERSION:
        msg = f"{path}: bundle version {header.get('version')}; this Croupier reads {VERSION}"
        raise BundleError(msg)
    problems: list[Problem] = []
    signed: dict[str, tuple[int, bytes]] | None = None
    records: list[Row] = []
    for n, doc in lines:
        if "checkpoint" in doc:
            cp = doc["checkpoint"]
            document = str(cp.get("document", ""))
            named = _hex(cp.get("public_key", ""), "public_key")
            if not pin.matches(named):
                what = (f"it names key {fingerprint(named)}, not the pinned key "
                        f"{pin.fingerprint}")  # fmt: skip
                problems.append(Problem(f"checkpoint {cp.get('id')}", 0, what))
            signature = _hex(cp.get("signature"), "signature")
            if not pin.verifies(named, signature, document.encode()):
                what = f"its signature does not verify with the pinned key {pin.fingerprint}"
                problems.append(Problem(f"checkpoint {cp.get('id')}", 0, what))
                continue
            heads = json.loads(document).get("heads", {})
            signed = {c: (int(h["seq"]), _hex(h["hash"], "hash")) for c, h in heads.items()}
            continue
        try:
            prev, digest = _hex(doc["prev_hash"], "prev_hash"), _hex(doc["hash"], "hash")
            records.append((str(doc["chain"]), int(doc["seq"]), str(doc["body"]), prev, digest))
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"{path}:{n}: not an audit record ({exc})"
            raise BundleError(msg) from exc
    declared = {
        c: ((int(d["first_seq"]) - 1, _hex(d["prev_hash"], "prev_hash")),
            (int(d["last_seq"]), _hex(d["hash"], "hash")))
        for c, d in dict(header.get("chains", {})).items()
    }  # fmt: skip
    if signed is None and not problems:
        problems.append(Problem("bundle", 0, "no signed checkpoint anchors it"))
    # Every chain must end at the head the checkpoint signed, whatever the header says.
    ends = {c: end for c, (_, end) in declared.items()}
    for chain, end in sorted(ends.items()):
        if signed is not None and signed.get(chain) != end:
            what = "its last record is not the head the checkpoint signed"
            problems.append(Problem(chain, end[0], what))
    extra = sorted({r[0] for r in records} - set(declared))
    problems += [Problem(c, 0, "records of a chain the header does not declare") for c in extra]
    ordered = sorted(records, key=lambda r: r[0])  # stable: a chain's records keep file order
    chains = check_chains(ordered, ends, {c: start for c, (start, _) in declared.items()})
    problems = [*problems, *(chains.problems or [])]
    return BundleReport(header, pin.fingerprint, chains, problems)


def write_bundle(path: Path, lines: Iterable[str]) -> int:
    """Write ``lines`` to ``path``; how many."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(line + "\n")
            count += 1
    return count
