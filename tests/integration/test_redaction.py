"""No password in a command's output, against the real services: ``check`` and ``stack status``
run with a password in every service URL, and the password never shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from config.settings import Settings
from croupier.stack import ENV_CLICKHOUSE, ENV_KAFKA, ENV_PG, ENV_PG_ADMIN
from tests.conftest import ROOT, settings_env

pytestmark = pytest.mark.integration

SECRET = "Zq9Secret"  # nothing else in any output holds it


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` in its user information (the user kept, or ``croupier``)."""
    parts = urlsplit(url)
    user = parts.username or "croupier"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def croupier(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "croupier", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_check_and_stack_status_print_no_password(settings: Settings, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROUPIER_")}
    env |= settings_env(settings)
    env |= {
        ENV_PG: with_password(settings.pg_dsn.get_secret_value(), SECRET + "1"),
        ENV_PG_ADMIN: with_password(settings.migration_dsn, SECRET + "2"),
        ENV_CLICKHOUSE: with_password(settings.clickhouse_url, SECRET + "3"),
        "CROUPIER_STACK_DIR": str(tmp_path / "stack"),  # every part external: the ones above
    }
    assert SECRET in env[ENV_PG] and SECRET in env[ENV_CLICKHOUSE]
    check = croupier(env, "check", "--run", "nothing-here", "--wait", "1")
    status = croupier(env, "stack", "status")
    status_json = croupier(env, "stack", "status", "--json")
    # `croupier status` scrapes what it is given: ClickHouse answers, with no metrics.
    scraped = with_password(settings.clickhouse_url, SECRET + "4").rstrip("/") + "/metrics"
    metrics = croupier(env, "status", "--url", scraped)
    assert ":***@" in metrics.stdout + metrics.stderr, metrics.stdout + metrics.stderr
    for run in (check, status, status_json, metrics):
        assert "Traceback" not in run.stderr, run.stderr
        assert SECRET not in run.stdout + run.stderr, run.stdout + run.stderr
    # The commands did show where the services are, with the password masked.
    assert f":***@{urlsplit(settings.clickhouse_url).netloc.rpartition('@')[2]}" in status.stdout
    assert "postgres" in status.stdout and ":***@" in status_json.stdout
    assert env[ENV_KAFKA] in status.stdout
