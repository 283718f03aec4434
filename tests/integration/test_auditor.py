"""``croupier audit run``: the trail's relay, the regulator reports and checkpoints in a
process of their own, beside workers whose timers for them are off. SIGKILLed twice while
the flows write, it loses no record and publishes none that was not committed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config.kafka import consume_until
from config.settings import Settings
from sinks.signing import generate, public_file
from streams.auditor import READY as AUDITOR_READY
from tests.conftest import ROOT, StartWorker, settings_env
from tests.integration.helpers import (
    audit_trail_holds,
    done,
    joined,
    paced,
    payment,
    query,
    wait_for,
)

pytestmark = pytest.mark.integration

PLAYERS = 60
READY = AUDITOR_READY.encode()


def start_auditor(s: Settings, log: Path) -> subprocess.Popen[bytes]:
    starts = log.read_bytes().count(READY) if log.exists() else 0
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "croupier", "audit", "run"],
            env={**os.environ, **settings_env(s), "PYTHONUNBUFFERED": "1"},
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    wait_for(lambda: log.read_bytes().count(READY) > starts, timeout=60, what="the auditor")
    return proc


def test_the_auditor_process_relays_reports_and_signs_through_sigkills(
    settings: Settings, worker_factory: StartWorker, tmp_path: Path
) -> None:
    rng = random.Random(77)
    # The regulators pin the report key's public key (CROUPIER_REPORT_PUBLIC_KEY).
    shared = {"audit_key": tmp_path / "ed25519.pem",
              "report_public_key": str(public_file(settings.report_signing_key))}  # fmt: skip
    generate(tmp_path / "ed25519.pem")  # as `make up` does; the auditor never makes one
    auditing = settings.model_copy(update={
        **shared, "audit_relay_interval": 0.2, "report_interval": 0.2,
        "audit_checkpoint_interval": 1.0,
    })  # fmt: skip
    deciding = settings.model_copy(update={
        **shared, "audit_relay_interval": 0.0, "report_interval": 0.0,
        "audit_checkpoint_interval": 0.0,
    })  # fmt: skip
    worker = worker_factory(deciding)
    worker.wait_ready()
    log = tmp_path / "auditor.log"
    auditor = start_auditor(auditing, log)

    players = [f"p-{n}" for n in range(PLAYERS)]
    places = ["DK", "ES", "UK"]
    events = [kv for n, p in enumerate(players)
              for kv in joined(p, jurisdiction=places[n % 3], currency="EUR")]  # fmt: skip
    producer = paced(deciding, "players", events, per=5, pause=0.2, out=[])
    kills = 0
    while producer.is_alive() or kills < 2:
        time.sleep(rng.uniform(0.5, 1.5))
        if kills < 2:
            auditor.send_signal(signal.SIGKILL)
            assert auditor.wait(30) == -9
            kills += 1
            auditor = start_auditor(auditing, log)
    producer.join()
    wait_for(lambda: done(deciding, "players") == len(events), timeout=90, what="players")
    deposits = [(p, payment("deposit", f"d-{p}", p, "100.00")) for p in players]
    paced(deciding, "payments", deposits, per=20, pause=0.05, out=[]).join()
    wait_for(lambda: done(deciding, "payments") == PLAYERS, timeout=90, what="deposits")

    # Every committed record reaches `audit`, the same bytes however often it was sent.
    stored = {body for (body,) in query(settings, "SELECT body FROM audit_records")}
    published = consume_until(
        settings, [settings.topic("audit")],
        want=lambda rs: {r.value.decode() for r in rs} >= stored, timeout=90,
    )  # fmt: skip
    assert {r.value.decode() for r in published} == stored
    # Every reportable record became one report record, in an unbroken chain per
    # jurisdiction (a registration, a session and a deposit per player).
    wait_for(lambda: query(settings, "SELECT count(*) FROM report_records")[0][0]
             == 3 * PLAYERS, timeout=90, what="the reports")  # fmt: skip
    for j in places:
        follow = subprocess.run(
            [sys.executable, "-m", "croupier", "regulator", "follow", "--jurisdiction", j,
             "--idle-timeout", "5", "--json"],
            env={**os.environ, **settings_env(auditing)}, capture_output=True, text=True,
            cwd=ROOT, timeout=120, check=False,
        )  # fmt: skip
        assert follow.returncode == 0, follow.stderr
        seqs = [json.loads(line)["seq"] for line in follow.stdout.splitlines()]
        assert seqs == list(range(1, 3 * PLAYERS // len(places) + 1)), (j, seqs)
    # Checkpoints were signed by the auditor, not the worker, and the trail verifies.
    wait_for(lambda: query(settings, "SELECT count(*) FROM audit_checkpoints")[0][0] > 0,
             timeout=30, what="a checkpoint")  # fmt: skip
    audit_trail_holds(settings)
    assert b"audit checkpoint" not in worker.log.read_bytes()
    auditor.send_signal(signal.SIGTERM)
    assert auditor.wait(30) == 0
    worker.terminate()
