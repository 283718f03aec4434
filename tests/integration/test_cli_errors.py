"""The command line against the real services, given settings that are wrong."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

from config.settings import Settings
from croupier.cli import main
from croupier.exits import EXIT_USAGE

pytestmark = pytest.mark.integration

PIN = "00" * 32  # a pinned key, so that the command goes on to the database


def test_a_schema_that_is_not_there_is_one_line_naming_the_setting(
    cli_env: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CROUPIER_PG_SCHEMA", "no_such_schema")
    assert main(["audit", "verify", "--public-key", PIN]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: PostgreSQL: ") and "CROUPIER_PG_SCHEMA" in err
    assert "croupier db migrate" in err and len(err.strip().splitlines()) == 1


def test_a_password_that_is_wrong_is_not_printed(
    cli_env: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = urlsplit(cli_env.pg_dsn.get_secret_value())  # with or without its own password
    dsn = urlunsplit(real._replace(netloc=f"nobody:hunter2@{real.hostname}:{real.port}"))
    assert "hunter2" in dsn
    monkeypatch.setenv("CROUPIER_PG_DSN", dsn)
    assert main(["audit", "verify", "--public-key", PIN]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: PostgreSQL: ") and "hunter2" not in err
