"""``croupier reports write`` over a stream with hostile records: nothing stops the writer.

The report stream is produced here, signed with the operator's report key as the reporter
would: a control character in an id, a lone surrogate, a carriage return, and a record
whose JSON no longer reads as a report record. The files verify, the hostile values read
back, the unreadable record stands as a rejected entry, and the next run goes on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from schemas.reports import (
    GENESIS_SIGNATURE,
    AuditRef,
    ReportEnvelope,
    ReportRecord,
    signed_message,
)
from sinks.reports.safe import read_rejected, read_safe_file
from sinks.reports.sci import current_view
from sinks.signing import generate, load_private_key, public_bytes
from tests.conftest import ROOT, settings_env
from tests.integration.helpers import produce

pytestmark = pytest.mark.integration

HOSTILE = ["bet\x00-1", "p\x1b[31m", "ok\r\n", "a\x07b"]


def record(j: str, seq: int, entity_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ReportRecord(
        jurisdiction=j, seq=seq, record_id=f"{j}-{seq}", kind="bet", action="ledger.stake",
        entity_id=entity_id, player_id="p-1", occurred_at="2026-11-30T08:00:00Z",
        recorded_at="2026-11-30T08:00:00Z", amount="10.00", currency="EUR", status="applied",
        audit=AuditRef(chain="ledger", seq=seq, hash="0" * 64),
    ).record_json())  # fmt: skip
    return doc


def stream(
    s: Settings, j: str, docs: list[dict[str, Any]], key: Path, prev: bytes = GENESIS_SIGNATURE
) -> bytes:
    """Publish ``docs`` on ``reports.<J>`` as envelopes signed with the report key in
    ``key``; the last signature."""
    operator = load_private_key(key)
    items = []
    for doc in docs:
        body = json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")
        text = body.decode("utf-8", "surrogatepass")
        signature = operator.sign(signed_message(j, prev, body))
        envelope = ReportEnvelope(jurisdiction=j, seq=doc["seq"], record_json=text,
                                  prev_signature=prev.hex(), signature=signature.hex(),
                                  public_key=public_bytes(operator).hex())  # fmt: skip
        items.append((f"e-{doc['seq']}", envelope.model_dump_json().encode()))
        prev = signature
    produce(s, f"reports.{j}", items)
    return prev


def write(s: Settings, j: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "croupier", "reports", "write", "--jurisdiction", j, "--dir",
         str(out), "--idle-timeout", "3"],
        env={**os.environ, **settings_env(s)}, capture_output=True, text=True, cwd=ROOT,
        timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("j", ["DK", "ES"])  # SAFE XML files; SCI signed batches
def test_hostile_records_never_stop_the_report_files(
    settings: Settings, tmp_path: Path, j: str
) -> None:
    s = settings.model_copy(update={"audit_key": tmp_path / "ed.pem",
                                    "report_signing_key": tmp_path / "report.pem"})  # fmt: skip
    generate(s.report_signing_key)
    docs = [record(j, seq + 1, entity) for seq, entity in enumerate(HOSTILE)]
    unreadable = {**record(j, 5, "bet-5"), "kind": "no-such-kind"}
    docs += [unreadable, record(j, 6, "bet-6")]
    last = stream(s, j, docs, s.report_signing_key)
    out = tmp_path / "out"

    first = write(s, j, out)
    assert first.returncode == 1, first.stderr
    assert "seq 5" in first.stderr and "rejected entry" in first.stderr
    assert "Traceback" not in first.stderr
    verified = subprocess.run(
        [sys.executable, "-m", "croupier", "reports", "verify", "--jurisdiction", j, "--dir",
         str(out)], env={**os.environ, **settings_env(s)}, capture_output=True, text=True,
        cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr

    if j == "DK":
        files = sorted(out.glob("*/SAFE-*.xml"))
        got = [r.entity_id for f in files for r in read_safe_file(f)]
        assert got == [*HOSTILE, "bet-6"]
        assert [(seq, rid) for f in files for seq, rid, _ in read_rejected(f)] == [(5, "DK-5")]
    else:
        view = current_view(out)
        assert [view[f"ES-{n}"]["entity_id"] for n in (1, 2, 3, 4, 6)] == [*HOSTILE, "bet-6"]
        assert "ES-5" not in view

    # The writer goes on: the next record is written by the next run, which exits 0.
    stream(s, j, [record(j, 7, "bet-7")], s.report_signing_key, prev=last)
    second = write(s, j, out)
    assert second.returncode == 0, second.stderr
    assert "1 new record(s)" in second.stdout


def verify(s: Settings, j: str, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "croupier", "reports", "verify", "--jurisdiction", j, "--dir",
         str(out), *args], env={**os.environ, **settings_env(s)}, capture_output=True,
        text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("j", ["DK", "ES"])
def test_the_files_are_signed_with_the_report_key_which_only_the_operator_holds(
    settings: Settings, tmp_path: Path, j: str
) -> None:
    """The regulator verifies with the operator's public key; the audit key, the
    regulator's own key and a missing key file all fail, and nothing makes a key."""
    s = settings.model_copy(update={"audit_key": tmp_path / "audit.pem",
                                    "report_signing_key": tmp_path / "report.pem"})  # fmt: skip
    held = tmp_path / "held" / "report.pem"  # the operator's key, not yet where s looks
    operator = generate(held)
    stream(s, j, [record(j, n, f"bet-{n}") for n in (1, 2, 3)], held)
    out = tmp_path / "out"

    missing = write(s, j, out)  # no report key yet: a clear error, and still no key
    assert missing.returncode == 2 and "croupier audit keygen" in missing.stderr, missing.stderr
    assert not s.report_signing_key.exists()

    held.rename(s.report_signing_key)
    audit = generate(s.audit_key)
    regulator = generate(tmp_path / "regulator.pem")
    assert write(s, j, out).returncode == 0
    pinned = public_bytes(operator).hex()
    assert verify(s, j, out, "--public-key", pinned).returncode == 0
    for other in (audit, regulator):  # not the audit key; and the regulator cannot sign
        run = verify(s, j, out, "--public-key", public_bytes(other).hex())
        assert run.returncode == 1 and "signature" in run.stdout, run.stdout

    s.report_signing_key.chmod(0o644)  # a private key others may read is refused
    run = write(s, j, out)
    assert run.returncode == 2 and f"chmod 600 {s.report_signing_key}" in run.stderr
