"""Wallets rebuilt from the audit trail alone agree with the ledger, and a gap shows."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from config.settings import Settings
from croupier.cli import main
from sinks.postgres.rebuild import _compare, _trail, rebuild, replay
from tests.conftest import StartWorker
from tests.integration.helpers import casino_ready, done, payment, produce, query, wait_for
from tests.integration.test_casino import call

pytestmark = pytest.mark.integration


def test_every_wallet_rebuilds_from_the_trail_and_a_missing_record_shows(
    settings: Settings, cli_env: Settings, worker_factory: StartWorker,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    casino_ready(settings, worker_factory, {"p-1": "100.00", "p-2": "20.00"})
    produce(settings, "casino", [
        ("p-1", call("debit", "t-1", "p-1", "r-1", "10.00")),
        ("p-1", call("credit", "t-2", "p-1", "r-1", "25.00", round_closed=True)),
        ("p-1", call("debit", "t-3", "p-1", "r-2", "4.00")),
        ("p-1", call("rollback", "t-4", "p-1", "r-2", "4.00", reference_transaction_id="t-3")),
        ("p-2", call("debit", "t-5", "p-2", "r-3", "50.00")),  # refused: not enough
    ])  # fmt: skip
    produce(settings, "payments", [
        ("p-1", payment("withdrawal", "w-1", "p-1", "30.00")),
        ("p-2", payment("withdrawal", "w-2", "p-2", "5.00")),
        ("p-2", payment("withdrawal_completed", "w-2", "p-2")),
    ])  # fmt: skip
    wait_for(lambda: done(settings, "casino") == 5 and done(settings, "payments") == 5,
             timeout=60, what="the calls and payments")  # fmt: skip

    assert main(["audit", "rebuild", "p-1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (wallet,) = report["wallets"]
    assert wallet["ok"] and wallet["operations"] == 6  # deposit, 2 debits, credit, rollback, w-1
    assert {(b["account"], b["balance"]) for b in wallet["balances"]} == {
        ("cash", "85.00"), ("withdrawal_reserve", "30.00")  # no stake ever pending
    }  # fmt: skip
    cash = query(settings, "SELECT kind, balance FROM ledger_accounts WHERE owner = 'p-1'")
    assert dict(cash)["cash"] == Decimal("85.00")

    assert main(["audit", "rebuild", "--all"]) == 0
    assert "2 wallet(s) rebuilt from the audit trail, 0 differ" in capsys.readouterr().out
    seen: list[tuple[int, int]] = []  # what `audit rebuild --all`'s progress bar is fed
    with psycopg.connect(settings.pg_dsn.get_secret_value(),
                         options=f"-c search_path={settings.pg_schema}") as conn:  # fmt: skip
        rebuild(conn, on_progress=lambda n, total: seen.append((n, total)))
    assert seen == [(1, 2), (2, 2)]

    # The trail without one of its records no longer adds up to the ledger.
    with psycopg.connect(settings.pg_dsn.get_secret_value(),
                         options=f"-c search_path={settings.pg_schema}") as conn:  # fmt: skip
        records: list[dict[str, Any]] = _trail(conn, "p-1")["p-1"]
        credit = next(r for r in records if r["key"] == "casino-credit:t-2")
        short = replay("p-1", [r for r in records if r is not credit])
        _compare(conn, short, {int(r["txn_id"]) for r in records if r is not credit})
    assert not short.ok
    assert any("cash" in d and "the trail sums" in d for d in short.differences)
    assert any("without an audit record" in d for d in short.differences)
    assert main(["audit", "rebuild", "nobody"]) == 2
