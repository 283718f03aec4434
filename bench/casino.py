"""End-to-end casino benchmark: seamless-wallet calls to their answers on the local stack.

    .venv/bin/python bench/casino.py [--players 10000] [--rounds 15000] [--rate 1000]
        [--duration 20] [--spin 0.2] [--workers 2] [--batch-max 500] [--batch-within 0.01]
        [--quick] [--keep] [--out FILE]

Needs Kafka and PostgreSQL (the stack ``make up`` runs, via ``.stack/env``, or the
service variables). Like ``bench/bets.py``, whose helpers it uses, it never touches the
stack's own flows: it creates its own topics (prefix ``benchcasino<tag>.``), consumer
group (``croupier-benchcasino-<tag>``) and PostgreSQL schema (``benchcasino_<tag>``), and
starts its own ``croupier worker`` processes on them. The audit trail's background work
(the relay to ``audit``, the regulator reports, checkpoints) runs as the stack runs it: in
one ``croupier audit run`` process, the workers' own timers for it off (``--auditor
workers`` runs it in the workers' timers instead, as this bench did before 2026-12-07).

Set-up: ``--players`` players register in the UK, open a session and deposit; a warm-up
of ``--warmup`` rounds lets every worker join and every pool open, then five seconds
with nothing to do measure the stack's idle CPU. A round is a ``debit``
of 1.00 EUR on ``croupier-dice`` (certified in every jurisdiction) and then a ``credit``
with ``round_closed: true`` of 0.00 (55 %) or a win, by a uniformly chosen player. Then two
phases, each timed on this machine's clock (the same process sends the calls and reads
``casino-results``):

1. throughput: ``--rounds`` rounds (debit and credit back to back) produced as fast as
   possible; casino transactions/s = calls answered / time from the first send to the
   last call's answer consumed on ``casino-results``;
2. latency: ``--rate`` calls/s for ``--duration`` seconds, each round's credit sent
   ``--spin`` seconds after its debit (the game is played meanwhile); per call, answer
   latency = when its answer is consumed minus when the call was sent (p50, p90, p99,
   max); also up to when the worker published it (the answer's Kafka timestamp).

Checks: no call is retried, so every transaction id must have exactly one answer, keyed
by its player; its status and balance must be what the calls sent so far foresee (every
call ``ok``; a player's calls are one partition, decided in order). At the end, PostgreSQL
must hold one ``casino_transactions`` and one ``casino_calls`` row per call and every round
closed, each player's cash balance must be the one foreseen, the house's casino account
their mirror, and the ledger must reconcile (``Ledger.reconcile``). The records on
``audit`` are counted against ``audit_records`` once the relay has caught up (reported
only: more on the topic means a batch was published again).

Prints a summary and writes ``bench/results/casino.json`` (``casino-quick.json`` with
``--quick``): machine facts, the parameters, the numbers, the CPU each part of the stack
used per phase (from /proc), the batches the workers made (calls sharing a
``decided_at``), the warnings in the workers' logs (the repair timer's read-backs among
them) and the commit measured. The workers stop, and the topics, consumer group and
schema are deleted (``--keep`` leaves them, and the worker logs, for inspection). Exit
status 1 when a call was lost, answered twice (even with the same bytes) or with
differing bytes, answered other than foreseen, or the books do not match; the goal
(>= 5,000 casino transactions/s) missed is reported, not an error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# bench/ is no package: its sibling is imported as ``bets`` (as mypy names it too).
sys.path.insert(1, str(ROOT / "bench"))

from bets import (  # noqa: E402
    Worker,
    cleanup,
    distribution_ms,
    log,
    produce_all,
    reconcile,
    send,
    start_auditor,
    start_workers,
    wait_done,
)

from config.kafka import librdkafka_conf, make_producer  # noqa: E402
from config.settings import Settings  # noqa: E402
from config.stackenv import load_stack_env  # noqa: E402
from croupier.stack import AUDITOR_TIMERS_OFF  # noqa: E402
from sinks.postgres.migrate import migrate  # noqa: E402
from topologies.topics import create_topics  # noqa: E402

GAME = "croupier-dice"
CURRENCY = "EUR"
JURISDICTION = "UK"
DEPOSIT = Decimal("1000000.00")
STAKE = Decimal("1.00")
WINS = [Decimal("1.50"), Decimal("2.00"), Decimal("3.00"), Decimal("10.00")]
LOSS_SHARE = 0.55
GOAL = 5_000  # casino transactions/s end to end
IDLE_SECONDS = 5.0


# -- the calls -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One seamless-wallet call as sent, and the balance its answer must show."""

    tx: str
    player: str
    kind: str
    value: bytes
    balance: Decimal = Decimal(0)


@dataclass
class Casino:
    """The aggregator's side: rounds, the calls in sending order, the wallets foreseen."""

    rng: random.Random
    players: list[str] = field(default_factory=list)
    balances: dict[str, Decimal] = field(default_factory=dict)  # player -> foreseen balance
    calls: dict[str, Call] = field(default_factory=dict)  # tx id -> the call
    stamps: dict[str, float] = field(default_factory=dict)  # tx id -> wall time sent
    moved: dict[str, Decimal] = field(  # amounts sent, per call type
        default_factory=lambda: dict.fromkeys(("debit", "credit"), Decimal(0))
    )

    def rounds(self, phase: str, n: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """``n`` rounds of uniformly chosen players: (debit, credit), not yet foreseen."""
        at = datetime.now(UTC).isoformat()
        out = []
        for i in range(n):
            player, round_id = self.rng.choice(self.players), f"{phase}-{i}"
            common = {"round_id": round_id, "game_id": GAME, "player_id": player,
                      "currency": CURRENCY, "timestamp": at}  # fmt: skip
            win = Decimal("0.00") if self.rng.random() < LOSS_SHARE else self.rng.choice(WINS)
            debit = {"type": "debit", "transaction_id": f"{round_id}-d", **common,
                     "amount": str(STAKE)}  # fmt: skip
            credit = {"type": "credit", "transaction_id": f"{round_id}-c", **common,
                      "amount": str(win), "round_closed": True}  # fmt: skip
            out.append((debit, credit))
        return out

    def sequence(self, phase: str, n: int, lag: int = 0) -> list[Call]:
        """The calls of ``n`` rounds in sending order, each credit ``lag`` rounds after its
        debit, with the balance each answer must show (a player's calls keep this order)."""
        rounds = self.rounds(phase, n)
        docs: list[dict[str, Any]] = []
        for k, (debit, _) in enumerate(rounds):
            docs.append(debit)
            if k >= lag:
                docs.append(rounds[k - lag][1])
        docs.extend(credit for _, credit in rounds[max(0, len(rounds) - lag) :])
        out = []
        for doc in docs:
            player, amount = doc["player_id"], Decimal(doc["amount"])
            sign = -1 if doc["type"] == "debit" else 1
            self.balances[player] += sign * amount
            self.moved[doc["type"]] += amount
            call = Call(doc["transaction_id"], player, doc["type"], json.dumps(doc).encode(),
                        self.balances[player])  # fmt: skip
            self.calls[call.tx] = call
            out.append(call)
        return out


def produce_paced(
    producer: Any, topic: str, calls: Sequence[Call], rate: float, stamps: dict[str, float]
) -> tuple[int, float]:
    """Send ``calls`` at ``rate`` a second; (sent, seconds)."""
    start = time.monotonic()
    sent = 0
    while sent < len(calls):
        due = min(len(calls), int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            call = calls[sent]
            stamps[call.tx] = time.time()
            send(producer, topic, call.player, call.value)
            sent += 1
        pause = start + sent / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return sent, time.monotonic() - start


# -- the answers -----------------------------------------------------------------------------


class AnswerReader(threading.Thread):
    """Reads ``casino-results`` from the start: each transaction's first answer, and any
    further answer (the same bytes: a duplicate; other bytes: a conflict)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="answers", daemon=True)
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.consumer = Consumer({
            **librdkafka_conf(settings),
            "group.id": f"bench-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        })  # fmt: skip
        topic = settings.topic("casino-results")
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.seen: dict[str, float] = {}  # tx id -> wall time its answer was consumed
        self.published: dict[str, float] = {}  # tx id -> the answer's Kafka timestamp
        self.answers: dict[str, tuple[bytes, bytes]] = {}  # tx id -> (key, value) first seen
        self.answered: Counter[str] = Counter()  # phase -> distinct calls answered
        self.duplicates: Counter[str] = Counter()  # phase -> the same answer again
        self.conflicts: Counter[str] = Counter()  # phase -> another answer to the same call
        self.examples: list[str] = []  # a few conflicting answers, for the report
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for msg in self.consumer.consume(1000, 0.1):
                if msg.error():
                    continue
                now = time.time()
                value = msg.value() or b""
                tx = str(json.loads(value or b"{}").get("transaction_id"))
                phase = tx.split("-", 1)[0]
                first = self.answers.get(tx)
                if first is not None:
                    if first[1] == value:
                        self.duplicates[phase] += 1
                    else:
                        self.conflicts[phase] += 1
                        if len(self.examples) < 5:
                            self.examples.append(f"{first[1]!r} then {value!r}")
                    continue
                self.answers[tx] = (msg.key() or b"", value)
                self.seen[tx] = now
                kind, stamp = msg.timestamp()
                if kind != 0:  # TIMESTAMP_NOT_AVAILABLE
                    self.published[tx] = stamp / 1000
                self.answered[phase] += 1

    def wait(self, phase: str, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.answered[phase] < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)
        self.consumer.close()


def check_answers(
    reader: AnswerReader, calls: Iterable[Call], stamps: dict[str, float]
) -> dict[str, Any]:
    """Each call's answer against what was foreseen, and the latencies."""
    sent = answered = wrong = 0
    statuses: Counter[str] = Counter()
    examples: list[str] = []
    consumed: dict[str, list[float]] = {"debit": [], "credit": []}
    published = []
    for call in calls:
        sent += 1
        got = reader.answers.get(call.tx)
        if got is None:
            continue
        answered += 1
        key, value = got
        doc = json.loads(value)
        statuses[doc.get("error") or doc.get("status")] += 1
        good = (key.decode() == call.player == doc.get("player_id")
                and doc.get("status") == "ok" and doc.get("error") is None
                and Decimal(doc.get("balance", "-1")) == call.balance)  # fmt: skip
        if not good:
            wrong += 1
            if len(examples) < 5:
                examples.append(f"{call.tx}: foreseen ok {call.balance}, answered {value!r}")
        consumed[call.kind].append(reader.seen[call.tx] - stamps[call.tx])
        if call.tx in reader.published:
            published.append(reader.published[call.tx] - stamps[call.tx])
    return {
        "sent": sent,
        "answered": answered,
        "lost": sent - answered,
        "answered_otherwise": wrong,
        "answered_otherwise_examples": examples,
        "statuses": dict(statuses),
        "answer": distribution_ms(consumed["debit"] + consumed["credit"]),
        "answer_debits": distribution_ms(consumed["debit"]),
        "answer_credits": distribution_ms(consumed["credit"]),
        "published": distribution_ms(published),
    }


# -- where the CPU goes ----------------------------------------------------------------------


def cpu_snapshot(workers: Sequence[Worker], auditors: Sequence[Worker] = ()) -> dict[str, float]:
    """CPU seconds used so far by the bench's workers, its auditor, this process, Kafka,
    PostgreSQL and the rest, and by the whole machine (``busy``, ``all``; from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    mine = {w.proc.pid for w in workers}
    trail = {w.proc.pid for w in auditors}
    out: dict[str, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        pid = int(entry)
        if pid in mine:
            group = "workers"
        elif pid in trail:
            group = "auditor"
        elif pid == os.getpid():
            group = "bench"
        elif b"kafka" in cmdline:
            group = "kafka"
        elif cmdline.startswith(b"postgres") or b"/postgres" in cmdline.split(b"\0")[0]:
            group = "postgres"
        else:
            group = "other"
        out[group] = out.get(group, 0.0) + seconds
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    out["all"] = sum(ticks[:8]) / tick
    out["busy"] = (sum(ticks[:8]) - idle) / tick
    return out


def cpu_used(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, Any]:
    """Cores used on average between two snapshots, per part and in all."""
    if seconds <= 0:
        return {}
    cores = {k: round((after.get(k, 0) - before.get(k, 0)) / seconds, 2)
             for k in ("workers", "auditor", "bench", "kafka", "postgres", "other")}  # fmt: skip
    busy = (after["busy"] - before["busy"]) / seconds
    # processes that ended meanwhile (their time is lost), the kernel, steal
    cores["unattributed"] = round(busy - sum(cores.values()), 2)
    cores["machine_busy"] = round(busy, 2)
    return cores


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "node": platform.node(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    info["loadavg_at_start"] = [round(v, 2) for v in os.getloadavg()]
    t0 = time.perf_counter()
    sum(range(10**7))
    # BENCHMARKS.md's probe is sum(range(10**8)); this is a tenth of it, times ten.
    info["probe_sum_range_1e8_s"] = round((time.perf_counter() - t0) * 10, 2)
    return info


# -- PostgreSQL ------------------------------------------------------------------------------


def books(s: Settings, casino: Casino) -> dict[str, Any]:
    """What PostgreSQL holds against what was sent and foreseen."""
    import psycopg

    with psycopg.connect(s.pg_dsn.get_secret_value(),
                         options=f"-c search_path={s.pg_schema}") as conn:  # fmt: skip
        batches = conn.execute(
            """SELECT split_part(transaction_id, '-', 1), count(*), count(DISTINCT decided_at),
                      max(n)
                 FROM (SELECT transaction_id, decided_at,
                              count(*) OVER (PARTITION BY decided_at) AS n
                         FROM casino_transactions) t
                GROUP BY 1 ORDER BY 1"""
        ).fetchall()
        counts = conn.execute(
            """SELECT (SELECT count(*) FROM casino_transactions),
                      (SELECT count(*) FROM casino_calls),
                      (SELECT count(*) FROM casino_calls WHERE outcome <> 'decided'),
                      (SELECT count(*) FROM casino_rounds),
                      (SELECT count(*) FROM casino_rounds WHERE closed_at IS NOT NULL)"""
        ).fetchone()
        balances = conn.execute(
            "SELECT owner, balance FROM ledger_accounts WHERE kind = 'cash' AND currency = %s",
            (CURRENCY,),
        ).fetchall()
        house = conn.execute(
            """SELECT coalesce(sum(e.amount), 0) FROM ledger_entries e
                 JOIN ledger_accounts a USING (account_id)
                WHERE a.owner = 'house' AND a.kind = 'house_casino' AND a.currency = %s""",
            (CURRENCY,),
        ).fetchone()
    assert counts is not None and house is not None  # aggregates return one row
    held = {owner: Decimal(b) for owner, b in balances}
    drift = [f"{p}: {held.get(p)} held, {b} foreseen" for p, b in casino.balances.items()
             if held.get(p) != b]  # fmt: skip
    net = casino.moved["credit"] - casino.moved["debit"]  # what the players won, net
    rounds = sum(1 for c in casino.calls.values() if c.kind == "debit")
    tx_rows, call_rows, not_decided, round_rows, closed = (int(v) for v in counts)
    out = {
        "casino_transactions": tx_rows,
        "casino_calls": call_rows,
        "casino_calls_not_decided": not_decided,
        "casino_rounds": round_rows,
        "casino_rounds_closed": closed,
        "calls_sent": len(casino.calls),
        "rounds_sent": rounds,
        "players_balance_drift": len(drift),
        "players_balance_drift_examples": drift[:5],
        "players_net_win": str(net),
        "house_casino_balance": str(Decimal(house[0])),
        "batches": {
            phase: {
                "calls": int(n),
                "batches": int(b),
                "mean_calls": round(n / b, 1),
                "max_calls": int(m),
            }
            for phase, n, b, m in batches
        },
    }
    out["ok"] = (tx_rows == call_rows == len(casino.calls) and not_decided == 0
                 and round_rows == closed == rounds and not drift
                 and Decimal(house[0]) + net == 0)  # fmt: skip
    return out


def audit_published(s: Settings, wait: float = 0.0) -> dict[str, Any]:
    """Records on the ``audit`` topic against rows in ``audit_records`` (the casino's and the
    players flow's): more on the topic means records published again (a replayed batch).
    Waits up to ``wait`` seconds for the relay to publish every row (an auditor process
    relays behind the flows); ``relayed_in_s`` says how long it took."""
    import psycopg
    from confluent_kafka import Consumer, TopicPartition

    topic = s.topic("audit")
    consumer = Consumer({**librdkafka_conf(s),
                         "group.id": f"bench-audit-{uuid.uuid4().hex}"})  # fmt: skip
    started = time.monotonic()
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        while True:
            published = 0
            for p in parts:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                published += high - low
            with psycopg.connect(s.pg_dsn.get_secret_value(),
                                 options=f"-c search_path={s.pg_schema}") as conn:  # fmt: skip
                row = conn.execute("SELECT count(*) FROM audit_records").fetchone()
            rows = int(row[0]) if row else 0
            if published >= rows or time.monotonic() - started > wait:
                break
            time.sleep(0.25)
    finally:
        consumer.close()
    return {"published": published, "rows": rows,
            "relayed_in_s": round(time.monotonic() - started, 1)}  # fmt: skip


# -- the benchmark -------------------------------------------------------------------------


@dataclass
class Plan:
    players: int
    rounds: int
    rate: float
    duration: float
    spin: float
    warmup: int
    workers: int
    partitions: int
    batch_max: int
    batch_within: float
    seed: int


def parse_args(argv: Sequence[str] | None = None) -> tuple[Plan, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--players", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=15_000,
                   help="rounds (a debit and a credit each) in the throughput phase")  # fmt: skip
    p.add_argument("--rate", type=float, default=1_000, help="calls/s in the latency phase")
    p.add_argument("--duration", type=float, default=20, help="seconds of the latency phase")
    p.add_argument("--spin", type=float, default=0.2,
                   help="seconds from a round's debit to its credit (latency phase)")  # fmt: skip
    p.add_argument("--warmup", type=int, default=1_000, help="rounds before measuring")
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
        p.set_defaults(players=500, rounds=1_500, rate=200, duration=5, warmup=200)
    a = p.parse_args(argv)
    base = Settings()
    plan = Plan(
        players=a.players, rounds=a.rounds, rate=a.rate, duration=a.duration, spin=a.spin,
        warmup=a.warmup, workers=a.workers, partitions=a.partitions,
        batch_max=a.batch_max or base.batch_max,
        batch_within=a.batch_within or base.batch_within, seed=a.seed,
    )  # fmt: skip
    if a.out is None:
        a.out = ROOT / "bench" / "results" / ("casino-quick.json" if a.quick else "casino.json")
    return plan, a


def bench_settings(plan: Plan, tag: str) -> Settings:
    base = Settings()
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=base.kafka_bootstrap_servers,
        CROUPIER_PG_DSN=base.pg_dsn.get_secret_value(),
        CROUPIER_CLICKHOUSE_URL=base.clickhouse_url,
        CROUPIER_PG_SCHEMA=f"benchcasino_{tag}",
        CROUPIER_APP_ID=f"croupier-benchcasino-{tag}",
        CROUPIER_TOPIC_PREFIX=f"benchcasino{tag}.",
        CROUPIER_TOPIC_PARTITIONS=plan.partitions,
        CROUPIER_BATCH_MAX=plan.batch_max,
        CROUPIER_BATCH_WITHIN=plan.batch_within,
    )


def main(argv: Sequence[str] | None = None) -> int:
    load_stack_env()
    plan, args = parse_args(argv)
    tag = uuid.uuid4().hex[:8]
    s = bench_settings(plan, tag)
    where = ROOT / ".stack" / "bench" / f"casino-{tag}"
    where.mkdir(parents=True, exist_ok=True)
    log(f"bench {tag}: topics {s.topic_prefix}*, group {s.app_id}, schema {s.pg_schema}")
    facts = machine()
    create_topics(s)
    migrate(s.migration_dsn, s.pg_schema)
    workers: list[Worker] = []
    auditors: list[Worker] = []
    readers: list[AnswerReader] = []
    results: dict[str, Any] = {}
    problems = ["did not finish"]
    try:
        if args.auditor == "process":
            auditors = [start_auditor(s, where)]
            # The stack's way: the workers leave the trail's background work to the auditor.
            quiet = Settings.model_validate({**s.as_env(), **AUDITOR_TIMERS_OFF})
            workers = start_workers(quiet, plan.workers, where)
        else:
            workers = start_workers(s, plan.workers, where)
        log(f"{plan.workers} worker(s) ready, the auditor in "
            f"{'its own process' if auditors else 'the workers'}; logs in {where}")  # fmt: skip
        results, problems = run(plan, s, workers, readers, auditors)
        results["auditor"] = args.auditor
    finally:
        for r in readers:
            r.stop()
        for w in workers + auditors:
            w.stop()
        results["worker_log_problems"] = log_problems(where)
        reconciled = reconcile(s)
        if not reconciled:
            problems.append("the ledger does not reconcile")
        cleanup(s, where, keep=args.keep, keep_logs=bool(problems))
    ok = not problems
    results = {"machine": facts, "code": code_version(), **results,
               "reconcile_ok": reconciled, "problems": problems, "ok": ok}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    summary(results)
    log(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0 if ok else 1


def log_problems(where: Path) -> dict[str, Any]:
    """Warnings and errors in the workers' logs: how many, the repair timer's read-backs
    among them, and the first few (read-backs first)."""
    lines: list[str] = []
    for path in sorted(where.glob("worker-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if "[WARNING]" in line or "[ERROR]" in line or "Traceback" in line:
                lines.append(f"{path.name}: {line[:300]}")
    repairs = [line for line in lines if "reading" in line and "back" in line]
    others = [line for line in lines if line not in repairs]
    kinds = Counter(re.sub(r"\d+", "N", line.split("] ", 3)[-1])[:70] for line in lines)
    return {"count": len(lines), "repair_read_backs": len(repairs), "kinds": dict(kinds),
            "first": (repairs + others)[:12]}  # fmt: skip


def code_version() -> dict[str, Any]:
    """The commit measured, and the files changed in the work tree (the flow can move)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10, check=False)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.rstrip()

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "changed": changed[:30]}


def run(
    plan: Plan,
    s: Settings,
    workers: list[Worker],
    readers: list[AnswerReader],
    auditors: Sequence[Worker] = (),
) -> tuple[dict[str, Any], list[str]]:
    """Set up the players, warm up, then the two phases; (results, what went wrong)."""
    casino = Casino(random.Random(plan.seed))
    dsn, schema, group = s.pg_dsn.get_secret_value(), s.pg_schema, s.app_id
    producer = make_producer(s, **{"queue.buffering.max.messages": 1_000_000})
    topic = s.topic("casino")

    # Players: registered, with a session open (every jurisdiction requires one), funded.
    t0 = time.monotonic()
    casino.players = [f"p{n}" for n in range(plan.players)]
    casino.balances = dict.fromkeys(casino.players, DEPOSIT)
    at = datetime.now(UTC).isoformat()
    regs = ((p, json.dumps(event).encode()) for p in casino.players for event in (
        {"type": "registered", "player_id": p, "jurisdiction": JURISDICTION,
         "currency": CURRENCY, "birth_date": "1990-05-01", "timestamp": at},
        {"type": "session_started", "player_id": p, "session_id": f"s-{p}", "timestamp": at},
    ))  # fmt: skip
    wait_done(dsn, schema, group, s.topic("players"),
              produce_all(producer, s.topic("players"), regs), 300)  # fmt: skip
    deps = ((p, json.dumps({"type": "deposit", "payment_id": f"d-{p}", "player_id": p,
                            "amount": str(DEPOSIT), "currency": CURRENCY,
                            "timestamp": at}).encode()) for p in casino.players)  # fmt: skip
    wait_done(dsn, schema, group, s.topic("payments"),
              produce_all(producer, s.topic("payments"), deps), 300)  # fmt: skip
    setup_s = time.monotonic() - t0
    log(f"{plan.players} players registered, in session and funded in {setup_s:.1f}s")

    reader = AnswerReader(s)
    readers.append(reader)
    reader.start()
    results: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "plan": asdict(plan),
        "setup_s": round(setup_s, 1),
    }
    problems: list[str] = []

    # Warm-up: every worker has joined, every pool is open.
    warm = casino.sequence("w", plan.warmup)
    produce_paced(producer, topic, warm, max(plan.rate, 500), casino.stamps)
    producer.flush(30)
    if not reader.wait("w", len(warm), 120):
        raise SystemExit(f"warm-up: {reader.answered['w']} of {len(warm)} answered in 120s")
    results["warmup"] = {"calls": len(warm)}
    # What the workers and the stack use with nothing to do (timers, session watcher).
    cpu0 = cpu_snapshot(workers, auditors)
    time.sleep(IDLE_SECONDS)
    results["idle_cores_used"] = cpu_used(cpu0, cpu_snapshot(workers, auditors), IDLE_SECONDS)
    log(f"warm-up: {len(warm)} calls answered; idle for {IDLE_SECONDS:.0f}s: "
        f"workers used {results['idle_cores_used']['workers']} cores")  # fmt: skip

    # 1. Throughput.
    load = casino.sequence("t", plan.rounds)
    cpu0 = cpu_snapshot(workers, auditors)
    start = time.time()
    for call in load:
        casino.stamps[call.tx] = time.time()
        send(producer, topic, call.player, call.value)
    producer.flush(60)
    produced_s = time.time() - start
    complete = reader.wait("t", len(load), max(120, len(load) / 250))
    last = max((reader.seen[c.tx] for c in load if c.tx in reader.seen), default=start)
    elapsed = last - start
    cpu1 = cpu_snapshot(workers, auditors)
    checked = check_answers(reader, load, casino.stamps)
    thr = {
        "rounds": plan.rounds,
        "calls": len(load),
        "answered": reader.answered["t"],
        "duplicates": reader.duplicates["t"],
        "conflicting_answers": reader.conflicts["t"],
        "produce_s": round(produced_s, 2),
        "seconds": round(elapsed, 2),
        "calls_per_s": round(reader.answered["t"] / elapsed) if elapsed > 0 else 0,
        "cores_used": cpu_used(cpu0, cpu1, time.time() - start),
        **{k: v for k, v in checked.items() if k not in ("sent", "answered", "published")},
    }
    problems += problems_of("throughput", checked, reader, "t", complete)
    results["throughput"] = thr
    log(f"throughput: {thr['answered']}/{len(load)} calls answered in {elapsed:.2f}s = "
        f"{thr['calls_per_s']} casino transactions/s (produced in {produced_s:.2f}s); "
        f"{checked['answered_otherwise']} answered otherwise than foreseen, "
        f"{thr['duplicates']} answered again")  # fmt: skip

    # 2. Latency at a fixed rate.
    n_rounds = max(1, int(plan.rate * plan.duration / 2))
    lag = round(plan.spin * plan.rate / 2)
    load = casino.sequence("l", n_rounds, lag)
    cpu0 = cpu_snapshot(workers, auditors)
    t_start = time.time()
    sent, took = produce_paced(producer, topic, load, plan.rate, casino.stamps)
    producer.flush(30)
    complete = reader.wait("l", len(load), 60)
    cpu1 = cpu_snapshot(workers, auditors)
    checked = check_answers(reader, load, casino.stamps)
    results["latency"] = {
        "rate": plan.rate,
        "achieved_rate": round(sent / took) if took > 0 else 0,
        "seconds": plan.duration,
        "calls": len(load),
        "credit_lag_rounds": lag,
        "duplicates": reader.duplicates["l"],
        "conflicting_answers": reader.conflicts["l"],
        "cores_used": cpu_used(cpu0, cpu1, time.time() - t_start),
        **checked,
    }
    problems += problems_of("latency", checked, reader, "l", complete)
    a = checked["answer"]
    log(f"latency at {plan.rate:.0f}/s (sent at {sent / took:.0f}/s): p50 {a.get('p50_ms')} "
        f"p90 {a.get('p90_ms')} p99 {a.get('p99_ms')} max {a.get('max_ms')} ms; answered "
        f"{checked['answered']}/{len(load)}")  # fmt: skip

    # Everything else: the warm-up's answers, and none for a call never sent.
    checked = check_answers(reader, warm, casino.stamps)
    problems += problems_of("warm-up", checked, reader, "w", True)
    strays = set(reader.answers) - set(casino.calls)
    results["answers_to_unknown_calls"] = len(strays)
    results["conflicting_answer_examples"] = reader.examples
    if strays:
        problems.append(f"{len(strays)} answers to calls never sent")
    results["postgres"] = books(s, casino)
    results["audit"] = audit_published(s, wait=120 if auditors else 0)
    if not results["postgres"]["ok"]:
        problems.append("PostgreSQL does not hold what was sent and foreseen")
    cps = results["throughput"]["calls_per_s"]
    results["goals"] = {"throughput_5000_per_s": cps >= GOAL}
    return results, problems


def problems_of(
    name: str, checked: dict[str, Any], reader: AnswerReader, phase: str, complete: bool
) -> list[str]:
    """Every call answered once, as foreseen (no retries are sent: no duplicate allowed)."""
    found = []
    if not complete or checked["lost"]:
        found.append(f"{name}: {checked['lost']} calls never answered")
    if checked["answered_otherwise"]:
        found.append(f"{name}: {checked['answered_otherwise']} answered otherwise than foreseen")
    if reader.duplicates[phase]:
        found.append(f"{name}: {reader.duplicates[phase]} answers published again (same bytes)")
    if reader.conflicts[phase]:
        found.append(f"{name}: {reader.conflicts[phase]} answers differing from the first")
    return found


def summary(r: dict[str, Any]) -> None:
    print()
    m, thr, lat = r.get("machine", {}), r.get("throughput", {}), r.get("latency", {})
    plan, pg = r.get("plan", {}), r.get("postgres", {})
    a, pub = lat.get("answer", {}), lat.get("published", {})
    batches = pg.get("batches", {})

    def batch(phase: str) -> str:
        b = batches.get(phase, {})
        return f"{b.get('batches')} batches, mean {b.get('mean_calls')}, max {b.get('max_calls')}"

    def cores(c: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in c.items())

    rows: list[tuple[str, Any]] = [
        ("machine", f"{m.get('node')}, {m.get('cores')} cores, {m.get('cpu')}; probe "
         f"{m.get('probe_sum_range_1e8_s')} s"),
        ("workers / batch max / within",
         f"{plan.get('workers')} / {plan.get('batch_max')} / {plan.get('batch_within')}"),
        ("throughput, casino transactions/s end to end", thr.get("calls_per_s")),
        ("  calls / answered / lost / otherwise",
         f"{thr.get('calls')} / {thr.get('answered')} / {thr.get('lost')} / "
         f"{thr.get('answered_otherwise')}"),
        ("  answered again / with other bytes",
         f"{thr.get('duplicates')} / {thr.get('conflicting_answers')}"),
        ("  batches", batch("t")),
        ("  cores used", cores(thr.get("cores_used", {}))),
        (f"latency at {lat.get('rate')}/s: p50 / p90 / p99 / max ms",
         f"{a.get('p50_ms')} / {a.get('p90_ms')} / {a.get('p99_ms')} / {a.get('max_ms')}"),
        ("  to the worker's publish: p50 / p99 ms", f"{pub.get('p50_ms')} / {pub.get('p99_ms')}"),
        ("  sent at / lost / otherwise / again",
         f"{lat.get('achieved_rate')}/s / {lat.get('lost')} / {lat.get('answered_otherwise')} / "
         f"{lat.get('duplicates')}"),
        ("  batches", batch("l")),
        ("  cores used", cores(lat.get("cores_used", {}))),
        ("idle: cores used", cores(r.get("idle_cores_used", {}))),
        ("PostgreSQL transactions / calls / sent",
         f"{pg.get('casino_transactions')} / {pg.get('casino_calls')} / {pg.get('calls_sent')}"),
        ("  rounds closed / sent", f"{pg.get('casino_rounds_closed')} / {pg.get('rounds_sent')}"),
        ("  players' balances drifting", pg.get("players_balance_drift")),
        ("  books as foreseen", pg.get("ok")),
        ("audit records published / rows",
         f"{r.get('audit', {}).get('published')} / {r.get('audit', {}).get('rows')} "
         f"(relayed {r.get('audit', {}).get('relayed_in_s')} s after the last check)"),
        ("ledger reconciles", r.get("reconcile_ok")),
        ("worker log warnings/errors / repair read-backs",
         f"{r.get('worker_log_problems', {}).get('count')} / "
         f"{r.get('worker_log_problems', {}).get('repair_read_backs')}"),
    ]  # fmt: skip
    rows += [(f"goal {k}", v) for k, v in r.get("goals", {}).items()]
    rows.append(
        (
            "code",
            f"{r.get('code', {}).get('commit')} "
            f"(+{len(r.get('code', {}).get('changed', []))} changed files)",
        )
    )
    rows.append(("all good", r.get("ok") if r.get("ok") else f"no: {r.get('problems')}"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    raise SystemExit(main())
