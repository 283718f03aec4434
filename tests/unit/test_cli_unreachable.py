"""Every command that needs a service, run against services that are not there: exit 3
and one line per service saying which (no traceback), as the README's exit-code table says.

The services' addresses are closed ports on this machine, so nothing is reached and nothing
waits longer than a client's own first try. Commands that run as services (``worker``,
``audit run``, ``gateway run``, ``analytics run``, ``dashboard``) wait for what they need
by design, and are not here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from croupier.exits import EXIT_NOT_RUNNING

ROOT = Path(__file__).resolve().parents[2]
PIN = "00" * 32
COMMANDS = [
    ["topics", "create", "--timeout", "2"],
    ["db", "migrate"],
    ["wallet", "balance", "p-1"],
    ["wallet", "balance", "p-1", "--json"],
    ["wallet", "statement", "p-1"],
    ["wallet", "reconcile"],
    ["replay", "settlement", "b-1"],
    ["audit", "verify", "--public-key", PIN],
    ["audit", "checkpoint"],
    ["audit", "rebuild", "p-1"],
    ["dice", "play", "--player", "p-1"],
    ["analytics", "schema"],
    ["analytics", "wait", "--timeout", "2"],
    ["sql", "SELECT 1"],
    ["sql", "SELECT 1", "--format", "json"],
    ["check"],
    ["status"],
    ["simulate", "--duration", "6", "--timeout", "5"],
    ["demo"],
]
SERVICES = ("Kafka", "PostgreSQL", "ClickHouse", "stack", "metrics")


def run(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CROUPIER_", "KAFKA_"))}
    env |= {
        "CROUPIER_STACK_DIR": str(tmp / "no-stack"),
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "CROUPIER_PG_DSN": "postgresql://croupier:AppSecret1@127.0.0.1:1/croupier",
        "CROUPIER_PG_ADMIN_DSN": "postgresql://postgres:AdminSecret2@127.0.0.1:1/croupier",
        "CROUPIER_CLICKHOUSE_URL": "http://writer:ChSecret3@127.0.0.1:2/",
    }
    return subprocess.run([sys.executable, "-m", "croupier", *args], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=90, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, subprocess.CompletedProcess[str]]:
    tmp = tmp_path_factory.mktemp("unreachable")
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = list(pool.map(lambda a: run(a, tmp), COMMANDS))
    return {" ".join(a): d for a, d in zip(COMMANDS, done, strict=True)}


@pytest.mark.parametrize("command", [" ".join(a) for a in COMMANDS])
def test_a_service_away_is_exit_3_and_one_line_per_service(
    outcomes: dict[str, subprocess.CompletedProcess[str]], command: str
) -> None:
    done = outcomes[command]
    said = done.stderr.strip().splitlines()
    assert done.returncode == EXIT_NOT_RUNNING, (command, done.returncode, done.stderr[-800:])
    assert "Traceback" not in done.stderr
    assert 1 <= len(said) <= 3, said  # `check` names each service it could not reach
    assert all(any(s in line for s in SERVICES) for line in said), said
    for secret in ("AppSecret1", "AdminSecret2", "ChSecret3"):
        assert secret not in done.stderr + done.stdout
