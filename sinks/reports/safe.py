"""A Danish-SAFE-style data safe: report records in sealed XML files, plus an end-of-day report.

Modelled on the public description in the SAFE technical requirements (Spillemyndigheden,
the Danish Gambling Authority). We do not implement the authority's XSDs or protocols; the
schema here (``safe.xsd``, XML Schema 1.0) is our own, in the same spirit.

What is modelled:

* a data safe: the licensee writes game data as XML files into day folders
  (``<dir>/<YYYY-MM-DD>/SAFE-<J>-<first seq>-<last seq>.xml``);
* files are closed periodically (every ``file_seconds`` of the records' own
  ``recorded_at``, so output is deterministic) and each closed file is sealed by a
  TamperToken;
* the TamperTokens form a signature chain in ``<dir>/tamper-tokens.jsonl``, one JSON line
  per sealed file, ``{"file", "sha256", "prev_token", "token", "first_seq", "last_seq",
  "records", "sealed_at"}``: ``token = Ed25519-sign(operator's report key,
  "croupier SAFE tamper token v2\n" || prev_token || SHA-256(file bytes))``, 64 bytes
  (128 hex digits), ``prev_token`` the previous line's token, genesis 64 zero bytes.
  Ed25519 signatures are deterministic, so the same records give the same tokens. An
  altered, removed, reordered or inserted file breaks the chain;
* an end-of-day report (``EOD-<J>-<YYYY-MM-DD>.xml``): per kind and currency the count
  and sum, the day's files with their tokens, and the last token of the day.

What is simplified:

* the real TamperToken is registered with the authority; here the chain is signed
  locally with the operator's report key (``CROUPIER_REPORT_SIGNING_KEY``, not the audit
  key), and the authority verifies it with the operator's public key, which it holds
  (pinned; ``croupier reports verify --public-key``). The authority cannot forge a token,
  and the operator cannot deny one it signed. Cutting off the newest files (with their
  token lines) shows only against a token the authority already holds, e.g. the last
  token of a submitted end-of-day report;
* one generic record element (our ``ReportRecord``) instead of the real per-game-type
  formats; no packaging or transmission to the authority;
* the open file lives in memory and is written once, when sealed: nothing unsealed
  touches the disk. After a crash the caller re-sends from ``next_seq``. A crash between
  writing a file and appending its token line leaves an XML file with no token; the next
  seal of the same seqs replaces it, otherwise ``verify_safe`` reports it.

**Values XML cannot carry.** XML 1.0 has no way to write most control characters (not
even as character references), a lone surrogate cannot be encoded, and a carriage return
reads back as a newline. A text value holding any of them is written as a JSON string
(ASCII, ``\\u0000`` escapes) in an element marked ``encoding="json"``, which the reader
decodes: the file still reads back to the very records written. A record the writer
cannot write at all (an amount that is not a decimal, a currency that is not ISO 4217, or
anything else that fails while it is rendered) takes its place in the file as a
``<Rejected>`` entry: its seq and id, the reason, and the record as JSON. The seq chain
stays whole, the file is sealed like any other, and the writer goes on: one bad record
never stops a jurisdiction's reporting (``SafeWriter.rejected`` lists them).

``details`` travels as one JSON string (sorted keys) rather than key/value children: it is
an arbitrary nested ``dict[str, Any]``, and JSON keeps its types and structure exactly, so
a file reads back to the very records that were written (``read_safe_file``).

The end-of-day report is not in the token log: it is derived from the sealed files alone,
so ``verify_safe`` rebuilds it and compares the bytes instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schemas.reports import AuditRef, ReportRecord
from sinks.reports import ReportError

try:
    import xmlschema

    HAVE_XMLSCHEMA = True
except ImportError:  # optional: without it the verifier skips schema validation
    HAVE_XMLSCHEMA = False

TOKEN_LOG = "tamper-tokens.jsonl"
XSD_PATH = Path(__file__).with_name("safe.xsd")
GENESIS_TOKEN = bytes(64)
TOKEN_CONTEXT = b"croupier SAFE tamper token v2\n"  # no other signature signs this prefix
VERSION = "1"

_AMOUNT = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_SAFE_NAME = re.compile(r"^SAFE-([A-Z]{2,3})-([0-9]{12})-([0-9]{12})\.xml$")
_EOD_NAME = re.compile(r"^EOD-([A-Z]{2,3})-([0-9]{4}-[0-9]{2}-[0-9]{2})\.xml$")
# Characters XML 1.0 cannot carry, a lone surrogate (no UTF-8 for it) and the carriage
# return (which a parser turns into a newline): a value holding one is written as JSON.
_NEEDS_JSON = re.compile("[\x00-\x08\x0b\x0c\x0d\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ENTRIES = ("Record", "Rejected")


@dataclass(frozen=True)
class Seal:
    """One line of the token log: a sealed file and its place in the chain."""

    file: str  # relative to the safe directory, POSIX separators
    sha256: str
    prev_token: str
    token: str
    first_seq: int
    last_seq: int
    records: int
    sealed_at: str

    def line(self) -> str:
        return json.dumps(self.__dict__) + "\n"


def tamper_token(key: Ed25519PrivateKey, prev_token: bytes, file_sha256: bytes) -> bytes:
    """The seal of a file: the report key's Ed25519 signature over the context, the
    previous token and the SHA-256 of the file bytes."""
    return key.sign(TOKEN_CONTEXT + prev_token + file_sha256)


def token_ok(public_key: bytes, token: bytes, prev_token: bytes, file_sha256: bytes) -> bool:
    """Whether ``token`` is the seal the holder of ``public_key`` gave this file there."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            token, TOKEN_CONTEXT + prev_token + file_sha256
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def read_seals(directory: Path) -> list[Seal]:
    """The token log, in order; a line that is not a seal is a ``ReportError``."""
    path = directory / TOKEN_LOG
    if not path.exists():
        return []
    seals = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            seals.append(Seal(**json.loads(line)))
        except (ValueError, TypeError) as exc:
            msg = f"{path} line {n} is not a token line: {exc}"
            raise ReportError(msg) from exc
    return seals


class SafeWriter:
    """Writes one jurisdiction's report records into a data safe, sealing each closed file.

    A new writer on the same directory carries on after the last sealed file; records
    must come in seq order without a gap.
    """

    def __init__(
        self,
        directory: Path,
        key: Ed25519PrivateKey,
        *,
        file_seconds: float = 300.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not 0 < file_seconds <= 86400:
            msg = f"file_seconds must be in (0, 86400], got {file_seconds}"
            raise ReportError(msg)
        self.directory, self.key, self.file_seconds, self.clock = (
            directory, key, file_seconds, clock,
        )  # fmt: skip
        seals = read_seals(directory)
        self.jurisdiction: str | None = None
        self.last_token, self.next_seq = GENESIS_TOKEN, 1
        if seals:
            last = seals[-1]
            name = _SAFE_NAME.match(Path(last.file).name)
            if name is None:
                msg = f"last token line names {last.file!r}, not a SAFE file"
                raise ReportError(msg)
            self.jurisdiction = name.group(1)
            self.last_token, self.next_seq = bytes.fromhex(last.token), last.last_seq + 1
        self._window: datetime | None = None
        self._last_window: datetime | None = None  # of the last file sealed
        self._open: list[tuple[int, ET.Element]] = []  # (seq, its Record or Rejected entry)
        self.rejected: list[tuple[int, str, str]] = []  # (seq, record id, reason) written

    def write(self, records: Iterable[ReportRecord]) -> list[Path]:
        """Append records to the open file; returns the files sealed on the way.

        A record out of seq order or of another jurisdiction is the caller's mistake and
        raises ``ReportError``; a record that cannot be written is a ``<Rejected>`` entry.
        """
        sealed = []
        for record in records:
            self._check(record)
            window = self._window_of(record.recorded_at)
            # A later window closes the file; a record late on the clock stays in the open
            # one, since seq order, not time order, is what the chain must keep.
            if self._window is not None and window > self._window:
                sealed.append(self._seal())
            if self._window is None:
                self._window = window
            self._open.append((record.seq, self._entry(record)))
            self.next_seq += 1
        return sealed

    def reject(self, jurisdiction: str, seq: int, record_id: str, reason: str,
               record_json: str) -> None:  # fmt: skip
        """A ``<Rejected>`` entry for a record that did not even read as a report record (its
        signature verified): it keeps its seq in the open file, with its JSON as it came."""
        if seq != self.next_seq or jurisdiction != (self.jurisdiction or jurisdiction):
            msg = f"a rejected entry for {jurisdiction} seq {seq}, expected seq {self.next_seq}"
            raise ReportError(msg)
        self.jurisdiction = jurisdiction
        if self._window is None:  # no time of its own: it joins the window of the last file
            self._window = self._last_window or self._window_of(self.clock())
        self.rejected.append((seq, record_id, reason))
        self._open.append((seq, _rejected_entry(seq, record_id, reason, record_json)))
        self.next_seq += 1

    def _entry(self, record: ReportRecord) -> ET.Element:
        """The record's element, or its ``<Rejected>`` entry when it cannot be written."""
        try:
            reason = _unwritable(record)
            if reason is None:
                element = _record_element(record)
                ET.tostring(element, encoding="utf-8")  # anything unencodable shows now
                return element
        except Exception as exc:  # whatever one record raises, the others go on
            reason = f"processing_error: {type(exc).__name__}: {exc}"[:1000]
        self.rejected.append((record.seq, record.record_id, reason))
        try:
            whole = json.dumps(
                record.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
            )
        except Exception:  # even the record's JSON fails: the seq, id and reason must do
            whole = "null"
        return _rejected_entry(record.seq, record.record_id, reason, whole)

    def close(self) -> Path | None:
        """Close and seal the open file, if it has records."""
        return self._seal() if self._open else None

    def end_of_day(self, day: date) -> Path:
        """Write the day's end-of-day report; seals the open file first if it is of that day."""
        if self._window is not None and self._window.date() <= day:
            self._seal()
        if self.jurisdiction is None:
            msg = "no record written yet: the end-of-day report has no jurisdiction"
            raise ReportError(msg)
        path = self.directory / day.isoformat() / f"EOD-{self.jurisdiction}-{day}.xml"
        _write_atomic(path, eod_bytes(self.directory, self.jurisdiction, day))
        return path

    def _check(self, record: ReportRecord) -> None:
        if record.seq != self.next_seq:
            msg = (
                f"record {record.record_id} has seq {record.seq}, expected seq {self.next_seq}"
                " (records must come in seq order without a gap)"
            )
            raise ReportError(msg)
        if self.jurisdiction is None:
            self.jurisdiction = record.jurisdiction
        elif record.jurisdiction != self.jurisdiction:
            msg = (
                f"record {record.record_id} is for {record.jurisdiction},"
                f" the safe is for {self.jurisdiction}"
            )
            raise ReportError(msg)

    def _window_of(self, at: datetime) -> datetime:
        start = math.floor(at.timestamp() / self.file_seconds) * self.file_seconds
        return datetime.fromtimestamp(start, UTC)

    def _seal(self) -> Path:
        # Only called with records open, which set both; the assert is for the type checker.
        assert self._window is not None and self.jurisdiction is not None
        entries, window = self._open, self._window
        first, last = entries[0][0], entries[-1][0]
        rel = f"{window.date()}/SAFE-{self.jurisdiction}-{first:012d}-{last:012d}.xml"
        data = _safe_file_bytes(self.jurisdiction, window, self.file_seconds, entries)
        digest = hashlib.sha256(data).digest()
        token = tamper_token(self.key, self.last_token, digest)
        # The file first, then its token line: a crash in between leaves an unsealed file
        # (reported by the verifier), never a token for a file that is not there.
        _write_atomic(self.directory / rel, data)
        seal = Seal(
            file=rel, sha256=digest.hex(), prev_token=self.last_token.hex(), token=token.hex(),
            first_seq=first, last_seq=last, records=len(entries),
            sealed_at=self.clock().isoformat(),
        )  # fmt: skip
        with (self.directory / TOKEN_LOG).open("a") as log:
            log.write(seal.line())
            log.flush()
            os.fsync(log.fileno())
        self.last_token, self._last_window = token, window
        self._window, self._open = None, []
        return self.directory / rel


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _text(parent: ET.Element, tag: str, value: object) -> None:
    text = str(value)
    element = ET.SubElement(parent, tag)
    if _NEEDS_JSON.search(text):
        element.set("encoding", "json")
        text = json.dumps(text)  # ASCII: every such character as a \u escape
    element.text = text


def _read_text(element: ET.Element) -> str:
    """An element's value as written by ``_text`` (JSON-decoded when so marked)."""
    text = element.text or ""
    if element.get("encoding") == "json":
        value = json.loads(text)
        if not isinstance(value, str):
            msg = f'<{element.tag} encoding="json"> does not hold a JSON string'
            raise ReportError(msg)
        return value
    return text


def _unwritable(record: ReportRecord) -> str | None:
    """Why the schema cannot take ``record`` as a ``<Record>``; None when it can."""
    if record.amount is not None and not _AMOUNT.match(record.amount):
        return f"amount {record.amount[:40]!r} is not a decimal"
    if record.currency is not None and not _CURRENCY.match(record.currency):
        return f"currency {record.currency[:40]!r} is not ISO 4217"
    return None


def _to_bytes(root: ET.Element) -> bytes:
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def _safe_file_bytes(
    jurisdiction: str, window: datetime, seconds: float, entries: list[tuple[int, ET.Element]]
) -> bytes:
    root = ET.Element("SafeFile", version=VERSION)
    header = ET.SubElement(root, "Header")
    _text(header, "Jurisdiction", jurisdiction)
    _text(header, "WindowStart", window.isoformat())
    _text(
        header, "WindowEnd", datetime.fromtimestamp(window.timestamp() + seconds, UTC).isoformat()
    )
    _text(header, "FirstSeq", entries[0][0])
    _text(header, "LastSeq", entries[-1][0])
    _text(header, "RecordCount", len(entries))
    root.extend(element for _, element in entries)
    return _to_bytes(root)


def _rejected_entry(seq: int, record_id: str, reason: str, record_json: str) -> ET.Element:
    el = ET.Element("Rejected")
    _text(el, "Seq", seq)
    _text(el, "RecordId", record_id)
    _text(el, "Reason", reason)
    _text(el, "RecordJson", record_json)
    return el


def _record_element(r: ReportRecord) -> ET.Element:
    el = ET.Element("Record")
    for tag, value in [
        ("RecordId", r.record_id), ("Seq", r.seq), ("Kind", r.kind), ("Action", r.action),
        ("EntityId", r.entity_id), ("PlayerId", r.player_id),
        ("OccurredAt", r.occurred_at.isoformat()), ("RecordedAt", r.recorded_at.isoformat()),
        ("Amount", r.amount), ("Currency", r.currency), ("Status", r.status),
    ]:  # fmt: skip
        if value is not None:
            _text(el, tag, value)
    audit = ET.SubElement(el, "Audit")
    _text(audit, "Chain", r.audit.chain)
    _text(audit, "Seq", r.audit.seq)
    _text(audit, "Hash", r.audit.hash)
    if r.corrects is not None:
        _text(el, "Corrects", r.corrects)
    _text(el, "Details", json.dumps(r.details, sort_keys=True, separators=(",", ":")))
    return el


def read_safe_file(path: Path) -> list[ReportRecord]:
    """The records of a SAFE file, exactly as they were written."""
    root = ET.parse(path).getroot()
    jurisdiction = root.findtext("Header/Jurisdiction")
    out = []
    for el in root.iter("Record"):
        audit_el = el.find("Audit")
        audit = {t.tag.lower(): _read_text(t) for t in (audit_el if audit_el is not None else [])}
        fields: dict[str, Any] = {
            re.sub(r"(?<!^)(?=[A-Z])", "_", t.tag).lower(): _read_text(t)
            for t in el
            if t.tag not in ("Audit", "Details")
        }
        fields |= {
            "jurisdiction": jurisdiction,
            "audit": AuditRef.model_validate(audit),
            "details": json.loads(el.findtext("Details") or "{}"),
        }
        out.append(ReportRecord.model_validate(fields))
    return out


def read_rejected(path: Path) -> list[tuple[int, str, str]]:
    """The ``<Rejected>`` entries of a SAFE file: (seq, record id, reason)."""
    out = []
    for el in ET.parse(path).getroot().iter("Rejected"):
        seq, record_id, reason = (el.find(tag) for tag in ("Seq", "RecordId", "Reason"))
        if seq is None or record_id is None or reason is None:
            msg = f"{path}: a <Rejected> entry without its Seq, RecordId or Reason"
            raise ReportError(msg)
        out.append((int(_read_text(seq)), _read_text(record_id), _read_text(reason)))
    return out


def eod_bytes(directory: Path, jurisdiction: str, day: date) -> bytes:
    """The end-of-day report of ``day``, from the sealed files alone (so it can be rebuilt)."""
    seals = read_seals(directory)
    todays = [s for s in seals if s.file.startswith(f"{day}/")]
    before = [s for s in seals if s.file[:10] <= day.isoformat()]
    totals: dict[tuple[str, str], tuple[int, Decimal | None]] = {}
    for seal in todays:
        for r in read_safe_file(directory / seal.file):
            count, amount = totals.get((r.kind, r.currency or ""), (0, None))
            if r.amount is not None:
                amount = (amount or Decimal(0)) + Decimal(r.amount)
            totals[(r.kind, r.currency or "")] = (count + 1, amount)
    root = ET.Element("EndOfDay", version=VERSION)
    _text(root, "Jurisdiction", jurisdiction)
    _text(root, "Day", day.isoformat())
    totals_el = ET.SubElement(root, "Totals")
    for (kind, currency), (count, amount) in sorted(totals.items()):
        total = ET.SubElement(totals_el, "Total")
        _text(total, "Kind", kind)
        if currency:
            _text(total, "Currency", currency)
        _text(total, "Count", count)
        if amount is not None:
            _text(total, "Amount", format(amount, "f"))
    files = ET.SubElement(root, "Files")
    for seal in todays:
        f = ET.SubElement(files, "File")
        _text(f, "Name", Path(seal.file).name)
        for tag, value in [
            ("FirstSeq", seal.first_seq), ("LastSeq", seal.last_seq), ("Records", seal.records),
            ("Sha256", seal.sha256), ("Token", seal.token),
        ]:  # fmt: skip
            _text(f, tag, value)
    _text(root, "LastToken", before[-1].token if before else GENESIS_TOKEN.hex())
    return _to_bytes(root)


def verify_safe(directory: Path, public_key: bytes) -> list[str]:
    """Everything wrong with a data safe, one sentence each naming the file; empty if sound.
    ``public_key`` is the operator's report key as the authority holds it (raw, 32 bytes)."""
    try:
        seals = read_seals(directory)
    except ReportError as exc:
        return [str(exc)]
    schema = xmlschema.XMLSchema10(XSD_PATH) if HAVE_XMLSCHEMA else None
    problems: list[str] = []
    prev_token, prev_last = GENESIS_TOKEN.hex(), 0
    for n, seal in enumerate(seals, 1):
        where = f"{seal.file} (token line {n})"
        if seal.prev_token != prev_token:
            problems.append(f"{where}: prev_token does not match the token of the line before")
        try:
            token, prev = bytes.fromhex(seal.token), bytes.fromhex(seal.prev_token)
            signed = token_ok(public_key, token, prev, bytes.fromhex(seal.sha256))
        except ValueError:  # not hex
            signed = False
        if not signed:
            problems.append(f"{where}: token is not the operator's signature of prev_token "
                            "and sha256 (by the given public key)")  # fmt: skip
        if seal.first_seq != prev_last + 1:
            problems.append(
                f"{where}: first seq {seal.first_seq} does not follow last seq {prev_last}"
            )
        prev_token, prev_last = seal.token, seal.last_seq
        path = directory / seal.file
        if not path.is_file():
            problems.append(f"{where}: file is missing")
            continue
        if hashlib.sha256(path.read_bytes()).hexdigest() != seal.sha256:
            problems.append(f"{where}: SHA-256 of the file does not match the token line")
        problems += _check_file(path, where, seal, schema)
    logged = {seal.file for seal in seals}
    for path in sorted(directory.glob("*/*.xml")):
        rel = path.relative_to(directory).as_posix()
        eod = _EOD_NAME.match(path.name)
        if eod is not None:
            problems += _check_eod(directory, path, rel, eod, schema)
        elif rel not in logged:
            problems.append(f"{rel}: XML file in the safe is not in the token log")
    return problems


def _check_file(
    path: Path, where: str, seal: Seal, schema: xmlschema.XMLSchema10 | None
) -> list[str]:
    problems = []
    if schema is not None:
        problems += [
            f"{where}: not valid against safe.xsd: {e.reason}" for e in schema.iter_errors(path)
        ]
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return [*problems, f"{where}: not well-formed XML: {exc}"]
    seqs = [r.findtext("Seq") for r in root if r.tag in _ENTRIES]
    want = [str(seq) for seq in range(seal.first_seq, seal.last_seq + 1)]
    if seqs != want or len(seqs) != seal.records:
        problems.append(
            f"{where}: its {len(seqs)} records are not seqs {seal.first_seq}..{seal.last_seq}"
            f" ({seal.records} records) in order without a gap"
        )
    name = _SAFE_NAME.match(path.name)
    header = (root.findtext("Header/FirstSeq"), root.findtext("Header/LastSeq"))
    if name is None or header != (str(seal.first_seq), str(seal.last_seq)):
        problems.append(f"{where}: file name or header disagrees with the token line's seqs")
    return problems


def _check_eod(
    directory: Path, path: Path, rel: str, name: re.Match[str], schema: xmlschema.XMLSchema10 | None
) -> list[str]:
    problems = []
    if schema is not None:
        problems += [
            f"{rel}: not valid against safe.xsd: {e.reason}" for e in schema.iter_errors(path)
        ]
    try:
        want = eod_bytes(directory, name.group(1), date.fromisoformat(name.group(2)))
    except (OSError, ReportError, ET.ParseError, ValueError) as exc:
        return [*problems, f"{rel}: cannot rebuild the end-of-day report: {exc}"]
    if path.read_bytes() != want:
        problems.append(f"{rel}: end-of-day report does not match the day's sealed files")
    return problems
