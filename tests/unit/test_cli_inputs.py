"""The command line checks what it is given and ends a bad setting in one line, exit 2."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from pydantic import ValidationError

from config.settings import Settings
from croupier import arguments, cli, exits
from croupier.dice import Bet
from croupier.sql import _bounded

KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"


@pytest.fixture(autouse=True)
def _no_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No .stack/env of the developer's leaks into these runs; nothing answers on port 1."""
    monkeypatch.setenv("CROUPIER_STACK_DIR", str(tmp_path / "no-stack"))
    for name in list(os.environ):
        if name.startswith("CROUPIER_") and name != "CROUPIER_STACK_DIR":
            monkeypatch.delenv(name)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")


@pytest.mark.parametrize("code", ["../../etc", "uk", "UKXX", "U", "U/K", "UK\n", ""])
def test_a_jurisdiction_is_two_or_three_capitals(
    code: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["regulator", "follow", "--jurisdiction", code])
    assert stopped.value.code == exits.EXIT_USAGE
    assert "is not a jurisdiction" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["reports", "write", "--jurisdiction", code])


def test_follow_needs_the_operators_public_key_and_no_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No pin: a usage error naming --public-key (nothing is read from a key folder);
    a pin that is not a key, and the old --key-file, are refused too."""
    assert cli.main(["regulator", "follow", "--jurisdiction", "DK"]) == exits.EXIT_USAGE
    assert "--public-key" in capsys.readouterr().err
    (tmp_path / "DK.key").write_text(KEY)  # a shared MAC key, as version 1 took
    bad = str(tmp_path / "DK.key") + ".pub"
    assert cli.main(["regulator", "follow", "--jurisdiction", "DK", "--public-key", bad]) == (
        exits.EXIT_USAGE
    )
    assert "cannot read the public key file" in capsys.readouterr().err
    monkeypatch.setenv("CROUPIER_REPORT_PUBLIC_KEY", "not-a-key")
    assert cli.main(["regulator", "follow", "--jurisdiction", "DK"]) == exits.EXIT_USAGE
    assert "a public key is 64 hex digits" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        cli.main(["regulator", "follow", "--jurisdiction", "DK", "--key-file",
                  str(tmp_path / "DK.key")])  # fmt: skip
    assert stopped.value.code == exits.EXIT_USAGE


@pytest.mark.parametrize(
    ("stake", "currency", "why"),
    [
        ("-1", "EUR", "above 0"),
        ("0", "EUR", "above 0"),
        ("0.00", "EUR", "above 0"),
        ("1.001", "EUR", "3 decimal places"),
        ("1.5", "JPY", "1 decimal places"),
        ("1" + "0" * 18, "EUR", "integer digits"),
    ],
)
def test_a_stake_is_positive_and_in_minor_units(stake: str, currency: str, why: str) -> None:
    with pytest.raises(arguments.InputError, match=why):
        arguments.stake(Decimal(stake), currency)
    with pytest.raises(ValueError, match=why.split()[-1]):
        Bet("p-1", Decimal(stake), 1, currency)


def test_good_stakes_pass() -> None:
    assert arguments.stake(Decimal("0.01"), "EUR") == Decimal("0.01")
    assert arguments.stake(Decimal("3"), "JPY") == Decimal(3)
    assert arguments.stake(Decimal("1.234"), "KWD") == Decimal("1.234")


@pytest.mark.parametrize(
    "argv",
    [
        ["--stake", "-1"],
        ["--stake", "1e5"],
        ["--stake", "NaN"],
        ["--stake", "Infinity"],
        ["--stake", "1.001"],
        ["--rounds", "0"],
        ["--rounds", "-3"],
        ["--rounds", "99999999"],
        ["--timeout", "0"],
        ["--timeout", "nan"],
        ["--timeout", "inf"],
        ["--currency", "eur"],
        ["--pick", "7"],
    ],
)
def test_dice_play_refuses_bad_arguments_before_sending_anything(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Kafka is unreachable here: had the command sent or waited, it would fail otherwise.
    try:
        code = cli.main(["dice", "play", "--player", "p-1", *argv])
    except SystemExit as stopped:
        code = int(stopped.code or 0)
    assert code == exits.EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("--" in err or "stake" in err)


@pytest.mark.parametrize("player", ["p 1", "p\x001", "", "x" * 129, "../p", "p;1"])
def test_a_player_id_is_of_the_wire_alphabet(player: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["dice", "play", "--player", player])
    assert stopped.value.code == exits.EXIT_USAGE


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("CROUPIER_BATCH_MAX", "abc", "CROUPIER_BATCH_MAX"),
        ("CROUPIER_BATCH_MAX", "0", "CROUPIER_BATCH_MAX"),
        ("CROUPIER_PG_SCHEMA", "x;drop schema", "CROUPIER_PG_SCHEMA"),
        ("CROUPIER_CLICKHOUSE_DATABASE", "a-b", "CROUPIER_CLICKHOUSE_DATABASE"),
        ("CROUPIER_CLICKHOUSE_URL", "ftp://x", "CROUPIER_CLICKHOUSE_URL"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(
    variable: str,
    value: str,
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)
    assert cli.main(["sql", "SELECT 1"]) == exits.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_bad_dsn_is_named_without_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CROUPIER_PG_DSN", "host=x password=hunter2 garbage")
    assert cli.main(["wallet", "balance", "p-1"]) == exits.EXIT_USAGE
    err = capsys.readouterr().err
    assert "CROUPIER_PG_DSN is not a valid connection string" in err
    assert "hunter2" not in err


def test_an_unreachable_database_is_one_line_without_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CROUPIER_PG_DSN", "postgresql://u:hunter2@127.0.0.1:1/x?connect_timeout=2")
    assert cli.main(["audit", "verify", "--public-key", "00" * 32]) == exits.EXIT_NOT_RUNNING
    err = capsys.readouterr().err
    assert err.startswith("error: PostgreSQL: ") and "CROUPIER_PG_DSN" in err
    assert "hunter2" not in err and len(err.strip().splitlines()) == 1


def test_explain_leaves_bugs_alone_and_redacts_secrets() -> None:
    assert cli.explain(KeyError("a bug")) is None
    assert cli.explain(ZeroDivisionError()) is None
    with pytest.raises(ValidationError) as bad:
        Settings(CROUPIER_BATCH_MAX="many")  # the alias, as the environment gives it
    assert "CROUPIER_BATCH_MAX" in (cli.explain(bad.value) or "")
    with pytest.raises(ValidationError) as other:
        arguments_model_error()
    assert cli.explain(other.value) is None  # another model's: a bug, with its traceback
    said = cli.explain(psycopg.OperationalError("failed at postgresql://u:pw1@h/db password=pw2"))
    assert said is not None and "pw1" not in said and "pw2" not in said
    assert arguments.redact("dsn x://a:b@c", ["x://a:b@c"]) == "dsn ***"


def test_the_sql_timeout_is_the_engines_limit_never_none() -> None:
    assert _bounded(0.2) == {"max_execution_time": 1, "timeout_overflow_mode": "throw"}
    assert _bounded(90)["max_execution_time"] == 90
    assert cli.parse(["sql", "SELECT 1"])["timeout"] == cli.SQL_TIMEOUT
    with pytest.raises(SystemExit):
        cli.parse(["sql", "SELECT 1", "--timeout", "-5"])


def test_what_reaches_a_terminal_shows_control_characters_as_escapes() -> None:
    from croupier.regulator import line
    from schemas.reports import AuditRef, ReportRecord

    assert arguments.printable("p\x1b[31m\x00\u2028ok") == "p\\x1b[31m\\x00\\u2028ok"
    assert arguments.printable("plain ü €") == "plain ü €"
    hostile = ReportRecord(
        jurisdiction="DK", seq=1, record_id="DK-1", kind="bet", action="ledger.stake\r",
        entity_id="b-1", player_id="p\x1b]0;owned\x07", occurred_at="2026-11-30T08:00:00Z",
        recorded_at="2026-11-30T08:00:00Z", audit=AuditRef(chain="c", seq=1, hash="0" * 64),
    )  # fmt: skip
    shown = line(hostile)
    assert shown.isprintable() and "p\\x1b]0;owned\\x07" in shown


def test_an_unreachable_clickhouse_is_named_without_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CROUPIER_CLICKHOUSE_URL", "http://analyst:s3cret@127.0.0.1:1")
    assert cli.main(["sql", "SELECT 1", "--timeout", "5"]) == exits.EXIT_NOT_RUNNING
    err = capsys.readouterr().err
    assert "cannot reach ClickHouse" in err and "s3cret" not in err


def test_verifying_a_report_directory_that_is_not_there_is_not_a_success(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["reports", "verify", "--jurisdiction", "DK", "--dir", str(tmp_path / "no")])
    assert code == exits.EXIT_USAGE and "is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("samples", ["1", "9999", "0", "many"])
def test_the_rng_battery_refuses_too_few_samples(samples: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["rng", "test", "--samples", samples])
    assert stopped.value.code == exits.EXIT_USAGE


def test_a_path_that_cannot_be_used_is_one_line() -> None:
    said = cli.explain(FileNotFoundError(2, "No such file or directory", "/nope/out.jsonl"))
    assert said is not None and "/nope/out.jsonl" in said and "check the path" in said
    assert cli.explain(OSError("no file involved")) is None  # not ours to explain


def arguments_model_error() -> None:
    from schemas.reports import AuditRef

    AuditRef.model_validate({"chain": "c"})


def test_version_says_the_installed_release(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stopped:
        cli.main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"croupier {version('croupier')}"
