"""The Prometheus metrics of Croupier's processes: defined once here, updated per batch.

Every metric is named ``croupier_*`` and listed in the README's operations section. The
flows update them once per batch, never per message (``streams/flow.py``, the flows'
sink calls, ``streams/context.py`` for dead letters); the consumer lag is refreshed by a
timer, and feed health is computed when scraped. ``serve`` starts the endpoint
(``/metrics`` on 127.0.0.1:``CROUPIER_METRICS_PORT``) in a daemon thread; a port of 0
means no endpoint (the metrics are then only counted, which costs next to nothing).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from schemas.partitioning import key_of

log = logging.getLogger(__name__)

LAG_INTERVAL = 2.0  # seconds between refreshes of the consumer-lag gauge

# Latencies of a batch: from a few milliseconds (a quiet ledger) to seconds (a backlog).
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 50_000)

EVENTS = Counter(
    "croupier_events_consumed", "Events the flows consumed, per source topic", ["topic"]
)
FLOW_SECONDS = Histogram(
    "croupier_flow_batch_seconds",
    "Time to process one batch of a flow, end to end (decode, rules, sink, publish)",
    ["flow"],
    buckets=SECONDS,
)
DECISION_SECONDS = Histogram(
    "croupier_decision_latency_seconds",
    "Decision latency per message: from its Kafka timestamp (when its producer sent it) to "
    "its answer acknowledged by Kafka",
    ["flow"],
    buckets=SECONDS,
)
FLOW_STEP_SECONDS = Histogram(
    "croupier_flow_step_seconds",
    "Time one step of a flow's batch took: handle (decode, rules, the transaction), "
    "flush (Kafka acknowledging the outputs)",
    ["flow", "step"],
    buckets=SECONDS,
)
FLOW_EVENTS = Histogram(
    "croupier_flow_batch_events", "Events in one batch of a flow", ["flow"], buckets=SIZES
)
FLOW_SIZE_OLD = Histogram(
    "croupier_flow_batch_size",
    "Deprecated: croupier_flow_batch_events (removed in the next release)",
    ["flow"],
    buckets=SIZES,
)
DECISIONS = Counter(
    "croupier_decisions",
    "Decisions published, by flow, status and reason code (empty when none)",
    ["flow", "status", "reason"],
)
DEAD_LETTERS = Counter(
    "croupier_dead_letters",
    "Dead letters published, by source topic and reason",
    ["topic", "reason"],
)
WRONGLY_KEYED = Counter(
    "croupier_wrongly_keyed",
    "Inbound messages whose Kafka key is not the one the partitioning rule gives "
    "(schemas.partitioning): processed, but maybe out of order with their player's others",
    ["topic"],
)
TIMER_FAILURES = Counter(
    "croupier_timer_failures",
    "Timer ticks that failed (logged whole; the next tick tries again), by timer",
    ["timer"],
)
SINK_SECONDS = Histogram(
    "croupier_sink_batch_seconds",
    "Time of one batch's write to a sink (a PostgreSQL ledger transaction, the audit relay, "
    "a ClickHouse insert), retries included",
    ["sink"],
    buckets=SECONDS,
)
SINK_EVENTS = Histogram(
    "croupier_sink_batch_events",
    "Records in one batch written to a sink",
    ["sink"],
    buckets=SIZES,
)
SINK_SIZE = Histogram(
    "croupier_sink_batch_size",
    "Deprecated: croupier_sink_batch_events (removed in the next release)",
    ["sink"],
    buckets=SIZES,
)
LAG_MESSAGES = Gauge(
    "croupier_consumer_lag_messages",
    "Messages not yet processed, per topic and partition this process consumes",
    ["topic", "partition"],
)
LAG = Gauge(
    "croupier_consumer_lag",
    "Deprecated: croupier_consumer_lag_messages (removed in the next release)",
    ["topic", "partition"],
)
ANALYTICS_LAG = Gauge(
    "croupier_analytics_lag_messages",
    "Records on the audit topic the analytics sink (ClickHouse) has not committed yet",
)
AUDIT_KEY_ALERTS = Counter(
    "croupier_audit_key_alerts",
    "Audit key alerts: checkpoints signed by a key other than the pinned one "
    "(what=checkpoint), and passes whose own signing key is not the pinned one (what=signer)",
    ["what"],
)
ROLE = Gauge(
    "croupier_role_info",
    "This Croupier process's role (1); the pid is process_* (process_start_time_seconds)",
    ["role"],
)
INFO = Gauge(
    "croupier_process_info",
    "Deprecated: croupier_role_info (its pid label changes at every restart; removed in the "
    "next release)",
    ["role", "pid"],
)


class _Twin:
    """A histogram observed under its new name and its deprecated one (one release)."""

    def __init__(self, new: Histogram, old: Histogram) -> None:
        self.new, self.old = new, old

    def labels(self, *values: str) -> _Twin:
        return _Twin(self.new.labels(*values), self.old.labels(*values))

    def observe(self, value: float) -> None:
        self.new.observe(value)
        self.old.observe(value)


FLOW_SIZE = _Twin(FLOW_EVENTS, FLOW_SIZE_OLD)

# A decision's status and its reason code (``error`` in a casino answer), in the compact
# JSON pydantic writes: every outbound model writes both fields, and no newline.
_DECIDED = re.compile(rb'"status":"([a-z_]*)"[^\n]*?"(?:reason|error)":(?:null|"([a-z_]*)")')


def count_decisions(flow: str, records: Iterable[tuple[bytes | None, bytes]]) -> None:
    """Count a batch's published decisions (``(key, JSON)``) by status and reason.

    One regular-expression pass over the batch's records, joined, is several times cheaper
    than decoding them; the counter then moves once per distinct label set.
    """
    found = _DECIDED.findall(b"\n".join(value for _, value in records))
    for (status, reason), n in Tally(found).items():
        DECISIONS.labels(flow, status.decode(), reason.decode()).inc(n)


def count_dead_letters(letters: Iterable[tuple[str, str]]) -> None:
    """Count a batch's dead letters, given as ``(source topic, reason)``."""
    for (topic, reason), n in Tally(letters).items():
        DEAD_LETTERS.labels(topic, reason).inc(n)


@contextlib.contextmanager
def sink_batch(sink: str, size: int) -> Iterator[None]:
    """Time one batch written to ``sink`` (a ``with`` around the awaited call)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        observe_sink(sink, time.perf_counter() - started, size)


def observe_sink(sink: str, seconds: float, size: int) -> None:
    """Record one batch written to ``sink`` that took ``seconds``."""
    SINK_SECONDS.labels(sink).observe(seconds)
    SINK_EVENTS.labels(sink).observe(size)
    SINK_SIZE.labels(sink).observe(size)


def set_lag(topic: str, lags: dict[int, int], before: set[int]) -> set[int]:
    """Set ``topic``'s lag for the partitions in ``lags``; drop those ``before`` no longer
    has (moved to another worker, so that sums across workers count each once)."""
    for partition in before - set(lags):
        for gauge in (LAG_MESSAGES, LAG):
            with contextlib.suppress(KeyError):
                gauge.remove(topic, str(partition))
    for partition, behind in lags.items():
        for gauge in (LAG_MESSAGES, LAG):
            gauge.labels(topic, str(partition)).set(max(0, behind))
    return set(lags)


class FeedHealth(Collector):
    """``croupier_feed_up`` and ``croupier_feed_last_alive_timestamp_seconds`` per odds
    producer (and the deprecated ``croupier_feed_alive_age_seconds``), computed when
    scraped from the last ``alive`` each producer sent."""

    def __init__(self) -> None:
        self.last_alive: dict[str, datetime] = {}
        self.timeout = 20.0

    def alive(self, producer: str, at: datetime) -> None:
        if producer not in self.last_alive or at > self.last_alive[producer]:
            self.last_alive[producer] = at

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "croupier_feed_up",
            "1 when the odds producer sent an alive within CROUPIER_FEED_TIMEOUT, else 0 "
            "(its markets are suspended)",
            labels=["producer"],
        )
        last = GaugeMetricFamily(
            "croupier_feed_last_alive_timestamp_seconds",
            "When the odds producer's last alive was sent (its timestamp, Unix seconds)",
            labels=["producer"],
        )
        age = GaugeMetricFamily(
            "croupier_feed_alive_age_seconds",
            "Deprecated: time() - croupier_feed_last_alive_timestamp_seconds (removed in the "
            "next release)",
            labels=["producer"],
        )
        now = datetime.now(UTC)
        for producer, at in sorted(dict(self.last_alive).items()):
            seconds = (now - at).total_seconds()
            up.add_metric([producer], 1.0 if seconds <= self.timeout else 0.0)
            last.add_metric([producer], at.timestamp())
            age.add_metric([producer], seconds)
        yield up
        yield last
        yield age


FEEDS = FeedHealth()
REGISTRY.register(FEEDS)

# -- health: /healthz and /readyz beside /metrics -----------------------------------------

Check = Callable[[], bool]
CHECKS: dict[str, Check] = {}  # name -> is it so now (a raising check counts as not)


def add_check(name: str, check: Check) -> None:
    """Make ``/readyz`` (and ``croupier_ready``) depend on ``check`` too (replacing one of
    the same name): a flow consuming, a view recovered, the database answering."""
    CHECKS[name] = check


def readiness() -> tuple[bool, dict[str, bool]]:
    """Every check's result now, and whether all hold (none registered: not ready)."""
    results: dict[str, bool] = {}
    for name, check in sorted(dict(CHECKS).items()):
        try:
            results[name] = bool(check())
        except Exception:  # a check that cannot tell says "not ready"
            results[name] = False
    return bool(results) and all(results.values()), results


def pg_reachable(dsn: str, timeout: int = 2, fresh: float = 1.0) -> Check:
    """A check that PostgreSQL at ``dsn`` answers ``SELECT 1`` within ``timeout`` seconds.

    An answer is reused for ``fresh`` seconds: a dashboard polling every second, a
    Prometheus and ``/readyz`` together open one connection a second at most.
    """
    last: list[tuple[float, bool]] = []

    def check() -> bool:
        import psycopg

        if last and time.monotonic() - last[0][0] < fresh:
            return last[0][1]
        try:
            with psycopg.connect(dsn, connect_timeout=timeout) as conn:
                conn.execute("SELECT 1")
            ok = True
        except psycopg.Error:
            ok = False
        last[:] = [(time.monotonic(), ok)]
        return ok

    return check


class Readiness(Collector):
    """``croupier_ready``: 1 when every readiness check holds, else 0; and per check."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ok, results = readiness()
        ready = GaugeMetricFamily(
            "croupier_ready", "1 when this process is ready (its /readyz answers 200), else 0"
        )
        ready.add_metric([], 1.0 if ok else 0.0)
        yield ready
        each = GaugeMetricFamily(
            "croupier_ready_check", "1 when this readiness check holds, else 0", labels=["check"]
        )
        for name, held in results.items():
            each.add_metric([name], 1.0 if held else 0.0)
        yield each


REGISTRY.register(Readiness())


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The endpoint: ``/healthz`` (the process answers), ``/readyz`` (200 when ready, else
    503; a JSON body names each check), anything else Prometheus's exposition."""
    path = environ.get("PATH_INFO", "")
    if path == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"ok\n"]
    if path == "/readyz":
        ok, results = readiness()
        body = json.dumps({"ready": ok, "checks": results}, sort_keys=True).encode() + b"\n"
        status = "200 OK" if ok else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json")])
        return [body]
    metrics_app: Callable[..., Iterable[bytes]] = make_wsgi_app()
    return metrics_app(environ, start_response)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log: a scrape every few seconds is not news."""


_served: list[int] = []


def serve(port: int, role: str, bind: str = "127.0.0.1") -> bool:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``bind``:``port`` in a daemon
    thread (once a process).

    ``bind`` is 127.0.0.1 everywhere but inside a container, whose own network is the only
    one it can reach (compose sets ``CROUPIER_METRICS_BIND=0.0.0.0`` there and publishes
    no port). False, after logging why, when the port cannot be bound: the process goes
    on without an endpoint (``croupier status`` then reports it as not answering).
    """
    ROLE.labels(role).set(1)
    INFO.labels(role, str(os.getpid())).set(1)
    if port <= 0 or _served:
        return bool(_served)
    try:
        server = make_server(bind, port, app, server_class=_Server, handler_class=_Quiet)
    except OSError as exc:
        log.error("metrics endpoint not started on %s:%d: %s", bind, port, exc)
        return False
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    _served.append(port)
    log.info("metrics on http://%s:%d/metrics (health: /healthz, /readyz)", bind, port)
    return True


# -- the platform's state, read from PostgreSQL when scraped (one process serves it) ---------


class Platform(Collector):
    """The audit relay's backlog, the last signed checkpoint, report lag per jurisdiction,
    open liability per market (the top ``top``), GGR today per currency and dead letters by
    reason, read from PostgreSQL at each scrape (``sinks/postgres/ops.py``).

    Registered by the auditor only, so each series has one source however many workers
    run. Amounts are exact ``numeric`` in the database and become floats only here, for
    display: no decision reads them back. A database that does not answer within its time
    limit yields ``croupier_platform_up 0`` and nothing else.
    """

    def __init__(
        self,
        dsn: str,
        schema: str,
        top: int = 10,
        fresh: float = 5.0,
        pin: Any = None,
        ggr_fresh: float = 60.0,
    ) -> None:
        self.dsn, self.schema, self.top, self.fresh, self.pin = dsn, schema, top, fresh, pin
        # GGR today reads every transaction of the day: at most once a minute, not every
        # ``fresh`` seconds (a day's figure a minute old; the other signals stay fresh).
        self.ggr_fresh = ggr_fresh
        self._last: tuple[float, Any] | None = None  # (when, PlatformState) read last
        self._ggr: tuple[float, dict[Any, Any]] | None = None  # (when, GGR) read last
        self._lock = threading.Lock()

    def _state(self) -> Any:
        """The state read at most ``fresh`` seconds ago, else read now (one reader at a
        time: scrapes that arrive together share one read)."""
        from sinks.postgres.ops import read_state

        with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < self.fresh:
                return self._last[1]
            now = time.monotonic()
            stale = self._ggr is None or now - self._ggr[0] >= self.ggr_fresh
            state = read_state(self.dsn, self.schema, top=self.top, pin=self.pin, ggr=stale)
            if stale and not state.ggr_unread:
                self._ggr = (now, state.ggr_today)
            elif self._ggr is not None:  # the last figure read, until a new one is
                state.ggr_today = self._ggr[1]
            self._last = (now, state)
            return state

    def describe(self) -> list[GaugeMetricFamily]:
        """Nothing up front: registering must not query the database."""
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "croupier_platform_up", "1 when the platform's state was read from PostgreSQL"
        )
        try:
            state = self._state()
        except Exception as exc:  # a scrape never fails for the database: it says so
            log.warning("platform state not read: %s", exc)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        families = {
            "backlog": GaugeMetricFamily(
                "croupier_audit_relay_backlog_records",
                "Audit records committed but not yet published to the audit topic",
            ),
            "checkpoint": GaugeMetricFamily(
                "croupier_audit_last_checkpoint_timestamp_seconds",
                "When the last signed audit checkpoint was made (Unix seconds; 0: none yet)",
            ),
            "verified": GaugeMetricFamily(
                "croupier_audit_last_checkpoint_verified",
                "1 when the last checkpoint's signature is the pinned key's "
                "(CROUPIER_AUDIT_PUBLIC_KEY), else 0; absent before the first checkpoint",
            ),
            "report": GaugeMetricFamily(
                "croupier_report_lag_records",
                "Report records derived but not yet published on reports.<jurisdiction>",
                labels=["jurisdiction"],
            ),
            "derive": GaugeMetricFamily(
                "croupier_report_derive_backlog_records",
                "Audit records the reporter has not read yet (all jurisdictions)",
            ),
            "liability": GaugeMetricFamily(
                "croupier_open_liability",
                f"What the house pays beyond the stakes if every open bet on the market wins "
                f"(accumulators count on each leg's market), the top {self.top} markets per "
                "currency, in major units",
                labels=["market", "currency"],
            ),
            "ggr": GaugeMetricFamily(
                "croupier_ggr_today",
                "Gross gaming revenue since 00:00 UTC (settled stakes minus payouts, casino "
                "debits minus credits), per currency, in major units",
                labels=["currency"],
            ),
            "letters": GaugeMetricFamily(
                "croupier_dead_letters_stored",
                "Dead letters stored in PostgreSQL, by source topic and reason",
                labels=["topic", "reason"],
            ),
        }
        families["backlog"].add_metric([], float(state.relay_backlog))
        families["checkpoint"].add_metric([], state.last_checkpoint)
        families["derive"].add_metric([], float(state.derive_backlog))
        if state.checkpoint_verified is not None:
            families["verified"].add_metric([], 1.0 if state.checkpoint_verified else 0.0)
        for jurisdiction, behind in state.report_lag.items():
            families["report"].add_metric([jurisdiction], float(behind))
        for (market, currency), amount in state.liability.items():
            families["liability"].add_metric([market, currency], float(amount))
        for currency, amount in state.ggr_today.items():
            families["ggr"].add_metric([currency], float(amount))
        for (topic, reason), n in state.dead_letters.items():
            families["letters"].add_metric([topic, reason], float(n))
        yield from families.values()


_platform: list[Platform] = []


def serve_platform(
    dsn: str, schema: str, top: int = 10, pin: Any = None, ggr_fresh: float = 60.0
) -> None:
    """Serve ``Platform`` from this process (once); ``pin`` is the audit key's ``Pin``;
    GGR today is read at most every ``ggr_fresh`` seconds."""
    if not _platform:
        _platform.append(Platform(dsn, schema, top, pin=pin, ggr_fresh=ggr_fresh))
        REGISTRY.register(_platform[0])


def count_wrongly_keyed(messages: Iterable[tuple[str, bytes | None, object]]) -> None:
    """Count a batch's decoded inbound messages, given as ``(topic, key, model)``, whose
    key is not the partitioning rule's (a message no rule covers is not counted)."""
    wrong: Tally[str] = Tally()
    for topic, key, model in messages:
        try:
            expected = key_of(model)
        except ValueError:
            continue
        if key is None or key != expected.encode():
            wrong[topic] += 1
    for topic, n in wrong.items():
        WRONGLY_KEYED.labels(topic).inc(n)
