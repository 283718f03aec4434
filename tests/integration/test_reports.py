"""Regulator streams: audit records become report records per jurisdiction, signed with
the operator's report key, and the regulator's reader verifies them with its public key
alone, catching a forged record (the regulator's own key cannot sign one) and a gap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from config.kafka import make_producer
from config.settings import Settings
from schemas.reports import ReportEnvelope, signed_message
from sinks.signing import fingerprint, generate, load_private_key, public_bytes, public_file
from tests.conftest import ROOT, StartWorker, settings_env
from tests.integration.helpers import done, player_event, produce, query, wait_for
from tests.integration.test_casino import call

pytestmark = pytest.mark.integration


def regulator(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "croupier", "regulator", "follow", *args],
        env={**os.environ, **settings_env(settings)}, capture_output=True, text=True,
        cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip


def test_reports_stream_per_jurisdiction_and_the_regulator_verifies_them(
    settings: Settings, worker_factory: StartWorker, tmp_path: Path
) -> None:
    s = settings.model_copy(update={"report_interval": 0.5,
                                    "audit_key": tmp_path / "ed25519.pem",
                                    "report_signing_key": tmp_path / "report.pem"})  # fmt: skip
    operator = generate(s.report_signing_key)  # made once, as `make up` does
    pinned = str(public_file(s.report_signing_key))  # the .pub the regulator is given
    # Two players in two jurisdictions (registrations carry the jurisdiction).
    produce(s, "players", [
        ("dk-1", player_event("registered", "dk-1", jurisdiction="DK", currency="DKK")),
        ("dk-1", player_event("session_started", "dk-1", session_id="s-dk")),
        ("uk-1", player_event("registered", "uk-1")),
        ("uk-1", player_event("session_started", "uk-1", session_id="s-uk")),
        ("es-1", player_event("registered", "es-1", jurisdiction="ES")),
        ("es-1", player_event("session_started", "es-1", session_id="s-es")),
    ])  # fmt: skip
    worker = worker_factory(s)
    worker.wait_ready()
    wait_for(lambda: done(s, "players") == 6, timeout=60, what="players")
    produce(s, "payments", [("dk-1", json.dumps({
        "type": "deposit", "payment_id": "dep-dk", "player_id": "dk-1", "amount": "500.00",
        "currency": "DKK", "timestamp": "2026-11-30T08:00:00Z"}).encode())])  # fmt: skip
    wait_for(lambda: done(s, "payments") == 1, timeout=60, what="the deposit")
    produce(s, "casino", [
        ("dk-1", call("debit", "c-1", "dk-1", "r-1", "20.00", currency="DKK")),
        ("dk-1", call("credit", "c-2", "dk-1", "r-1", "0.00", currency="DKK", round_closed=True)),
        ("dk-1", call("debit", "c-3", "dk-1", "r-2", "9999.00", currency="DKK")),  # refused
    ])  # fmt: skip
    produce(s, "players", [("dk-1", player_event("self_excluded", "dk-1", until=None))])
    wait_for(lambda: done(s, "casino") == 3 and done(s, "players") == 7, timeout=60,
             what="the calls")  # fmt: skip

    def reported(j: str) -> int:
        return int(query(s, "SELECT count(*) FROM report_records WHERE jurisdiction = %s",
                         (j,))[0][0])  # fmt: skip

    # DK: registration, session, deposit, three casino calls (one refused), the exclusion.
    wait_for(lambda: reported("DK") == 7 and reported("UK") == 2 and reported("ES") == 2,
             timeout=60, what="reports")  # fmt: skip
    run = regulator(s, "--jurisdiction", "DK", "--idle-timeout", "6", "--json",
                    "--public-key", pinned)  # fmt: skip
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    # The fingerprint will do as the pin (each record names its key); another key will not.
    by_print = regulator(s, "--jurisdiction", "ES", "--idle-timeout", "6", "--public-key",
                         fingerprint(public_bytes(operator)))  # fmt: skip
    assert by_print.returncode == 0 and "2 record(s)" in by_print.stderr, by_print.stderr
    wrong = regulator(s, "--jurisdiction", "ES", "--idle-timeout", "6", "--public-key",
                      public_bytes(generate(tmp_path / "other.pem")).hex())  # fmt: skip
    assert wrong.returncode == 1 and "bad signature at seq 1" in wrong.stderr, wrong.stderr
    assert [r["seq"] for r in records] == list(range(1, 8))
    assert [r["kind"] for r in records] == [
        "player", "player", "payment", "casino", "casino", "casino", "player"
    ]  # fmt: skip
    assert {r["jurisdiction"] for r in records} == {"DK"}
    refused = records[5]
    assert refused["status"] == "rejected" and refused["details"]["error"] == "insufficient_funds"
    assert records[2]["amount"] == "500.00" and records[2]["currency"] == "DKK"
    # Each record names the audit record it came from, which is in the trail.
    chain, seq = records[3]["audit"]["chain"], records[3]["audit"]["seq"]
    assert query(s, "SELECT action FROM audit_records WHERE chain = %s AND seq = %s",
                 (chain, seq)) == [("casino.debit",)]  # fmt: skip

    # The regulators' files: DK's SAFE-style XML and tokens, ES's signed SCI batches.
    out = tmp_path / "reports"
    for j, kind in (("DK", "safe"), ("ES", "sci")):
        wrote = reports(s, "write", "--jurisdiction", j, "--dir", str(out / j))
        assert wrote.returncode == 0, wrote.stderr
        assert f"written as {kind}" in wrote.stdout
        checked = reports(s, "verify", "--jurisdiction", j, "--dir", str(out / j))
        assert checked.returncode == 0 and "verifies" in checked.stdout, checked.stdout
    assert (out / "DK" / "tamper-tokens.jsonl").exists()
    assert list((out / "DK").glob("*/EOD-DK-*.xml")) and list((out / "ES").glob("LOTE-ES-*.json"))
    again = reports(s, "write", "--jurisdiction", "DK", "--dir", str(out / "DK"))
    assert again.returncode == 0 and again.stdout.startswith("0 new record(s)")

    # A record forged by the regulator (right seq and chain, its own key, naming the
    # operator's): bad signature, exit 1.
    last = _forged(s, 8, generate(tmp_path / "regulator.pem"), name=operator)
    producer = make_producer(s)
    producer.produce(s.topic("reports.DK"), key=b"dk-1", value=last.model_dump_json().encode())
    producer.flush(30)
    run = regulator(s, "--jurisdiction", "DK", "--idle-timeout", "6", "--public-key", pinned)
    assert run.returncode == 1 and "bad signature at seq 8" in run.stderr, run.stderr
    assert "7 record(s) of" in run.stderr
    # ... and nothing is written from a stream that does not verify.
    refused = reports(s, "write", "--jurisdiction", "DK", "--dir", str(out / "DK"))
    assert refused.returncode == 1 and "bad signature" in refused.stderr
    # UK's stream is its own chain; a gap in it is reported (even signed by the operator).
    gap = _forged(s, 4, load_private_key(s.report_signing_key), jurisdiction="UK")
    producer.produce(s.topic("reports.UK"), key=b"uk-1", value=gap.model_dump_json().encode())
    producer.flush(30)
    run = regulator(s, "--jurisdiction", "UK", "--idle-timeout", "6", "--public-key", pinned)
    assert run.returncode == 1 and "gap: seq 3 never arrived" in run.stderr, run.stderr
    worker.terminate()


def reports(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "croupier", "reports", *args, "--idle-timeout", "4"],
        env={**os.environ, **settings_env(settings)}, capture_output=True, text=True,
        cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip


def _forged(
    s: Settings,
    seq: int,
    key: Ed25519PrivateKey,
    jurisdiction: str = "DK",
    name: Ed25519PrivateKey | None = None,
) -> ReportEnvelope:
    """The chain's next record with ``seq``, altered and signed by ``key`` (naming ``name``'s
    public key, by default its own)."""
    body: dict[str, Any] = json.loads(query(
        s, "SELECT record_json FROM report_records WHERE jurisdiction = %s ORDER BY seq DESC "
        "LIMIT 1", (jurisdiction,))[0][0])  # fmt: skip
    prev = bytes.fromhex(query(s, "SELECT encode(signature, 'hex') FROM report_heads WHERE "
                               "jurisdiction = %s", (jurisdiction,))[0][0])  # fmt: skip
    body.update(seq=seq, record_id=f"{jurisdiction}-{seq}", amount="1000000.00")
    record_json = json.dumps(body)
    return ReportEnvelope(
        jurisdiction=jurisdiction,
        seq=seq,
        record_json=record_json,
        prev_signature=prev.hex(),
        signature=key.sign(signed_message(jurisdiction, prev, record_json.encode())).hex(),
        public_key=public_bytes(name or key).hex(),
    )
