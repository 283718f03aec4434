"""End-to-end bets benchmark: producer to decision on the local stack, under odds churn.

    .venv/bin/python bench/bets.py [--players 10000] [--events 500] [--markets 4]
        [--bets 50000] [--rate 1000] [--rates 100,500,1000] [--duration 20] [--workers 2]
        [--quick] [--keep]

Needs Kafka and PostgreSQL (the stack ``make up`` runs, via ``.stack/env``, or the
service variables). It never touches the stack's own flows: it creates its own topics
(prefix ``bench<tag>.``), consumer group (``croupier-bench-<tag>``) and PostgreSQL schema
(``bench_<tag>``), and starts its own ``croupier worker`` processes on them.

Set-up: ``--players`` players register and deposit; ``--events`` events are priced, each
with ``--markets`` markets (thousands of markets); a feed producer sends ``alive``
heartbeats every two seconds and, for the whole run, re-prices random events at
``--odds-rate`` odds_change messages a second (every market of the event moves). A
warm-up lets every worker join and every table fill. Then three phases, each timed on
this machine's clock (the same process produces the bets and consumes the decisions):

1. throughput: ``--bets`` bets produced as fast as possible; bets/s = bets / time from
   the first send to the last bet's first decision on ``bet-decisions``;
2. latency: ``--rate`` bets/s for ``--duration`` seconds; per bet, decision latency =
   when its decision is consumed minus when the bet was sent (p50, p90, p99, max);
   also up to when the worker published it (the decision's Kafka timestamp); with
   ``--rates``, the phase runs at each rate in turn (``latency_by_rate`` in the JSON);
3. burst: ``--burst-base`` bets/s, then ``--burst-factor`` times that for
   ``--burst-seconds``, then the base rate again until the backlog is gone: every bet
   must have exactly one decision; reports the backlog, the drain time (end of burst to
   the last pre-burst-end bet decided) and the drain rate (decisions/s meanwhile).

Bets: 1.00 EUR stakes by uniformly chosen players, 80 % singles and 20 % accumulators
of two or three events, 90 % ``odds_change: any`` and 10 % ``none`` at the price last
published (the churn makes some of those ``odds_changed``). Prints a summary and writes
``bench/results/bets.json`` (``bets-quick.json`` with ``--quick``). At the end the
workers stop, the ledger is reconciled, and the topics, consumer group and schema are
deleted (``--keep`` leaves them, and the worker logs, for inspection).

The audit trail's background work (the relay to ``audit``, the regulator reports,
checkpoints) runs as the stack runs it: in one ``croupier audit run`` process beside the
workers, whose own timers for it are off; ``--auditor workers`` runs it in the workers'
timers instead. After the throughput phase the bench also times how long the auditor
takes to publish the trail and the reports that phase left behind. Exit status 1
when a bet was lost or decided twice, or the ledger does not reconcile; a goal missed
is reported, not an error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpu import cpu_by_role  # noqa: E402

from config.kafka import librdkafka_conf, make_producer  # noqa: E402
from config.settings import Settings  # noqa: E402
from config.stackenv import load_stack_env  # noqa: E402
from croupier.sim.run import FeedClock  # noqa: E402
from croupier.stack import AUDITOR_TIMERS_OFF, WORKER_READY  # noqa: E402
from sinks.postgres.ledger import Ledger  # noqa: E402
from sinks.postgres.migrate import migrate  # noqa: E402
from streams.auditor import READY  # noqa: E402
from streams.flow import flow_groups  # noqa: E402
from topologies.topics import create_topics, topic_specs  # noqa: E402

FEED = "live"
HEARTBEAT_SECONDS = 2.0
CENT = Decimal("0.01")
MARKETS: list[tuple[str, tuple[str, ...]]] = [
    ("1x2", ("home", "draw", "away")),
    ("total_2.5", ("over", "under")),
    ("btts", ("yes", "no")),
    ("handicap_-1", ("home", "away")),
]


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# -- the feed --------------------------------------------------------------------------------


# FeedClock: the simulator's (feed timestamps strictly increasing).


def market_names(n: int) -> list[tuple[str, tuple[str, ...]]]:
    extra = [(f"total_{k}.5", ("over", "under")) for k in range(3, 3 + max(0, n - len(MARKETS)))]
    return (MARKETS + extra)[:n]


class Book:
    """The prices this feed has published, per event, market and outcome."""

    def __init__(self, events: int, markets: int, rng: random.Random) -> None:
        self.rng = rng
        self.events = [f"e{n}" for n in range(events)]
        self.markets = market_names(markets)
        self.prices: dict[str, dict[str, dict[str, Decimal]]] = {
            e: {m: {o: Decimal(rng.randint(130, 600)).scaleb(-2) for o in outs}
                for m, outs in self.markets}
            for e in self.events
        }  # fmt: skip
        self._lock = threading.Lock()

    @staticmethod
    def _price(value: Decimal) -> Decimal:
        return max(Decimal("1.01"), value.quantize(CENT, ROUND_HALF_UP))

    def odds_change(self, event: str, at: str, *, move: bool) -> bytes:
        """The event's odds_change (every market), after a random move when ``move``."""
        with self._lock:
            book = self.prices[event]
            if move:
                for outcomes in book.values():
                    for o, p in outcomes.items():
                        step = Decimal(self.rng.randint(95, 105)).scaleb(-2)
                        outcomes[o] = self._price(p * step)
            markets = [{"market_id": m, "status": "active",
                        "outcomes": [{"outcome_id": o, "odds": str(p)} for o, p in outs.items()]}
                       for m, outs in book.items()]  # fmt: skip
        return json.dumps({"type": "odds_change", "event_id": event, "producer": FEED,
                           "timestamp": at, "markets": markets}).encode()  # fmt: skip

    def leg(self, event: str, rng: random.Random) -> dict[str, str]:
        market, outcomes = rng.choice(self.markets)
        outcome = rng.choice(outcomes)
        with self._lock:
            price = self.prices[event][market][outcome]
        return {"event_id": event, "market_id": market, "outcome_id": outcome, "odds": str(price)}


class Paced(threading.Thread):
    """Calls ``tick`` ``rate`` times a second until stopped (a background producer)."""

    def __init__(self, name: str, rate: float, tick: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.rate, self.tick = rate, tick
        self.stopping = threading.Event()
        self.count = 0
        self.errors = 0

    def run(self) -> None:
        start = time.monotonic()
        while not self.stopping.is_set():
            due = int((time.monotonic() - start) * self.rate) + 1
            while self.count < due and not self.stopping.is_set():
                try:
                    self.tick()
                except BufferError:
                    self.errors += 1
                self.count += 1
            self.stopping.wait(max(0.0, start + self.count / self.rate - time.monotonic()))

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


# -- Kafka and PostgreSQL ------------------------------------------------------------------


def produce_all(producer: Any, topic: str, items: Iterable[tuple[str, bytes]]) -> dict[int, int]:
    """Produce and flush; the highest offset delivered per partition."""
    last: dict[int, int] = {}
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            last[msg.partition()] = max(last.get(msg.partition(), -1), msg.offset())

    for key, value in items:
        send(producer, topic, key, value, on_delivery)
    producer.flush(60)
    if errors:
        raise SystemExit(f"producing to {topic} failed: {errors[:3]}")
    return last


def send(producer: Any, topic: str, key: str, value: bytes, on_delivery: Any = None) -> None:
    """Produce one message, waiting for room when the local queue is full."""
    while True:
        try:
            if on_delivery is None:
                producer.produce(topic, key=key.encode(), value=value)
            else:
                producer.produce(topic, key=key.encode(), value=value, on_delivery=on_delivery)
            break
        except BufferError:
            producer.poll(0.01)
    producer.poll(0)


def wait_done(
    dsn: str, schema: str, group: str, topic: str, last: dict[int, int], timeout: float
) -> None:
    """Wait until the workers recorded every delivered offset as done (consumer_progress)."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, options=f"-c search_path={schema}", autocommit=True) as conn:
        while True:
            rows = conn.execute(
                """SELECT partition, next_offset FROM consumer_progress
                    WHERE consumer_group = %s AND topic = %s""",
                (group, topic),
            ).fetchall()
            done = {int(p): int(o) for p, o in rows}
            if all(done.get(p, 0) > o for p, o in last.items()):
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"workers did not finish {topic} in {timeout:.0f}s")
            time.sleep(0.2)


class DecisionReader(threading.Thread):
    """Reads ``bet-decisions`` from the start; the first time each bet's decision is seen."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="decisions", daemon=True)
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.consumer = Consumer({
            **librdkafka_conf(settings),
            "group.id": f"bench-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        })  # fmt: skip
        topic = settings.topic("bet-decisions")
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.seen: dict[str, float] = {}  # bet_id -> wall time the decision was consumed
        self.published: dict[str, float] = {}  # bet_id -> the decision's Kafka timestamp
        self.decided: Counter[str] = Counter()  # phase -> distinct bets decided
        # phase -> a second, different decision for a bet (decided twice: a failure)
        self.duplicates: Counter[str] = Counter()
        # phase -> the same decision published again byte for byte (a batch replayed after
        # a crash, or read back by the repair timer: the stored answer, not a new decision)
        self.republished: Counter[str] = Counter()
        self.digests: dict[str, bytes] = {}  # bet_id -> digest of its first decision
        self.outcomes: dict[str, Counter[str]] = {}  # phase -> accepted / rejection reason
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            msg = self.consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            now = time.time()
            doc = json.loads(msg.value() or b"{}")
            bet_id = str(doc.get("bet_id"))
            phase = bet_id.split("-", 1)[0]
            digest = hashlib.blake2b(msg.value() or b"", digest_size=16).digest()
            if bet_id in self.seen:
                if self.digests.get(bet_id) == digest:
                    self.republished[phase] += 1
                else:
                    self.duplicates[phase] += 1
                continue
            self.digests[bet_id] = digest
            self.seen[bet_id] = now
            kind, stamp = msg.timestamp()
            if kind != 0:  # TIMESTAMP_NOT_AVAILABLE
                self.published[bet_id] = stamp / 1000
            self.outcomes.setdefault(phase, Counter())[doc.get("reason") or "accepted"] += 1
            self.decided[phase] += 1

    def wait(self, phases: Sequence[str], count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while sum(self.decided[p] for p in phases) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)
        self.consumer.close()


# -- workers ---------------------------------------------------------------------------------


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int = 0

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            tail = self.log.read_bytes()[-3000:].decode(errors="replace")
            raise SystemExit(f"worker exited {self.proc.returncode}:\n{tail}")
        return self.log.exists() and WORKER_READY in self.log.read_bytes()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


def worker_env(s: Settings, data_dir: Path) -> dict[str, str]:
    """The environment that makes a ``croupier worker`` see the bench's settings."""
    mine = {**s.as_env(), "CROUPIER_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("CROUPIER_")}
    return {**inherited, **mine}


def start_auditor(s: Settings, where: Path, timeout: float = 60) -> Worker:
    """``croupier audit run`` on the bench's settings, ready once its sinks are open."""
    log_path = where / "auditor.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "croupier", "audit", "run"],
            env=worker_env(s, where / "faust"), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    auditor = Worker(proc, log_path)
    deadline = time.monotonic() + timeout
    while not (log_path.exists() and READY.encode() in log_path.read_bytes()):
        auditor.ready()  # raises if it exited
        if time.monotonic() > deadline:
            raise SystemExit(f"auditor not ready in {timeout}s; log {log_path}")
        time.sleep(0.2)
    return auditor


def audit_backlog(s: Settings, upto: dict[str, int] | None = None) -> tuple[int, int]:
    """Audit records not yet on ``audit``, and not yet read by the reporter: of those
    recorded up to ``upto`` (each chain's head then), or of all."""
    import psycopg

    with psycopg.connect(s.pg_dsn.get_secret_value(),
                         options=f"-c search_path={s.pg_schema}") as conn:  # fmt: skip
        rows = conn.execute(
            """SELECT h.chain, h.seq, coalesce(p.seq, 0), coalesce(r.seq, 0)
                 FROM audit_heads h
                 LEFT JOIN audit_published p USING (chain)
                 LEFT JOIN report_progress r USING (chain)"""
        ).fetchall()
    relay = report = 0
    for chain, head, published, read in rows:
        last = head if upto is None else upto.get(chain, 0)
        relay += max(0, last - published)
        report += max(0, last - read)
    return relay, report


def audit_heads(s: Settings) -> dict[str, int]:
    import psycopg

    with psycopg.connect(s.pg_dsn.get_secret_value(),
                         options=f"-c search_path={s.pg_schema}") as conn:  # fmt: skip
        return dict(conn.execute("SELECT chain, seq FROM audit_heads").fetchall())


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_workers(s: Settings, n: int, where: Path, timeout: float = 120) -> list[Worker]:
    workers = []
    for i in range(n):
        log_path = where / f"worker-{i + 1}.log"
        port = free_port()  # each worker's /metrics: the flow's steps, timed
        env = {**worker_env(s, where / "faust"), "CROUPIER_METRICS_PORT": str(port)}
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "croupier", "worker", "--name", f"bench-{i + 1}"],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            )  # fmt: skip
        workers.append(Worker(proc, log_path, port))
    deadline = time.monotonic() + timeout
    while not all(w.ready() for w in workers):
        if time.monotonic() > deadline:
            raise SystemExit(f"workers not ready in {timeout}s; logs in {where}")
        time.sleep(0.2)
    return workers


# -- statistics ----------------------------------------------------------------------------


def stop_all(
    threads: Sequence[Any],
    flushing: Sequence[Any],
    readers: Sequence[Any],
    procs: Sequence[Any],
) -> None:
    """Stop a bench's pacers, flush the feed, stop the readers and the workers."""
    for t in threads:
        t.stop()
    for producer in flushing:
        producer.flush(10)
    for r in readers:
        r.stop()
    for w in procs:
        w.stop()


SLOW_SECONDS = 0.1  # a decision slower than this is listed with when its bet was sent
SLOW_KEPT = 500


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def distribution_ms(values: Iterable[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    if not ms:
        return {}
    return {
        "p50_ms": round(percentile(ms, 50), 1),
        "p90_ms": round(percentile(ms, 90), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "p999_ms": round(percentile(ms, 99.9), 1),
        "max_ms": round(ms[-1], 1),
        "mean_ms": round(sum(ms) / len(ms), 1),
    }


# -- the benchmark -------------------------------------------------------------------------


@dataclass
class Plan:
    players: int
    events: int
    markets: int
    bets: int
    rate: float
    duration: float
    rates: list[float]
    burst_base: float
    burst_factor: float
    burst_before: float
    burst_seconds: float
    burst_after_max: float
    odds_rate: float
    warmup: int
    workers: int
    partitions: int
    batch_max: int
    batch_within: float
    seed: int


@dataclass
class Bench:
    plan: Plan
    settings: Settings
    rng: random.Random
    book: Book
    clock: FeedClock = field(default_factory=FeedClock)
    stamps: dict[str, float] = field(default_factory=dict)  # bet_id -> wall time sent
    players: list[str] = field(default_factory=list)

    def bet(self, bet_id: str, at: str) -> tuple[str, bytes]:
        rng = self.rng
        player = rng.choice(self.players)
        legs = 1 if rng.random() < 0.8 else rng.choice((2, 3))
        events = rng.sample(self.book.events, legs)
        policy = "none" if rng.random() < 0.1 else "any"
        doc = {"bet_id": bet_id, "player_id": player, "placed_at": at, "stake": "1.00",
               "currency": "EUR", "odds_change": policy,
               "selections": [self.book.leg(e, rng) for e in events]}  # fmt: skip
        return player, json.dumps(doc).encode()

    def bets(self, phase: str, n: int, start: int = 0) -> list[tuple[str, str, bytes]]:
        at = self.clock()
        out = []
        for i in range(start, start + n):
            bet_id = f"{phase}-{i}"
            key, value = self.bet(bet_id, at)
            out.append((bet_id, key, value))
        return out

    def produce_paced(
        self,
        producer: Any,
        bets: Sequence[tuple[str, str, bytes]],
        rate: float,
        until: Callable[[], bool] | None = None,
        topic: str | None = None,
    ) -> tuple[int, float]:
        """Send ``bets`` at ``rate`` a second (or until ``until()``) to ``topic`` (the
        settings' ``bets``); (sent, seconds)."""
        topic = topic or self.settings.topic("bets")
        start = time.monotonic()
        sent = 0
        while sent < len(bets):
            due = min(len(bets), int((time.monotonic() - start) * rate) + 1)
            while sent < due:
                bet_id, key, value = bets[sent]
                self.stamps[bet_id] = time.time()
                send(producer, topic, key, value)
                sent += 1
            if until is not None and until():
                break
            pause = start + sent / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        return sent, time.monotonic() - start

    def latencies(self, reader: DecisionReader, ids: Iterable[str]) -> dict[str, Any]:
        consumed, published = [], []
        # The slow decisions (over 100 ms) and when in the phase their bets were sent: a
        # tail in clusters points at a pause somewhere, one spread out at steady queueing.
        slow: list[tuple[float, float]] = []
        first: float | None = None
        for bet_id in ids:
            sent = self.stamps.get(bet_id)
            got = reader.seen.get(bet_id)
            if sent is None or got is None:
                continue
            first = sent if first is None else min(first, sent)
            consumed.append(got - sent)
            if got - sent > SLOW_SECONDS:
                slow.append((sent, got - sent))
            if bet_id in reader.published:
                published.append(reader.published[bet_id] - sent)
        return {"decision": distribution_ms(consumed), "published": distribution_ms(published),
                "slow_from": first,  # the phase's first send (epoch seconds)
                "slow": [(round(at - (first or at), 3), round(ms * 1000, 1))
                         for at, ms in sorted(slow)[:SLOW_KEPT]]}  # fmt: skip


def rate_list(text: str) -> list[float]:
    """``--rates``: comma-separated positive bets/s."""
    try:
        rates = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        rates = []
    if not rates or any(r <= 0 for r in rates):
        msg = f"expected positive numbers separated by commas, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return rates


def parse_args(argv: Sequence[str] | None = None) -> tuple[Plan, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--players", type=int, default=10_000)
    p.add_argument("--events", type=int, default=500)
    p.add_argument("--markets", type=int, default=4, help="markets per event")
    p.add_argument("--bets", type=int, default=50_000, help="bets in the throughput phase")
    p.add_argument("--rate", type=float, default=1_000, help="bets/s in the latency phase")
    p.add_argument("--duration", type=float, default=20, help="seconds of the latency phase")
    p.add_argument("--rates", type=rate_list, default=None,
                   help="latency phase at each of these bets/s in turn, e.g. 100,500,1000 "
                   "(default: --rate alone)")  # fmt: skip
    p.add_argument("--burst-base", type=float, default=None, help="bets/s around the burst "
                   "(default: --rate)")  # fmt: skip
    p.add_argument("--burst-factor", type=float, default=20)
    p.add_argument("--burst-seconds", type=float, default=5)
    p.add_argument("--burst-before", type=float, default=5, help="seconds at base rate first")
    p.add_argument("--burst-after-max", type=float, default=60,
                   help="most seconds at base rate after the burst while it drains")  # fmt: skip
    p.add_argument("--odds-rate", type=float, default=100,
                   help="odds_change messages/s during the run (each moves every market "
                        "of one event)")  # fmt: skip
    p.add_argument("--warmup", type=int, default=2_000, help="bets before measuring")
    p.add_argument("--workers", type=int, default=2, help="croupier worker processes")
    p.add_argument("--partitions", type=int, default=6, help="partitions per topic")
    p.add_argument("--batch-max", type=int, default=None, help="CROUPIER_BATCH_MAX")
    p.add_argument("--batch-within", type=float, default=None, help="CROUPIER_BATCH_WITHIN")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="a short smoke run, small numbers")
    p.add_argument("--keep", action="store_true",
                   help="leave topics, group, schema and worker logs behind")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="results file")
    p.add_argument("--auditor", choices=["process", "workers"], default="process",
                   help="where the audit relay, reports and checkpoints run: one `croupier "
                   "audit run` process (the stack's way) or the workers' timers")  # fmt: skip
    if p.parse_args(argv).quick:  # smaller defaults; options given explicitly still win
        p.set_defaults(players=500, events=100, bets=3_000, rate=200, duration=5,
                       warmup=300, burst_seconds=2, burst_before=2, burst_after_max=30,
                       odds_rate=20)  # fmt: skip
    a = p.parse_args(argv)
    base = Settings()
    plan = Plan(
        players=a.players, events=a.events, markets=a.markets, bets=a.bets, rate=a.rate,
        duration=a.duration, rates=a.rates or [a.rate], burst_base=a.burst_base or a.rate,
        burst_factor=a.burst_factor,
        burst_before=a.burst_before, burst_seconds=a.burst_seconds,
        burst_after_max=a.burst_after_max, odds_rate=a.odds_rate, warmup=a.warmup,
        workers=a.workers, partitions=a.partitions,
        batch_max=a.batch_max or base.batch_max,
        batch_within=a.batch_within or base.batch_within, seed=a.seed,
    )  # fmt: skip
    if a.out is None:
        a.out = ROOT / "bench" / "results" / ("bets-quick.json" if a.quick else "bets.json")
    return plan, a


def bench_settings(plan: Plan, tag: str) -> Settings:
    base = Settings()
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=base.kafka_bootstrap_servers,
        CROUPIER_PG_DSN=base.pg_dsn.get_secret_value(),
        CROUPIER_CLICKHOUSE_URL=base.clickhouse_url,
        CROUPIER_PG_SCHEMA=f"bench_{tag}",
        CROUPIER_APP_ID=f"croupier-bench-{tag}",
        CROUPIER_TOPIC_PREFIX=f"bench{tag}.",
        CROUPIER_TOPIC_PARTITIONS=plan.partitions,
        CROUPIER_BATCH_MAX=plan.batch_max,
        CROUPIER_BATCH_WITHIN=plan.batch_within,
    )


def cleanup(s: Settings, where: Path, *, keep: bool, keep_logs: bool) -> None:
    """Delete the bench's topics, consumer group, schema and (unless ``keep_logs``, as
    after a failure) the workers' logs; ``keep`` deletes nothing."""
    if keep:
        log(f"kept: topics {s.topic_prefix}*, group {s.app_id}, schema {s.pg_schema}, "
            f"logs {where}")  # fmt: skip
        return
    import psycopg
    from confluent_kafka.admin import AdminClient
    from psycopg import sql

    admin = AdminClient(librdkafka_conf(s))
    existing = admin.list_topics(timeout=10).topics
    names = {spec.name for spec in topic_specs(s)}
    names |= {t for t in existing if t.startswith((s.topic_prefix, f"{s.app_id}-"))}
    doomed = sorted(names & set(existing))
    deleting = admin.delete_topics(doomed, operation_timeout=30) if doomed else {}
    for name, future in deleting.items():
        try:
            future.result()
        except Exception as exc:
            log(f"could not delete topic {name}: {exc}")
    for group, future in admin.delete_consumer_groups(
        [s.app_id, *flow_groups(s)], request_timeout=30
    ).items():
        try:
            future.result()
        except Exception as exc:
            log(f"could not delete consumer group {group}: {exc}")
    with psycopg.connect(s.migration_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
            sql.Identifier(s.pg_schema)))  # fmt: skip
    if keep_logs:
        log(f"worker logs kept in {where}")
    else:
        shutil.rmtree(where, ignore_errors=True)
    log(f"deleted {len(doomed)} topics, group {s.app_id}, schema {s.pg_schema}")


def main(argv: Sequence[str] | None = None) -> int:
    load_stack_env()
    plan, args = parse_args(argv)
    tag = uuid.uuid4().hex[:8]
    s = bench_settings(plan, tag)
    where = ROOT / ".stack" / "bench" / tag
    where.mkdir(parents=True, exist_ok=True)
    log(f"bench {tag}: topics {s.topic_prefix}*, group {s.app_id}, schema {s.pg_schema}")
    create_topics(s)
    migrate(s.migration_dsn, s.pg_schema)
    workers: list[Worker] = []
    threads: list[Paced] = []
    readers: list[DecisionReader] = []
    results: dict[str, Any] = {}
    ok = False
    try:
        if args.auditor == "process":
            workers = [start_auditor(s, where)]
            # The stack's way: the workers leave the trail's background work to the auditor.
            quiet = Settings.model_validate({**s.as_env(), **AUDITOR_TIMERS_OFF})
            workers += start_workers(quiet, plan.workers, where)
        else:
            workers = start_workers(s, plan.workers, where)
        log(f"{plan.workers} worker(s) ready, the auditor in "
            f"{'its own process' if args.auditor == 'process' else 'the workers'}; "
            f"logs in {where}")  # fmt: skip
        results, ok = run(plan, s, threads, readers, workers)
    finally:
        for t in threads:
            t.stop()
        for r in readers:
            r.stop()
        for w in workers:
            w.stop()
        reconciled = reconcile(s)
        cleanup(s, where, keep=args.keep, keep_logs=not ok)
    results["reconcile_ok"] = reconciled
    ok = ok and reconciled
    results["ok"] = ok
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    summary(results)
    log(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0 if ok else 1


def reconcile(s: Settings) -> bool:
    ledger = Ledger.connect(s.pg_dsn.get_secret_value(), s.pg_schema)
    try:
        return ledger.reconcile().ok
    finally:
        ledger.close()


@dataclass
class Prepared:
    """A bench schema with funded players, a priced feed, a decision reader, warmed up."""

    bench: Bench
    producer: Any
    feed: Any
    reader: DecisionReader
    warmup: dict[str, Any]


def prepare(
    plan: Plan,
    s: Settings,
    threads: list[Paced],
    readers: list[DecisionReader],
    *,
    warm: bool = True,
) -> Prepared:
    """Register and fund the players, price every event, start the heartbeats (and the
    churn when ``plan.odds_rate``), the decision reader, and (``warm``) the warm-up."""
    rng = random.Random(plan.seed)
    book = Book(plan.events, plan.markets, rng)
    bench = Bench(plan, s, rng, book)
    dsn, schema, group = s.pg_dsn.get_secret_value(), s.pg_schema, s.app_id
    feed = make_producer(s)
    producer = make_producer(s, **{"queue.buffering.max.messages": 1_000_000})

    # Players and deposits.
    t0 = time.monotonic()
    bench.players = [f"p{n}" for n in range(plan.players)]
    at = bench.clock()
    # Registered, with a session open: every jurisdiction's policy requires one to play.
    regs = ((p, json.dumps(event).encode()) for p in bench.players for event in (
        {"type": "registered", "player_id": p, "jurisdiction": "UK", "currency": "EUR",
         "birth_date": "1990-05-01", "timestamp": at},
        {"type": "session_started", "player_id": p, "session_id": f"s-{p}", "timestamp": at},
    ))  # fmt: skip
    wait_done(dsn, schema, group, s.topic("players"),
              produce_all(producer, s.topic("players"), regs), 300)  # fmt: skip
    deps = ((p, json.dumps({"type": "deposit", "payment_id": f"d-{p}", "player_id": p,
                            "amount": "1000000.00", "currency": "EUR",
                            "timestamp": at}).encode()) for p in bench.players)  # fmt: skip
    wait_done(dsn, schema, group, s.topic("payments"),
              produce_all(producer, s.topic("payments"), deps), 300)  # fmt: skip
    log(f"{plan.players} players registered and funded in {time.monotonic() - t0:.1f}s")

    # The feed: heartbeats, every event priced, then churn for the rest of the run.
    odds_topic = s.topic("odds")

    def beat() -> None:
        alive = {"type": "alive", "producer": FEED, "timestamp": bench.clock()}
        send(feed, odds_topic, FEED, json.dumps(alive).encode())

    beat()
    threads.append(Paced("alive", 1 / HEARTBEAT_SECONDS, beat))
    threads[-1].start()
    t0 = time.monotonic()
    prices = ((e, book.odds_change(e, bench.clock(), move=False)) for e in book.events)
    wait_done(dsn, schema, group, odds_topic, produce_all(feed, odds_topic, prices), 300)
    log(f"{plan.events} events x {plan.markets} markets priced in {time.monotonic() - t0:.1f}s")
    churn_rng = random.Random(plan.seed + 1)

    def churn() -> None:
        event = churn_rng.choice(book.events)
        send(feed, odds_topic, event, book.odds_change(event, bench.clock(), move=True))

    if plan.odds_rate > 0:
        threads.append(Paced("churn", plan.odds_rate, churn))
        threads[-1].start()

    reader = DecisionReader(s)
    readers.append(reader)
    reader.start()
    ready = Prepared(bench, producer, feed, reader, {})
    if warm:
        ready.warmup = warm_up(ready, "w", plan.warmup, max(plan.rate, 500))
    return ready


def warm_up(
    ready: Prepared, phase: str, n: int, rate: float, topic: str | None = None
) -> dict[str, Any]:
    """Every worker has joined, every table is full, every pool is open: ``n`` bets of
    ``phase`` sent at ``rate`` (to ``topic``, the settings' ``bets``) and all decided."""
    bench, reader = ready.bench, ready.reader
    warm = bench.bets(phase, n)
    bench.produce_paced(ready.producer, warm, rate, topic=topic)
    ready.producer.flush(30)
    if not reader.wait([phase], len(warm), 120):
        raise SystemExit(f"warm-up: {reader.decided[phase]} of {len(warm)} decided in 120s")
    outcomes = dict(reader.outcomes.get(phase, {}))
    log(f"warm-up: {len(warm)} bets decided ({outcomes})")
    return {"bets": len(warm), "outcomes": outcomes}


def flow_steps(workers: Sequence[Worker], flow: str = "bets") -> dict[str, float]:
    """The workers' summed ``croupier_flow_step_seconds`` (and batch counts) of ``flow``."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for w in workers:
        if not w.metrics_port:
            continue
        try:
            url = f"http://127.0.0.1:{w.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as r:
                text = r.read().decode()
        except OSError:
            continue
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("flow") != flow:
                    continue
                if sample.name == "croupier_flow_step_seconds_sum":
                    key = sample.labels["step"]
                elif sample.name in ("croupier_flow_batch_size_sum",
                                     "croupier_flow_batch_size_count"):  # fmt: skip
                    key = sample.name.removeprefix("croupier_flow_batch_")
                else:
                    continue
                out[key] = out.get(key, 0.0) + sample.value
    return out


def steps_per_batch(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean milliseconds of each step per batch, and the mean batch size, between readings."""
    batches = after.get("size_count", 0) - before.get("size_count", 0)
    if batches <= 0:
        return {}
    out: dict[str, float] = {k: round((after[k] - before.get(k, 0)) * 1000 / batches, 2)
                             for k in ("handle", "flush") if k in after}  # fmt: skip
    out["batches"] = batches
    out["bets_per_batch"] = round((after["size_sum"] - before.get("size_sum", 0)) / batches, 1)
    return out


def cpu_per_1000(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    """CPU milliseconds per 1,000 bets of each part between two ``cpu_by_role`` readings
    (a process that ended in between is not counted)."""
    per = {k: round((after[k] - before.get(k, 0.0)) * 1e6 / max(n, 1), 1) for k in after}
    per["total"] = round(sum(per.values()), 1)
    return per


def cores_busy(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, float]:
    """Cores each part kept busy between two ``cpu_by_role`` readings ``seconds`` apart."""
    busy = {k: round((after[k] - before.get(k, 0.0)) / max(seconds, 1e-9), 3) for k in after}
    busy["total"] = round(sum(busy.values()), 2)
    return busy


def run(
    plan: Plan,
    s: Settings,
    threads: list[Paced],
    readers: list[DecisionReader],
    workers: Sequence[Worker] = (),
) -> tuple[dict[str, Any], bool]:
    """Set up the players and the feed, then the three phases; (results, all good)."""
    ready = prepare(plan, s, threads, readers)
    bench, producer, feed, reader = ready.bench, ready.producer, ready.feed, ready.reader
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "plan": asdict(plan),
        "markets_total": plan.events * plan.markets,
        "warmup": ready.warmup,
    }
    ok = True

    # 1. Throughput.
    load = bench.bets("t", plan.bets)
    cpu_before, steps_before = cpu_by_role(), flow_steps(workers)
    start = time.time()
    for bet_id, key, value in load:
        bench.stamps[bet_id] = time.time()
        send(producer, s.topic("bets"), key, value)
    producer.flush(60)
    produced_s = time.time() - start
    complete = reader.wait(["t"], len(load), max(120, plan.bets / 200))
    last = max((reader.seen[b] for b, _, _ in load if b in reader.seen), default=start)
    elapsed = last - start
    cpu = cpu_per_1000(cpu_before, cpu_by_role(), reader.decided["t"])
    steps = steps_per_batch(steps_before, flow_steps(workers))
    thr = {
        "bets": len(load),
        "decided": reader.decided["t"],
        "duplicates": reader.duplicates["t"],
        "republished": reader.republished["t"],
        "produce_s": round(produced_s, 2),
        "seconds": round(elapsed, 2),
        "bets_per_s": round(reader.decided["t"] / elapsed) if elapsed > 0 else 0,
        "outcomes": dict(reader.outcomes.get("t", {})),
        "latency_under_full_load": bench.latencies(reader, (b for b, _, _ in load))["decision"],
        "cpu_ms_per_1000_bets": cpu,
        "ms_per_batch": steps,
    }
    log(f"CPU ms per 1,000 bets: {cpu}")
    log(f"a bets batch, ms: {steps}")
    ok = ok and complete
    # What the audit trail's background work has left to do once the bets are decided.
    heads = audit_heads(s)
    backlog = audit_backlog(s, heads)
    drained = time.time()
    while any(audit_backlog(s, heads)) and time.time() - drained < 300:
        time.sleep(0.2)
    left = any(audit_backlog(s, heads))
    thr["audit_backlog_at_end"] = {"relay": backlog[0], "reporter": backlog[1]}
    thr["audit_drained_s"] = None if left else round(time.time() - drained, 2)
    log(f"audit backlog when the last bet was decided: {backlog[0]} records to relay, "
        f"{backlog[1]} to report; drained in {thr['audit_drained_s']} s")  # fmt: skip
    results["throughput"] = thr
    log(f"throughput: {thr['decided']}/{len(load)} bets decided in {elapsed:.2f}s = "
        f"{thr['bets_per_s']} bets/s (produced in {produced_s:.2f}s)")  # fmt: skip

    # 2. Latency at fixed rates: each rate in turn, the plan's own (``--rate``) reported
    # as "latency", every one in "latency_by_rate".
    by_rate = []
    for i, rate in enumerate(plan.rates or [plan.rate]):
        steps_before, cpu_before, started = flow_steps(workers), cpu_by_role(), time.time()
        entry = latency_phase(bench, reader, producer, "l" if rate == plan.rate else f"l{i}",
                              rate, plan.duration)  # fmt: skip
        entry["ms_per_batch"] = steps_per_batch(steps_before, flow_steps(workers))
        # Cores busy per part over the phase: a batch's cost is mostly per batch, not per
        # bet, so this stays high at low rates (smaller batches, more of them).
        entry["cores"] = cores_busy(cpu_before, cpu_by_role(), time.time() - started)
        log(f"at {rate:.0f}/s a bets batch, ms: {entry['ms_per_batch']}; cores busy: "
            f"{entry['cores']}")  # fmt: skip
        ok = ok and entry.pop("complete")
        by_rate.append(entry)
    results["latency_by_rate"] = by_rate
    results["latency"] = next((e for e in by_rate if e["rate"] == plan.rate), by_rate[-1])

    # 3. Burst.
    results["burst"] = burst(bench, reader, producer)
    ok = ok and results["burst"]["all_decided_once"]

    rows = query_counts(s)
    sent_total = len(bench.stamps)
    results["postgres"] = {"bets_rows": rows[0], "bet_duplicates": rows[1],
                           "bets_sent": sent_total}  # fmt: skip
    ok = ok and rows[0] == sent_total and rows[1] == 0
    results["odds_changes_sent"] = sum(t.count for t in threads if t.name == "churn")
    results["goals"] = goals(results, plan)
    for t in threads:
        t.stop()
    feed.flush(10)
    return results, ok


def latency_phase(
    bench: Bench, reader: DecisionReader, producer: Any, phase: str, rate: float, seconds: float
) -> dict[str, Any]:
    """``rate`` bets/s for ``seconds``: each bet's decision latency (and "complete": every
    bet decided within a minute of the last send)."""
    n = int(rate * seconds)
    load = bench.bets(phase, n)
    sent, took = bench.produce_paced(producer, load, rate)
    producer.flush(30)
    complete = reader.wait([phase], n, 60)
    lat = bench.latencies(reader, (b for b, _, _ in load))
    d = lat["decision"]
    log(f"latency at {rate:.0f}/s (sent at {sent / took:.0f}/s): p50 {d.get('p50_ms')} "
        f"p99 {d.get('p99_ms')} max {d.get('max_ms')} ms; decided "
        f"{reader.decided[phase]}/{n}")  # fmt: skip
    return {
        "rate": rate,
        "achieved_rate": round(sent / took),
        "seconds": seconds,
        "bets": n,
        "decided": reader.decided[phase],
        "duplicates": reader.duplicates[phase],
        "outcomes": dict(reader.outcomes.get(phase, {})),
        "complete": complete and reader.duplicates[phase] == 0,
        **lat,
    }


def burst(bench: Bench, reader: DecisionReader, producer: Any) -> dict[str, Any]:
    plan = bench.plan
    base, high = plan.burst_base, plan.burst_base * plan.burst_factor
    before = bench.bets("bp", int(base * plan.burst_before))
    peak = bench.bets("bb", int(high * plan.burst_seconds))
    after = bench.bets("ba", int(base * plan.burst_after_max))
    bench.produce_paced(producer, before, base)
    burst_start = time.time()
    peak_sent, peak_took = bench.produce_paced(producer, peak, high)
    burst_end = time.time()
    lag_at_end = len(before) + peak_sent - reader.decided["bp"] - reader.decided["bb"]
    decided_at_end = sum(reader.decided.values())
    want = len(before) + peak_sent

    def drained() -> bool:
        return reader.decided["bp"] + reader.decided["bb"] >= want

    after_sent, _ = bench.produce_paced(producer, after, base, until=drained)
    producer.flush(30)
    complete = reader.wait(["bp", "bb"], want, 120)
    pre_end = [b for b, _, _ in before] + [b for b, _, _ in peak[:peak_sent]]
    drained_at = max((reader.seen[b] for b in pre_end if b in reader.seen), default=burst_end)
    decided_in_drain = sum(1 for t in list(reader.seen.values()) if burst_end < t <= drained_at)
    reader.wait(["ba"], after_sent, 60)
    drain_s = max(0.0, drained_at - burst_end)
    phases = ("bp", "bb", "ba")
    total_sent = len(before) + peak_sent + after_sent
    decided = sum(reader.decided[p] for p in phases)
    dups = sum(reader.duplicates[p] for p in phases)
    out = {
        "base_rate": base,
        "burst_rate": high,
        "burst_achieved_rate": round(peak_sent / peak_took) if peak_took > 0 else 0,
        "burst_seconds": plan.burst_seconds,
        "bets_sent": total_sent,
        "decided": decided,
        "duplicates": dups,
        "lost": total_sent - decided,
        "all_decided_once": complete and decided == total_sent and dups == 0,
        "backlog_at_burst_end": lag_at_end,
        "drain_s": round(drain_s, 2),
        "drain_decisions_per_s": round(decided_in_drain / drain_s) if drain_s > 0 else None,
        "decided_during_burst_per_s": round(
            (decided_at_end - decided_before(reader, burst_start)) / (burst_end - burst_start)
        ),
        "latency_burst_bets": bench.latencies(reader, (b for b, _, _ in peak[:peak_sent]))[
            "decision"
        ],
        "outcomes": {p: dict(reader.outcomes.get(p, {})) for p in phases},
    }
    log(f"burst: {base:.0f}/s then {high:.0f}/s (sent at {out['burst_achieved_rate']}/s) for "
        f"{plan.burst_seconds}s; backlog {lag_at_end} at its end, drained in "
        f"{out['drain_s']}s at {out['drain_decisions_per_s']} decisions/s; "
        f"{decided}/{total_sent} decided, {dups} duplicates")  # fmt: skip
    return out


def decided_before(reader: DecisionReader, at: float) -> int:
    return sum(1 for t in list(reader.seen.values()) if t <= at)


def query_counts(s: Settings) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(s.pg_dsn.get_secret_value(),
                         options=f"-c search_path={s.pg_schema}") as conn:  # fmt: skip
        row = conn.execute(
            "SELECT (SELECT count(*) FROM bets), (SELECT count(*) FROM bet_duplicates)"
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def goals(results: dict[str, Any], plan: Plan) -> dict[str, Any]:
    thr = results["throughput"]["bets_per_s"]
    p99 = results["latency"]["decision"].get("p99_ms")
    at_1000 = results["latency"]["rate"] == 1000
    b = results["burst"]
    return {
        "throughput_5000_per_s": thr >= 5000,
        "p99_100ms_at_1000_per_s": (p99 is not None and p99 <= 100) if at_1000 else None,
        "burst_20x_nothing_lost": b["all_decided_once"] if plan.burst_factor >= 20 else None,
        "drain_vs_throughput": round((b["drain_decisions_per_s"] or 0) / thr, 2) if thr else None,
    }


def summary(r: dict[str, Any]) -> None:
    print()
    thr, lat, b = r.get("throughput", {}), r.get("latency", {}), r.get("burst", {})
    d = lat.get("decision", {})
    pub = lat.get("published", {})
    rows: list[tuple[str, Any]] = [
        ("markets", r.get("markets_total")),
        ("throughput, bets/s end to end", thr.get("bets_per_s")),
        (f"latency at {lat.get('rate')}/s: p50 / p90 / p99 / max ms",
         f"{d.get('p50_ms')} / {d.get('p90_ms')} / {d.get('p99_ms')} / {d.get('max_ms')}"),
        ("  to the worker's publish: p50 / p99 ms", f"{pub.get('p50_ms')} / {pub.get('p99_ms')}"),
        *((f"latency at {e['rate']:.0f}/s: p50 / p99 / max ms",
           f"{e['decision'].get('p50_ms')} / {e['decision'].get('p99_ms')} / "
           f"{e['decision'].get('max_ms')}")
          for e in r.get("latency_by_rate", []) if e["rate"] != lat.get("rate")),
        (f"burst {b.get('base_rate')}/s -> {b.get('burst_rate')}/s: backlog at end",
         b.get("backlog_at_burst_end")),
        ("  drain s / decisions/s", f"{b.get('drain_s')} / {b.get('drain_decisions_per_s')}"),
        ("  decided once / duplicates / lost",
         f"{b.get('all_decided_once')} / {b.get('duplicates')} / {b.get('lost')}"),
        ("PostgreSQL bets rows / sent", f"{r.get('postgres', {}).get('bets_rows')} / "
         f"{r.get('postgres', {}).get('bets_sent')}"),
        ("ledger reconciles", r.get("reconcile_ok")),
    ]  # fmt: skip
    rows += [(f"goal {k}", "n/a (other parameters)" if v is None else v)
             for k, v in r.get("goals", {}).items()]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    raise SystemExit(main())
