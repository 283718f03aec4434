"""Every data command that reads a service prints one JSON document with --json, against the
real services (the commands that need none: tests/unit/test_cli_framework.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import psycopg
import pytest

from config.settings import Settings
from croupier.checks.invariants import catch_up
from croupier.cli import main
from croupier.exits import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_OK
from rules import ledger as L
from sinks.postgres.ledger import Ledger
from topologies.topics import INBOUND

pytestmark = pytest.mark.integration

FROM, TO = "2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z"
NOW = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)


def test_every_data_command_prints_one_json_document(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CROUPIER_STACK_DIR", str(tmp_path / "no-stack"))
    monkeypatch.setenv("CROUPIER_AUDIT_KEY", str(tmp_path / "audit.pem"))
    lg = Ledger.connect(settings.migration_dsn, settings.pg_schema)
    lg.post(L.deposit("pay-1", "p-1", D("22.50"), "EUR", NOW))
    lg.close()

    def run(*argv: str, codes: tuple[int, ...] = (EXIT_OK,)) -> Any:
        code = main([*argv, "--json"])
        out, err = capsys.readouterr()
        assert code in codes, (argv, code, err[-600:])
        return json.loads(out)

    assert run("db", "migrate")["schema"] == settings.pg_schema
    topics = run("topics", "create", "--timeout", "30")
    assert {t["status"] for t in topics} == {"exists"}
    assert run("wallet", "balance", "p-1")["balance"] == "22.50"
    assert [ln["amount"] for ln in run("wallet", "statement", "p-1")] == ["22.50"]
    assert run("wallet", "reconcile")["ok"] is True

    key = run("audit", "keygen")
    pin = key["public_key"]
    assert run("audit", "checkpoint")["fingerprint"] == key["fingerprint"]
    verified = run("audit", "verify", "--public-key", pin)
    assert verified["ok"] is True and verified["checkpoints"] == 1
    # The deposit was posted straight to the ledger, past the flows that audit it: the
    # wallet the trail rebuilds is empty, and it says so.
    rebuilt = run("audit", "rebuild", "--all", codes=(EXIT_FAILED,))
    assert rebuilt["ok"] is False and [w["player_id"] for w in rebuilt["wallets"]] == ["p-1"]
    bundle = tmp_path / "bundle.jsonl"
    exported = run("audit", "export", "--from", FROM, "--to", TO, "--out", str(bundle))
    assert exported["bundle"] == str(bundle) and exported["records"] == verified["records"]
    alone = run("audit", "verify", "--bundle", str(bundle), "--public-key", pin)
    assert alone["ok"] is True

    ranged = run("replay", "--from", FROM, "--to", TO)
    assert ranged["players"] == [] and ranged["agree"] is True

    assert run("sql", "SELECT 1 AS one") == [{"one": 1}]
    checked = run("check", "--skip-clickhouse", "--wait", "1", codes=(EXIT_OK, EXIT_FAILED))
    assert isinstance(checked["ok"], bool) and checked["rows"]
    looks: list[tuple[int, int]] = []  # what `check --wait`'s progress bar is fed
    with psycopg.connect(settings.pg_dsn.get_secret_value(),
                         options=f"-c search_path={settings.pg_schema}") as conn:  # fmt: skip
        catch_up(conn, settings, wait=0, clickhouse=False,
                 on_progress=lambda done, total: looks.append((done, total)))  # fmt: skip
    assert len(looks) == 1 and looks[0][1] == len(INBOUND) + 1 and 0 <= looks[0][0] <= looks[0][1]
    parts = run("stack", "status", codes=(EXIT_OK, EXIT_NOT_RUNNING))  # no workers here
    assert {p["name"] for p in parts} >= {"kafka", "postgres"}
    health = run("status", "--url", "http://127.0.0.1:1/metrics", codes=(EXIT_NOT_RUNNING,))
    assert isinstance(health, dict)

    reports = tmp_path / "reports"
    written = run("reports", "write", "--jurisdiction", "DK", "--dir", str(reports),
                  "--idle-timeout", "1")  # fmt: skip
    assert written["records"] == 0 and written["problems"] == []
    checked_files = run("reports", "verify", "--jurisdiction", "DK", "--dir", str(reports),
                        codes=(EXIT_OK, EXIT_FAILED))  # fmt: skip
    assert isinstance(checked_files["ok"], bool)
