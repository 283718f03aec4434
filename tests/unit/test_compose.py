"""The Docker route holds together: docker-compose.yml, the Dockerfile and what Croupier reads.

No containers run here; the files are read as data. Where the ``docker compose`` CLI is
installed, ``docker compose config`` validates the file against the Compose Specification too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

INFRA = ("kafka", "postgres", "clickhouse")
CROUPIER = ("init", "worker")
# What config/settings.py reads to find the three real parts.
SERVICE_VARS = ("KAFKA_BOOTSTRAP_SERVERS", "CROUPIER_PG_DSN", "CROUPIER_CLICKHOUSE_URL")
COMPOSE_TOP_LEVEL = {"name", "services", "networks", "volumes", "configs", "secrets", "include"}

Service = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Service]:
    found = compose.get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services mapping"
    return found


def env_of(service: Service) -> dict[str, str]:
    """A service's environment as strings, from either the mapping or the list form."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (str(item).partition("=") for item in raw)
        return {name: value for name, _, value in pairs}
    assert isinstance(raw, dict)
    # YAML reads `1` and `false` as int and bool; the container sees text.
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in raw.items()}


def image_of(service: Service) -> tuple[str, str]:
    """(repository, tag) of a service's image."""
    image = str(service.get("image", ""))
    repo, sep, tag = image.rpartition(":")
    assert sep and "/" not in tag, f"image {image!r} must carry an explicit tag"
    return repo, tag


def listeners(spec: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` as {NAME: (host, port)}; an empty host means every interface."""
    out: dict[str, tuple[str, int]] = {}
    for entry in filter(None, (s.strip() for s in spec.split(","))):
        name, _, address = entry.partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def command_line(service: Service) -> str:
    """Entrypoint and command of a service as one string."""
    parts: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        parts.extend([value] if isinstance(value, str) else [str(v) for v in value])
    return " ".join(parts)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def compose_cli() -> bool:
    """True when the ``docker compose`` plugin is installed (no engine needed for config)."""
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, timeout=60, check=False
    )
    return probe.returncode == 0


def test_compose_spec_file_without_version(compose: dict[str, Any]) -> None:
    # The Compose Specification ignores `version:` and current Compose warns about it.
    assert "version" not in compose
    unknown = {k for k in compose if k not in COMPOSE_TOP_LEVEL and not k.startswith("x-")}
    assert not unknown, f"unknown top-level keys: {sorted(unknown)}"


def test_the_five_services_exist(services: dict[str, Service]) -> None:
    missing = {*INFRA, *CROUPIER} - set(services)
    assert not missing, f"missing services: {sorted(missing)}"


def test_images_and_tags(services: dict[str, Service]) -> None:
    repo, tag = image_of(services["kafka"])
    assert repo == "apache/kafka"
    assert tag.split(".")[0] == "4", f"Croupier runs Kafka 4.x (KRaft only), got {tag}"

    assert image_of(services["postgres"]) == ("postgres", "17")

    repo, tag = image_of(services["clickhouse"])
    assert repo == "clickhouse/clickhouse-server"
    match = re.fullmatch(r"(\d{2})\.(\d{1,2})(\.[\d.]+)?", tag)
    assert match, f"pin a ClickHouse release, not {tag!r}"
    assert int(match.group(2)) in (3, 8), f"{tag} is not an LTS branch (YY.3 or YY.8)"

    # init and worker run the one image built from this repository.
    built = {name: services[name].get("image") for name in CROUPIER}
    assert len(set(built.values())) == 1, built
    for name in CROUPIER:
        assert services[name].get("build") in (".", {"context": "."}), name


def test_kafka_is_single_node_kraft(services: dict[str, Service]) -> None:
    env = env_of(services["kafka"])
    assert not any("ZOOKEEPER" in k for k in env), "Kafka 4 has no ZooKeeper mode"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    assert node_id == "1"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node_id}@")

    declared = listeners(env["KAFKA_LISTENERS"])
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in declared
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].endswith(f":{declared[controller][1]}")
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(declared) <= set(protocols), "every listener needs a security protocol"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in declared

    # Transactions and consumer groups need their internal topics on a single broker.
    for name in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[name] == "1", name
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_published_ports_bind_loopback_only(services: dict[str, Service]) -> None:
    published: dict[str, list[str]] = {}
    for name, service in services.items():
        for port in service.get("ports") or []:
            if isinstance(port, dict):
                host_ip, target = str(port.get("host_ip", "")), str(port.get("target"))
            else:
                # A bare number or "8123:8123" binds every interface of the host.
                host_ip, _, target = str(port).partition(":")
            assert host_ip == "127.0.0.1", f"{name} publishes {port!r} beyond loopback"
            published.setdefault(name, []).append(target.rsplit(":", 1)[-1])
    assert published.get("kafka") == ["9092"]
    assert published.get("postgres") == ["5432"]
    assert published.get("clickhouse") == ["8123"]


def test_croupier_containers_share_the_service_variables(services: dict[str, Service]) -> None:
    envs = {name: env_of(services[name]) for name in CROUPIER}
    for name, env in envs.items():
        missing = [v for v in (*SERVICE_VARS, "CROUPIER_TOPIC_PARTITIONS") if not env.get(v)]
        assert not missing, f"{name} lacks {missing}"
        assert int(env.get("CROUPIER_TOPIC_REPLICATION", "1")) == 1, "one broker, one replica"
    init, worker = envs["init"], envs["worker"]
    for var in (*SERVICE_VARS, "CROUPIER_TOPIC_PARTITIONS", "CROUPIER_TOPIC_REPLICATION"):
        assert init.get(var) == worker.get(var), f"init and worker disagree on {var}"


def test_croupier_variables_point_at_the_services(services: dict[str, Service]) -> None:
    env = env_of(services["worker"])

    for server in env["KAFKA_BOOTSTRAP_SERVERS"].split(","):
        assert server.rpartition(":")[0] == "kafka", server

    pg = urlsplit(env["CROUPIER_PG_DSN"])
    pg_env = env_of(services["postgres"])
    assert pg.scheme in ("postgresql", "postgres")
    assert (pg.hostname, pg.port) == ("postgres", 5432)
    assert pg.path == f"/{pg_env['POSTGRES_DB']}"
    # Workers are not the owner; only init holds the owner's DSN, and creates their login.
    assert pg.username != pg_env["POSTGRES_USER"] and pg.password
    assert "CROUPIER_PG_ADMIN_DSN" not in env
    owner = urlsplit(env_of(services["init"])["CROUPIER_PG_ADMIN_DSN"])
    assert (owner.hostname, owner.port, owner.path) == (pg.hostname, pg.port, pg.path)
    assert owner.username == pg_env["POSTGRES_USER"]
    assert owner.password == pg_env["POSTGRES_PASSWORD"]

    ch = urlsplit(env["CROUPIER_CLICKHOUSE_URL"])
    ch_env = env_of(services["clickhouse"])
    assert ch.scheme == "http"
    assert (ch.hostname, ch.port) == ("clickhouse", 8123)
    assert ch.username == ch_env["CLICKHOUSE_USER"]
    assert ch.password == ch_env["CLICKHOUSE_PASSWORD"]
    assert ch.path == f"/{ch_env['CLICKHOUSE_DB']}"


def test_workers_dial_the_internal_listener(services: dict[str, Service]) -> None:
    kafka = env_of(services["kafka"])
    advertised = listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    declared = listeners(kafka["KAFKA_LISTENERS"])
    internal = {f"{host}:{port}": name for name, (host, port) in advertised.items()}

    for server in env_of(services["worker"])["KAFKA_BOOTSTRAP_SERVERS"].split(","):
        assert server in internal, f"{server} is not advertised by kafka: {advertised}"
        name = internal[server]
        assert declared[name][1] == advertised[name][1], f"{name} listens on another port"

    # The host listener is advertised as the loopback port that compose publishes.
    host = [n for n, (h, _) in advertised.items() if h == "127.0.0.1"]
    assert len(host) == 1, advertised
    port = advertised[host[0]][1]
    assert f"127.0.0.1:{port}:{declared[host[0]][1]}" in services["kafka"]["ports"]


def test_init_provisions_topics_then_schema(services: dict[str, Service]) -> None:
    init = services["init"]
    line = command_line(init)
    topics, migrate = line.find("croupier topics create"), line.find("croupier db migrate")
    assert topics >= 0, line
    assert migrate > topics, line
    assert "&&" in line[topics:migrate], "the schema step must not run after a failed topic step"
    assert init.get("restart") == "no"


def test_init_waits_for_healthy_services(services: dict[str, Service]) -> None:
    depends = services["init"].get("depends_on")
    assert isinstance(depends, dict), "init needs conditions, so depends_on must be a mapping"
    for name in INFRA:
        assert depends.get(name, {}).get("condition") == "service_healthy", name
        test = (services[name].get("healthcheck") or {}).get("test")
        assert test and test != ["NONE"], f"{name} has no healthcheck"
    check = {name: " ".join(services[name]["healthcheck"]["test"]) for name in INFRA}
    assert "/opt/kafka/bin/" in check["kafka"]
    assert "pg_isready" in check["postgres"]
    assert "/ping" in check["clickhouse"]


def test_worker_is_scalable_and_starts_after_init(services: dict[str, Service]) -> None:
    worker = services["worker"]
    assert worker["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert worker.get("command") in (["worker"], "worker")
    assert worker.get("restart") == "unless-stopped"
    # `--scale worker=N` needs generated names and no host port per replica.
    assert "container_name" not in worker
    assert not worker.get("ports")


def test_references_resolve(compose: dict[str, Any], services: dict[str, Service]) -> None:
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for name, service in services.items():
        for target in service.get("depends_on") or {}:
            assert target in services, f"{name} depends on unknown service {target}"
        for mount in service.get("volumes") or []:
            source = mount.get("source") if isinstance(mount, dict) else mount.split(":")[0]
            if source and not source.startswith((".", "/", "~")):
                used.add(str(source))
    assert used == declared, f"named volumes used {sorted(used)}, declared {sorted(declared)}"
    for name in INFRA:
        assert services[name].get("volumes"), f"{name} keeps its data in a named volume"

    # Compose's own validation needs the plugin but no engine; without it the checks
    # above stand alone.
    if compose_cli():
        result = subprocess.run(
            ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def test_dockerfile_builds_the_croupier_command() -> None:
    instructions = dockerfile_instructions()
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert froms[-1].split()[0] == "python:3.11-slim"

    last = {keyword: args for keyword, args in instructions}
    assert json.loads(last["ENTRYPOINT"]) == ["croupier"]
    assert json.loads(last["CMD"]) == ["worker"]
    assert last["USER"].split(":")[0] not in ("root", "0"), "run as a non-root user"

    # The worker's extras: the base install is only the producer kit.
    pip_install = re.compile(
        r"pip install [^&;]*-c constraints\.txt[^&;]*\s\"\.\[worker,embedded\]\"(\s|$)"
    )
    installs = [args for keyword, args in instructions if keyword == "RUN" and "pip" in args]
    assert any(pip_install.search(args) for args in installs), installs

    copied = " ".join(args for keyword, args in instructions if keyword == "COPY")
    for needed in ("pyproject.toml", "constraints.txt", "README.md"):
        assert needed in copied, needed
    # Every package pyproject installs, and the data Croupier reads (policies, game registry).
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = [p.rstrip("*") for p in found["packages"]["find"]["include"]]
    assert {"croupier", "schemas", "sinks", "rules", "rng"} <= set(packages)
    for package in (*packages, "policies", "games"):
        assert re.search(rf"(^|\s){package}/?(\s|$)", copied), package
    for kept_out in ("tests", ".stack", ".venv"):
        assert not re.search(rf"(^|\s){re.escape(kept_out)}/?(\s|$)", copied), kept_out


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".stack", ".venv", ".git", "tests", "bench"):
        assert needed in patterns, needed
