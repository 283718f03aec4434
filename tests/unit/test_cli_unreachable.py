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
    ["replay", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-02T00:00:00Z"],
    ["audit", "rebuild", "--all"],
    ["audit", "export", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-02T00:00:00Z"],
    ["regulator", "follow", "--jurisdiction", "UK", "--public-key", PIN, "--idle-timeout", "5"],
    ["reports", "write", "--jurisdiction", "UK"],
    ["gateway", "token", "issue", "p-1", "--partner", "hub88"],
    ["gateway", "token", "revoke", "--player", "p-1"],
]
# The commands that need no service (they read files or only print; `stack status`
# reports the services' state, stopped included, with exit 3: its own test, below; the
# front ends' API keys live in the gateway's key file), and those that run as a service
# and wait for what they need by design. With COMMANDS, every command.
NO_SERVICE = {
    "stack up", "stack down", "stack status", "gateway key add", "audit keygen",
    "policies list", "policies check", "games list", "games check", "rng verify", "rng test",
    "reports verify", "completion", "gateway openapi",
}  # fmt: skip
SERVES = {"worker", "audit run", "analytics run", "gateway run", "dashboard"}
SERVICES = ("Kafka", "PostgreSQL", "ClickHouse", "stack", "metrics")


def report_key(tmp: Path) -> Path:
    """An Ed25519 report signing key of the test's own (``reports write`` needs one before
    it reaches a service)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = tmp / "report-key.pem"
    if not path.exists():
        path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))  # fmt: skip
        path.chmod(0o600)
    return path


def run(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CROUPIER_", "KAFKA_"))}
    env |= {
        "CROUPIER_STACK_DIR": str(tmp / "no-stack"),
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "CROUPIER_PG_DSN": "postgresql://croupier:AppSecret1@127.0.0.1:1/croupier",
        "CROUPIER_PG_ADMIN_DSN": "postgresql://postgres:AdminSecret2@127.0.0.1:1/croupier",
        "CROUPIER_CLICKHOUSE_URL": "http://writer:ChSecret3@127.0.0.1:2/",
        "CROUPIER_REPORT_SIGNING_KEY": str(report_key(tmp)),  # reports write signs
    }
    return subprocess.run([sys.executable, "-m", "croupier", *args], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=90, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, subprocess.CompletedProcess[str]]:
    tmp = tmp_path_factory.mktemp("unreachable")
    report_key(tmp)  # made once, before the commands run side by side
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


def test_every_command_is_tried_here_or_needs_no_service() -> None:
    """A new command must be added above: to COMMANDS when it reads a service."""
    from tests.unit.test_cli_framework import commands

    tried = set()
    for args in COMMANDS:  # the longest command name each line starts with
        words = [a for a in args if not a.startswith("-")]
        tried |= {" ".join(words[:n]) for n in (1, 2, 3)} & set(commands())
    missing = set(commands()) - NO_SERVICE - SERVES - tried
    assert not missing, missing


def test_stack_status_reports_every_service_stopped_with_exit_3(tmp_path: Path) -> None:
    done = run(["stack", "status"], tmp_path)
    assert done.returncode == EXIT_NOT_RUNNING, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    states = {line.split()[0]: line.split()[2] for line in done.stdout.splitlines()[1:]}
    assert states == {"kafka": "stopped", "postgres": "stopped", "clickhouse": "stopped"}
    for secret in ("AppSecret1", "AdminSecret2", "ChSecret3"):
        assert secret not in done.stderr + done.stdout
