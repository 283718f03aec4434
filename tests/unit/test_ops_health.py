"""The health endpoint's answers and the stack's wait on it, on a loopback server."""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import make_server

import pytest

from croupier.stack import StackError, _wait_ready, readyz_ok
from streams import metrics


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = make_server("127.0.0.1", 0, metrics.app, handler_class=metrics._Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    saved = dict(metrics.CHECKS)
    metrics.CHECKS.clear()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    metrics.CHECKS.clear()
    metrics.CHECKS.update(saved)


def test_readyz_needs_every_check_and_at_least_one(endpoint: str, tmp_path: Path) -> None:
    assert readyz_ok(endpoint + "/healthz")
    assert not readyz_ok(endpoint + "/readyz")  # nothing registered yet: not ready
    flag = {"db": False}
    metrics.add_check("db", lambda: flag["db"])
    metrics.add_check("boom", lambda: 1 / 0 > 0)  # a check that raises is a "no"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(endpoint + "/readyz", timeout=5)
    assert refused.value.code == 503
    assert b'"boom": false' in refused.value.read()
    metrics.add_check("boom", lambda: True)
    assert not readyz_ok(endpoint + "/readyz")
    flag["db"] = True
    assert readyz_ok(endpoint + "/readyz")
    with urllib.request.urlopen(endpoint + "/metrics", timeout=5) as response:
        assert b"croupier_ready 1.0" in response.read()
    # The stack's wait returns on a 200, whatever the log says...
    log = tmp_path / "x.log"
    log.write_bytes(b"")
    _wait_ready(os.getpid(), log, 0, b"never", "x", 5, readyz=endpoint + "/readyz")
    # ...and times out on a 503 even when the log has the marker.
    flag["db"] = False
    log.write_bytes(b"Ready")
    with pytest.raises(StackError, match="did not come up"):
        _wait_ready(os.getpid(), log, 0, b"Ready", "x", 1, readyz=endpoint + "/readyz")
