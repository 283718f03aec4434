"""``croupier check`` on the real stack: a small mixed workload passes every row, and each
kind of breach we can cause makes its row fail (exit 1)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from config.settings import Settings
from croupier.analytics import AnalyticsSink
from croupier.cli import main as croupier_main
from sinks.clickhouse.client import ClickHouse, connect
from tests.conftest import StartWorker
from tests.integration.helpers import (
    bet,
    done,
    joined,
    odds_change,
    payment,
    produce,
    query,
    settlement,
    wait_for,
)
from tests.integration.test_casino import call

pytestmark = pytest.mark.integration

ROWS = 9  # the catch-up line and the eight invariants


@pytest.fixture
def csettings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The test's settings, a ClickHouse database of its own, and the environment that
    points an in-process ``croupier`` at all of it."""
    s = settings.model_copy(
        update={"clickhouse_database": f"t_{uuid.uuid4().hex[:10]}",
                "analytics_batch_max": 2000, "analytics_batch_wait": 0.1}
    )  # fmt: skip
    for name, value in s.as_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CROUPIER_STACK_DIR", "/nonexistent")
    yield s
    ch = connect(s.clickhouse_url)
    ch.command(f"DROP DATABASE IF EXISTS {s.clickhouse_database}")
    ch.close()


def clickhouse(s: Settings, *commands: str) -> None:
    """Run ``commands`` on the analytics database, as an intruder or a bug would."""
    ch: ClickHouse = connect(s.clickhouse_url)
    try:
        for command in commands:
            ch.command(command)
    finally:
        ch.close()


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = croupier_main(["check", "--json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out)


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in report["rows"]}


def failing(report: dict[str, Any]) -> set[str]:
    return {r["name"] for r in report["rows"] if not r["ok"]}


OUTCOME = "every input has exactly one outcome (decision or dead letter)"
TWICE = "no bet decided twice"
CATCH_UP = "workers caught up (flows, audit relay, analytics sink)"
AUDIT = "the audit trail verifies and rebuilds every wallet"
CLICKHOUSE = "ClickHouse holds exactly the ledger's facts"


def test_check_passes_a_mixed_workload_and_fails_each_breach(
    csettings: Settings, worker_factory: StartWorker, capsys: pytest.CaptureFixture[str]
) -> None:
    s, db = csettings, csettings.clickhouse_database
    worker = worker_factory(s)
    worker.wait_ready()
    produce(s, "players", [*joined("r1-p-1"), *joined("r1-p-2")])
    wait_for(lambda: done(s, "players") == 4, timeout=60, what="registrations")
    produce(s, "payments", [
        ("r1-p-1", payment("deposit", "r1-pay-1", "r1-p-1", "100.00")),
        ("r1-p-2", payment("deposit", "r1-pay-2", "r1-p-2", "50.00")),
    ])  # fmt: skip
    produce(s, "odds", [("r1-m-1", odds_change("r1-m-1", {"1x2": {"home": "2.10",
                                                                   "away": "3.60"}}))])  # fmt: skip
    wait_for(lambda: done(s, "payments") == 2 and done(s, "odds") == 1, timeout=60,
             what="deposits and odds")  # fmt: skip
    home, away = ("r1-m-1", "1x2", "home", "2.10"), ("r1-m-1", "1x2", "away", "3.60")
    first = bet("r1-b-1", "r1-p-1", "10.00", [home])
    produce(s, "bets", [
        ("r1-p-1", first),
        ("r1-p-2", bet("r1-b-2", "r1-p-2", "5.00", [away])),
        ("r1-p-1", b"{not json"),  # malformed: a dead letter
        ("r1-p-1", first),  # the producer's retry: a duplicate, decided once
    ])  # fmt: skip
    produce(s, "casino", [("r1-p-2", call("debit", "r1-tx-1", "r1-p-2", "r1-r-1", "2.00"))])
    wait_for(lambda: done(s, "bets") == 4 and done(s, "casino") == 1, timeout=60, what="bets")
    produce(s, "odds", [("r1-m-1", settlement("r1-m-1", {"1x2": {"home": "win", "away": "lose"}},
                                              at="2026-11-24T21:00:00Z"))])  # fmt: skip
    wait_for(lambda: done(s, "odds") == 2, timeout=60, what="the settlement")
    sink = AnalyticsSink(s)
    thread = threading.Thread(target=sink.run)
    thread.start()
    try:
        code, report = check(capsys, "--wait", "60")
    finally:
        sink.stop.set()
        thread.join(30)
    assert code == 0, json.dumps(report, indent=1)
    assert len(report["rows"]) == ROWS
    for row in report["rows"]:
        assert row["ok"] and row["breaches"] == 0 and row["checked"] > 0, row
    # Inputs: 4 players + 2 payments + 2 odds + 4 bets + 1 casino call.
    assert rows(report)[OUTCOME]["checked"] == 13
    code, scoped = check(capsys, "--wait", "5", "--run", "r1", "--skip-clickhouse")
    assert code == 0, scoped
    assert rows(scoped)[OUTCOME]["checked"] == 13
    code, other = check(capsys, "--wait", "5", "--run", "r2", "--skip-clickhouse")
    assert code == 0 and rows(other)[OUTCOME]["checked"] == 0

    # A rogue second decision for r1-b-1, different from the one stored.
    rogue = json.dumps({"bet_id": "r1-b-1", "player_id": "r1-p-1", "status": "rejected",
                        "reason": "invalid", "odds": None,
                        "decided_at": "2026-11-24T19:00:00Z"}).encode()  # fmt: skip
    produce(s, "bet-decisions", [("r1-p-1", rogue)])
    code, report = check(capsys, "--wait", "5", "--skip-clickhouse")
    assert code == 1 and failing(report) == {TWICE}, report
    assert "r1-b-1" in rows(report)[TWICE]["examples"][0]

    # A bet nobody decides: the workers do not catch up (its own line), and once the
    # flow's progress claims it done, the input has no outcome.
    assert worker.terminate() == 0, worker.problems()
    (msg,) = produce(s, "bets", [("r1-p-2", bet("r1-b-3", "r1-p-2", "1.00", [away]))])
    code, report = check(capsys, "--wait", "2", "--skip-clickhouse")
    assert code == 1 and failing(report) == {TWICE, CATCH_UP}, report
    assert f"[{msg.partition()}]" in rows(report)[CATCH_UP]["examples"][0]
    query(s, "UPDATE consumer_progress SET next_offset = %s WHERE topic = %s AND partition = %s "
          "RETURNING 1", (msg.offset() + 1, s.topic("bets"), msg.partition()))  # fmt: skip
    code, report = check(capsys, "--wait", "2", "--skip-clickhouse")
    assert code == 1 and failing(report) == {TWICE, OUTCOME}, report
    where = f"{msg.partition()}/{msg.offset()}: no outcome"
    assert any(where in e for e in rows(report)[OUTCOME]["examples"]), report

    # Facts in ClickHouse the ledger lacks: a stake, and a refused casino call.
    clickhouse(s, f"INSERT INTO {db}.ledger_transactions (key, operation, player_id, currency, "
               "amount, status) VALUES ('bet:r1-ghost', 'stake', 'r1-p-1', 'EUR', 1, "
               "'applied')")  # fmt: skip
    code, report = check(capsys, "--wait", "2")
    assert code == 1 and CLICKHOUSE in failing(report), report
    assert any("bet:r1-ghost" in e for e in rows(report)[CLICKHOUSE]["examples"]), report
    clickhouse(s, f"ALTER TABLE {db}.ledger_transactions DELETE WHERE key = 'bet:r1-ghost' "
               "SETTINGS mutations_sync = 1",
               f"INSERT INTO {db}.casino_transactions (transaction_id, type, player_id, "
               "round_id, game_id, amount, currency, status, error, moved) VALUES "
               "('r1-tx-ghost', 'debit', 'r1-p-2', 'r1-r-9', 'dice', 2, 'EUR', "
               "'rejected', 'insufficient_funds', false)")  # fmt: skip
    code, report = check(capsys, "--wait", "2")
    assert code == 1 and CLICKHOUSE in failing(report), report
    examples = rows(report)[CLICKHOUSE]["examples"]
    assert any("r1-tx-ghost" in e for e in examples), report
    assert not any("bet:r1-ghost" in e for e in examples), report

    # The audit trail altered by the schema's owner, its append-only trigger switched off.
    with psycopg.connect(s.migration_dsn, options=f"-c search_path={s.pg_schema}") as conn:
        conn.execute("ALTER TABLE audit_records DISABLE TRIGGER audit_records_append_only")
        changed = conn.execute(
            "UPDATE audit_records SET body = replace(body, '100.00', '1000.00') "
            "WHERE entity = 'ledger_transaction' AND body LIKE '%%100.00%%' RETURNING seq"
        ).fetchall()
        conn.execute("ALTER TABLE audit_records ENABLE TRIGGER audit_records_append_only")
    assert changed
    code, report = check(capsys, "--wait", "2", "--skip-clickhouse")
    assert code == 1 and AUDIT in failing(report), report


def test_check_says_which_service_is_unreachable(
    csettings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CROUPIER_CLICKHOUSE_URL", "http://127.0.0.1:9")
    assert croupier_main(["check", "--wait", "0"]) == 3
    assert "cannot reach ClickHouse" in capsys.readouterr().err
