"""`croupier replay`: settlements recomputed from the recorded events, on the real stack.

A worker decides and settles real bets (a rollback and resettlement, a cancel and its
rollback, a dead heat, an accumulator, refusals by the rules and by the ledger); then
both replay commands must agree with what the live tables and the ledger hold, and
disagree once a stored payout is tampered with.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql

from config.settings import Settings
from croupier.cli import main
from sinks.postgres.replay import replay_range
from tests.conftest import StartWorker
from tests.integration.helpers import (
    balance,
    bet,
    done,
    feed,
    joined,
    odds_change,
    payment,
    produce,
    query,
    settlement,
    wait_for,
)

pytestmark = pytest.mark.integration

D = Decimal
Run = Callable[..., tuple[int, Any]]


def dead_heat(event_id: str, *, at: str) -> bytes:
    return json.dumps({
        "type": "bet_settlement", "event_id": event_id, "timestamp": at,
        "markets": [{"market_id": "race", "outcomes": [
            {"outcome_id": "r-1", "result": "win", "dead_heat_factor": "0.5"},
            {"outcome_id": "r-2", "result": "win", "dead_heat_factor": "0.5"},
            {"outcome_id": "r-3", "result": "lose"}]}],
    }).encode()  # fmt: skip


@pytest.fixture
def run(cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> Run:
    """Run ``croupier ...`` on this test's schema; (exit status, parsed JSON or text)."""

    def call(*argv: str) -> tuple[int, Any]:
        capsys.readouterr()
        code = main(list(argv))
        out = capsys.readouterr()
        if "--json" in argv and out.out.strip():
            return code, json.loads(out.out)
        return code, out.out + out.err

    return call


def play_the_match_day(settings: Settings, worker_factory: StartWorker) -> None:
    worker = worker_factory(settings)
    worker.wait_ready()
    produce(settings, "players", [*joined("p-1"), *joined("p-2")])
    wait_for(lambda: done(settings, "players") == 4, timeout=60, what="registrations")
    pays = [
        ("p-1", payment("deposit", "pay-1", "p-1", "100.00")),
        ("p-2", payment("deposit", "pay-2", "p-2", "50.00")),
        ("p-2", payment("withdrawal", "pay-3", "p-2", "20.00")),
        ("p-2", payment("withdrawal_completed", "pay-3", "p-2")),
    ]
    produce(settings, "payments", pays)
    wait_for(lambda: done(settings, "payments") == len(pays), timeout=60, what="payments")

    produce(settings, "odds", [
        ("m-1", odds_change("m-1", {"1x2": {"home": "2.10", "draw": "3.40", "away": "3.60"}})),
        ("m-2", odds_change("m-2", {"1x2": {"home": "1.50", "draw": "4.00", "away": "6.00"}})),
        ("m-3", odds_change("m-3", {"ou": {"over": "1.90", "under": "1.90"}})),
        ("m-4", odds_change("m-4", {"race": {"r-1": "4.00", "r-2": "5.00", "r-3": "2.00"}})),
        ("m-5", odds_change("m-5", {"1x2": {"home": "1.80", "draw": "3.50", "away": "4.50"}})),
    ])  # fmt: skip
    wait_for(lambda: done(settings, "odds") == 5, timeout=30, what="odds")
    bets = [
        ("p-1", bet("b-1", "p-1", "10.00", [("m-1", "1x2", "home", "2.10")])),
        ("p-1", bet("b-2", "p-1", "5.00", [("m-1", "1x2", "home", "2.00")])),  # price moved
        ("p-2", bet("b-3", "p-2", "10.00",
                    [("m-1", "1x2", "draw", "3.40"), ("m-2", "1x2", "home", "1.50")])),
        ("p-1", bet("b-4", "p-1", "4.00", [("m-3", "ou", "over", "1.90")])),
        ("p-2", bet("b-5", "p-2", "500.00", [("m-1", "1x2", "home", "2.10")])),  # no funds
        ("p-1", bet("b-6", "p-1", "5.00", [("m-4", "race", "r-1", "4.00")])),
    ]  # fmt: skip
    produce(settings, "bets", bets)
    wait_for(lambda: done(settings, "bets") == len(bets), timeout=60, what="bets")
    assert dict(query(settings, "SELECT bet_id, status FROM bets")) == {
        "b-1": "open", "b-2": "rejected", "b-3": "open", "b-4": "open", "b-5": "rejected",
        "b-6": "open",
    }  # fmt: skip

    home_wins = {"1x2": {"home": "win", "draw": "lose", "away": "lose"}}
    produce(settings, "odds", [
        ("m-1", settlement("m-1", home_wins, at="2026-11-24T21:00:00Z")),
        ("m-2", settlement("m-2", home_wins, at="2026-11-24T21:01:00Z")),
        ("m-3", feed("bet_cancel", "m-3", at="2026-11-24T21:02:00Z")),
        ("m-4", dead_heat("m-4", at="2026-11-24T21:03:00Z")),
    ])  # fmt: skip
    # Markets are keyed by event, so m-1 and m-2 travel on different partitions: b-3 (a leg
    # on each) is settled once both are in, before m-1's correction comes, as a feed sends
    # them minutes apart. Sent together, m-1's correction could overtake m-2's result.
    wait_for(lambda: done(settings, "odds") == 9, timeout=60, what="first settlements")
    produce(settings, "odds", [
        # The feed got m-1 wrong; m-3's cancel is withdrawn and the market settled.
        ("m-1", feed("rollback_bet_settlement", "m-1", at="2026-11-24T21:10:00Z")),
        ("m-1", settlement("m-1", {"1x2": {"home": "lose", "draw": "win", "away": "lose"}},
                           at="2026-11-24T21:11:00Z")),
        ("m-3", feed("rollback_bet_cancel", "m-3", at="2026-11-24T21:12:00Z")),
        ("m-3", settlement("m-3", {"ou": {"over": "win", "under": "lose"}},
                           at="2026-11-24T21:13:00Z")),
    ])  # fmt: skip
    wait_for(lambda: done(settings, "odds") == 13, timeout=60, what="settlements")
    assert query(settings, "SELECT settlement_id, kind, result, payout FROM settlements "
                 "ORDER BY 1") == [
        ("b-1/1", "settled", "win", D("21.00")), ("b-1/2", "rolled_back", None, D(0)),
        ("b-1/3", "resettled", "lose", D(0)),
        ("b-3/1", "settled", "lose", D(0)), ("b-3/2", "rolled_back", None, D(0)),
        ("b-3/3", "resettled", "win", D("51.00")),
        ("b-4/1", "voided", "void", D("4.00")), ("b-4/2", "rolled_back", None, D(0)),
        ("b-4/3", "resettled", "win", D("7.60")),
        ("b-6/1", "settled", "win", D("10.00")),
    ]  # fmt: skip
    assert balance(settings, "p-1") == (D("98.60"), D(0))  # 100 - 19 + 7.60 + 10
    assert balance(settings, "p-2") == (D("71.00"), D(0))  # 50 - 20 - 10 + 51
    # A later bet, decided in a batch of its own, that stays open.
    produce(
        settings, "bets", [("p-2", bet("b-7", "p-2", "6.00", [("m-5", "1x2", "away", "4.50")]))]
    )
    wait_for(lambda: done(settings, "bets") == len(bets) + 1, timeout=60, what="late bet")
    assert balance(settings, "p-2") == (D("65.00"), D("6.00"))
    assert worker.terminate() == 0, worker.problems()


def test_replay_agrees_with_the_ledger_and_catches_a_tampered_payout(
    settings: Settings, worker_factory: StartWorker, run: Run
) -> None:
    play_the_match_day(settings, worker_factory)

    # One bet at a time: replay, book and ledger agree.
    code, report = run("replay", "settlement", "b-1", "--json")
    assert code == 0, report
    assert report["replay"]["history"] == [
        {"settlement_id": "b-1/1", "kind": "settled", "result": "win", "payout": "21.00"},
        {"settlement_id": "b-1/2", "kind": "rolled_back", "result": None, "payout": "0.00"},
        {"settlement_id": "b-1/3", "kind": "resettled", "result": "lose", "payout": "0.00"},
    ]
    assert report["ledger"]["in_force"]["key"] == "settlement:b-1/3"
    assert report["ledger"]["stake"]["status"] == "applied"
    for bet_id, result, payout in [("b-3", "win", "51.00"), ("b-4", "win", "7.60"),
                                   ("b-6", "win", "10.00")]:  # fmt: skip
        code, report = run("replay", "settlement", bet_id, "--json")
        assert code == 0, report
        assert (report["replay"]["result"], report["replay"]["payout"]) == (result, payout)
        assert report["book"]["payout"] == payout
    assert [leg["dead_heat_factor"] for leg in report["replay"]["legs"]] == ["0.5"]
    for rejected in ("b-2", "b-5"):  # by the rules; by the ledger
        code, report = run("replay", "settlement", rejected, "--json")
        assert code == 0 and report["replay"] is None, report
    code, text = run("replay", "settlement", "b-1")
    assert code == 0 and "replay, book and ledger agree" in text
    code, text = run("replay", "settlement", "no-such-bet")
    assert code == 2 and "no bet 'no-such-bet'" in text

    # The whole day, re-run into a scratch schema.
    code, report = run("replay", "--json")
    assert code == 0, report["differences"]
    assert report["players"] == ["p-1", "p-2"]
    assert (report["bets_replayed"], report["messages_replayed"]) == (7, 8)
    assert report["recorded_operations"] == 4  # two deposits, a withdrawal and its payout
    assert report["scratch_schema"] is None  # dropped

    # A range holding only p-2's late bet re-runs p-2's whole history, and not p-1's.
    decided = query(settings, "SELECT decided_at FROM bets WHERE bet_id = 'b-7'")[0][0]
    start, end = decided.isoformat(), (decided + timedelta(microseconds=1)).isoformat()
    code, report = run("replay", "--from", start, "--to", end, "--keep", "--json")
    assert code == 0, report["differences"]
    assert report["players"] == ["p-2"]
    assert (report["bets_in_range"], report["bets_replayed"]) == (1, 3)  # b-7; b-3, b-5
    kept = report["scratch_schema"]
    assert query(settings, "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (kept,)) == [
        (1,)
    ]
    with psycopg.connect(settings.migration_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(kept)))
    # The same range reports its progress step by step (what `replay --from/--to`'s bar shows).
    seen: list[tuple[int, int]] = []
    again = replay_range(settings.migration_dsn, settings.pg_schema, decided,
                         decided + timedelta(microseconds=1),
                         on_progress=lambda n, total: seen.append((n, total)))  # fmt: skip
    assert again.agree and seen and seen == [(n, seen[0][1]) for n in range(1, seen[0][1] + 1)]
    later = (decided + timedelta(days=1)).isoformat()
    code, text = run("replay", "--from", later)
    assert code == 0 and "nothing to replay" in text

    # Tamper with a stored payout: both forms disagree and say where.
    query(settings, "UPDATE bets SET payout = 99 WHERE bet_id = 'b-6' RETURNING 1")
    code, report = run("replay", "settlement", "b-6", "--json")
    assert code == 1
    failed = [c for c in report["checks"] if not c["ok"]]
    assert [c["check"] for c in failed] == ["settlement in force"], failed
    assert "book win pays 99.00" in failed[0]["detail"]
    code, text = run("replay", "settlement", "b-6")
    assert code == 1 and "DO NOT agree" in text
    code, report = run("replay", "--json")
    assert code == 1
    assert report["differences"] == [
        {"what": "bet b-6", "field": "payout", "live": "99", "replay": "10.00"}
    ]
