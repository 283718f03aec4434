"""``croupier dashboard``: one page on 127.0.0.1 that shows the platform live.

The page (``static/index.html``, ``static/app.js``; charts by uPlot 1.6.32, vendored with
its licence under ``static/vendor/``: no build step) polls ``/api/state`` every second.
That endpoint scrapes every process's ``/metrics`` when asked (the endpoints of
``croupier status``: ``CROUPIER_METRICS_URLS``, else the stack's ``metrics.json``) and
answers with ``croupier status``'s report of this scrape against the one before, so
what the page shows is what the processes said at that moment.

It listens on loopback only and answers a request only when its ``Host`` names that
loopback address (a page elsewhere cannot reach it through DNS rebinding), and only
``GET`` without an ``Origin`` of another site.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import mimetypes
import os
import signal
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from config.priority import background_nice, step_back
from croupier import status
from croupier.redact import redact

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
DEFAULT_PORT = 9390
READY = "dashboard on"  # logged once it listens


class Board:
    """The scrapes behind ``/api/state``: each request scrapes now and compares with the
    previous request's scrape (rates over the time between them)."""

    def __init__(self, urls: list[str], environ: Mapping[str, str]) -> None:
        self.urls, self.environ = urls, dict(environ)
        self._lock = threading.Lock()
        self._previous: dict[str, tuple[float, status.Samples]] = {}

    def state(self) -> dict[str, Any]:
        with self._lock:
            endpoints, source = status.find_endpoints(self.urls, self.environ)
            with ThreadPoolExecutor(max_workers=max(1, min(16, len(endpoints)))) as pool:
                list(pool.map(status.scrape, endpoints))
            now = time.monotonic()
            seconds = 0.0
            for e in endpoints:
                if not e.scrapes:
                    continue
                then, before = self._previous.get(e.url, (now, e.scrapes[0]))
                self._previous[e.url] = (now, e.scrapes[0])
                e.scrapes = [before, e.scrapes[0]]
                seconds = max(seconds, now - then)
            report = status.aggregate(endpoints, seconds)
        report["source"] = redact(source)
        report["taken_at"] = time.time()
        return report


def _page_headers() -> list[tuple[str, str]]:
    return [
        ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; "
                                    "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-store"),
    ]  # fmt: skip


def make_handler(board: Board, port: int) -> type[BaseHTTPRequestHandler]:
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}

    class Handler(BaseHTTPRequestHandler):
        server_version = "croupier-dashboard"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            """No access log: the page polls every second."""

        def _refuse(self, code: int, why: str) -> None:
            body = why.encode() + b"\n"
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _allowed(self) -> bool:
            if self.headers.get("Host", "") not in hosts:
                self._refuse(421, "unknown Host")
                return False
            origin = self.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc not in hosts:
                self._refuse(403, "cross-origin requests are refused")
                return False
            return True

        def do_GET(self) -> None:
            if not self._allowed():
                return
            path = urlsplit(self.path).path
            if path == "/api/state":
                body = json.dumps(board.state(), sort_keys=True).encode()
                self._send(200, "application/json", body)
                return
            name = "index.html" if path == "/" else path.removeprefix("/static/")
            target = (STATIC / name).resolve()
            if (not path.startswith(("/static/", "/")) or STATIC.resolve() not in target.parents
                    or not target.is_file()):  # fmt: skip
                self._refuse(404, "not found")
                return
            kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            self._send(200, kind, target.read_bytes())

        def _send(self, code: int, kind: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for name, value in _page_headers():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _no(self) -> None:
            if self._allowed():
                self._refuse(405, "GET only")

        do_POST = do_PUT = do_DELETE = do_PATCH = _no

    return Handler


def serve(port: int, urls: list[str], environ: Mapping[str, str]) -> ThreadingHTTPServer:
    """The dashboard's server on 127.0.0.1:``port`` (not yet serving: ``serve_forever``)."""
    board = Board(urls, environ)
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(board, port))
    server.daemon_threads = True
    return server


def run(args: argparse.Namespace) -> int:
    """``croupier dashboard``: serve until SIGTERM or SIGINT."""
    metrics_port = int(os.environ.get("CROUPIER_METRICS_PORT") or 0)
    return run_server(args.port, list(args.url), metrics_port)


def run_server(port: int, urls: list[str], metrics_port: int = 0) -> int:
    """Serve the page on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    from config import logs
    from streams import metrics

    logs.setup()
    step_back(background_nice(), what="dashboard")
    try:
        server = serve(port, urls, os.environ)
    except OSError as exc:
        log.error("dashboard not started on 127.0.0.1:%d: %s", port, exc)
        return 1
    stopping = threading.Event()
    metrics.add_check("dashboard.serving", lambda: not stopping.is_set())
    metrics.serve(metrics_port, "dashboard")

    def stop(signum: int, _frame: Any) -> None:
        stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    log.info("%s http://127.0.0.1:%d/", READY, port)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0
