"""Spanish SCI-style report batches: signed, chained lots of records that are never edited.

What is modelled. The DGOJ's (Dirección General de Ordenación del Juego) "Sistema de
Control Interno" delivery, as described in the DGOJ's SCI technical specification
(monitoring data model): the operator delivers batches ("lotes") of records; every record
has a unique id that is never reused; a delivered record is never deleted or edited, a
correction is a new rectification record naming the original's id (``corrects``); and
each batch is signed so the regulator can prove its integrity and origin.

What is simplified. We do not implement the DGOJ's XML schemas, file packaging or
signature format. A batch is one JSON file, ``LOTE-<J>-<number:08d>.json``::

    {"batch_id", "batch_number", "jurisdiction", "created_at", "first_seq", "last_seq",
     "records": [ReportRecord JSON objects, "record_id" included],
     "previous_batch_sha256", "records_sha256"}

``created_at`` is the last record's ``recorded_at``, so rewriting the same records gives
the same bytes. ``records_sha256`` is SHA-256 over the records' canonical JSON (sorted
keys, no spaces, UTF-8). ``previous_batch_sha256`` is SHA-256 over the previous batch
file's exact bytes (64 zeros for batch 1), so the batches form a chain. The signature is
detached, ``<batch file>.sig``: Ed25519 over the batch file's exact bytes. Detached
rather than embedded because then nothing needs canonicalising: the bytes signed are the
bytes delivered and the bytes the next batch's hash covers, and the batch stays plain JSON.

A record the writer cannot deliver as it is (a rectification of a record never delivered,
a record id delivered before, a record that fails to serialise) does not stop the
jurisdiction's lots: it goes in the batch's ``"rejected"`` list, ``{"seq", "record_id",
"reason", "record"}``, in place of a record, signed with the batch, and the writer goes on
(``SciWriter.rejected``). The key is there only in a batch that has such an entry. Every
character can be carried in JSON: text that UTF-8 cannot encode (a lone surrogate) makes
the batch file ASCII with ``\\u`` escapes instead of failing.

One directory holds one jurisdiction's lots, written by one writer at a time. Deleting
the *last* batch cannot be seen from the directory alone (nothing after it names it);
the regulator catches it by the batch numbers it has acknowledged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticSerializationError

from schemas.reports import ReportRecord
from sinks.reports import ReportError

GENESIS_SHA256 = "0" * 64
_NAME = re.compile(r"^LOTE-([A-Z]{2,3})-(\d{8})\.json$")


def batch_name(jurisdiction: str, number: int) -> str:
    return f"LOTE-{jurisdiction}-{number:08d}.json"


def records_sha256(records: list[dict[str, Any]]) -> str:
    """SHA-256 of the records' canonical JSON: independent of how the file is laid out."""
    canonical = json.dumps(records, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # A lone surrogate has no UTF-8: hashed as its code point's three bytes (the same
    # bytes as UTF-8 for every other text, so nothing else changes).
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def encode_batch(doc: dict[str, Any]) -> bytes:
    """The batch file's bytes, exactly as hashed, signed and stored."""
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: the same JSON, all in ASCII escapes
        return (json.dumps(doc, indent=2) + "\n").encode()


def _batches(directory: Path) -> Iterator[tuple[int, str, Path]]:
    """(number, jurisdiction, path) of every batch file in the directory, by number."""
    found = []
    for path in directory.glob("LOTE-*.json"):
        if match := _NAME.match(path.name):
            found.append((int(match[2]), match[1], path))
    yield from sorted(found)


def _write_once(path: Path, data: bytes, *, replace: bool) -> None:
    """Write through a synced temporary file; with ``replace=False`` never overwrite."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    try:
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if the batch exists: a delivered batch is never rewritten
    finally:
        tmp.unlink(missing_ok=True)


class SciWriter:
    """Collects report records into signed, chained batches; resumes from the directory.

    A rectification is an ordinary record of the report stream with ``corrects`` set: the
    caller gives it its own new ``record_id`` and the next ``seq`` (the writer does not mint
    them, so ids and seqs stay those of ``reports.<J>``). ``rectify`` only checks and marks it.
    Resuming reads every batch once, to know every id ever delivered.
    """

    def __init__(
        self, directory: Path, signing_key: Ed25519PrivateKey, *, batch_size: int = 1000
    ) -> None:
        if batch_size < 1:
            msg = f"batch_size must be at least 1, not {batch_size}"
            raise ReportError(msg)
        self._dir, self._key, self._batch_size = directory, signing_key, batch_size
        self._jurisdiction: str | None = None
        self._number = 0  # of the last batch on disk
        self._last_seq = 0
        self._prev_sha256 = GENESIS_SHA256
        self._delivered: set[str] = set()  # every record id on disk or pending
        self._pending: list[dict[str, Any]] = []  # records as JSON, or rejected entries
        self.rejected: list[tuple[int, str, str]] = []  # (seq, record id, reason) written
        directory.mkdir(parents=True, exist_ok=True)
        for number, jurisdiction, path in _batches(directory):
            if number != self._number + 1 or self._jurisdiction not in (None, jurisdiction):
                msg = f"{path.name}: batches are not one continuous lot; run verify_sci"
                raise ReportError(msg)
            data = path.read_bytes()
            try:
                doc = json.loads(data)
                self._last_seq = doc["last_seq"]
                self._delivered.update(r["record_id"] for r in doc["records"])
            except (ValueError, KeyError, TypeError) as exc:
                msg = f"{path.name}: not a readable batch ({exc}); run verify_sci"
                raise ReportError(msg) from exc
            self._jurisdiction, self._number = jurisdiction, number
            self._prev_sha256 = hashlib.sha256(data).hexdigest()

    @property
    def last_seq(self) -> int:
        """The last seq taken (written or pending): a resumed feed starts after it."""
        return self._last_seq

    def rectify(self, original_record_id: str, corrected: ReportRecord) -> ReportRecord:
        """The rectification record to deliver: ``corrected`` marked as correcting the original.

        Refuses an original that was never delivered (or accepted for this batch).
        """
        if original_record_id not in self._delivered:
            msg = f"cannot rectify {original_record_id}: no such record was delivered"
            raise ReportError(msg)
        return corrected.model_copy(update={"corrects": original_record_id})

    def write(self, records: Iterable[ReportRecord]) -> list[Path]:
        """Accept records in seq order; write every batch that fills. Returns the files.

        A record of another jurisdiction or out of seq order raises ``ReportError`` (the
        records before it stay accepted); one that cannot be delivered as it is becomes a
        rejected entry.
        """
        written = []
        for record in records:
            self._accept(record)
            if len(self._pending) == self._batch_size:
                written.append(self._write_batch())
        return written

    def flush(self) -> Path | None:
        """Write the partial batch, if any (e.g. at the end of a reporting period)."""
        return self._write_batch() if self._pending else None

    def reject(self, jurisdiction: str, seq: int, record_id: str, reason: str,
               record_json: str) -> list[Path]:  # fmt: skip
        """A rejected entry for a record that did not even read as a report record (its
        signature verified), with its JSON as it came; returns the batch written if one filled."""
        if self._jurisdiction not in (None, jurisdiction) or seq != self._last_seq + 1:
            msg = f"a rejected entry for {jurisdiction} seq {seq} does not follow {self._last_seq}"
            raise ReportError(msg)
        self._jurisdiction, self._last_seq = jurisdiction, seq
        try:
            whole = json.loads(record_json)
        except ValueError:
            whole = None
        self._set_aside(seq, record_id, reason, whole if isinstance(whole, dict) else None)
        return [self._write_batch()] if len(self._pending) == self._batch_size else []

    def _set_aside(self, seq: int, record_id: str, reason: str,
                   whole: dict[str, Any] | None) -> None:  # fmt: skip
        self.rejected.append((seq, record_id, reason))
        self._pending.append(
            {"rejected": {"seq": seq, "record_id": record_id, "reason": reason, "record": whole}}
        )

    def _accept(self, record: ReportRecord) -> None:
        """Check a record against everything delivered before it joins the batch."""
        if self._jurisdiction not in (None, record.jurisdiction):
            msg = (
                f"{record.record_id}: jurisdiction {record.jurisdiction}, "
                f"but this directory holds {self._jurisdiction}"
            )
            raise ReportError(msg)
        if record.seq != self._last_seq + 1:
            msg = f"{record.record_id}: seq {record.seq}, expected {self._last_seq + 1}"
            raise ReportError(msg)
        self._jurisdiction = record.jurisdiction
        self._last_seq = record.seq
        reason: str | None = None
        if record.record_id in self._delivered:
            reason = "record id already delivered; ids are never reused"
        elif record.corrects is not None and record.corrects not in self._delivered:
            reason = f"rectifies {record.corrects[:200]!r}, which was never delivered"
        else:
            try:
                self._pending.append(_as_json(record))
                self._delivered.add(record.record_id)
                return
            except Exception as exc:  # whatever one record raises, the others go on
                reason = f"processing_error: {type(exc).__name__}: {exc}"[:1000]
        self._set_aside(record.seq, record.record_id, reason, _best_effort(record))

    def _write_batch(self) -> Path:
        jurisdiction = self._jurisdiction
        assert jurisdiction is not None  # set by the first record accepted
        records = [r for r in self._pending if "rejected" not in r]
        rejected = [r["rejected"] for r in self._pending if "rejected" in r]
        seqs = [r["seq"] for r in records] + [r["seq"] for r in rejected]
        number = self._number + 1
        path = self._dir / batch_name(jurisdiction, number)
        doc = {
            "batch_id": path.stem,
            "batch_number": number,
            "jurisdiction": jurisdiction,
            "created_at": max(r["recorded_at"] for r in records) if records else None,
            "first_seq": min(seqs),
            "last_seq": max(seqs),
            "records": records,
            "previous_batch_sha256": self._prev_sha256,
            "records_sha256": records_sha256(records),
        }
        if rejected:
            doc["rejected"] = rejected
        data = encode_batch(doc)
        # The signature goes first: the batch file appearing is the moment of delivery, and
        # a crash before it leaves only a stray .sig that the retry overwrites.
        _write_once(path.with_name(path.name + ".sig"), self._key.sign(data), replace=True)
        try:
            _write_once(path, data, replace=False)
        except FileExistsError:
            msg = f"{path.name} already exists: another writer delivered it"
            raise ReportError(msg) from None
        self._number, self._prev_sha256 = number, hashlib.sha256(data).hexdigest()
        self._pending = []
        return path


def _as_json(record: ReportRecord) -> dict[str, Any]:
    """The record as the batch holds it: its JSON, or the same values when text in it has no
    UTF-8 (pydantic refuses to write a lone surrogate; ``encode_batch`` escapes it)."""
    try:
        doc: dict[str, Any] = json.loads(record.record_json())
    except PydanticSerializationError:
        doc = record.model_dump(mode="json")
    return doc


def _best_effort(record: ReportRecord) -> dict[str, Any] | None:
    try:
        return record.model_dump(mode="json")
    except Exception:  # the seq, id and reason must do
        return None


class _Rejected(BaseModel):
    """A batch's entry for a record the writer could not deliver."""

    model_config = ConfigDict(frozen=True)

    seq: int = Field(ge=1)
    record_id: str
    reason: str
    record: dict[str, Any] | None


def _seq(entry: ReportRecord | _Rejected) -> int:
    return entry.seq


def current_view(directory: Path) -> dict[str, dict[str, Any]]:
    """Every original record id, with the record as currently corrected (latest rectification).

    Rectifications are followed to the original they ultimately correct, so a correction of
    a correction lands on the same key. Every original id stays a key: nothing is deleted.
    Reads without checking; run ``verify_sci`` first.
    """
    original: dict[str, str] = {}  # record id -> the original record id it stands for
    view: dict[str, dict[str, Any]] = {}
    for _, _, path in _batches(directory):
        for record in json.loads(path.read_bytes())["records"]:
            corrects = record["corrects"]
            root = record["record_id"] if corrects is None else original.get(corrects, corrects)
            original[record["record_id"]] = root
            view[root] = record
    return view


def verify_sci(directory: Path, public_key: bytes) -> list[str]:
    """Everything wrong with the directory's batches, each naming its file; [] if none."""
    key = Ed25519PublicKey.from_public_bytes(public_key)
    batches = list(_batches(directory))
    problems: list[str] = []
    jurisdictions = {j for _, j, _ in batches}
    if len(jurisdictions) > 1:
        return [f"{directory}: batches of several jurisdictions: {sorted(jurisdictions)}"]
    by_number = {n: p for n, _, p in batches}
    seen: set[str] = set()
    prev_sha: str | None = GENESIS_SHA256  # None: the previous batch is missing
    next_seq: int | None = 1
    for number in range(1, max(by_number, default=0) + 1):
        if number not in by_number:
            j = next(iter(jurisdictions))
            problems.append(f"{batch_name(j, number)}: missing; batch numbers must not skip")
            prev_sha = next_seq = None
            continue
        path = by_number[number]
        name, data = path.name, path.read_bytes()

        def problem(what: str, name: str = name) -> None:
            problems.append(f"{name}: {what}")

        sig = path.with_name(name + ".sig")
        try:
            key.verify(sig.read_bytes(), data)
        except FileNotFoundError:
            problem("no signature file")
        except InvalidSignature:
            problem("signature does not verify with the given public key")
        try:
            doc = json.loads(data)
            records = [ReportRecord.model_validate(r) for r in doc["records"]]
            rejected = [_Rejected.model_validate(r) for r in doc.get("rejected", [])]
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            problem(f"not a readable batch: {exc}")
            prev_sha, next_seq = hashlib.sha256(data).hexdigest(), None
            continue
        if (doc.get("batch_number"), doc.get("batch_id")) != (number, path.stem):
            problem(f"holds batch {doc.get('batch_id')} (number {doc.get('batch_number')})")
        if prev_sha is not None and doc.get("previous_batch_sha256") != prev_sha:
            problem("previous_batch_sha256 does not match the previous batch file")
        if doc.get("records_sha256") != records_sha256(doc["records"]):
            problem("records_sha256 does not match its records")
        entries: list[ReportRecord | _Rejected] = sorted([*records, *rejected], key=_seq)
        if not entries:
            problem("holds no records")
        elif (doc.get("first_seq"), doc.get("last_seq")) != (entries[0].seq, entries[-1].seq):
            problem("first_seq/last_seq do not match its records")
        for record in entries:
            rid = record.record_id
            if isinstance(record, _Rejected):  # in the chain of seqs, never delivered
                if next_seq is not None and record.seq != next_seq:
                    problem(f"{rid}: seq {record.seq}, expected {next_seq} (a gap or reordering)")
                next_seq = record.seq + 1
                continue
            if record.jurisdiction != doc.get("jurisdiction"):
                problem(f"{rid}: jurisdiction {record.jurisdiction}, not the batch's")
            if next_seq is not None and record.seq != next_seq:
                problem(f"{rid}: seq {record.seq}, expected {next_seq} (a gap or reordering)")
            if rid in seen:
                problem(f"{rid}: record id delivered before")
            if record.corrects is not None and record.corrects not in seen:
                problem(f"{rid}: rectifies {record.corrects}, not delivered before it")
            seen.add(rid)
            next_seq = record.seq + 1
        prev_sha = hashlib.sha256(data).hexdigest()
    for sig in directory.glob("LOTE-*.json.sig"):
        if not sig.with_suffix("").exists():
            problems.append(f"{sig.name}: a signature whose batch file is missing")
    return problems
