"""The local stack's configuration, external mode and error messages, without starting it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from config.stackenv import load_stack_env
from croupier.cli import main
from croupier.stack import ENV_KAFKA, ENV_PG, ENV_PG_ADMIN, Stack, StackConfig, StackError
from croupier.stack.kafka import KafkaBroker, ensure_jars, new_cluster_id, require_java


def test_ports_and_dirs_come_from_the_environment(tmp_path: Path) -> None:
    cfg = StackConfig.from_env(
        {
            "CROUPIER_STACK_DIR": str(tmp_path),
            "CROUPIER_KAFKA_PORT": "19092",
            "CROUPIER_WORKERS": "2",
        }
    )
    assert cfg.root == tmp_path.resolve() and cfg.kafka_port == 19092 and cfg.workers == 2
    assert StackConfig.from_env({"CROUPIER_STACK_DIR": str(tmp_path)}).workers == (
        os.cpu_count() or 1
    )  # one worker per core unless told
    with pytest.raises(StackError, match="CROUPIER_PG_PORT='x' is not a whole number"):
        StackConfig.from_env({"CROUPIER_PG_PORT": "x"})


def test_the_broker_listens_on_loopback_only(tmp_path: Path) -> None:
    broker = KafkaBroker(home=tmp_path, cache=tmp_path, logs=tmp_path, port=1, controller_port=2)
    props = dict(
        line.split("=", 1) for line in broker.server_properties().splitlines() if "=" in line
    )
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:2"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    ids = [new_cluster_id() for _ in range(5000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_a_variable_set_elsewhere_makes_that_part_external(tmp_path: Path) -> None:
    cfg = StackConfig(root=tmp_path, external={ENV_KAFKA: "broker.example:9092"})
    stack = Stack(cfg)
    assert stack.is_external(ENV_KAFKA) and not stack.is_external(ENV_PG)
    assert stack.service_env()[ENV_KAFKA] == "broker.example:9092"


def test_our_own_values_sourced_back_in_still_mean_embedded(tmp_path: Path) -> None:
    stack = Stack(StackConfig(root=tmp_path))
    tmp_path.mkdir(exist_ok=True)
    stack._write_env(stack.service_env())
    environ: dict[str, str] = {"CROUPIER_STACK_DIR": str(tmp_path)}
    load_stack_env(environ)
    assert environ[ENV_PG] == "postgresql://croupier@127.0.0.1:55432/croupier"
    assert environ[ENV_PG_ADMIN] == "postgresql://postgres@127.0.0.1:55432/croupier"
    names = (ENV_KAFKA, ENV_PG, ENV_PG_ADMIN)
    again = Stack(StackConfig(root=tmp_path, external={k: environ[k] for k in names}))
    assert not any(again.is_external(k) for k in names)
    assert again.service_env() == stack.service_env()


def test_the_embedded_postgres_dsns_carry_their_passwords_in_a_private_env(
    tmp_path: Path,
) -> None:
    stack = Stack(StackConfig(root=tmp_path))
    passwords = stack.postgres.credentials(create=True)
    assert (tmp_path / "postgres" / "credentials.json").stat().st_mode & 0o777 == 0o600
    env = stack.service_env()
    assert env[ENV_PG] == (
        f"postgresql://croupier:{passwords['croupier']}@127.0.0.1:55432/croupier"
    )
    assert env[ENV_PG_ADMIN] == (
        f"postgresql://postgres:{passwords['postgres']}@127.0.0.1:55432/croupier"
    )
    (tmp_path / "env").write_text("older, readable by all")
    (tmp_path / "env").chmod(0o644)
    stack._write_env(env)
    assert (tmp_path / "env").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600
    # A shell that sourced the env of the stack before it had passwords means the embedded
    # server still, and gets the passwords now.
    older = {ENV_PG: "postgresql://croupier@127.0.0.1:55432/croupier",
             ENV_PG_ADMIN: "postgresql://postgres@127.0.0.1:55432/croupier"}  # fmt: skip
    again = Stack(StackConfig(root=tmp_path, external=older))
    assert not again.is_external(ENV_PG) and not again.is_external(ENV_PG_ADMIN)
    assert again.service_env()[ENV_PG] == env[ENV_PG]
    assert passwords["croupier"] not in str([p.where for p in again.status()])


def test_an_external_postgres_brings_its_owner_dsn_or_none(tmp_path: Path) -> None:
    app = "postgresql://app@db.example/croupier"
    alone = Stack(StackConfig(root=tmp_path, external={ENV_PG: app}))
    assert alone.service_env()[ENV_PG] == app and ENV_PG_ADMIN not in alone.service_env()
    owner = "postgresql://owner@db.example/croupier"
    both = Stack(StackConfig(root=tmp_path, external={ENV_PG: app, ENV_PG_ADMIN: owner}))
    assert both.service_env()[ENV_PG_ADMIN] == owner


def test_missing_java_or_maven_names_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither java nor mvn on it
    with pytest.raises(StackError, match=r"Java 17 or newer.*docker compose up"):
        require_java()
    with pytest.raises(StackError, match=r"install Apache Maven.*docker compose up"):
        ensure_jars(tmp_path / "cache")


def test_status_of_a_stack_that_is_not_running_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CROUPIER_STACK_DIR", str(tmp_path))
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "CROUPIER_PG_DSN", "CROUPIER_CLICKHOUSE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CROUPIER_KAFKA_PORT", "1")
    monkeypatch.setenv("CROUPIER_PG_PORT", "2")
    monkeypatch.setenv("CROUPIER_CLICKHOUSE_PORT", "3")
    assert main(["stack", "status"]) == 3
    assert "kafka       embedded  stopped" in capsys.readouterr().out
