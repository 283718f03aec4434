"""The ClickHouse engine for the embedded default: chdb behind the ClickHouse HTTP interface.

chdb lets one process own a data directory, so one small process owns ``home/data`` and
serves it on 127.0.0.1 (``sinks.clickhouse.server``); workers and analysts reach it with
clickhouse-connect exactly as they would reach a ClickHouse server.

Two users, with passwords made on first start and kept in ``home/credentials.json`` (mode
0600; the server reads only their SHA-256, ``home/users.json``): ``croupier`` writes (the
analytics sink, the schema) and ``analyst`` reads at ClickHouse's ``readonly=2``: no
writes, settings only within its caps (clickhouse-connect and BI tools send settings with
every query, which ``readonly=1`` refuses).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from croupier.stack.process import (
    StackError,
    port_open,
    read_pid,
    spawn,
    stop_pid,
    tail,
    wait_until,
)

MODULE = "sinks.clickhouse.server"
WRITER = "croupier"
ANALYST = "analyst"


@dataclass(frozen=True)
class EmbeddedClickHouse:
    """One chdb-backed ClickHouse HTTP endpoint."""

    home: Path
    logs: Path
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The writer's URL, with its password: ``CROUPIER_CLICKHOUSE_URL``."""
        return self._url(WRITER)

    @property
    def analyst_url(self) -> str:
        """The analyst's URL, with its password: ``CROUPIER_CLICKHOUSE_ANALYST_URL``."""
        return self._url(ANALYST)

    def _url(self, user: str) -> str:
        password = self.passwords(create=False).get(user)
        if password is None:  # not started yet: nothing to log in to
            return self.base_url
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    @property
    def users_file(self) -> Path:
        return self.home / "users.json"

    def passwords(self, *, create: bool = True) -> dict[str, str]:
        """The users' passwords, made (and the server's users file written) the first time.

        ``create=False``: those made already, or none.
        """
        path = self.home / "credentials.json"
        try:
            known = {str(k): str(v) for k, v in json.loads(path.read_text()).items()}
            if create and not self.users_file.exists():
                _write_private(self.users_file, _users(known))
            return known
        except (OSError, ValueError):
            if not create:
                return {}
        self.home.mkdir(parents=True, exist_ok=True)
        passwords = {WRITER: secrets.token_urlsafe(24), ANALYST: secrets.token_urlsafe(24)}
        _write_private(self.users_file, _users(passwords))
        _write_private(path, json.dumps(passwords) + "\n")
        return passwords

    @property
    def pidfile(self) -> Path:
        return self.home / "clickhouse.pid"

    @property
    def logfile(self) -> Path:
        return self.logs / "clickhouse.log"

    def pid(self) -> int | None:
        return read_pid(self.pidfile, MODULE)

    def running(self) -> bool:
        """The process lives and answers a query (``/ping`` alone says too little)."""
        return self.pid() is not None and answers(self.url)

    def start(self, *, timeout: float = 60.0) -> None:
        if self.running():
            return
        if port_open("127.0.0.1", self.port):
            msg = (
                f"port {self.port} on 127.0.0.1 is taken by another program; "
                "choose a free one with CROUPIER_CLICKHOUSE_PORT"
            )
            raise StackError(msg)
        self.home.mkdir(parents=True, exist_ok=True)
        self.passwords()  # the users file, made if missing
        argv = [
            sys.executable, "-m", MODULE,
            "--path", str(self.home / "data"), "--port", str(self.port), "--host", "127.0.0.1",
            "--users", str(self.users_file),
        ]  # fmt: skip
        pid = spawn(argv, pidfile=self.pidfile, logfile=self.logfile)

        def ready() -> bool:
            if read_pid(self.pidfile, MODULE) != pid:
                msg = f"the ClickHouse engine exited during start-up:\n{tail(self.logfile)}"
                raise StackError(msg)
            return ping(self.base_url)

        wait_until(ready, timeout=timeout, what="ClickHouse engine", logfile=self.logfile)

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            stop_pid(pid, timeout=30)
        self.pidfile.unlink(missing_ok=True)


def ping(url: str) -> bool:
    """True when a ClickHouse HTTP interface answers ``/ping`` at ``url``."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)  # without the user and password, which /ping does not need
    base = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    try:
        with urllib.request.urlopen(f"{base}/ping", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def answers(url: str, *, timeout: float = 5.0) -> bool:
    """True when the ClickHouse at ``url`` (with its user and password) answers ``SELECT 1``.

    A server can answer ``/ping`` while its engine is wedged; this asks the engine.
    """
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    request = urllib.request.Request(f"{base}/?query=SELECT%201")
    if parts.username is not None:
        token = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as resp:
            return bool(resp.status == 200 and resp.read().strip() == b"1")
    except OSError:
        return False


def _users(passwords: dict[str, str]) -> str:
    """The server's users file: the writer at readonly 0, the analyst at 2."""
    from sinks.clickhouse.guard import users_document

    return users_document({WRITER: (passwords[WRITER], 0), ANALYST: (passwords[ANALYST], 2)})


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
