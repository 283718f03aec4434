"""Write croupier.json, the Grafana dashboard of Croupier (run: python ops/grafana/generate.py).

Every panel is one or more PromQL queries over the metrics of ``streams/metrics.py``;
``tests/integration/test_health_platform.py`` checks each metric named here exists in a
live scrape, and that croupier.json is what this script writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DS = {"type": "prometheus", "uid": "croupier-prometheus"}

# (title, kind, unit, [(legend, expr)])
PANELS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    ("Bets per second", "timeseries", "reqps", [
        ("bets/s", 'sum(rate(croupier_events_consumed_total{topic=~"(.*\\\\.)?bets"}[1m]))'),
    ]),
    ("Decisions by reason (per second)", "timeseries", "reqps", [
        ("{{flow}} {{status}} {{reason}}",
         "sum by (flow, status, reason) (rate(croupier_decisions_total[1m]))"),
    ]),
    ("Lag per flow (messages)", "timeseries", "short", [
        ("{{topic}}", "sum by (topic) (croupier_consumer_lag_messages)"),
    ]),
    ("Decision latency p50 / p99 (per message)", "timeseries", "s", [
        ("p50 {{flow}}", "histogram_quantile(0.5, sum by (le, flow) "
                         "(rate(croupier_decision_latency_seconds_bucket[5m])))"),
        ("p99 {{flow}}", "histogram_quantile(0.99, sum by (le, flow) "
                         "(rate(croupier_decision_latency_seconds_bucket[5m])))"),
    ]),
    ("Batch time p50 / p99", "timeseries", "s", [
        ("p50 {{flow}}", "histogram_quantile(0.5, sum by (le, flow) "
                         "(rate(croupier_flow_batch_seconds_bucket[5m])))"),
        ("p99 {{flow}}", "histogram_quantile(0.99, sum by (le, flow) "
                         "(rate(croupier_flow_batch_seconds_bucket[5m])))"),
    ]),
    ("Feed health per producer", "stat", "none", [
        ("{{producer}} up", "max by (producer) (croupier_feed_up)"),
        ("{{producer}} alive age (s)",
         "time() - max by (producer) (croupier_feed_last_alive_timestamp_seconds)"),
    ]),
    ("Open liability, top markets", "bargauge", "none", [
        ("{{market}} {{currency}}", "topk(10, croupier_open_liability)"),
    ]),
    ("Dead letters (last hour)", "timeseries", "short", [
        ("{{topic}} {{reason}}",
         "sum by (topic, reason) (increase(croupier_dead_letters_total[1h]))"),
    ]),
    ("Audit trail", "stat", "none", [
        ("relay backlog", "max(croupier_audit_relay_backlog_records)"),
        ("last checkpoint age (s)",
         "time() - max(croupier_audit_last_checkpoint_timestamp_seconds)"),
        ("report lag {{jurisdiction}}", "max by (jurisdiction) (croupier_report_lag_records)"),
        ("key alerts", "sum(croupier_audit_key_alerts_total)"),
    ]),
    ("Analytics lag (messages)", "timeseries", "short", [
        ("analytics", "max(croupier_analytics_lag_messages)"),
    ]),
    ("GGR today", "stat", "none", [
        ("{{currency}}", "max by (currency) (croupier_ggr_today)"),
    ]),
    ("Readiness", "stat", "none", [
        ("{{instance}}", "croupier_ready"),
    ]),
    ("Sink batch p99", "timeseries", "s", [
        ("{{sink}}", "histogram_quantile(0.99, sum by (le, sink) "
                     "(rate(croupier_sink_batch_seconds_bucket[5m])))"),
    ]),
]  # fmt: skip


def dashboard() -> dict[str, Any]:
    panels = []
    for n, (title, kind, unit, targets) in enumerate(PANELS):
        panels.append({
            "id": n + 1, "type": kind, "title": title, "datasource": DS,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (n % 2), "y": 8 * (n // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(65 + i), "datasource": DS, "expr": expr,
                         "legendFormat": legend} for i, (legend, expr) in enumerate(targets)],
        })  # fmt: skip
    return {
        "uid": "croupier", "title": "Croupier", "schemaVersion": 39, "version": 1,
        "refresh": "10s", "time": {"from": "now-1h", "to": "now"}, "tags": ["croupier"],
        "timezone": "utc", "panels": panels,
    }  # fmt: skip


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    Path(__file__).with_name("croupier.json").write_text(render())
