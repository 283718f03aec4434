"""``croupier status``: the workers' metrics at a glance.

Scrapes every metrics endpoint twice, ``--interval`` seconds apart, sums across processes
and prints: the processes (pid, endpoint, answering), events/s and lag per topic,
decisions by flow, status and reason (totals and /s), dead letters, batch latency p50/p99
per flow and sink (from the histograms' buckets, as Prometheus's ``histogram_quantile``
does), and feed health per odds producer.

Where the endpoints are: ``--url`` (repeatable), else ``CROUPIER_METRICS_URLS``
(comma-separated), else ``<CROUPIER_STACK_DIR>/metrics.json``, written by ``croupier stack
up``. Exit 0 when every process answers, 1 when some do not, 3 when none runs or none
answers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from rich.console import Console

EXIT_OK, EXIT_FAILED, EXIT_NOT_RUNNING = 0, 1, 3
TIMEOUT = 2.0  # seconds an endpoint has to answer

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


@dataclass
class Endpoint:
    """A process's metrics endpoint, and what it said."""

    name: str
    url: str
    pid: int | None = None
    running: bool = True  # False: its recorded pid is gone, so it is not asked
    scrapes: list[Samples] = field(default_factory=list)
    error: str | None = None

    @property
    def up(self) -> bool:
        return self.running and self.error is None and len(self.scrapes) == 2


def parse(text: str) -> Samples:
    """Prometheus text exposition as ``{(sample name, sorted labels): value}``."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile of a histogram given as cumulative counts per upper bound ``le``,
    interpolated linearly within a bucket (Prometheus's ``histogram_quantile``)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def _label(labels: Labels, name: str) -> str:
    return dict(labels).get(name, "")


def total(samples: Iterable[Samples], name: str, *by: str) -> dict[tuple[str, ...], float]:
    """Sum the samples called ``name`` across processes, grouped by the labels ``by``."""
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for one in samples:
        for (sample, labels), value in one.items():
            if sample == name:
                out[tuple(_label(labels, b) for b in by)] += value
    return dict(out)


def histograms(samples: Iterable[Samples], name: str, by: str) -> dict[str, dict[float, float]]:
    """The ``name`` histogram's cumulative buckets per label ``by``, summed across processes."""
    out: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for (key, le), value in total(samples, f"{name}_bucket", by, "le").items():
        out[key][float(le)] += value
    return {k: dict(v) for k, v in out.items()}


def _delta(after: dict[Any, float], before: dict[Any, float]) -> dict[Any, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def _rate(delta: float, seconds: float) -> float:
    return round(delta / seconds, 3) if seconds > 0 else 0.0


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _latencies(
    first: list[Samples], second: list[Samples], name: str, by: str
) -> dict[str, dict[str, Any]]:
    now, then = histograms(second, f"{name}_seconds", by), histograms(first, f"{name}_seconds", by)
    # The new name, else the deprecated one (a process of the previous release).
    sizes = total(second, f"{name}_events_sum", by) or total(second, f"{name}_size_sum", by)
    counts = total(second, f"{name}_events_count", by) or total(second, f"{name}_size_count", by)
    out: dict[str, dict[str, Any]] = {}
    for key, buckets in sorted(now.items()):
        recent = _delta(buckets, then.get(key, {}))
        out[key] = {
            "batches": int(max(buckets.values(), default=0)),
            "p50_ms": _ms(quantile(0.5, buckets)),
            "p99_ms": _ms(quantile(0.99, buckets)),
            "recent_batches": int(max(recent.values(), default=0)),
            "recent_p50_ms": _ms(quantile(0.5, recent)),
            "recent_p99_ms": _ms(quantile(0.99, recent)),
            "mean_size": round(sizes.get((key,), 0.0) / counts[(key,)], 1)
            if counts.get((key,))
            else None,
        }
    return out


def aggregate(endpoints: list[Endpoint], seconds: float) -> dict[str, Any]:
    """The report: every answering process's two scrapes, summed, with rates over ``seconds``."""
    live = [e for e in endpoints if e.up]
    first, second = [e.scrapes[0] for e in live], [e.scrapes[1] for e in live]

    events = total(second, "croupier_events_consumed_total", "topic")
    events_before = total(first, "croupier_events_consumed_total", "topic")
    # The new name, else the deprecated one (a process of the previous release).
    lag = total(second, "croupier_consumer_lag_messages", "topic") or total(
        second, "croupier_consumer_lag", "topic"
    )
    topics = {
        t: {
            "events": int(events.get((t,), 0)),
            "per_second": _rate(events.get((t,), 0) - events_before.get((t,), 0), seconds),
            "lag": int(lag[(t,)]) if (t,) in lag else None,
        }
        for (t,) in sorted(set(events) | set(lag))
    }

    def counted(name: str, *by: str) -> list[dict[str, Any]]:
        now, then = total(second, name, *by), total(first, name, *by)
        return [
            {
                **{b: (v or None) if b == "reason" else v for b, v in zip(by, key, strict=True)},
                "total": int(value),
                "per_second": _rate(value - then.get(key, 0.0), seconds),
            }
            for key, value in sorted(now.items())
        ]

    up = total(second, "croupier_feed_up", "producer")
    feeds: dict[str, dict[str, Any]] = {}
    for one in second:  # any process that sees a producer up says it is up; the freshest age
        for (sample, labels), value in one.items():
            if sample != "croupier_feed_alive_age_seconds":
                continue
            producer = _label(labels, "producer")
            feed = feeds.setdefault(producer, {"up": False, "alive_age_seconds": value})
            feed["alive_age_seconds"] = round(min(feed["alive_age_seconds"], value), 3)
    for (producer,), value in up.items():
        feeds.setdefault(producer, {"up": False, "alive_age_seconds": None})["up"] = value > 0
    last = total(second, "croupier_feed_last_alive_timestamp_seconds", "producer")
    for (producer,), _ in last.items():  # summed across processes: take the freshest
        seen = [v for s in second for (n, labels), v in s.items()
                if n == "croupier_feed_last_alive_timestamp_seconds"
                and _label(labels, "producer") == producer]  # fmt: skip
        feeds.setdefault(producer, {"up": False, "alive_age_seconds": None})[
            "last_alive"] = max(seen)  # fmt: skip

    return {
        "interval_seconds": round(seconds, 3),
        "processes": [_process(e) for e in endpoints],
        "topics": topics,
        "decisions": counted("croupier_decisions_total", "flow", "status", "reason"),
        "dead_letters": counted("croupier_dead_letters_total", "topic", "reason"),
        "flows": _latencies(first, second, "croupier_flow_batch", "flow"),
        "decision_latency": _latencies(first, second, "croupier_decision_latency", "flow"),
        "sinks": _latencies(first, second, "croupier_sink_batch", "sink"),
        "feeds": dict(sorted(feeds.items())),
        "platform": platform(second),
    }


def _one(samples: list[Samples], name: str) -> float | None:
    """The largest value of an unlabelled gauge any process serves (None: nobody does)."""
    found = [v for s in samples for (n, _), v in s.items() if n == name]
    return max(found) if found else None


def platform(samples: list[Samples]) -> dict[str, Any]:
    """What the auditor and the analytics sink read from the platform (``Platform`` in
    ``streams/metrics.py``): the audit trail's state, report lag, open liability, GGR
    today, the analytics sink's lag."""

    def by(name: str, *labels: str) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {}
        for s in samples:
            for (n, found), value in s.items():
                if n == name:
                    out[tuple(_label(found, k) for k in labels)] = value
        return out

    liability = sorted(by("croupier_open_liability", "market", "currency").items(),
                       key=lambda kv: (-kv[1], kv[0]))  # fmt: skip
    return {
        "audit": {
            "relay_backlog": _one(samples, "croupier_audit_relay_backlog_records"),
            "derive_backlog": _one(samples, "croupier_report_derive_backlog_records"),
            "last_checkpoint": _one(samples, "croupier_audit_last_checkpoint_timestamp_seconds"),
            "last_checkpoint_verified": _one(samples, "croupier_audit_last_checkpoint_verified"),
            "key_alerts": sum(total(samples, "croupier_audit_key_alerts_total").values()),
            "report_lag": {
                j: v
                for (j,), v in sorted(by("croupier_report_lag_records", "jurisdiction").items())
            },
        },
        "liability": [{"market": m, "currency": c, "amount": v} for (m, c), v in liability],
        "ggr_today": {c: v for (c,), v in sorted(by("croupier_ggr_today", "currency").items())},
        "analytics_lag": _one(samples, "croupier_analytics_lag_messages"),
    }


def _process(e: Endpoint) -> dict[str, Any]:
    """A process's line: its role and pid as it reports them (``croupier_process_info``)."""
    role, pid, ready = None, e.pid, None
    for (sample, labels), value in (e.scrapes[-1] if e.scrapes else {}).items():
        if sample == "croupier_process_info":
            role, pid = _label(labels, "role") or None, int(_label(labels, "pid") or 0) or pid
        elif sample == "croupier_ready":
            ready = value == 1
    error = None if e.up else e.error or ("not running" if not e.running else "no answer")
    from croupier.redact import redact

    return {"name": redact(e.name), "url": redact(e.url), "pid": pid, "role": role, "up": e.up,
            "ready": ready if e.up else False,
            "error": None if error is None else redact(error)}  # fmt: skip


# -- finding and asking the endpoints ------------------------------------------------------


def find_endpoints(urls: list[str], environ: Mapping[str, str]) -> tuple[list[Endpoint], str]:
    """The endpoints to ask, and where they were found (for the message when there are none)."""
    from croupier.stack.process import pid_alive

    if urls:
        return [Endpoint(_name(u), u) for u in urls], "--url"
    listed = [u.strip() for u in environ.get("CROUPIER_METRICS_URLS", "").split(",") if u.strip()]
    if listed:
        return [Endpoint(_name(u), u) for u in listed], "CROUPIER_METRICS_URLS"
    path = Path(environ.get("CROUPIER_STACK_DIR", ".stack")) / "metrics.json"
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        recorded = {}
    found = []
    for name, entry in sorted(recorded.items()):
        pid = entry.get("pid")
        running = not isinstance(pid, int) or pid_alive(pid)
        found.append(Endpoint(name, str(entry["url"]), pid, running=running))
    return found, str(path)


def _name(url: str) -> str:
    """An endpoint's short name: its address, without a scheme, a user or a password."""
    bare = url.removeprefix("http://").removeprefix("https://").removesuffix("/metrics")
    return bare.rpartition("@")[2]


def scrape(endpoint: Endpoint) -> None:
    """Ask ``endpoint`` once; keep what it said, or why it did not answer."""
    if not endpoint.running or endpoint.error is not None:
        return
    try:
        with urllib.request.urlopen(endpoint.url, timeout=TIMEOUT) as response:
            endpoint.scrapes.append(parse(response.read().decode()))
    except (OSError, ValueError) as exc:
        endpoint.error = str(getattr(exc, "reason", exc))


def scrape_twice(endpoints: list[Endpoint], seconds: float) -> float:
    """Scrape all endpoints, wait ``seconds``, scrape again; the time between the rounds."""
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(endpoints)))) as pool:
        list(pool.map(scrape, endpoints))
        started = time.monotonic()
        time.sleep(seconds)
        list(pool.map(scrape, endpoints))
        return time.monotonic() - started


# -- the command ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        print("croupier status: --interval must be positive", file=sys.stderr)
        return 2
    endpoints, where = find_endpoints(args.url, os.environ)
    if not endpoints:
        print(f"croupier status: no metrics endpoints listed (looked at {where}); is the "
              "stack up (`croupier stack up`) with CROUPIER_METRICS_PORT not 0?",
              file=sys.stderr)  # fmt: skip
        return EXIT_NOT_RUNNING
    if not any(e.running for e in endpoints):
        print(f"croupier status: none of the {len(endpoints)} process(es) listed in {where} "
              "runs", file=sys.stderr)  # fmt: skip
        if args.json:
            print(json.dumps(aggregate(endpoints, 0.0), indent=2))
        return EXIT_NOT_RUNNING
    seconds = scrape_twice(endpoints, args.interval)
    report = aggregate(endpoints, seconds)
    report["source"] = where
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    answering = sum(e.up for e in endpoints)
    if answering == 0:
        print(f"croupier status: no endpoint answers (listed in {where})", file=sys.stderr)
        return EXIT_NOT_RUNNING
    return EXIT_OK if answering == len(endpoints) else EXIT_FAILED


def _num(value: float | None, places: int | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if places is None else f"{value:.{places}f}"


def print_report(r: dict[str, Any], console: Console | None = None) -> None:
    """The report as a few small tables: rich ones, verdicts coloured, on a terminal (or
    ``console``), plain columns when piped."""
    from croupier.commands.output import say, table

    def section(title: str, headers: list[str], rows: list[list[str]], **how: Any) -> None:
        print()
        table(headers, rows, title=title, console=console, **how)

    procs = r["processes"]
    rows = []
    for p in procs:
        state = "up" if p["up"] else f"DOWN ({p['error']})"
        if p["up"] and p.get("ready") is False:
            state = "up, NOT READY (its /readyz says why)"
        rows.append([p["name"], p["role"] or "", str(p["pid"] or "-"), p["url"], state])
    table(
        ["process", "role", "pid", "url", "state"],
        rows,
        right=(2,),
        verdicts=4,
        title=f"processes: {sum(p['up'] for p in procs)} of {len(procs)} answer "
        f"(from {r.get('source')}; rates over {r['interval_seconds']:g} s)",
        console=console,
    )
    if r["topics"]:
        section(
            "topics",
            ["topic", "events", "/s", "lag"],
            right=(1, 2, 3),
            rows=[
                [topic, str(t["events"]), f"{t['per_second']:g}", _num(t["lag"])]
                for topic, t in r["topics"].items()
            ],
        )
    if r["decisions"]:
        section(
            "decisions",
            ["flow", "status", "reason", "total", "/s"],
            right=(3, 4),
            rows=[
                [d["flow"], d["status"], d["reason"] or "", str(d["total"]), f"{d['per_second']:g}"]
                for d in r["decisions"]
            ],
        )
    if r["dead_letters"]:
        section(
            "dead letters",
            ["topic", "reason", "total", "/s"],
            right=(2, 3),
            rows=[
                [d["topic"], d["reason"], str(d["total"]), f"{d['per_second']:g}"]
                for d in r["dead_letters"]
            ],
        )
    for title, batches in (("flow batches (ms)", r["flows"]), ("sink batches (ms)", r["sinks"])):
        if not batches:
            continue
        section(
            title,
            ["name", "p50", "p99", "now p50", "now p99", "batches", "mean size"],
            right=range(1, 7),
            rows=[
                [
                    name,
                    _num(b["p50_ms"], 1),
                    _num(b["p99_ms"], 1),
                    _num(b["recent_p50_ms"], 1),
                    _num(b["recent_p99_ms"], 1),
                    str(b["batches"]),
                    _num(b["mean_size"]),
                ]
                for name, b in batches.items()
            ],
        )
    if r["feeds"]:
        section(
            "feeds",
            ["producer", "state", "last alive (s ago)"],
            right=(2,),
            verdicts=1,
            rows=[
                [producer, "up" if f["up"] else "SUSPENDED", _num(f["alive_age_seconds"], 1)]
                for producer, f in r["feeds"].items()
            ],
        )
    platform = r.get("platform") or {}
    audit = platform.get("audit") or {}
    if audit.get("relay_backlog") is not None:
        verified = {None: "-", 1.0: "verified", 0.0: "NOT VERIFIED"}.get(
            audit.get("last_checkpoint_verified"), "-"
        )
        signed = audit.get("last_checkpoint") or 0
        age = f"{time.time() - signed:.0f} s ago" if signed else "none yet"
        derive = _num(audit.get("derive_backlog"))
        print()
        say(
            f"audit: relay backlog {_num(audit['relay_backlog'])}, reports to derive "
            f"{derive}, last checkpoint {age} ({verified})",
            "bold red" if verified == "NOT VERIFIED" else "",
            console=console,
        )
        if audit.get("report_lag"):
            table(
                ["reports", "to publish"],
                right=(1,),
                console=console,
                rows=[[f"reports.{j}", _num(behind)] for j, behind in audit["report_lag"].items()],
            )
    if platform.get("analytics_lag") is not None:
        print(f"\nanalytics lag: {_num(platform['analytics_lag'])} messages")
    for currency, amount in (platform.get("ggr_today") or {}).items():
        print(f"GGR today {currency}: {amount:.2f}")
    if platform.get("liability"):
        section(
            "open liability (top markets)",
            ["market", "currency", "amount"],
            right=(2,),
            rows=[
                [i["market"], i["currency"], f"{i['amount']:.2f}"] for i in platform["liability"]
            ],
        )
