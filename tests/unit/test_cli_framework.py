"""The command line's one convention (click): every data command takes --json, usage errors
exit 2 with click's message, old spellings still parse, completion scripts are produced and
answer, and the long work reports its progress. No service is needed here; the commands
that read a service print their --json in tests/integration/test_cli_json.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from croupier import cli, exits
from croupier.commands import root
from croupier.commands.output import table

ROOT = Path(__file__).resolve().parents[2]

# Every command that prints data, each with its --json (tests/integration/test_cli_json.py
# and the tests below parse what they print). The others print a line or run a service.
DATA = {
    "stack up", "stack status", "topics create", "db migrate", "wallet balance",
    "wallet statement", "wallet reconcile", "replay", "replay settlement", "audit verify",
    "audit checkpoint", "audit keygen", "audit rebuild", "audit export", "policies list",
    "policies check", "games list", "games check", "dice play", "rng verify", "rng test",
    "regulator follow", "reports write", "reports verify", "analytics wait", "sql", "check",
    "status", "simulate",
}  # fmt: skip
NOT_DATA = {
    "stack down", "worker", "audit run", "analytics run", "analytics schema", "dashboard",
    "demo", "completion", "gateway run", "gateway key add", "gateway token issue",
    "gateway token revoke",
    "gateway openapi",  # openapi prints its JSON document whatever is asked
}  # fmt: skip


def commands(group: click.Group = root, prefix: str = "") -> dict[str, click.Command]:
    """Every command by its full name (a group that runs alone, as `replay`, too)."""
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        full = f"{prefix}{name}"
        if isinstance(command, click.Group):
            if command.invoke_without_command:
                found[full] = command
            found |= commands(command, f"{full} ")
        else:
            found[full] = command
    return found


@pytest.fixture(autouse=True)
def _no_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CROUPIER_STACK_DIR", str(tmp_path / "no-stack"))
    for name in list(os.environ):
        if name.startswith("CROUPIER_") and name != "CROUPIER_STACK_DIR":
            monkeypatch.delenv(name)


def test_every_data_command_takes_json_and_every_command_is_listed() -> None:
    every = commands()
    assert set(every) == DATA | NOT_DATA, set(every) ^ (DATA | NOT_DATA)
    for name in DATA:
        flags = {o for p in every[name].params for o in getattr(p, "opts", [])}
        assert "--json" in flags, name


@pytest.mark.parametrize("name", sorted(DATA | NOT_DATA))
def test_every_command_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main([*name.split(), "--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: croupier {name}") and "-h, --help" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["no-such-command"],
        ["wallet", "balance"],  # PLAYER missing
        ["sql", "SELECT 1", "--format", "xml"],
        ["stack", "sideways"],
        ["replay", "--from", "yesterday"],
        ["replay", "settlement", "b-1", "--keep"],  # a range option after the bet
        ["audit", "export", "--from", "2026-11-24T00:00:00"],  # no zone, and no --to
        ["rng", "test", "--samples", "12"],
    ],
)
def test_a_usage_error_is_exit_2_with_clicks_message(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == exits.EXIT_USAGE
    err = capsys.readouterr().err
    assert "Error:" in err and "Usage: croupier" in err and "Traceback" not in err


def test_the_old_spellings_still_parse() -> None:
    """Options before the action (argparse took them there) and the old --json PATH."""
    assert cli.parse(["stack", "--json", "status"])["as_json"] is True
    assert cli.parse(["stack", "status", "--json"])["as_json"] is True
    assert cli.parse(["topics", "--timeout", "3", "create"])["timeout"] == 3.0
    assert cli.parse(["analytics", "--timeout", "3", "wait"])["timeout"] == 3.0
    assert cli.parse(["replay", "--json", "settlement", "b-1"])["as_json"] is True
    given = cli.parse(["replay", "--from", "2026-11-24T00:00:00Z", "--keep"])
    assert given["keep"] is True and given["since"].utcoffset().total_seconds() == 0
    assert cli.parse(["simulate", "--json", "out.json", "--seed", "3"])["json_arg"] == "out.json"
    assert cli.parse(["simulate", "--json", "--seed", "3"])["json_arg"] == "-"
    assert cli.parse(["sql", "SELECT 1", "--format", "json"])["fmt"] == "json"
    assert cli.parse(["audit", "rebuild", "--all"])["every"] is True


def test_simulate_json_path_is_the_old_form_of_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--json PATH` still writes PATH, with a note on stderr; `--json` alone prints."""
    import argparse

    from croupier import simulate

    seen: list[argparse.Namespace] = []

    def run(args: argparse.Namespace) -> int:  # what the command line hands the simulation
        seen.append(args)
        return 0

    monkeypatch.setattr(simulate, "run", run)
    assert cli.main(["simulate", "--json", "old.json", "--players", "5"]) == 0
    assert seen[-1].json == Path("old.json") and seen[-1].print_json is False
    assert seen[-1].players == 5 and seen[-1].seed == 7  # the plan's default filled in
    assert "`--json PATH` is deprecated: write `--out PATH`" in capsys.readouterr().err
    assert cli.main(["simulate", "--json", "--out", "new.json"]) == 0
    assert seen[-1].json == Path("new.json") and seen[-1].print_json is True
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["policies", "list", "--json"],
        ["policies", "check", "--json"],
        ["games", "list", "--json"],
        ["games", "check", "--json"],
        ["rng", "verify", "--json"],
        ["rng", "test", "--samples", "10000", "--json"],
        ["stack", "status", "--json"],  # nothing runs here: exit 3, and still the JSON
    ],
)
def test_json_without_services_is_one_document(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(argv)
    assert code in (exits.EXIT_OK, exits.EXIT_NOT_RUNNING)
    doc = json.loads(capsys.readouterr().out)
    assert doc and isinstance(doc, list | dict)


def test_audit_keygen_json_names_the_key_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CROUPIER_AUDIT_KEY", str(tmp_path / "audit.pem"))
    assert cli.main(["audit", "keygen", "--json"]) == exits.EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["key"] == str(tmp_path / "audit.pem") and (tmp_path / "audit.pem").exists()
    assert len(bytes.fromhex(doc["public_key"])) == 32
    assert doc["pin"] == "CROUPIER_AUDIT_PUBLIC_KEY"


def test_a_table_is_plain_columns_when_piped(capsys: pytest.CaptureFixture[str]) -> None:
    table(["a", "bb"], [["long cell", "x"], ["y", "z"]])
    assert capsys.readouterr().out.splitlines() == ["a          bb", "long cell  x", "y          z"]


def croupier(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "croupier", *args]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **env}
    )


def test_completion_scripts_are_produced_and_answer() -> None:
    bash = croupier("completion", "bash")
    assert bash.returncode == 0, bash.stderr
    assert "_croupier_completion()" in bash.stdout and "_CROUPIER_COMPLETE=bash_complete" in (
        bash.stdout
    )
    assert "complete -o nosort -F _croupier_completion croupier" in bash.stdout
    for shell, sign in (("zsh", "#compdef croupier"), ("fish", "complete --no-files")):
        done = croupier("completion", shell)
        assert done.returncode == 0 and sign in done.stdout, (shell, done.stdout[:200])
    # What the bash script asks: the words so far; the answer: the commands that fit.
    asked = croupier(COMP_WORDS="croupier wal", COMP_CWORD="1", _CROUPIER_COMPLETE="bash_complete")
    assert asked.returncode == 0 and "plain,wallet" in asked.stdout.splitlines()
    asked = croupier(COMP_WORDS="croupier stack s", COMP_CWORD="2",
                     _CROUPIER_COMPLETE="bash_complete")  # fmt: skip
    assert {"plain,status"} <= set(asked.stdout.splitlines())
    assert croupier("completion", "tcsh").returncode == exits.EXIT_USAGE


def test_the_battery_reports_its_progress() -> None:
    from rng.battery import run_battery

    seen: list[tuple[int, int]] = []
    report = run_battery(samples=10_000, on_progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, len(report.results)) for i in range(1, len(report.results) + 1)]
