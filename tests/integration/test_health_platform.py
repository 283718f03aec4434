"""The whole platform seen from its endpoints: a worker, the auditor and the analytics
sink, with real traffic, scraped live.

Proves the metrics' names by Prometheus's conventions (old names still served for one
release), the signals computed from PostgreSQL (audit relay backlog, last checkpoint,
report lag, open liability, GGR today) against what was bet and settled, every metric
the Grafana dashboard uses present in the live scrape, and every process's log as JSON
lines under CROUPIER_LOG_FORMAT=json.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from config.settings import Settings
from croupier.analytics import lag as analytics_lag
from croupier.stack import readyz_ok
from croupier.stack.process import free_port
from croupier.status import parse
from sinks.signing import generate, public_file
from tests.conftest import StartWorker, settings_env
from tests.integration.helpers import (
    bet,
    done,
    joined,
    json_lines,
    odds_change,
    payment,
    produce,
    query,
    settlement,
    wait_for,
)  # fmt: skip

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def scrape(port: int) -> Samples:
    return parse(scrape_text(port))


def family(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def alive(producer: str, at: datetime) -> bytes:
    return json.dumps({"type": "alive", "producer": producer,
                       "timestamp": at.isoformat()}).encode()  # fmt: skip


def test_the_platform_seen_live(
    settings: Settings,
    worker_factory: StartWorker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = time.time()
    key = tmp_path / "audit.pem"
    generate(key)
    ports = {"worker": free_port(), "auditor": free_port(), "analytics": free_port()}
    # The worker leaves the trail's work to the auditor, as `make up` runs them.
    s = settings.model_copy(update={
        "metrics_port": ports["worker"], "audit_key": key,
        "audit_relay_interval": 0.0, "report_interval": 0.0,
    })  # fmt: skip
    monkeypatch.setenv("CROUPIER_LOG_FORMAT", "json")
    worker = worker_factory(s)
    procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for name, argv in {"auditor": ("audit", "run"), "analytics": ("analytics", "run")}.items():
        log = tmp_path / f"{name}.log"
        env = {**os.environ, **settings_env(s), "CROUPIER_METRICS_PORT": str(ports[name]),
               "CROUPIER_AUDIT_CHECKPOINT_INTERVAL": "1", "CROUPIER_GGR_REFRESH_SECONDS": "1",
               "CROUPIER_AUDIT_PUBLIC_KEY": str(public_file(key))}  # fmt: skip
        with open(log, "wb") as out:
            procs[name] = (subprocess.Popen([sys.executable, "-m", "croupier", *argv], env=env,
                                            stdout=out, stderr=subprocess.STDOUT), log)  # fmt: skip
    try:
        for name, port in ports.items():
            url = f"http://127.0.0.1:{port}/readyz"
            wait_for(lambda u=url: readyz_ok(u), timeout=120, what=f"the {name} ready")  # type: ignore[misc]
        check_traffic(s, ports)
        check_dashboard_metrics(ports)
        for proc, _ in procs.values():
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        assert worker.terminate() == 0
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    assert any(line["message"] == "[^Worker]: Ready" for line in json_lines(worker.log))
    auditor = json_lines(procs["auditor"][1])
    assert any(line["message"] == "auditor: running" for line in auditor)
    assert any(line["message"].startswith("audit checkpoint") for line in auditor)
    analytics = json_lines(procs["analytics"][1])
    assert any(line["message"].startswith("analytics sink: consuming") for line in analytics)
    # The ClickHouse front, refused a users file that is not there, says so in a JSON line.
    front = subprocess.run(
        [sys.executable, "-m", "sinks.clickhouse.server", "--path", str(tmp_path / "ch"),
         "--port", str(free_port()), "--users", str(tmp_path / "missing.json")],
        env={**os.environ, "CROUPIER_LOG_FORMAT": "json"}, capture_output=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert front.returncode == 1
    (tmp_path / "front.log").write_bytes(front.stdout + front.stderr)
    errors = [line for line in json_lines(tmp_path / "front.log") if line["level"] == "ERROR"]
    assert errors and errors[0]["logger"] == "sinks.clickhouse.server"
    assert time.time() - started < 600


def check_traffic(s: Settings, ports: dict[str, int]) -> None:
    T = s.topic
    live_at = datetime.now(UTC).replace(microsecond=0)
    produce(s, "odds", [
        ("live", alive("live", live_at)),
        ("m-1", odds_change("m-1", {"1x2": {"home": "2.10", "draw": "3.40", "away": "3.60"}})),
        ("m-2", odds_change("m-2", {"1x2": {"home": "1.50", "draw": "4.00", "away": "6.00"}})),
    ])  # fmt: skip
    produce(s, "players", [*joined("p-1"), *joined("p-2")])
    wait_for(lambda: done(s, "players") == 4 and done(s, "odds") == 3, timeout=60,
             what="players and odds")  # fmt: skip
    produce(s, "payments", [("p-1", payment("deposit", "pay-1", "p-1", "100.00")),
                            ("p-2", payment("deposit", "pay-2", "p-2", "20.00"))])  # fmt: skip
    wait_for(lambda: done(s, "payments") == 2, timeout=60, what="payments")
    bets = [
        ("p-1", bet("b-1", "p-1", "10.00", [("m-1", "1x2", "home", "2.10")])),
        ("p-2", bet("b-2", "p-2", "5.00", [("m-1", "1x2", "home", "2.10")])),
        ("p-1", bet("b-3", "p-1", "4.00", [("m-2", "1x2", "home", "1.50")])),
        ("p-1", b'{"bet_id": "b-x", '),  # malformed: a dead letter
    ]
    produce(s, "bets", bets)
    wait_for(lambda: done(s, "bets") == len(bets), timeout=60, what="bets")

    w = scrape(ports["worker"])
    # New names, and the old ones beside them for one release.
    assert value(w, "croupier_flow_batch_events_sum", flow="bets") == len(bets)
    assert value(w, "croupier_flow_batch_size_sum", flow="bets") == len(bets)
    assert value(w, "croupier_sink_batch_events_sum", sink="ledger.bets") == 3
    assert value(w, "croupier_sink_batch_size_sum", sink="ledger.bets") == 3
    assert family(w, "croupier_role_info") == {(("role", "worker"),): 1.0}
    assert value(w, "croupier_feed_last_alive_timestamp_seconds", producer="live") == (
        live_at.timestamp()
    )
    assert value(w, "croupier_feed_up", producer="live") == 1
    assert value(w, "croupier_dead_letters_total", topic=T("bets"), reason="malformed_json") == 1
    assert value(w, "croupier_ready") == 1

    def lag_measured() -> bool:
        got = scrape(ports["worker"])
        new, old = (family(got, n) for n in ("croupier_consumer_lag_messages",
                                             "croupier_consumer_lag"))  # fmt: skip
        return bool(new) and new == old and all(v == 0 for v in new.values())

    wait_for(lag_measured, timeout=30, what="the lag gauges")

    # The auditor: the trail relayed, the reports published, a checkpoint signed.
    def caught_up() -> bool:
        a = scrape(ports["auditor"])
        reports = family(a, "croupier_report_lag_records")
        return (
            value(a, "croupier_audit_relay_backlog_records") == 0
            and value(a, "croupier_report_derive_backlog_records") == 0
            and reports == {(("jurisdiction", "UK"),): 0.0}
            and (value(a, "croupier_audit_last_checkpoint_timestamp_seconds") or 0) > 0
        )

    wait_for(caught_up, timeout=60, what="the auditor caught up")
    a = scrape(ports["auditor"])
    checkpoint = query(s, "SELECT extract(epoch FROM max(created_at)) FROM audit_checkpoints")
    signed = value(a, "croupier_audit_last_checkpoint_timestamp_seconds") or 0.0
    # The scrape came first: a checkpoint signed since may be the latest now.
    assert float(checkpoint[0][0]) - 5 < signed <= float(checkpoint[0][0])
    assert value(a, "croupier_platform_up") == 1
    assert value(a, "croupier_audit_last_checkpoint_verified") == 1  # against the pinned key
    # Open liability: 10 x 1.10 + 5 x 1.10 on m-1, 4 x 0.50 on m-2; nothing booked yet.
    assert family(a, "croupier_open_liability") == {
        (("currency", "EUR"), ("market", "m-1/1x2")): 16.5,
        (("currency", "EUR"), ("market", "m-2/1x2")): 2.0,
    }
    assert family(a, "croupier_ggr_today") == {}

    # m-1 settles: home lost. Its liability leaves; the house keeps 15.00 today.
    produce(s, "odds", [("m-1", settlement("m-1", {"1x2": {"home": "lose", "draw": "win",
                                                           "away": "lose"}},
                                           at=datetime.now(UTC).isoformat()))])  # fmt: skip

    def settled() -> bool:
        a = scrape(ports["auditor"])
        return family(a, "croupier_ggr_today") == {(("currency", "EUR"),): 15.0}

    wait_for(settled, timeout=60, what="GGR after the settlement")
    a = scrape(ports["auditor"])
    assert family(a, "croupier_open_liability") == {
        (("currency", "EUR"), ("market", "m-2/1x2")): 2.0
    }
    # The analytics sink's lag, measured by the sink, agrees with the group's own offsets.
    wait_for(lambda: value(scrape(ports["analytics"]), "croupier_analytics_lag_messages") == 0
             and analytics_lag(s) == 0, timeout=60, what="analytics caught up")  # fmt: skip
    assert family(scrape(ports["analytics"]), "croupier_role_info") == {
        (("role", "analytics"),): 1.0
    }


def check_dashboard_metrics(ports: dict[str, int]) -> None:
    """Every metric the Grafana dashboard and the alert rules use is served."""
    served: set[str] = set()
    for port in ports.values():
        text = scrape_text(port)
        served |= {name for name, _ in parse(text)}
        for declared in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
            name, kind = declared
            served.add(name)
            if kind == "histogram":
                served |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    used: set[str] = set()
    board = json.loads((ROOT / "ops" / "grafana" / "croupier.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    exprs += re.findall(r"expr: (?:>-\n)?([^\n]+(?:\n {10}[^\n]+)*)",
                        (ROOT / "ops" / "prometheus" / "alerts.yml").read_text())  # fmt: skip
    for expr in exprs:
        used |= set(re.findall(r"\bcroupier_[a-z_]+\b", expr))
    assert len(used) >= 15
    missing = used - served
    assert not missing, f"used by ops/ but not served: {sorted(missing)}"
