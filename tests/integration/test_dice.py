"""Croupier Dice on the real stack: certified generator, the wallet's path, audit of builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from rng.certify import load_manifest
from rules import dice
from tests.conftest import ROOT, StartWorker, settings_env
from tests.integration.helpers import casino_ready, done, ledger_reconciles, query

pytestmark = pytest.mark.integration

D = Decimal


def croupier(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "croupier", *args],
        env={**os.environ, **settings_env(settings), **env},
        capture_output=True, text=True, cwd=ROOT, timeout=180, check=False,
    )  # fmt: skip


def test_rounds_are_rolled_by_the_certified_build_and_paid_through_the_wallet(
    settings: Settings, worker_factory: StartWorker
) -> None:
    casino_ready(settings, worker_factory, {"p-d": "100.00", "p-poor": "0.50"})
    run = croupier(settings, "dice", "play", "--player", "p-d", "--stake", "1.00",
                   "--rounds", "60", "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    build = load_manifest().sha256
    assert out["rng_build"] == build
    rounds: list[dict[str, Any]] = out["rounds"]
    assert len(rounds) == 60 and len({r["round_id"] for r in rounds}) == 60
    wins = D(0)
    for r in rounds:
        assert 1 <= r["roll"] <= 6 and 1 <= r["pick"] <= 6
        assert D(r["win"]) == dice.win(D("1.00"), r["pick"], r["roll"], "EUR")
        assert r["debit"]["status"] == r["credit"]["status"] == "ok"
        wins += D(r["win"])
    # The wallet took every stake and paid every win, once; the last answer is the balance.
    expected = D("100.00") - 60 + wins
    assert D(rounds[-1]["credit"]["balance"]) == expected
    cash = query(settings, "SELECT balance FROM ledger_accounts WHERE owner = 'p-d' AND "
                 "kind = 'cash'")  # fmt: skip
    assert cash == [(expected,)]
    # Every call of every round records the generator build that rolled it.
    builds = query(settings, "SELECT type, rng_build, count(*) FROM casino_transactions "
                   "GROUP BY 1, 2 ORDER BY 1")  # fmt: skip
    assert builds == [("credit", build, 60), ("debit", build, 60)]
    assert query(settings, "SELECT count(*) FROM casino_rounds WHERE closed_at IS NULL") == [(0,)]

    # A refused stake is shown with its reason, no die is rolled, and the exit says so.
    poor = croupier(settings, "dice", "play", "--player", "p-poor", "--stake", "1.00", "--json")
    assert poor.returncode == 1
    refused = json.loads(poor.stdout)["rounds"][0]
    assert refused["debit"]["error"] == "insufficient_funds" and refused["roll"] is None
    ledger_reconciles(settings)


def test_the_table_refuses_to_open_on_an_uncertified_generator_or_registry(
    settings: Settings, worker_factory: StartWorker, tmp_path: Path
) -> None:
    casino_ready(settings, worker_factory, {"p-t": "10.00"})
    manifest = json.loads((ROOT / "rng" / "manifest.json").read_text())
    tampered = tmp_path / "manifest.json"
    tampered.write_text(json.dumps({**manifest, "sha256": "ab" * 32}))
    run = croupier(settings, "dice", "play", "--player", "p-t", "--manifest", str(tampered))
    assert run.returncode == 2
    assert "not the certified build" in run.stderr and "recertification" in run.stderr

    # The generator is certified, but the registry's certificate names another build.
    catalogue = (ROOT / "games" / "catalogue.toml").read_text()
    assert manifest["sha256"] in catalogue
    other = tmp_path / "catalogue.toml"
    other.write_text(catalogue.replace(manifest["sha256"], "cd" * 32))
    run = croupier(settings, "dice", "play", "--player", "p-t",
                   CROUPIER_GAMES_CATALOGUE=str(other))  # fmt: skip
    assert run.returncode == 2 and "recertify" in run.stderr
    # Neither opened the table: nothing reached the wallet.
    assert done(settings, "casino") == 0


def test_a_bad_stake_sends_nothing_and_an_unanswered_round_ends_at_the_timeout(
    settings: Settings,
) -> None:
    """No worker runs: every wait must end on its own, saying so, with a non-zero exit."""
    refused = croupier(settings, "dice", "play", "--player", "p-x", "--stake", "-1")
    assert refused.returncode == 2 and "the stake must be above 0" in refused.stderr
    run = croupier(settings, "dice", "play", "--player", "p-x", "--timeout", "2", "--json")
    assert run.returncode == 1, run.stderr
    assert "1 round(s) got no answer within --timeout 2 s" in run.stderr
    [played] = json.loads(run.stdout)["rounds"]
    assert played["debit"] == {"status": "unanswered", "error": "no answer in 2s"}
    assert played["roll"] is None  # the die is never rolled for a stake not taken
    sent = _casino_calls(settings)
    assert [c["type"] for c in sent] == ["debit", "rollback"]  # the bad stake sent nothing
    assert sent[1]["reference_transaction_id"] == sent[0]["transaction_id"]


def _casino_calls(settings: Settings) -> list[dict[str, Any]]:
    from config.kafka import consume_until

    records = consume_until(settings, [settings.topic("casino")],
                            want=lambda rs: len(rs) >= 2, timeout=30)  # fmt: skip
    return [json.loads(r.value) for r in records]
