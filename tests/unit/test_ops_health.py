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


def test_a_checkpoint_is_verified_only_with_the_pinned_key() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sinks.postgres.ops import checkpoint_verified
    from sinks.signing import Pin, public_bytes

    ours, theirs = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    document = '{"created_at": "2026-12-07T03:00:00Z", "heads": {}}'
    signed = ours.sign(document.encode())
    pin = Pin(public_bytes(ours))
    assert checkpoint_verified(document, public_bytes(ours), signed, pin)
    assert checkpoint_verified(document, public_bytes(ours), signed, None)  # row is whole
    forged = theirs.sign(document.encode())  # another key, naming itself
    assert not checkpoint_verified(document, public_bytes(theirs), forged, pin)
    assert checkpoint_verified(document, public_bytes(theirs), forged, None)  # why pin
    assert not checkpoint_verified(document + " ", public_bytes(ours), signed, pin)  # edited
    assert not checkpoint_verified(document, public_bytes(ours), signed[:-1] + b"\0", pin)
    fingerprint_only = Pin(fingerprint=pin.fingerprint)
    assert checkpoint_verified(document, public_bytes(ours), signed, fingerprint_only)
    assert not checkpoint_verified(document, public_bytes(theirs), forged, fingerprint_only)
