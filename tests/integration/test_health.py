"""A worker's /readyz follows what it depends on: 503 until its flows consume and its
database answers, 200 then, 503 again while the database is away; /healthz answers all along.

The database goes away for real: the worker reaches PostgreSQL through a TCP relay this
test owns, and closing the relay (its listener and every connection through it) is, for
the worker, the server gone.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

import pytest
from pydantic import SecretStr

from config.settings import Settings
from croupier.stack import readyz_ok
from croupier.stack.process import free_port
from croupier.status import parse
from tests.conftest import StartWorker
from tests.integration.helpers import json_lines, wait_for

pytestmark = pytest.mark.integration


class Relay:
    """Forward TCP connections from 127.0.0.1:``port`` to ``target`` while open."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_readyz_follows_the_flows_and_the_database(
    settings: Settings, worker_factory: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CROUPIER_LOG_FORMAT", "json")
    dsn = urlsplit(settings.pg_dsn.get_secret_value())
    assert dsn.hostname and dsn.port
    relay = Relay((dsn.hostname, dsn.port))
    through = dsn._replace(netloc=dsn.netloc.replace(f":{dsn.port}", f":{relay.port}"))
    port = free_port()
    s = settings.model_copy(update={"metrics_port": port, "pg_dsn": SecretStr(urlunsplit(through))})
    base = f"http://127.0.0.1:{port}"
    worker = worker_factory(s)
    try:
        # The database is away from the start: the endpoint answers, not ready.
        wait_for(lambda: readyz_ok(base + "/healthz"), timeout=90, what="the endpoint")
        code, body = get(base + "/readyz")
        assert code == 503, body
        checks = json.loads(body)["checks"]
        assert checks["postgres"] is False
        assert {"flow.bets", "flow.odds", "flow.payments", "flow.casino"} <= set(checks)
        assert not readyz_ok(base + "/readyz")
        samples = parse(get(base + "/metrics")[1].decode())
        assert samples[("croupier_ready", ())] == 0

        relay.open()  # the database arrives: every flow opens its store and subscribes
        wait_for(lambda: readyz_ok(base + "/readyz"), timeout=90, what="ready")
        code, body = get(base + "/readyz")
        assert code == 200 and json.loads(body)["ready"] is True
        assert all(json.loads(body)["checks"].values())
        samples = parse(get(base + "/metrics")[1].decode())
        assert samples[("croupier_ready", ())] == 1
        worker.wait_ready(timeout=30)  # and Faust agrees

        relay.close()  # the database goes away
        wait_for(lambda: get(base + "/readyz")[0] == 503, timeout=30, what="not ready")
        assert json.loads(get(base + "/readyz")[1])["checks"]["postgres"] is False
        assert get(base + "/healthz") == (200, b"ok\n")  # alive, just not ready

        relay.open()  # back
        wait_for(lambda: readyz_ok(base + "/readyz"), timeout=30, what="ready again")
    finally:
        relay.close()
    assert worker.terminate() == 0
    lines = json_lines(worker.log)
    assert any(line["message"] == "[^Worker]: Ready" for line in lines)
    assert any(line["logger"].startswith("streams.") for line in lines)
