"""``croupier status`` without a worker: parsing, quantiles, sums across processes, rates;
the metrics module's per-batch counting; the stack's choice of metrics ports."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest

from croupier.cli import main
from croupier.stack import Stack, StackConfig
from croupier.status import Endpoint, aggregate, find_endpoints, parse, quantile
from streams import metrics

WORKER_A = """\
# TYPE croupier_events_consumed_total counter
croupier_events_consumed_total{topic="bets"} 100.0
croupier_events_consumed_total{topic="odds"} 10.0
# TYPE croupier_consumer_lag gauge
croupier_consumer_lag{partition="0",topic="bets"} 3.0
croupier_consumer_lag{partition="1",topic="bets"} 4.0
# TYPE croupier_decisions_total counter
croupier_decisions_total{flow="bets",reason="",status="accepted"} 80.0
croupier_decisions_total{flow="bets",reason="odds_changed",status="rejected"} 20.0
# TYPE croupier_dead_letters_total counter
croupier_dead_letters_total{reason="malformed_json",topic="bets"} 1.0
# TYPE croupier_sink_batch_seconds histogram
croupier_sink_batch_seconds_bucket{le="0.01",sink="ledger.bets"} 0.0
croupier_sink_batch_seconds_bucket{le="0.1",sink="ledger.bets"} 4.0
croupier_sink_batch_seconds_bucket{le="+Inf",sink="ledger.bets"} 4.0
croupier_sink_batch_seconds_count{sink="ledger.bets"} 4.0
croupier_sink_batch_seconds_sum{sink="ledger.bets"} 0.2
# TYPE croupier_sink_batch_size histogram
croupier_sink_batch_size_count{sink="ledger.bets"} 4.0
croupier_sink_batch_size_sum{sink="ledger.bets"} 100.0
# TYPE croupier_feed_up gauge
croupier_feed_up{producer="live"} 0.0
# TYPE croupier_feed_alive_age_seconds gauge
croupier_feed_alive_age_seconds{producer="live"} 30.0
# TYPE croupier_process_info gauge
croupier_process_info{pid="111",role="worker"} 1.0
"""


def endpoint(name: str, *texts: str) -> Endpoint:
    return Endpoint(name, f"http://127.0.0.1/{name}", scrapes=[parse(t) for t in texts])


def test_parse_keys_samples_by_name_and_sorted_labels() -> None:
    samples = parse(WORKER_A)
    assert samples["croupier_events_consumed_total", (("topic", "bets"),)] == 100
    key = ("croupier_sink_batch_seconds_bucket", (("le", "+Inf"), ("sink", "ledger.bets")))
    assert samples[key] == 4


def test_quantile_interpolates_within_the_bucket_as_prometheus_does() -> None:
    buckets = {0.01: 0.0, 0.1: 4.0, float("inf"): 4.0}
    assert quantile(0.5, buckets) == pytest.approx(0.055)  # half way into (0.01, 0.1]
    assert quantile(0.99, buckets) == pytest.approx(0.01 + 0.09 * 0.99)
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None  # nothing observed
    # Beyond the last finite bound: that bound, as histogram_quantile says.
    assert quantile(0.99, {0.1: 1.0, float("inf"): 10.0}) == 0.1


def test_quantiles_from_real_histogram_output() -> None:
    registry = CollectorRegistry()
    h = Histogram("x_seconds", "x", buckets=metrics.SECONDS, registry=registry)
    for v in [0.003] * 50 + [0.2] * 49 + [4.0]:
        h.observe(v)
    samples = parse(generate_latest(registry).decode())
    buckets = {
        float(dict(labels)["le"]): value
        for (name, labels), value in samples.items()
        if name == "x_seconds_bucket"
    }
    p50, p99 = quantile(0.5, buckets), quantile(0.99, buckets)
    assert p50 is not None and 0.0025 < p50 <= 0.005
    assert p99 is not None and 0.1 < p99 <= 0.25


def test_aggregate_sums_processes_and_takes_rates_from_the_second_scrape() -> None:
    a2 = WORKER_A.replace('{topic="bets"} 100.0', '{topic="bets"} 150').replace(
        'status="accepted"} 80.0', 'status="accepted"} 120'
    )
    b = (
        WORKER_A.replace('pid="111"', 'pid="222"')
        .replace('croupier_feed_up{producer="live"} 0.0', 'croupier_feed_up{producer="live"} 1.0')
        .replace('alive_age_seconds{producer="live"} 30.0', 'alive_age_seconds{producer="live"} 2')
    )
    report = aggregate(
        [endpoint("a", WORKER_A, a2), endpoint("b", b, b), Endpoint("c", "http://x", error="no")],
        2.0,
    )
    bets = report["topics"]["bets"]
    assert bets == {"events": 250, "per_second": 25.0, "lag": 14}
    assert report["topics"]["odds"] == {"events": 20, "per_second": 0.0, "lag": None}
    assert report["decisions"] == [
        {"flow": "bets", "status": "accepted", "reason": None, "total": 200, "per_second": 20.0},
        {"flow": "bets", "status": "rejected", "reason": "odds_changed", "total": 40,
         "per_second": 0.0},
    ]  # fmt: skip
    assert report["dead_letters"] == [
        {"topic": "bets", "reason": "malformed_json", "total": 2, "per_second": 0.0}
    ]
    sink = report["sinks"]["ledger.bets"]
    assert sink["batches"] == 8 and sink["mean_size"] == 25.0
    assert sink["p50_ms"] == pytest.approx(55.0)
    assert sink["recent_batches"] == 0 and sink["recent_p50_ms"] is None
    # Any process that sees the producer up says it is up; the freshest heartbeat wins.
    assert report["feeds"] == {"live": {"up": True, "alive_age_seconds": 2.0}}
    procs = [(p["name"], p["pid"], p["role"], p["up"], p["error"]) for p in report["processes"]]
    assert procs == [("a", 111, "worker", True, None), ("b", 222, "worker", True, None),
                     ("c", None, None, False, "no")]  # fmt: skip


def test_decisions_and_dead_letters_are_counted_per_batch() -> None:
    def count(flow: str, status: str, reason: str) -> float:
        labels = {"flow": flow, "status": status, "reason": reason}
        return REGISTRY.get_sample_value("croupier_decisions_total", labels) or 0.0

    before = count("unit", "rejected", "odds_changed"), count("unit", "accepted", "")
    metrics.count_decisions("unit", [
        (b"p", b'{"bet_id":"b","status":"rejected","reason":"odds_changed","odds":null}'),
        (b"p", b'{"bet_id":"c","status":"rejected","reason":"odds_changed","odds":null}'),
        (b"p", b'{"bet_id":"d","status":"accepted","reason":null,"odds":"2.10"}'),
    ])  # fmt: skip
    assert count("unit", "rejected", "odds_changed") - before[0] == 2
    assert count("unit", "accepted", "") - before[1] == 1
    # The casino answers' code is in "error".
    metrics.count_decisions(
        "unit-casino", [(b"p", b'{"status":"rejected","error":"round_closed"}')]
    )
    assert count("unit-casino", "rejected", "round_closed") == 1
    metrics.count_dead_letters([("t", "invalid"), ("t", "invalid"), ("u", "malformed_json")])
    letters = {"topic": "t", "reason": "invalid"}
    assert REGISTRY.get_sample_value("croupier_dead_letters_total", letters) == 2


def test_endpoints_come_from_url_then_env_then_the_stacks_file(tmp_path: Path) -> None:
    found, where = find_endpoints(["http://h:1/metrics"], {"CROUPIER_METRICS_URLS": "x"})
    assert (where, [e.url for e in found]) == ("--url", ["http://h:1/metrics"])
    found, where = find_endpoints([], {"CROUPIER_METRICS_URLS": "http://a/m, http://b/m"})
    assert (where, [e.url for e in found]) == (
        "CROUPIER_METRICS_URLS",
        ["http://a/m", "http://b/m"],
    )
    (tmp_path / "metrics.json").write_text(json.dumps({
        "worker-1": {"url": "http://127.0.0.1:9400/metrics", "pid": os.getpid()},
        "worker-2": {"url": "http://127.0.0.1:9401/metrics", "pid": 2**22 + 7},  # no such pid
    }))  # fmt: skip
    found, where = find_endpoints([], {"CROUPIER_STACK_DIR": str(tmp_path)})
    assert where == str(tmp_path / "metrics.json")
    assert [(e.name, e.running) for e in found] == [("worker-1", True), ("worker-2", False)]


def test_status_exits_3_when_nothing_is_listed_or_nothing_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CROUPIER_METRICS_URLS", raising=False)
    monkeypatch.setenv("CROUPIER_STACK_DIR", str(tmp_path))
    assert main(["status"]) == 3
    assert str(tmp_path / "metrics.json") in capsys.readouterr().err
    (tmp_path / "metrics.json").write_text(
        json.dumps({"worker-1": {"url": "http://127.0.0.1:9/metrics", "pid": 2**22 + 7}})
    )
    assert main(["status", "--interval", "0.1"]) == 3
    assert "none of the 1 process(es)" in capsys.readouterr().err
    assert main(["status", "--interval", "0"]) == 2


def test_the_stack_gives_each_process_the_next_free_metrics_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        base = busy.getsockname()[1]
        busy.listen()
        stack = Stack(StackConfig(root=tmp_path, metrics_port=base))
        env1 = stack._metrics_env("worker-1")
        port1 = int(env1["CROUPIER_METRICS_PORT"])
        assert port1 > base  # the base is taken
        stack._record_endpoint("worker-1", os.getpid(), env1)
        env2 = stack._metrics_env("worker-2")
        assert int(env2["CROUPIER_METRICS_PORT"]) > port1  # not worker-1's, though unbound
        stack._record_endpoint("worker-2", os.getpid(), env2)
    assert stack.endpoints()["worker-1"] == {
        "url": f"http://127.0.0.1:{port1}/metrics",
        "pid": os.getpid(),
    }
    assert set(stack.endpoints()) == {"worker-1", "worker-2"}
    off = Stack(StackConfig(root=tmp_path, metrics_port=0))
    assert off._metrics_env("worker-1") == {"CROUPIER_METRICS_PORT": "0"}
    assert StackConfig.from_env({"CROUPIER_METRICS_PORT": "9500"}).metrics_port == 9500
