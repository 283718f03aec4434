"""Rich output on a terminal, the same plain text when piped: check, status, games list,
dice play, wallet statement, topics create, replay settlement, the demo's tables and
simulate's progress line and summary.

A terminal is a rich ``Console(force_terminal=True)`` (or FORCE_COLOR for a whole command);
piped is pytest's captured stdout, which is no terminal.
"""

from __future__ import annotations

import io
import re
import threading
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from config.games import DEFAULT_CATALOGUE, GAME_COLUMNS, load_catalogue, table_rows
from croupier import cli, status
from croupier.check import print_rows
from croupier.checks import Row, table
from croupier.commands import printers
from croupier.commands.casino import print_rounds
from croupier.commands.output import fancy, plain_table, verdict_style
from croupier.commands.output import table as draw
from croupier.demo.printing import print_table
from croupier.dice import Bet, Played
from croupier.sim import report as sim_report
from croupier.sim.run import Progress, Sample
from sinks.postgres.ledger import StatementLine
from topologies.topics import TopicOutcome

ESC = "\x1b["
GREEN, RED = "\x1b[32m", "\x1b[1;31m"
BORDERS = ("┏", "┃", "━")  # rich's heavy-head table box


def terminal(width: int = 160) -> Console:
    return Console(file=io.StringIO(), force_terminal=True, color_system="standard", width=width)


def drawn(console: Console) -> str:
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


def rows() -> list[Row]:
    passed = Row("every input has exactly one outcome", checked=12)
    failed = Row("no negative balance", checked=3)
    failed.breach("p-1 cash -5.00")
    failed.notes.append("read at the ledger's snapshot")
    return [passed, failed, Row("ClickHouse holds exactly the ledger's facts", skipped=True)]


def test_verdict_words_and_when_a_terminal_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert verdict_style("PASS") == "green" and verdict_style("FAIL") == "bold red"
    assert verdict_style("up, NOT READY (its /readyz says why)") == "bold red"  # worst wins
    assert verdict_style("DOWN (connection refused)") == "bold red"
    assert verdict_style("credit ok") == "green" and verdict_style("m-1/1x2") is None
    tty = SimpleNamespace(isatty=lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert fancy(tty) and not fancy(io.StringIO())
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert fancy(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")  # wins over both
    assert not fancy(tty) and not fancy(io.StringIO())


def test_a_table_on_a_terminal_is_rich_and_falls_back_when_narrow(
    capsys: pytest.CaptureFixture[str],
) -> None:
    wide = terminal()
    draw(["check", "result"], [["one", "PASS"], ["two", "FAIL"]], verdicts=1, console=wide)
    text = drawn(wide)
    assert all(b in text for b in BORDERS)
    assert GREEN + "PASS" in text and RED + "FAIL" in text
    assert capsys.readouterr().out == ""
    narrow = terminal(width=12)  # rich would cut the cells: plain columns instead
    draw(["check", "result"], [["one", "PASS"]], console=narrow)
    assert drawn(narrow) == "" and capsys.readouterr().out == "check  result\none    PASS\n"


def test_check_piped_is_the_plain_table_and_a_terminal_gets_a_coloured_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_rows("the whole stack", rows(), 1.25)
    out = capsys.readouterr().out
    assert ESC not in out
    # Exactly what the plain renderer (and scripts reading it) has always produced.
    assert out == f"croupier check: the whole stack\n\n{table(rows())}\n\nBREACHED (1.2 s)\n"
    lines = out.splitlines()
    assert lines[2].split() == ["invariant", "checked", "breaches", "result"]
    assert set(lines[3].replace(" ", "")) == {"-"}
    assert lines[5].split()[-3:] == ["3", "1", "FAIL"]
    assert "  BREACH p-1 cash -5.00" in lines and "  note: read at the ledger's snapshot" in lines

    console = terminal()
    print_rows("run r-1", rows(), 0.5, console=console)
    text = drawn(console)
    assert all(b in text for b in BORDERS)
    assert GREEN + "PASS" in text and RED + "FAIL" in text and "\x1b[33mSKIP" in text
    assert RED + "BREACHED (0.5 s)" in text
    assert "\x1b[31m  BREACH p-1 cash -5.00" in text
    assert capsys.readouterr().out.startswith("croupier check: run r-1")  # the plain lines
    print_rows("run r-1", rows()[:1], 0.5, console=(console := terminal()))
    assert GREEN + "every invariant holds (0.5 s)" in drawn(console)


def report() -> dict[str, Any]:
    scrape = status.parse(
        "croupier_ready 0.0\n"
        'croupier_events_consumed_total{topic="bets"} 40.0\n'
        'croupier_consumer_lag_messages{topic="bets"} 2.0\n'
        "croupier_audit_relay_backlog_records 7.0\n"
        "croupier_audit_last_checkpoint_verified 0.0\n"
        'croupier_report_lag_records{jurisdiction="UK"} 3.0\n'
        'croupier_open_liability{currency="EUR",market="m-1/1x2"} 16.5\n'
        'croupier_flow_batch_events_sum{flow="bets"} 30.0\n'
        'croupier_flow_batch_events_count{flow="bets"} 3.0\n'
        'croupier_flow_batch_seconds_bucket{flow="bets",le="0.1"} 3.0\n'
        'croupier_flow_batch_seconds_bucket{flow="bets",le="+Inf"} 3.0\n'
    )
    up = status.Endpoint("bets-1", "http://127.0.0.1:1/metrics", pid=7, scrapes=[scrape, scrape])
    down = status.Endpoint("odds-1", "http://127.0.0.1:2/metrics", error="refused")
    r = status.aggregate([up, down], 1.0)
    r["source"] = ".stack/test"
    return r


def test_status_piped_is_plain_columns_and_a_terminal_gets_tables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status.print_report(report())
    out = capsys.readouterr().out
    assert ESC not in out
    lines = out.splitlines()
    assert lines[0] == "processes: 1 of 2 answer (from .stack/test; rates over 1 s)"
    assert lines[1].split() == ["process", "role", "pid", "url", "state"]
    procs = {ln.split()[0]: ln.split(maxsplit=3)[3] for ln in lines[2:4]}
    assert procs["bets-1"].endswith("up, NOT READY (its /readyz says why)")
    assert procs["odds-1"].endswith("DOWN (refused)")
    topics = lines.index("topics")
    assert lines[topics + 1].split() == ["topic", "events", "/s", "lag"]
    assert lines[topics + 2].split() == ["bets", "40", "0", "2"]
    assert "open liability (top markets)" in lines
    assert ["m-1/1x2", "EUR", "16.50"] in [ln.split() for ln in lines]
    assert "relay backlog 7" in out and "NOT VERIFIED" in out and "reports.UK" in out

    console = terminal()
    status.print_report(report(), console=console)
    text = drawn(console)
    assert all(b in text for b in BORDERS) and "processes: 1 of 2 answer" in text
    assert RED + "DOWN (refused)" in text and RED + "up, NOT READY" in text
    assert RED + "audit: relay backlog 7" in text


def test_games_list_piped_is_the_plain_table_and_forced_colour_draws_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert cli.main(["games", "list"]) == 0
    out = capsys.readouterr().out
    assert ESC not in out
    assert out == plain_table(GAME_COLUMNS, table_rows(load_catalogue(DEFAULT_CATALOGUE))) + "\n"
    assert out.split("\n", 1)[0].split() == [
        "game_id",
        "name",
        "provider",
        "type",
        "rtp",
        "certified",
    ]

    monkeypatch.setenv("FORCE_COLOR", "1")  # the whole command, as on a terminal
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["games", "list"]) == 0
    text = capsys.readouterr().out
    assert all(b in text for b in BORDERS) and "croupier-dice" in text
    assert not re.search(r"^game_id  ", text, re.M)  # not the plain header


def played() -> list[Played]:
    won = Played("r-1", Bet("p-1", Decimal("1.00"), 3), {"status": "ok"}, roll=3,
                 win=Decimal("5.80"), credit={"status": "ok", "balance": "104.80"})  # fmt: skip
    refused = Played("r-2", Bet("p-1", Decimal("1.00"), 2), {"status": "refused", "error": "funds"})
    silent = Played("r-3", Bet("p-1", Decimal("1.00"), 6), {"status": "ok"}, roll=1,
                    win=Decimal("0"))  # fmt: skip
    return [won, refused, silent]


def test_dice_rounds_piped_are_columns_and_a_terminal_colours_the_answers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_rounds("ab" * 32, played())
    out = capsys.readouterr().out
    assert ESC not in out
    lines = out.splitlines()
    assert lines[0].startswith("Croupier Dice, RNG build abababababababab…, pays")
    assert lines[1].split() == ["round", "pick", "roll", "win", "answer", "balance"]
    assert lines[2].split() == ["r-1", "3", "3", "5.80", "credit", "ok", "104.80"]
    assert lines[3].split() == ["r-2", "2", "-", "-", "debit", "refused", "(funds)", "-"]
    assert lines[4].split() == ["r-3", "6", "1", "0", "credit", "unanswered", "?"]

    console = terminal()
    print_rounds("ab" * 32, played(), console=console)
    text = drawn(console)
    assert all(b in text for b in BORDERS)
    assert GREEN + "credit ok" in text and RED + "debit refused (funds)" in text


class Scripted(Progress):
    """The progress display fed two samples, without a stack behind it."""

    period = 0.02

    def __init__(self, mode: str, out: io.StringIO) -> None:
        outcomes = SimpleNamespace(lock=threading.Lock(), labels=Counter({"accepted": 5}))
        super().__init__(SimpleNamespace(outcomes=outcomes), mode, out)  # type: ignore[arg-type]  # a stand-in for Live: only .outcomes is read by line()
        self.samples = iter([Sample(1.0, "first half", 10, 5), Sample(2.0, "first half", 30, 20)])
        self.done = threading.Event()

    def sample(self) -> Sample:
        s = next(self.samples, None)
        if s is None:
            self.done.set()
            return Sample(2.0, "first half", 30, 20)
        return s


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_simulate_progress_prints_lines_when_piped_and_redraws_with_rich_on_a_tty() -> None:
    piped = io.StringIO()
    lines = Scripted("auto", piped)
    assert lines.mode == "lines"
    lines.start()
    lines.done.wait(10)
    lines.stop()
    assert ESC not in piped.getvalue()
    assert re.fullmatch(
        r"\[   1\.0s\] first half       sent      0/s  decided      0/s  backlog     5  "
        r"\| accepted 5\n",
        piped.getvalue(),
    )

    tty = Terminal()
    redraw = Scripted("auto", tty)
    assert redraw.mode == "redraw"
    redraw.start()
    redraw.done.wait(10)
    redraw.stop()
    text = tty.getvalue()
    assert "\x1b[?25l" in text  # rich hid the cursor to redraw in place, and
    assert "\x1b[?25h" in text  # showed it again at the end
    assert "\x1b[2K" in text and "\x1b[1mfirst half" in text  # erased line; phase in bold
    assert "backlog    10" in text and text.endswith("…\n\x1b[?25h")  # cut to width; stays


def test_wallet_statement_and_topics_create_print_plain_columns_when_piped(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    at = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    lines = [
        StatementLine(at, "deposit:d-1", "deposit", "p-1/cash", "EUR", Decimal("100.00"),
                      Decimal("100.00")),
        StatementLine(at, "stake:b-1", "stake", "p-1/cash", "EUR", Decimal("-2.50"),
                      Decimal("97.50")),
    ]  # fmt: skip
    printers.statement(lines)
    printers.statement([])  # no entries: nothing, not an empty table
    out = capsys.readouterr().out
    assert ESC not in out
    rows = [ln.split() for ln in out.splitlines()]
    assert rows[0] == ["recorded_at", "operation", "account", "amount", "currency",
                       "balance_after", "key"]  # fmt: skip
    assert rows[2] == ["2026-12-07", "06:00:00", "stake", "p-1/cash", "-2.50", "EUR", "97.50",
                       "stake:b-1"]  # fmt: skip
    assert len(rows) == 3
    # Right-aligned money: the amounts end in one column.
    amounts = out.splitlines()
    assert amounts[1].index("100.00") + 6 == amounts[2].index("-2.50") + 5

    made = [TopicOutcome("bets", "created"), TopicOutcome("odds", "mismatch", "3 partitions")]
    printers.topics(made)
    out = capsys.readouterr().out
    assert [ln.split() for ln in out.splitlines()] == [
        ["status", "topic", "detail"],
        ["created", "bets"],
        ["mismatch", "odds", "3", "partitions"],
    ]
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    printers.topics(made)
    text = capsys.readouterr().out
    assert all(b in text for b in BORDERS)
    assert GREEN + "created" in text and RED + "mismatch" in text


class Settled:
    """What ``printers.settlement`` reads of a ``SettlementReport`` (built from a database)."""

    def __init__(self, agree: bool) -> None:
        self.bet = SimpleNamespace(bet_id="b-1", player_id="p-1", currency="EUR",
                                   status="settled", odds=Decimal("2.10"), reason=None)  # fmt: skip
        self.messages, self.settlements, self.ledger = 2, [object()], [object()]
        self.checks = [SimpleNamespace(ok=True, name="payout", detail="2.10 everywhere"),
                       SimpleNamespace(ok=agree, name="ledger", detail="one settle")]  # fmt: skip
        self.agree = agree

    def as_json(self) -> dict[str, Any]:
        step = {"settlement_id": "s-1", "kind": "settle", "result": "won", "payout": "2.10"}
        txn = {"key": "settlement:s-1", "status": "applied", "operation": "settle", "cash": "2.10"}
        return {"stake": "1.00", "replay": {"history": [step]},
                "book": {"settlements": [step]}, "ledger": {"settlements": [txn]}}  # fmt: skip


def test_replay_settlement_prints_its_tables_and_the_verdict(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    printers.settlement(Settled(agree=True))  # type: ignore[arg-type]  # Settled: the fields read
    out = capsys.readouterr().out
    assert ESC not in out
    lines = out.splitlines()
    assert lines[1] == "history"
    assert lines[2].split() == ["settlement", "replay", "settlements", "table", "ledger"]
    assert lines[3].split() == ["s-1", "settle", "won", "2.10", "settle", "won", "2.10",
                                "settle", "cash", "2.10"]  # fmt: skip
    assert lines[5].split()[:2] == ["ok", "payout"] and lines[-1] == "replay, book and ledger agree"
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    printers.settlement(Settled(agree=False))  # type: ignore[arg-type]  # Settled: the fields read
    text = capsys.readouterr().out
    assert all(b in text for b in BORDERS) and RED + "DIFFERS" in text
    assert RED + "replay, book and ledger DO NOT agree" in text


def test_the_demo_tables_keep_their_indented_plain_text_and_colour_the_check(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows: list[list[object]] = [["p-1", "UK", Decimal("10.00"), "ok"], ["p-22", None, 5, "FAIL"]]
    print_table(["player", "jurisdiction", "deposit", "check"], rows)
    assert capsys.readouterr().out.splitlines() == [
        "  player  jurisdiction  deposit  check",
        "  ------  ------------  -------  -----",
        "  p-1     UK            10.00    ok",
        "  p-22                  5        FAIL",
    ]
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    print_table(["player", "jurisdiction", "deposit", "check"], rows)
    text = capsys.readouterr().out
    assert all(b in text for b in BORDERS) and GREEN + "ok" in text and RED + "FAIL" in text


def summary() -> dict[str, Any]:
    q = {"p50_ms": 4.0, "p90_ms": 9.0, "p99_ms": 20.0, "max_ms": 31.0, "n": 120}
    return {
        "sent_total": {"bets": 100, "payments": 20},
        "deliberate": {"duplicates": 3, "malformed": 1, "stale": 2, "unknown_market": 1,
                       "beyond_balance": 2, "during_stop": 4},
        "duplicates_decided_once": True,
        "bets": {"accepted": 90, "rejected": {"stale_odds": 2}},
        "payments": {"approved": 18}, "casino": {"ok": 40}, "dead_letters": {},
        "settlements": {"records": {"settle": 90}, "bets_with_final_settlement": 90,
                        "accepted_bets": 90},
        "ggr": {"sportsbook": {"EUR": "12.50"}, "casino": {}},
        "throughput": {"outcomes_per_s": 40.0, "seconds": 3.0, "peak_outcomes_in_1s": 61,
                       "planned_spike_rate": 80.0},
        "latency": {"bets": q, "all": q},
        "spike": {"backlog_at_end": 12, "drain_s": 0.8},
        "republished_identical": 0,
    }  # fmt: skip


def test_the_simulate_summary_is_name_value_lines_piped_and_a_table_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    piped = io.StringIO()  # simulate --json writes the summary text to stderr: any file
    sim_report.show(summary(), piped)
    lines = piped.getvalue().splitlines()
    assert ESC not in piped.getvalue()
    named = {ln[:32].strip(): ln[32:].strip() for ln in lines}  # the name column is aligned
    assert all(ln.startswith("  ") for ln in lines) and len(named) == len(lines) == 13
    assert named["inputs sent"] == "bets 100, payments 20"
    assert named["dead letters"] == "none" and named["GGR casino (results)"] == "none"
    assert named["spike drain"] == "backlog 12 at its end, drained in 0.8 s"
    monkeypatch.setenv("COLUMNS", "250")
    tty = Terminal()
    sim_report.show(summary(), tty)
    assert all(b in tty.getvalue() for b in ("┌", "│")) and "│ inputs sent " in tty.getvalue()
