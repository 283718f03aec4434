"""Test harness: a private stack for the session, and per-test topics, group and schema.

Unless ``CROUPIER_TEST_USE_ENV=1`` (then the three service variables name the services),
the session starts its own embedded stack under ``.stack/test`` on free ports, never
touching the one ``make up`` runs, and stops it at the end. If the stack cannot start the
session fails: integration tests are never skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest
from hypothesis import settings as hypothesis_settings

from config.settings import Settings
from croupier.stack import (
    ENV_CLICKHOUSE,
    ENV_KAFKA,
    ENV_PG,
    ENV_PG_ADMIN,
    WORKER_READY,
    Stack,
    StackConfig,
)
from croupier.stack.process import free_port
from sinks.postgres.migrate import migrate
from sinks.signing import generate
from topologies.topics import create_topics

# Property tests run beside a whole stack on two cores: a per-example deadline would fail
# them for the machine's load, not for the code's behaviour.
hypothesis_settings.register_profile("croupier", deadline=None, print_blob=True)
hypothesis_settings.load_profile("croupier")

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Services:
    """Where the real parts of the test session are."""

    kafka: str
    pg_dsn: str  # the application's role
    clickhouse_url: str
    pg_admin_dsn: str  # the schema owner's

    def env(self) -> dict[str, str]:
        return {ENV_KAFKA: self.kafka, ENV_PG: self.pg_dsn, ENV_CLICKHOUSE: self.clickhouse_url,
                ENV_PG_ADMIN: self.pg_admin_dsn}  # fmt: skip


def free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def stack_config(root: Path, **overrides: object) -> StackConfig:
    """A stack under ``root`` on free ports, sharing the repo's Kafka jar cache."""
    kafka, controller, pg, ch = free_ports(4)
    values: dict[str, object] = dict(
        root=root,
        cache=ROOT / ".stack" / "cache",
        kafka_port=kafka,
        kafka_controller_port=controller,
        pg_port=pg,
        clickhouse_port=ch,
        workers=0,
        kafka_heap="768m",
        external={},
    )
    values.update(overrides)
    return StackConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    if os.environ.get("CROUPIER_TEST_USE_ENV") == "1":
        yield Services(os.environ[ENV_KAFKA], os.environ[ENV_PG], os.environ[ENV_CLICKHOUSE],
                       os.environ.get(ENV_PG_ADMIN, os.environ[ENV_PG]))  # fmt: skip
        return
    root = ROOT / ".stack" / "test"
    stack = Stack(stack_config(root))
    stack.down()  # a previous session killed hard may have left processes behind
    shutil.rmtree(root, ignore_errors=True)
    try:
        env = stack.up(workers=False, provision=False)
        yield Services(env[ENV_KAFKA], env[ENV_PG], env[ENV_CLICKHOUSE], env[ENV_PG_ADMIN])
    finally:
        stack.down()


@pytest.fixture(scope="session")
def report_signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator's report key of the session (``make up`` makes one; nothing else does),
    which signs ``reports.<J>``: a worker's reporter refuses to start without it."""
    path = tmp_path_factory.mktemp("report-key") / "ed25519.pem"
    generate(path)
    return path


def make_settings(services: Services, report_signing_key: Path) -> Settings:
    """Settings with their own topics (prefix), consumer group and schema, provisioned.

    Workers connect as the application's role (``CROUPIER_PG_DSN``), as in production; a
    test's own SQL (``helpers.query``) runs as the owner (``migration_dsn``).
    """
    tag = uuid.uuid4().hex[:10]
    s = Settings(
        KAFKA_BOOTSTRAP_SERVERS=services.kafka,
        CROUPIER_PG_DSN=services.pg_dsn,
        CROUPIER_PG_ADMIN_DSN=services.pg_admin_dsn,
        CROUPIER_CLICKHOUSE_URL=services.clickhouse_url,
        CROUPIER_PG_SCHEMA=f"t_{tag}",
        CROUPIER_APP_ID=f"croupier-t{tag}",
        CROUPIER_TOPIC_PREFIX=f"t{tag}.",
        CROUPIER_TOPIC_PARTITIONS=3,
        CROUPIER_BATCH_MAX=100,
        # Off unless a test turns it on: tests count and number checkpoints themselves.
        CROUPIER_AUDIT_CHECKPOINT_INTERVAL=0,
        # A day: the helpers stamp bets once per test session (helpers.BETS_AT).
        CROUPIER_CLOCK_SKEW_SECONDS=86_400,
        CROUPIER_REPORT_SIGNING_KEY=str(report_signing_key),
    )
    create_topics(s)
    migrate(s.migration_dsn, s.pg_schema)
    return s


@pytest.fixture
def settings(services: Services, report_signing_key: Path) -> Settings:
    """A test's own settings (``make_settings``)."""
    return make_settings(services, report_signing_key)


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Point ``croupier`` commands run in-process at this test's schema (no ``.stack/env``)."""
    for name, value in {
        "CROUPIER_PG_DSN": settings.pg_dsn.get_secret_value(),
        "CROUPIER_PG_ADMIN_DSN": settings.migration_dsn,
        "CROUPIER_PG_SCHEMA": settings.pg_schema,
        "CROUPIER_STACK_DIR": "/nonexistent",
    }.items():
        monkeypatch.setenv(name, value)
    return settings


def settings_env(s: Settings) -> dict[str, str]:
    """The environment that makes a child process see ``s``, and nothing else: no
    ``.stack/env`` of a stack ``make up`` runs beside the tests fills what ``s`` leaves
    unset (its pinned audit key, say)."""
    return {**s.as_env(), "CROUPIER_DATA_DIR": str(ROOT / ".stack" / "test" / "faust"),
            "CROUPIER_STACK_DIR": "/nonexistent"}  # fmt: skip


@dataclass
class WorkerProcess:
    """A ``croupier worker`` child process with its log."""

    proc: subprocess.Popen[bytes]
    log: Path
    starts: int = 1
    history: list[int] = field(default_factory=list)

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until Faust says the worker is ready (recovery done, fetching)."""
        marker = WORKER_READY
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_bytes() if self.log.exists() else b""
            if text.count(marker) >= self.starts:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{text[-3000:]!r}")
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout}s; log {self.log}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no commit, no flush."""
        self.proc.send_signal(signal.SIGKILL)
        self.history.append(self.proc.wait(30))

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self.history.append(code)
        return code

    def problems(self, lines: int = 60) -> str:
        """The log's errors, crashes and tracebacks, and its last warnings: why a stop was
        not clean."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        errors = [
            line for line in text.splitlines()
            if not line.startswith("[") or "[ERROR]" in line or "[CRITICAL]" in line
            or "Crash" in line
        ]  # fmt: skip
        warnings = [line for line in text.splitlines() if "[WARNING]" in line]
        worth = [*errors[-lines:], "-- last warnings --", *warnings[-10:]]
        return f"history {self.history}; log {self.log}:\n" + "\n".join(worth[-lines:])


class StartWorker(Protocol):
    def __call__(self, s: Settings, restart_of: WorkerProcess | None = None) -> WorkerProcess: ...


@pytest.fixture
def worker_factory(request: pytest.FixtureRequest) -> Iterator[StartWorker]:
    """Start ``croupier worker`` processes; every one still running is killed at teardown.

    Their logs stay under ``.stack/test/logs/`` for reading after a failure.
    """
    started: list[WorkerProcess] = []
    logs = ROOT / ".stack" / "test" / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def start(s: Settings, restart_of: WorkerProcess | None = None) -> WorkerProcess:
        log = restart_of.log if restart_of else logs / f"{request.node.name}-{len(started)}.log"
        if restart_of is None:
            log.unlink(missing_ok=True)
        env = {**os.environ, **settings_env(s), "PYTHONUNBUFFERED": "1"}
        out = open(log, "ab")  # noqa: SIM115 - the child owns it for its lifetime
        proc = subprocess.Popen(
            [sys.executable, "-m", "croupier", "worker", "--name", "test"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        out.close()
        if restart_of is not None:
            restart_of.proc = proc
            restart_of.starts += 1
            return restart_of
        worker = WorkerProcess(proc, log)
        started.append(worker)
        return worker

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(30)
