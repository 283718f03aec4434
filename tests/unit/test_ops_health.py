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
    # One bit of the signature flipped (a last byte set to zero would equal it 1 time in 256).
    tampered = signed[:-1] + bytes([signed[-1] ^ 1])
    assert not checkpoint_verified(document, public_bytes(ours), tampered, pin)
    fingerprint_only = Pin(fingerprint=pin.fingerprint)
    assert checkpoint_verified(document, public_bytes(ours), signed, fingerprint_only)
    assert not checkpoint_verified(document, public_bytes(theirs), forged, fingerprint_only)


def test_status_reports_readiness_and_the_platform(capsys: pytest.CaptureFixture[str]) -> None:
    from croupier import status

    scrape = status.parse(
        "croupier_ready 0.0\n"
        'croupier_role_info{role="auditor"} 1.0\n'
        "croupier_audit_relay_backlog_records 7.0\n"
        "croupier_report_derive_backlog_records 2.0\n"
        "croupier_audit_last_checkpoint_timestamp_seconds 1.0e9\n"
        "croupier_audit_last_checkpoint_verified 0.0\n"
        'croupier_report_lag_records{jurisdiction="UK"} 3.0\n'
        'croupier_open_liability{currency="EUR",market="m-1/1x2"} 16.5\n'
        'croupier_open_liability{currency="EUR",market="m-2/1x2"} 2.0\n'
        'croupier_ggr_today{currency="EUR"} 15.0\n'
        "croupier_analytics_lag_messages 4.0\n"
        'croupier_flow_batch_events_sum{flow="bets"} 30.0\n'
        'croupier_flow_batch_events_count{flow="bets"} 3.0\n'
        'croupier_flow_batch_seconds_bucket{flow="bets",le="0.1"} 3.0\n'
        'croupier_flow_batch_seconds_bucket{flow="bets",le="+Inf"} 3.0\n'
    )
    endpoint = status.Endpoint("a", "http://127.0.0.1:1/metrics", scrapes=[scrape, scrape])
    report = status.aggregate([endpoint], 1.0)
    assert report["processes"][0]["ready"] is False
    assert report["flows"]["bets"]["mean_size"] == 10.0  # from the new _events names
    platform = report["platform"]
    assert platform["audit"]["report_lag"] == {"UK": 3.0}
    assert platform["audit"]["last_checkpoint_verified"] == 0.0
    assert [x["market"] for x in platform["liability"]] == ["m-1/1x2", "m-2/1x2"]
    status.print_report(report)
    text = capsys.readouterr().out
    assert "NOT READY" in text and "relay backlog 7" in text and "NOT VERIFIED" in text
    assert "GGR today EUR: 15.00" in text and "analytics lag: 4 messages" in text
