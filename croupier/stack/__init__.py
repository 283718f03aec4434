"""The local stack: Kafka, PostgreSQL and the ClickHouse engine for real, plus the workers.

``croupier stack up`` starts what is not running (idempotently), provisions topics and
schemas, starts the workers and writes ``<root>/env``; ``down`` stops what it started and
keeps the data; ``status`` says what runs where. A part whose variable
(``KAFKA_BOOTSTRAP_SERVERS``, ``CROUPIER_PG_DSN``, ``CROUPIER_CLICKHOUSE_URL``) already
points elsewhere is external: it is used as it is and never started here.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from croupier.gateway import READY as GATEWAY_READY
from croupier.stack.clickhouse import EmbeddedClickHouse
from croupier.stack.clickhouse import answers as clickhouse_answers
from croupier.stack.kafka import KafkaBroker
from croupier.stack.postgres import EmbeddedPostgres
from croupier.stack.process import (
    StackError,
    pid_alive,
    port_free,
    port_open,
    read_pid,
    spawn,
    stop_pid,
    tail,
    wait_until,
)
from streams.auditor import READY as AUDITOR_READY

ENV_KAFKA = "KAFKA_BOOTSTRAP_SERVERS"
ENV_PG = "CROUPIER_PG_DSN"
ENV_PG_ADMIN = "CROUPIER_PG_ADMIN_DSN"  # the schema owner's, for migrations
ENV_CLICKHOUSE = "CROUPIER_CLICKHOUSE_URL"
ENV_CLICKHOUSE_ANALYST = "CROUPIER_CLICKHOUSE_ANALYST_URL"  # read-only; embedded stack only
WORKER_MARKER = "croupier worker"
WORKER_READY = b"[^Worker]: Ready"  # what Faust logs once recovery is done and it fetches
# The first metrics port the stack hands out (CROUPIER_METRICS_PORT; 0: none): one per
# worker, the auditor and the analytics sink, the next free one each, recorded in
# <root>/metrics.json for `croupier status`. Below any kernel's ephemeral range.
METRICS_PORT = 9400

# The long-running processes beside the workers: (argv after ``croupier``, what the log
# says once it is ready). The auditor relays the trail, reports and signs checkpoints, so
# the workers started here leave that to it (``AUDITOR_TIMERS_OFF``).
SERVICES: dict[str, tuple[tuple[str, ...], bytes]] = {
    "auditor": (("audit", "run"), AUDITOR_READY.encode()),
    "analytics": (("analytics", "run"), b"analytics sink: consuming"),
    "gateway": (("gateway", "run"), GATEWAY_READY.encode()),
    # The page of the platform live (croupier/dashboard/), on 127.0.0.1.
    "dashboard": (("dashboard",), b"dashboard on"),
}
GATEWAY_PORT = 8480  # the HTTP edge on 127.0.0.1 (CROUPIER_GATEWAY_PORT)
ENV_DASHBOARD = "CROUPIER_DASHBOARD_URL"  # in .stack/env once `stack up` started it
DASHBOARD_PORT = 9390  # the first port tried (CROUPIER_DASHBOARD_PORT), then the next free
AUDITOR_TIMERS_OFF = {
    "CROUPIER_AUDIT_RELAY_INTERVAL": "0",
    "CROUPIER_REPORT_INTERVAL": "0",
    "CROUPIER_AUDIT_CHECKPOINT_INTERVAL": "0",
}

__all__ = ["Stack", "StackConfig", "StackError"]


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        msg = f"{name}={raw!r} is not a whole number"
        raise StackError(msg) from None


@dataclass(frozen=True)
class StackConfig:
    """Where the stack lives and which ports it takes (all on 127.0.0.1)."""

    root: Path = Path(".stack")
    cache: Path = Path(".stack/cache")
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    pg_port: int = 55432
    clickhouse_port: int = 8123
    workers: int = 1
    metrics_port: int = METRICS_PORT
    gateway_port: int = GATEWAY_PORT
    kafka_heap: str = "1g"
    external: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StackConfig:
        """Read ``CROUPIER_STACK_DIR``, ``CROUPIER_*_PORT``, ``CROUPIER_WORKERS`` and the three
        service variables (a set one makes that part external)."""
        env = os.environ if env is None else env
        root = Path(env.get("CROUPIER_STACK_DIR", ".stack")).resolve()
        cache = Path(env.get("CROUPIER_CACHE_DIR", str(root / "cache"))).resolve()
        external = {
            k: env[k] for k in (ENV_KAFKA, ENV_PG, ENV_PG_ADMIN, ENV_CLICKHOUSE) if env.get(k)
        }
        return cls(
            root=root,
            cache=cache,
            kafka_port=_int(env, "CROUPIER_KAFKA_PORT", 9092),
            kafka_controller_port=_int(env, "CROUPIER_KAFKA_CONTROLLER_PORT", 9093),
            pg_port=_int(env, "CROUPIER_PG_PORT", 55432),
            clickhouse_port=_int(env, "CROUPIER_CLICKHOUSE_PORT", 8123),
            # One worker per core: each has one batch of a flow in flight at a time.
            workers=_int(env, "CROUPIER_WORKERS", os.cpu_count() or 1),
            metrics_port=_int(env, "CROUPIER_METRICS_PORT", METRICS_PORT),
            gateway_port=_int(env, "CROUPIER_GATEWAY_PORT", GATEWAY_PORT),
            kafka_heap=env.get("CROUPIER_KAFKA_HEAP", "1g"),
            external=external,
        )


@dataclass(frozen=True)
class PartStatus:
    """One line of ``croupier stack status``."""

    name: str
    mode: str  # embedded | external
    where: str
    running: bool
    pid: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "mode": self.mode,
            "where": self.where,
            "running": self.running,
            "pid": self.pid,
        }


class Stack:
    """The local stack under ``config.root``."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        root = config.root
        self.logs = root / "logs"
        self.kafka = KafkaBroker(
            home=root / "kafka",
            cache=config.cache / "kafka",
            logs=self.logs,
            port=config.kafka_port,
            controller_port=config.kafka_controller_port,
            heap=config.kafka_heap,
        )
        self.postgres = EmbeddedPostgres(
            home=root / "postgres", logs=self.logs, port=config.pg_port
        )
        self.clickhouse = EmbeddedClickHouse(
            home=root / "clickhouse", logs=self.logs, port=config.clickhouse_port
        )

    # -- which parts are ours -------------------------------------------------------------

    @property
    def env_file(self) -> Path:
        return self.config.root / "env"

    @property
    def _state_file(self) -> Path:
        return self.config.root / "state.json"

    def _embedded_values(self) -> dict[str, str]:
        return {
            ENV_KAFKA: self.kafka.bootstrap,
            ENV_PG: self.postgres.dsn,
            ENV_PG_ADMIN: self.postgres.admin_dsn,
            ENV_CLICKHOUSE: self.clickhouse.url,
            ENV_CLICKHOUSE_ANALYST: self.clickhouse.analyst_url,
        }

    def _recorded(self) -> dict[str, str]:
        try:
            data = json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.get("embedded", {}).items()}

    def is_external(self, var: str) -> bool:
        """A part is external when its variable is set to something this stack did not write.

        A shell that sourced ``.stack/env`` carries our own values back in; those still
        mean the embedded part.
        """
        value = self.config.external.get(var)
        if not value:
            return False
        ours = {self._embedded_values()[var], self._recorded().get(var)}
        # The embedded PostgreSQL's DSNs from before it had passwords are ours too.
        ours |= {
            _redact(v).replace(":***@", "@") for v in ours if v and var in (ENV_PG, ENV_PG_ADMIN)
        }
        return value not in ours

    def service_env(self) -> dict[str, str]:
        """The service variables as this stack resolves them.

        An external PostgreSQL brings its owner's DSN in ``CROUPIER_PG_ADMIN_DSN``, or has
        none (then migrations run with ``CROUPIER_PG_DSN``)."""
        values = self._embedded_values()
        for var in list(values):
            if self.is_external(var):
                values[var] = self.config.external[var]
        if self.is_external(ENV_PG) and not self.is_external(ENV_PG_ADMIN):
            del values[ENV_PG_ADMIN]
        if self.is_external(ENV_CLICKHOUSE):
            del values[ENV_CLICKHOUSE_ANALYST]
        return values

    # -- up / down / status ---------------------------------------------------------------

    def up(self, *, workers: bool = True, provision: bool = True) -> dict[str, str]:
        """Start every embedded part that is not running, provision, start workers."""
        self.config.root.mkdir(parents=True, exist_ok=True)
        starters = []
        if not self.is_external(ENV_PG):
            starters.append(self.postgres.start)
        if not self.is_external(ENV_KAFKA):
            starters.append(self.kafka.start)
        if not self.is_external(ENV_CLICKHOUSE):
            starters.append(self.clickhouse.start)
        # The JVM dominates start-up; the other parts start beside it.
        with ThreadPoolExecutor(max_workers=max(1, len(starters))) as pool:
            for future in [pool.submit(start) for start in starters]:
                future.result()
        env = {**self.service_env(), **self.ensure_keys(), **self.gateway_env()}
        self._write_env(env)
        if provision:
            self.provision(env)
        if workers:
            for name in SERVICES:
                self.start_service(name, env)
            self.start_workers(env)
            url = self.dashboard_url()
            if url is not None:
                env = {**env, ENV_DASHBOARD: url}
                self._write_env(env)
        return env

    def ensure_keys(self) -> dict[str, str]:
        """The operator's two signing keys, made here on first setup and never again
        (``sinks/signing.py``), and both public keys pinned for their verifiers (so
        ``audit verify``, ``reports verify`` and ``regulator follow`` work on this stack).
        A key variable set in the environment names the key to use instead."""
        from sinks import signing

        root = self.config.root
        audit = Path(os.environ.get("CROUPIER_AUDIT_KEY") or root / "audit" / "ed25519.pem")
        report = Path(
            os.environ.get("CROUPIER_REPORT_SIGNING_KEY") or root / "reports" / "ed25519.pem"
        )
        for path in (audit, report):
            key, _ = signing.ensure(path)
            if not signing.public_file(path).exists():  # a key made before .pub files
                signing.public_file(path).write_text(signing.public_bytes(key).hex() + "\n")
        pin = os.environ.get("CROUPIER_AUDIT_PUBLIC_KEY") or str(
            signing.public_file(audit).resolve()
        )
        report_pin = os.environ.get("CROUPIER_REPORT_PUBLIC_KEY") or str(
            signing.public_file(report).resolve()
        )
        return {"CROUPIER_AUDIT_KEY": str(audit.resolve()),
                "CROUPIER_AUDIT_PUBLIC_KEY": pin,
                "CROUPIER_REPORT_SIGNING_KEY": str(report.resolve()),
                "CROUPIER_REPORT_PUBLIC_KEY": report_pin}  # fmt: skip

    def gateway_env(self) -> dict[str, str]:
        """Where the gateway listens (127.0.0.1 only) and keeps its credentials."""
        port = self.config.gateway_port
        return {"CROUPIER_GATEWAY_URL": f"http://127.0.0.1:{port}",
                "CROUPIER_GATEWAY_PORT": str(port), "CROUPIER_GATEWAY_HOST": "127.0.0.1",
                "CROUPIER_GATEWAY_DIR": str((self.config.root / "gateway").resolve())}  # fmt: skip

    def _write_env(self, env: Mapping[str, str]) -> None:
        lines = [
            "# Written by `croupier stack up`. Use it with: . .stack/env",
            *(f"export {k}='{v}'" for k, v in env.items()),
            "",
        ]
        # Both hold the PostgreSQL passwords: readable by this user alone.
        _write_private(self.env_file, "\n".join(lines))
        _write_private(self._state_file, json.dumps({"embedded": self._embedded_values()},
                                                    indent=2))  # fmt: skip

    def provision(self, env: Mapping[str, str]) -> None:
        """Create the contract's topics and PostgreSQL's schema (both idempotent)."""
        from config.settings import Settings
        from sinks.postgres.migrate import migrate
        from topologies.topics import create_topics

        settings = Settings(**env)  # type: ignore[arg-type]  # aliases are the env names
        create_topics(settings)
        migrate(settings.migration_dsn, settings.pg_schema)

    def _worker_pidfile(self, n: int) -> Path:
        return self.config.root / "run" / f"worker-{n}.pid"

    def start_workers(self, env: Mapping[str, str], *, timeout: float = 120.0) -> None:
        """Start the missing workers and wait until each says it is ready (recovery done)."""
        started: list[tuple[int, Path, int]] = []
        for n in range(1, self.config.workers + 1):
            pidfile = self._worker_pidfile(n)
            if read_pid(pidfile, WORKER_MARKER) is not None:
                continue
            log = self.logs / f"worker-{n}.log"
            offset = log.stat().st_size if log.exists() else 0
            argv = [sys.executable, "-m", "croupier", "worker", "--name", f"worker-{n}"]
            worker_env = {"CROUPIER_DATA_DIR": str(self.config.root / "faust"), **os.environ, **env,
                          **AUDITOR_TIMERS_OFF, **self._metrics_env(f"worker-{n}")}  # fmt: skip
            pid = spawn(argv, pidfile=pidfile, logfile=log, env=worker_env)
            self._record_endpoint(f"worker-{n}", pid, worker_env)
            started.append((pid, log, offset))
        for pid, log, offset in started:
            _wait_ready(pid, log, offset, WORKER_READY, "a worker", timeout,
                        readyz=self._readyz(pid))  # fmt: skip

    def _service_pidfile(self, name: str) -> Path:
        return self.config.root / "run" / f"{name}.pid"

    def service_pid(self, name: str) -> int | None:
        argv, _ = SERVICES[name]
        return read_pid(self._service_pidfile(name), f"croupier {' '.join(argv)}")

    def start_service(self, name: str, env: Mapping[str, str], *, timeout: float = 60.0) -> None:
        """Start ``name`` (the auditor, or the analytics sink: ``audit`` into ClickHouse)
        unless it runs; wait until its log says it is ready."""
        if self.service_pid(name) is not None:
            return
        argv, marker = SERVICES[name]
        log = self.logs / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        service_env = {**os.environ, **env, **self._metrics_env(name)}
        if name == "dashboard":
            service_env |= self._dashboard_env()
        pid = spawn([sys.executable, "-m", "croupier", *argv], pidfile=self._service_pidfile(name),
                    logfile=log, env=service_env)  # fmt: skip
        self._record_endpoint(name, pid, service_env)
        _wait_ready(pid, log, offset, marker, f"the {name}", timeout, readyz=self._readyz(pid))

    @property
    def _dashboard_port_file(self) -> Path:
        return self.config.root / "run" / "dashboard.port"

    def _dashboard_env(self) -> dict[str, str]:
        """The dashboard's port (the first free from CROUPIER_DASHBOARD_PORT, recorded) and
        where it finds the endpoints (this stack's metrics.json)."""
        port = int(os.environ.get("CROUPIER_DASHBOARD_PORT") or DASHBOARD_PORT)
        while not port_free(port):
            port += 1
        self._dashboard_port_file.parent.mkdir(parents=True, exist_ok=True)
        self._dashboard_port_file.write_text(f"{port}\n")
        return {"CROUPIER_DASHBOARD_PORT": str(port), "CROUPIER_STACK_DIR": str(self.config.root)}

    def dashboard_url(self) -> str | None:
        """The running dashboard's page, if it runs."""
        if self.service_pid("dashboard") is None:
            return None
        try:
            port = int(self._dashboard_port_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return f"http://127.0.0.1:{port}/"

    # -- metrics endpoints ----------------------------------------------------------------

    @property
    def metrics_file(self) -> Path:
        return self.config.root / "metrics.json"

    def endpoints(self) -> dict[str, dict[str, object]]:
        """``metrics.json``: per process name, its ``url`` and ``pid``."""
        try:
            data = json.loads(self.metrics_file.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}

    def _metrics_env(self, name: str) -> dict[str, str]:
        """``CROUPIER_METRICS_PORT`` for the process ``name`` about to start: the first port
        from the base that no live endpoint of ours holds and nothing listens on."""
        if self.config.metrics_port <= 0:
            return {"CROUPIER_METRICS_PORT": "0"}
        taken = {
            int(str(e["url"]).rsplit(":", 1)[1].split("/")[0])
            for n, e in self.endpoints().items()
            if n != name and isinstance(e.get("pid"), int) and pid_alive(int(str(e["pid"])))
        }
        port = self.config.metrics_port
        while port in taken or not port_free(port):
            port += 1
        return {"CROUPIER_METRICS_PORT": str(port)}

    def _readyz(self, pid: int) -> str | None:
        """The ``/readyz`` URL of the process ``pid`` started, when it serves one."""
        for endpoint in self.endpoints().values():
            if endpoint.get("pid") == pid:
                return str(endpoint["url"]).rsplit("/", 1)[0] + "/readyz"
        return None

    def _record_endpoint(self, name: str, pid: int, env: Mapping[str, str]) -> None:
        port = int(env.get("CROUPIER_METRICS_PORT") or 0)
        found = self.endpoints()
        found.pop(name, None)
        if port > 0:
            found[name] = {"url": f"http://127.0.0.1:{port}/metrics", "pid": pid}
        self.metrics_file.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")

    def worker_pids(self) -> dict[str, int | None]:
        run = self.config.root / "run"
        found = sorted(run.glob("worker-*.pid")) if run.exists() else []
        return {p.stem: read_pid(p, WORKER_MARKER) for p in found}

    def down(self) -> None:
        """Stop the workers, the auditor and the analytics sink, then the embedded parts;
        data stays under the root."""
        for name, pid in self.worker_pids().items():
            if pid is not None:
                stop_pid(pid, timeout=30)
            self._worker_pidfile(int(name.split("-")[1])).unlink(missing_ok=True)
        for service in SERVICES:
            pid = self.service_pid(service)
            if pid is not None:
                stop_pid(pid, timeout=30)
            self._service_pidfile(service).unlink(missing_ok=True)
        self.metrics_file.unlink(missing_ok=True)
        for part in (self.clickhouse, self.kafka, self.postgres):
            part.stop()

    def status(self) -> list[PartStatus]:
        parts: list[PartStatus] = []
        env = self.service_env()
        if self.is_external(ENV_KAFKA):
            host, _, port = env[ENV_KAFKA].split(",")[0].rpartition(":")
            up = port.isdigit() and port_open(host or "127.0.0.1", int(port))
            parts.append(PartStatus("kafka", "external", env[ENV_KAFKA], up))
        else:
            pid = self.kafka.pid()
            parts.append(PartStatus("kafka", "embedded", env[ENV_KAFKA], self.kafka.running(), pid))
        if self.is_external(ENV_PG):
            parts.append(
                PartStatus("postgres", "external", _redact(env[ENV_PG]), _pg_ok(env[ENV_PG]))
            )
        else:
            parts.append(
                PartStatus(
                    "postgres",
                    "embedded",
                    _redact(env[ENV_PG]),
                    self.postgres.running(),
                    self.postgres.pid(),
                )
            )
        ch = env[ENV_CLICKHOUSE]
        if self.is_external(ENV_CLICKHOUSE):
            parts.append(PartStatus("clickhouse", "external", _redact(ch), clickhouse_answers(ch)))
        else:
            parts.append(
                PartStatus(
                    "clickhouse",
                    "embedded",
                    _redact(ch),
                    self.clickhouse.running(),
                    self.clickhouse.pid(),
                )
            )
        for name, pid in self.worker_pids().items():
            where = str(self.logs / f"{name}.log")
            parts.append(PartStatus(name, "embedded", where, pid is not None, pid))
        for service in SERVICES:
            if self._service_pidfile(service).exists():
                pid = self.service_pid(service)
                where = str(self.logs / f"{service}.log")
                parts.append(PartStatus(service, "embedded", where, pid is not None, pid))
        return parts


def _wait_ready(
    pid: int,
    log: Path,
    offset: int,
    marker: bytes,
    what: str,
    timeout: float,
    *,
    readyz: str | None = None,
) -> None:
    """Wait until the process answers 200 on ``readyz`` (its metrics endpoint's), or, when
    it serves none, until ``log`` says ``marker`` after ``offset``; raise if ``pid`` dies
    first."""

    def ready() -> bool:
        if readyz is not None:
            if readyz_ok(readyz):
                return True
        else:
            with open(log, "rb") as f:
                f.seek(offset)
                if marker in f.read():
                    return True
        if not pid_alive(pid):
            msg = f"{what} exited during start-up:\n{tail(log)}"
            raise StackError(msg)
        return False

    wait_until(ready, timeout=timeout, what=what, logfile=log)


def readyz_ok(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` (a process's ``/readyz``) answers 200."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 (also when the file was there before)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _redact(url: str) -> str:
    """``url`` without its password, for printing."""
    from croupier.redact import redact

    return redact(url)


def _pg_ok(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True
