"""``croupier stack up/status/down`` for real: a worker consumes, data survives a restart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import psycopg
import pytest
from kafka import KafkaProducer
from psycopg.conninfo import conninfo_to_dict

from croupier.stack import ENV_CLICKHOUSE, ENV_KAFKA, ENV_PG, ENV_PG_ADMIN, Stack, StackConfig
from croupier.stack.clickhouse import ping
from croupier.stack.process import free_port
from tests.conftest import ROOT, Services, stack_config
from tests.integration.helpers import player_event, wait_for

pytestmark = pytest.mark.integration


def croupier(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "croupier", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def nice_of(pid: int) -> int:
    """A process's nice value (proc(5): the 19th field of its stat line)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[16])


def pg_rows(dsn: str) -> int:
    with psycopg.connect(dsn, options="-c search_path=croupier") as conn:
        row = conn.execute("SELECT count(*) FROM player_events").fetchone()
    return int(row[0]) if row else 0


def test_up_consume_down_up_keeps_data(tmp_path: Path) -> None:
    root = ROOT / ".stack" / "test" / "lifecycle"
    shutil.rmtree(root, ignore_errors=True)
    cfg = stack_config(root)
    env = {
        k: v for k, v in os.environ.items()
        if k not in (ENV_KAFKA, ENV_PG, ENV_CLICKHOUSE) and not k.startswith("CROUPIER_")
    }  # fmt: skip
    env |= {
        "CROUPIER_STACK_DIR": str(root),
        "CROUPIER_CACHE_DIR": str(cfg.cache),
        "CROUPIER_KAFKA_PORT": str(cfg.kafka_port),
        "CROUPIER_KAFKA_CONTROLLER_PORT": str(cfg.kafka_controller_port),
        "CROUPIER_PG_PORT": str(cfg.pg_port),
        "CROUPIER_CLICKHOUSE_PORT": str(cfg.clickhouse_port),
        "CROUPIER_KAFKA_HEAP": "512m",
        "CROUPIER_WORKERS": "1",
        "CROUPIER_GATEWAY_PORT": str(free_port()),
    }
    try:
        up = croupier(env, "stack", "up")
        assert up.returncode == 0, up.stderr
        written = (root / "env").read_text()
        assert f"export KAFKA_BOOTSTRAP_SERVERS='127.0.0.1:{cfg.kafka_port}'" in written
        # PostgreSQL asks for passwords, generated now and kept in the env file, which only
        # this user can read; the server refuses a login without one.
        assert (root / "env").stat().st_mode & 0o777 == 0o600
        assert (root / "state.json").stat().st_mode & 0o777 == 0o600
        values = dict(line.removeprefix("export ").split("=", 1)
                      for line in written.splitlines() if line.startswith("export "))  # fmt: skip
        dsn = values[ENV_PG].strip("'")
        app, admin = conninfo_to_dict(dsn), conninfo_to_dict(values[ENV_PG_ADMIN].strip("'"))
        assert app["user"] == "croupier" and admin["user"] == "postgres"
        assert app["password"] and admin["password"] and app["password"] != admin["password"]
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{cfg.pg_port}/croupier").close()
        status = croupier(env, "stack", "status", "--json")
        assert status.returncode == 0, status.stdout
        assert str(app["password"]) not in status.stdout
        parts = {p["name"]: p for p in json.loads(status.stdout)}
        assert set(parts) == {"kafka", "postgres", "clickhouse", "worker-1", "auditor", "analytics",
                              "gateway", "dashboard"}  # fmt: skip
        assert all(p["running"] and p["mode"] == "embedded" for p in parts.values())
        # The background processes step back for the ones a decision waits on
        # (config/priority.py): nice 10 (or this test's own, when it runs nicer still). The
        # ClickHouse engine serves analysts, not decisions: it steps back too.
        ours = os.nice(0)
        nice = {name: nice_of(parts[name]["pid"]) for name in parts}
        assert {n for n, v in nice.items() if v != ours} == (
            {"auditor", "analytics", "dashboard", "clickhouse"} if ours < 10 else set()
        ), nice
        assert all(nice[n] == max(10, ours) for n in ("auditor", "analytics", "dashboard"))

        # Any Kafka client will do: here the pure-Python one, with its default partitioner.
        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{cfg.kafka_port}", acks="all")
        producer.send("players", key=b"life-1", value=player_event("registered", "life-1"))
        producer.flush(30)
        producer.close()
        wait_for(lambda: pg_rows(dsn) == 1, timeout=90, what="the worker to consume")
        # Each process got its own metrics port, recorded for `croupier status`.
        status = croupier(env, "status", "--json", "--interval", "0.2")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert sorted((p["name"], p["role"], p["up"]) for p in report["processes"]) == [
            ("analytics", "analytics", True), ("auditor", "auditor", True),
            ("dashboard", "dashboard", True), ("gateway", "gateway", True),
            ("worker-1", "worker", True),
        ]  # fmt: skip
        assert all(p["ready"] for p in report["processes"])
        assert len({p["url"] for p in report["processes"]}) == 5
        gateway = values["CROUPIER_GATEWAY_URL"].strip("'")
        assert gateway == f"http://127.0.0.1:{env['CROUPIER_GATEWAY_PORT']}"
        with urllib.request.urlopen(gateway + "/readyz", timeout=10) as ready:
            assert ready.status == 200
        assert report["topics"]["players"]["events"] == 1
        # The dashboard's page, in the env file, answers with the same count.
        page = values["CROUPIER_DASHBOARD_URL"].strip("'")
        with urllib.request.urlopen(page + "api/state", timeout=10) as answer:
            assert json.loads(answer.read())["topics"]["players"]["events"] == 1

        down = croupier(env, "stack", "down")
        assert down.returncode == 0, down.stderr
        stopped = croupier(env, "stack", "status")
        assert stopped.returncode == 3
        assert "running" not in stopped.stdout
        assert croupier(env, "status").returncode == 3
        assert not ping(f"http://127.0.0.1:{cfg.clickhouse_port}")

        again = croupier(env, "stack", "up")
        assert again.returncode == 0, again.stderr
        assert pg_rows(dsn) == 1  # PostgreSQL's data survived
        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{cfg.kafka_port}", acks="all")
        producer.send("players", key=b"life-2", value=player_event("registered", "life-2"))
        producer.flush(30)
        producer.close()
        # Kafka's data and the group's offsets survived: only the new message is new.
        wait_for(lambda: pg_rows(dsn) == 2, timeout=90, what="the restarted worker to consume")
    finally:
        Stack(cfg).down()


def test_external_services_are_used_and_nothing_is_started(
    services: Services, tmp_path: Path
) -> None:
    cfg = StackConfig(
        root=tmp_path / "stack",
        external={
            ENV_KAFKA: services.kafka,
            ENV_PG: services.pg_dsn,
            ENV_PG_ADMIN: services.pg_admin_dsn,
            ENV_CLICKHOUSE: services.clickhouse_url,
        },
    )
    stack = Stack(cfg)
    env = stack.up(workers=False, provision=False)
    keys = {"CROUPIER_AUDIT_KEY", "CROUPIER_AUDIT_PUBLIC_KEY", "CROUPIER_REPORT_SIGNING_KEY",
            "CROUPIER_REPORT_PUBLIC_KEY", "CROUPIER_GATEWAY_URL", "CROUPIER_GATEWAY_PORT",
            "CROUPIER_GATEWAY_HOST", "CROUPIER_GATEWAY_DIR"}  # fmt: skip
    assert {k: v for k, v in env.items() if k not in keys} == services.env()
    # The signing keys are made on first setup, private, and the audit key's .pub pinned.
    assert Path(env["CROUPIER_AUDIT_KEY"]).stat().st_mode & 0o777 == 0o600
    assert Path(env["CROUPIER_REPORT_SIGNING_KEY"]).stat().st_mode & 0o777 == 0o600
    assert env["CROUPIER_AUDIT_PUBLIC_KEY"] == str(cfg.root / "audit" / "ed25519.pub")
    assert env["CROUPIER_REPORT_PUBLIC_KEY"] == str(cfg.root / "reports" / "ed25519.pub")
    assert not (cfg.root / "kafka").exists() and not (cfg.root / "postgres").exists()
    parts = {p.name: p for p in stack.status()}
    assert all(p.mode == "external" and p.running for p in parts.values())
    stack.down()  # stops nothing it did not start
    assert all(p.running for p in stack.status())
