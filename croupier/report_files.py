"""``croupier reports write|verify``: a jurisdiction's stream as the files its regulator takes.

``write`` reads ``reports.<J>`` from its start, verifies its signed chain as it goes (the
regulator's reader, ``croupier/regulator.py``, pinned to ``CROUPIER_REPORT_PUBLIC_KEY``,
else to the public half of the operator's report key), and hands the verified records to the
writer the jurisdiction's policy names (``[reporting] format``):

* ``safe``: Danish-SAFE-style XML files sealed into a chain of TamperTokens, each an
  Ed25519 signature, plus an end-of-day report per day (``sinks/reports/safe.py``);
* ``sci``: Spanish-SCI-style batches (``sinks/reports/sci.py``), each with a detached
  Ed25519 signature;
* ``json``: the records as JSON Lines, ``reports-<J>.jsonl``.

Both are signed with the operator's report key (``CROUPIER_REPORT_SIGNING_KEY``), which
is not the audit key and also signs the stream ``reports.<J>`` itself: the regulator
verifies with its public key, so it cannot forge a file or a record, and the operator
cannot deny one.

Writing resumes: records the directory already holds are passed over, so running it
again (say every few minutes from cron) only adds what is new. ``verify`` checks a
directory the way the regulator would, with the pinned public key: ``--public-key``, else
``CROUPIER_REPORT_PUBLIC_KEY``, else the public half of the operator's own report key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from config.kafka import kafka_python_security
from config.settings import Settings
from croupier.regulator import follow
from rules.policy import JurisdictionPolicy
from schemas.reports import ReportEnvelope, ReportRecord
from sinks.reports.safe import SafeWriter, verify_safe
from sinks.reports.sci import SciWriter, verify_sci
from sinks.signing import KeyFileError, Pin, load_private_key, parse_pin, public_bytes


@dataclass
class Written:
    """What one ``write`` did: records taken, files written, and what could not be."""

    records: int = 0
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the stream does not verify
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # seq, id, reason


def write(
    settings: Settings, policy: JurisdictionPolicy, out: Path, *, idle_timeout: float = 5.0
) -> Written:
    """Read the jurisdiction's stream and write what is new in its regulator's format."""
    j = policy.jurisdiction
    pin = stream_pin(settings)
    records: list[ReportRecord | ReportEnvelope] = []  # an envelope: a record unreadable
    why: dict[int, str] = {}

    def keep(record: ReportRecord, _: ReportEnvelope) -> None:
        records.append(record)

    def set_aside(envelope: ReportEnvelope, reason: str) -> None:
        records.append(envelope)
        why[envelope.seq] = reason

    followed = follow(settings.kafka_bootstrap_servers, settings.topic(f"reports.{j}"), j, pin,
                      show=keep, idle_timeout=idle_timeout, unreadable=set_aside,
                      security=kafka_python_security(settings))  # fmt: skip
    done = Written(problems=list(followed.problems))
    if not followed.ok:
        return done  # nothing is written from a stream that does not verify
    out.mkdir(parents=True, exist_ok=True)
    match policy.reporting.format:
        case "safe":
            safe = SafeWriter(out, _signing_key(settings))
            new = [r for r in records if r.seq >= safe.next_seq]
            for r in new:
                if isinstance(r, ReportEnvelope):
                    safe.reject(j, r.seq, f"{j}-{r.seq}", why[r.seq], r.record_json)
                else:
                    done.files += safe.write([r])
            sealed = safe.close()
            done.files += [sealed] if sealed else []
            days = {r.recorded_at.date() for r in new if isinstance(r, ReportRecord)}
            for day in sorted(days or ({datetime.now(UTC).date()} if new else set())):
                done.files.append(safe.end_of_day(day))
            done.rejected += safe.rejected
        case "sci":
            sci = SciWriter(out, _signing_key(settings))
            new = [r for r in records if r.seq > sci.last_seq]
            for r in new:
                if isinstance(r, ReportEnvelope):
                    done.files += sci.reject(j, r.seq, f"{j}-{r.seq}", why[r.seq], r.record_json)
                else:
                    done.files += sci.write([r])
            flushed = sci.flush()
            done.files += [flushed] if flushed else []
            done.rejected += sci.rejected
        case _:
            path = out / f"reports-{j}.jsonl"
            have = len(path.read_text().splitlines()) if path.exists() else 0
            new = [r for r in records if r.seq > have]
            with path.open("a") as f:
                for r in new:
                    if isinstance(r, ReportEnvelope):
                        reason: str | None = why[r.seq]
                        f.write(json.dumps({"seq": r.seq, "record_id": f"{j}-{r.seq}",
                                            "rejected": reason}) + "\n")  # fmt: skip
                        done.rejected.append((r.seq, f"{j}-{r.seq}", why[r.seq]))
                        continue
                    line, reason = _json_line(r)
                    f.write(line + "\n")
                    done.rejected += [(r.seq, r.record_id, reason)] if reason else []
            done.files += [path] if new else []
    done.records = len(new)
    return done


def _json_line(record: ReportRecord) -> tuple[str, str | None]:
    """The record's JSON line, and why it had to be a rejected entry instead (else None)."""
    try:
        return record.model_dump_json(), None
    except Exception:  # text with no UTF-8 (a lone surrogate): ASCII escapes
        pass
    try:
        return json.dumps(record.model_dump(mode="json"), separators=(",", ":")), None
    except Exception as exc:  # whatever one record raises, the others go on
        why = f"processing_error: {type(exc).__name__}: {exc}"[:1000]
    line = {"seq": record.seq, "record_id": record.record_id, "rejected": why}
    return json.dumps(line), why


def _signing_key(settings: Settings) -> Ed25519PrivateKey:
    return load_private_key(settings.report_signing_key, what="report signing key")


def stream_pin(settings: Settings) -> Pin:
    """The pin ``reports.<J>`` is verified with: ``CROUPIER_REPORT_PUBLIC_KEY`` (a
    fingerprint will do: each record names its key), else the operator's own key."""
    if settings.report_public_key:
        return parse_pin(settings.report_public_key)
    return Pin(public_bytes(_signing_key(settings)))


def report_public_key(settings: Settings, given: str | None = None) -> bytes:
    """The operator's report public key a verifier trusts: ``given``, else the setting,
    else the public half of the operator's own report key. A fingerprint is not enough:
    the files do not name their key."""
    text = given or settings.report_public_key
    if not text:
        return public_bytes(_signing_key(settings))
    pin = parse_pin(text)
    if pin.public is None:
        msg = "to verify report files, give the public key itself, not its fingerprint"
        raise KeyFileError(msg)
    return pin.public


def verify(
    settings: Settings, policy: JurisdictionPolicy, directory: Path, public_key: str | None = None
) -> list[str]:
    """The problems a regulator would find in ``directory`` (none: it verifies)."""
    j = policy.jurisdiction
    match policy.reporting.format:
        case "safe":
            return verify_safe(directory, report_public_key(settings, public_key))
        case "sci":
            return verify_sci(directory, report_public_key(settings, public_key))
        case _:
            path = directory / f"reports-{j}.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
            seqs = [json.loads(line)["seq"] for line in lines]
            return [] if seqs == list(range(1, len(seqs) + 1)) else [f"{path}: seq gap"]
