"""Stage-cost benchmark: what each stage of a bet's path costs, in one run, on one workload.

    .venv/bin/python bench/stages.py [--bets 20000] [--baseline-bets 2000] [--players 500]
        [--events 200] [--markets 4] [--partitions 6] [--warmup 1000] [--quick] [--keep]
        [--out bench/results/stages.json]

Needs Kafka, PostgreSQL and ClickHouse (the stack ``make up`` runs, via ``.stack/env``, or
the service variables). Like ``bench/bets.py`` (whose pieces it uses) it works on its own
topics (``bench<tag>.``), consumer groups, PostgreSQL schema and ClickHouse database
(``bench_<tag>``), all deleted at the end unless ``--keep``.

Set-up: ``--players`` players registered and funded and ``--events`` x ``--markets``
markets priced, by one real ``croupier worker`` (and the ``croupier audit run`` process
beside it, as the stack runs them); the feed sends heartbeats all along and no odds
churn, so every stage sees the same prices. Then the same bets (1.00 EUR, 80 % singles,
20 % accumulators: ``bench/bets.py``'s mix) go through each stage in turn, ``--bets`` of
them produced as fast as possible after a warm-up; a stage's time runs from the first
send to the last bet's decision consumed from its decision topic (for (e): or to
ClickHouse holding every fact, whichever is later):

(a) kafka: a plain confluent-kafka consume loop (batches of ``CROUPIER_BATCH_MAX``
    within ``CROUPIER_BATCH_WITHIN``, as the worker's) that reads each bet's JSON and
    publishes a trivial decision, a producer flush and an offset commit per batch;
(b) rules: (a), plus the bet decoded with its pydantic schema and priced by
    ``rules.sportsbook.decide_bet`` against an odds book the loop keeps from the
    ``odds`` topic itself (the worker's odds and health tables, in memory); no database;
(c) ledger: (b), plus ``SportsbookSink.place``, one transaction per batch (fence,
    protection, stakes, bets rows) and the progress rows, with the audit trail left out:
    this harness process replaces ``sinks.postgres.audit.append`` and
    ``sinks.postgres.ledger.ledger_records`` with no-ops (in itself only; the product
    has no such switch). The decisions' audit record objects are still built in Python;
(c+) trail: (c) with the audit trail, the harness unchanged otherwise: audit rows in the
    same transaction, relayed by the auditor process. Not one of the issue's stages: it
    separates the trail's cost from the worker's machinery, which (d) adds too;
(d) audit: the real ``croupier worker`` as the stack runs it (audit rows in the same
    transaction, the auditor process relaying them to ``audit``), so beside (c+) it adds
    the commit protocol of ``streams/flow.py`` (the flow's own librdkafka consumer and
    producer, per-message isolation, the offsets committed after the flush), Faust's
    tables and the worker's other timers (player protection's session watch among them);
(e) clickhouse: (d) with ``croupier analytics run`` consuming ``audit`` into ClickHouse,
    timed until ClickHouse's ``audit_log`` holds as many records as PostgreSQL's trail.

Baseline, in the same run: the real worker again, restarted with ``CROUPIER_BATCH_MAX=1``
(one bet per batch: one database transaction, one publish flush and one progress write
per bet), on ``--baseline-bets`` bets; reported as its throughput over (d)'s.

(a) to (c+) run as a harness process of this script (``bench/stages.py harness``), one
process like the worker, so the comparison is process to process. Prints a table (stage,
bets/s, ms per 1,000 bets, marginal ms per 1,000 vs the stage before) and writes
``bench/results/stages.json``. Exit 1 when a bet was lost or decided twice in any stage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bets import (  # noqa: E402  (bench/ is on the path: this script's folder)
    DecisionReader,
    Paced,
    Plan,
    Prepared,
    Worker,
    bench_settings,
    cleanup,
    log,
    prepare,
    reconcile,
    start_auditor,
    start_workers,
    stop_all,
    warm_up,
    worker_env,
)
from casino import machine  # noqa: E402

from config.kafka import librdkafka_conf  # noqa: E402
from config.settings import Settings  # noqa: E402
from config.stackenv import load_stack_env  # noqa: E402
from croupier.stack import AUDITOR_TIMERS_OFF  # noqa: E402
from sinks.postgres.migrate import migrate  # noqa: E402
from topologies.topics import create_topics  # noqa: E402

HARNESS_READY = "stages harness: consuming"
HARNESS_STATS = "stages harness: stats "
STAGES = ("kafka", "rules", "ledger", "trail")  # the harness's stages
LABELS = {
    "kafka": "(a) Kafka only",
    "rules": "(b) + rules",
    "ledger": "(c) + ledger",
    "trail": "(c+) + audit trail, same harness",
    "audit": "(d) + audit: the real worker",
    "clickhouse": "(e) + ClickHouse",
    "baseline": "baseline: 1 bet per transaction",
}
PHASES = {"kafka": "a", "rules": "b", "ledger": "c", "trail": "ct", "audit": "d",
          "clickhouse": "e",
          "baseline": "base"}  # fmt: skip


# -- the harness: stages (a) to (c) in a process of their own --------------------------------


class OddsBook:
    """The worker's odds and health tables, kept in memory from the ``odds`` topic."""

    def __init__(self, feed_timeout: float) -> None:
        self.odds: dict[str, Any] = {}
        self.health: dict[str, Any] = {}
        self.timeout = timedelta(seconds=feed_timeout)

    def apply(self, value: bytes) -> None:
        from rules.odds import EventBook, ProducerHealth, apply_alive, apply_odds_message
        from schemas.decode import DecodeFailure, decode
        from schemas.odds import ODDS_MESSAGE, Alive, BetStop, OddsChange

        msg = decode(ODDS_MESSAGE, value)
        if isinstance(msg, DecodeFailure):
            return
        if isinstance(msg, Alive):
            old = self.health.get(msg.producer)
            health = apply_alive(
                None if old is None else ProducerHealth.from_json(old), msg, self.timeout
            )
            if health is not None:
                self.health[msg.producer] = health.to_json()
        elif isinstance(msg, OddsChange | BetStop):
            value_now = self.odds.get(msg.event_id)
            book = None if value_now is None else EventBook.from_json(value_now)
            new = apply_odds_message(book, msg)
            if new is not None:
                self.odds[msg.event_id] = new.to_json()


def decide_all(book: OddsBook, msgs: list[Any]) -> list[tuple[Any, Any, str, Any]]:
    """Stage (b): (message, bet, request hash, verdict) per bet that decodes."""
    from rules.sportsbook import decide_bet
    from schemas.base import request_hash
    from schemas.bets import BET_REQUEST
    from schemas.decode import DecodeFailure, decode
    from streams.bets import read_books, read_producers

    decoded = []
    for m in msgs:
        bet = decode(BET_REQUEST, m.value())
        if not isinstance(bet, DecodeFailure):
            decoded.append((m, bet))
    books = read_books(book.odds, [b for _, b in decoded])
    producers = read_producers(book.health, books.values())
    now = datetime.now(UTC)
    return [
        (m, bet, request_hash(bet), decide_bet(bet, books, producers, now, book.timeout))
        for m, bet in decoded
    ]


def rules_decisions(decided: list[tuple[Any, Any, str, Any]]) -> list[tuple[bytes, bytes]]:
    from rules.sportsbook import Priced
    from schemas.outbound import BetDecision

    now = datetime.now(UTC)
    out = []
    for _, bet, _, verdict in decided:
        priced = isinstance(verdict, Priced)
        decision = BetDecision(
            bet_id=bet.bet_id,
            player_id=bet.player_id,
            status="accepted" if priced else "rejected",
            reason=None if priced else verdict.reason,
            odds=verdict.odds if priced else None,
            decided_at=now,
        )
        out.append((bet.player_id.encode(), decision.model_dump_json().encode()))
    return out


def kafka_decisions(msgs: list[Any]) -> list[tuple[bytes, bytes]]:
    """Stage (a): a trivial decision per bet (its ids, accepted), no schema, no rules."""
    now = datetime.now(UTC).isoformat()
    out = []
    for m in msgs:
        doc = json.loads(m.value())
        out.append((m.key() or b"", json.dumps({
            "bet_id": doc["bet_id"], "player_id": doc["player_id"], "status": "accepted",
            "reason": None, "odds": None, "decided_at": now}).encode()))  # fmt: skip
    return out


def without_audit() -> None:
    """Stage (c): this process's audit trail writes become no-ops (bench-only, in-process)."""
    from sinks.postgres import audit, ledger

    async def no_append(conn: Any, records: Sequence[Any], **_: Any) -> None:
        return None

    async def no_records(conn: Any, ops: Any, results: Any, sources: Any) -> list[Any]:
        return []

    audit.append = no_append  # bench-only: stage (c)
    ledger.ledger_records = no_records  # bench-only: stage (c)


def harness(argv: Sequence[str]) -> int:
    """``bench/stages.py harness --stage S --bets-topic T --decisions-topic D``: one stage's
    consume loop, until SIGTERM."""
    p = argparse.ArgumentParser(prog="bench/stages.py harness")
    p.add_argument("--stage", choices=STAGES, required=True)
    p.add_argument("--bets-topic", required=True)
    p.add_argument("--decisions-topic", required=True)
    p.add_argument("--group", required=True)
    a = p.parse_args(argv)
    return asyncio.run(_harness(a.stage, a.bets_topic, a.decisions_topic, a.group))


async def _harness(stage: str, bets_topic: str, decisions_topic: str, group: str) -> int:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from config.kafka import make_producer
    from config.policies import load_policies
    from schemas.records import SourcePosition
    from sinks.postgres.sportsbook import BetBatch, BetInput, SportsbookSink

    s = Settings()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    consumer = Consumer({**librdkafka_conf(s), "group.id": group,
                         "enable.auto.commit": False})  # fmt: skip
    odds_topic = s.topic("odds")
    topics = [bets_topic] + ([odds_topic] if stage != "kafka" else [])
    assignment = []
    for topic in topics:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        assignment += [TopicPartition(topic, n, OFFSET_BEGINNING) for n in parts]
    consumer.assign(assignment)
    producer = make_producer(s)
    book = OddsBook(s.feed_timeout)
    sink = None
    if stage in ("ledger", "trail"):
        if stage == "ledger":
            without_audit()
        sink = SportsbookSink(s.pg_dsn.get_secret_value(), s.pg_schema, consumer_group=group,
                              policies=load_policies(s.policy_dir))  # fmt: skip
        await sink.open()
    print(HARNESS_READY, flush=True)
    # Where the time goes: batches, bets, and seconds in each step (printed at the end).
    stats = {"batches": 0, "bets": 0, "decide_s": 0.0, "sink_s": 0.0, "publish_s": 0.0}
    try:
        while not stopping.is_set():
            msgs: list[Any] = await asyncio.to_thread(consumer.consume, s.batch_max, s.batch_within)
            bets = []
            for m in msgs:
                if m.error():
                    continue
                if m.topic() == odds_topic:
                    book.apply(m.value())
                else:
                    bets.append(m)
            if not bets:
                continue
            t0 = time.perf_counter()
            stats["batches"] += 1
            stats["bets"] += len(bets)
            if stage == "kafka":
                out = kafka_decisions(bets)
            elif stage == "rules":
                out = rules_decisions(decide_all(book, bets))
            elif sink is not None:  # the ledger stages
                batch = BetBatch()
                decided = decide_all(book, bets)
                t1 = time.perf_counter()
                stats["decide_s"] += t1 - t0
                t0 = t1
                for m, bet, digest, verdict in decided:
                    src = SourcePosition(topic=m.topic(), partition=m.partition(),
                                         offset=m.offset())  # fmt: skip
                    batch.inputs.append(BetInput(src, bet, digest, verdict, m.key(), m.value()))
                for m in bets:
                    tp = (str(m.topic()), int(m.partition()))
                    batch.progress[tp] = max(batch.progress.get(tp, 0), int(m.offset()) + 1)
                placed = await sink.decide(batch, datetime.now(UTC))
                out = placed.outputs
                t1 = time.perf_counter()
                stats["sink_s"] += t1 - t0
                t0 = t1
            else:
                out = []
            if sink is None:
                stats["decide_s"] += time.perf_counter() - t0
                t0 = time.perf_counter()
            for key, value in out:
                producer.produce(decisions_topic, key=key, value=value)
            await asyncio.to_thread(producer.flush, 30)
            stats["publish_s"] += time.perf_counter() - t0
            consumer.commit(asynchronous=True)
    finally:
        print(f"{HARNESS_STATS}{json.dumps(stats)}", flush=True)
        consumer.close()
        if sink is not None:
            await sink.close()
    return 0


# -- the bench -------------------------------------------------------------------------------


def stage_settings(s: Settings, stage: str) -> Settings:
    """The settings whose ``bets`` and ``bet-decisions`` are the harness stage's own."""
    return s.model_copy(update={"topic_prefix": f"{s.topic_prefix}{stage}."})


def create_stage_topics(s: Settings, stage: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    mine = stage_settings(s, stage)
    admin = AdminClient(librdkafka_conf(s))
    names = [mine.topic("bets"), mine.topic("bet-decisions")]
    futures = admin.create_topics(
        [NewTopic(n, s.topic_partitions, s.topic_replication) for n in names]
    )
    for f in futures.values():
        f.result()


def start_harness(s: Settings, stage: str, where: Path, timeout: float = 60) -> Worker:
    mine = stage_settings(s, stage)
    log_path = where / f"harness-{stage}.log"
    argv = [sys.executable, str(Path(__file__).resolve()), "harness", "--stage", stage,
            "--bets-topic", mine.topic("bets"), "--decisions-topic", mine.topic("bet-decisions"),
            "--group", f"{s.app_id}-stage-{stage}"]  # fmt: skip
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(argv, env=worker_env(s, where / "faust"), stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
    h = Worker(proc, log_path)
    deadline = time.monotonic() + timeout
    while HARNESS_READY.encode() not in log_path.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_bytes()[-3000:].decode(errors="replace")
            raise SystemExit(f"harness {stage} did not start:\n{tail}")
        time.sleep(0.1)
    return h


def harness_stats(log_path: Path) -> dict[str, Any]:
    """The harness's own account (warm-up included): bets per batch, and per 1,000 bets
    the ms spent deciding (decode and rules), in the sink and publishing."""
    for line in log_path.read_text().splitlines():
        if line.startswith(HARNESS_STATS):
            st = json.loads(line.removeprefix(HARNESS_STATS))
            n = max(1, st["bets"])
            return {"harness": {
                "batches": st["batches"], "bets": st["bets"],
                "bets_per_batch": round(st["bets"] / max(1, st["batches"]), 1),
                **{f"{k.removesuffix('_s')}_ms_per_1000": round(st[k] / n * 1e6, 1)
                   for k in ("decide_s", "sink_s", "publish_s")},
            }}  # fmt: skip
    return {}


def measure(
    ready: Prepared,
    reader: DecisionReader,
    phase: str,
    n: int,
    topic: str,
    until: Any = None,
) -> dict[str, Any]:
    """``n`` bets of ``phase`` sent as fast as possible to ``topic``; the time from the
    first send to the last decision consumed (or to ``until()`` returning a time, later)."""
    from bets import send

    bench, producer = ready.bench, ready.producer
    load = bench.bets(phase, n)
    start = time.time()
    for bet_id, key, value in load:
        bench.stamps[bet_id] = start
        send(producer, topic, key, value)
    producer.flush(60)
    produced = time.time() - start
    complete = reader.wait([phase], n, max(180, n / 50))
    last = max((reader.seen[b] for b, _, _ in load if b in reader.seen), default=start)
    end = last
    if until is not None:
        end = max(end, until())
    elapsed = max(end - start, 1e-9)
    decided, dups = reader.decided[phase], reader.duplicates[phase]
    return {
        "bets": n,
        "decided": decided,
        "duplicates": dups,
        "ok": complete and decided == n and dups == 0,
        "produce_s": round(produced, 3),
        "decisions_s": round(last - start, 3),
        "seconds": round(elapsed, 3),
        "bets_per_s": round(n / elapsed),
        "ms_per_1000_bets": round(elapsed / n * 1e6, 1),
        "outcomes": dict(reader.outcomes.get(phase, {})),
    }


def pg_count(s: Settings, sql: str) -> int:
    import psycopg

    with psycopg.connect(s.pg_dsn.get_secret_value(),
                         options=f"-c search_path={s.pg_schema}") as conn:  # fmt: skip
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def clickhouse_count(ch: Any, s: Settings) -> int:
    try:
        sql = f"SELECT count() FROM {s.clickhouse_database}.audit_log"  # noqa: S608 - ours
        return int(ch.query(sql)[0][0])
    except Exception:  # the sink has not created the table yet
        return 0


def wait_clickhouse(ch: Any, s: Settings, timeout: float) -> float:
    """When ClickHouse first held every audit record PostgreSQL holds now (time.time())."""
    want = pg_count(s, "SELECT count(*) FROM audit_records")
    deadline = time.monotonic() + timeout
    while clickhouse_count(ch, s) < want:
        if time.monotonic() > deadline:
            msg = f"ClickHouse holds {clickhouse_count(ch, s)} of {want} audit records"
            raise SystemExit(msg)
        time.sleep(0.05)
    return time.time()


def start_analytics(s: Settings, where: Path, timeout: float = 60) -> Worker:
    log_path = where / "analytics.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "croupier", "analytics", "run"],
                                env=worker_env(s, where / "faust"), stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
    sink = Worker(proc, log_path)
    deadline = time.monotonic() + timeout
    while b"analytics sink: consuming" not in log_path.read_bytes():
        sink.ready()  # raises if it exited
        if time.monotonic() > deadline:
            raise SystemExit(f"analytics sink not ready in {timeout}s; log {log_path}")
        time.sleep(0.1)
    return sink


def marginal(rows: list[dict[str, Any]]) -> None:
    prev = None
    for row in rows:
        row["marginal_ms_per_1000"] = (
            None if prev is None else round(row["ms_per_1000_bets"] - prev["ms_per_1000_bets"], 1)
        )
        prev = row


def table(results: dict[str, Any]) -> str:
    head = f"  {'stage':<34} {'bets/s':>8} {'ms/1000 bets':>13} {'marginal ms/1000':>17}"
    lines = [head, "  " + "-" * (len(head) - 2)]
    stages = results["stages"]
    slowest = max((r for r in stages if r["marginal_ms_per_1000"] is not None),
                  key=lambda r: r["marginal_ms_per_1000"], default=None)  # fmt: skip
    for row in stages:
        m = row["marginal_ms_per_1000"]
        mark = "  <- costliest stage" if row is slowest else ""
        lines.append(f"  {row['label']:<34} {row['bets_per_s']:>8} {row['ms_per_1000_bets']:>13}"
                     f" {'' if m is None else f'{m:+.1f}':>17}{mark}")  # fmt: skip
    base = results.get("baseline")
    if base:
        lines.append(f"  {base['label']:<34} {base['bets_per_s']:>8} "
                     f"{base['ms_per_1000_bets']:>13} {'':>17}")  # fmt: skip
        lines.append(f"  batched (d) / baseline: {results['batched_vs_baseline']}x the throughput "
                     f"(baseline = {results['baseline_vs_batched']} of (d))")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--bets", type=int, default=20_000, help="bets per stage")
    p.add_argument("--baseline-bets", type=int, default=2_000, help="bets in the baseline")
    p.add_argument("--players", type=int, default=500)
    p.add_argument("--events", type=int, default=200)
    p.add_argument("--markets", type=int, default=4, help="markets per event")
    p.add_argument("--partitions", type=int, default=6, help="partitions per topic")
    p.add_argument("--warmup", type=int, default=1_000, help="bets before each stage")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="a short smoke run, small numbers")
    p.add_argument("--keep", action="store_true",
                   help="leave topics, groups, schema, database and logs behind")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="results file")
    if p.parse_args(argv).quick:  # smaller defaults; options given explicitly still win
        p.set_defaults(bets=2_000, baseline_bets=300, players=300, events=50, warmup=200)
    a = p.parse_args(argv)
    if a.out is None:
        a.out = ROOT / "bench" / "results" / ("stages-quick.json" if a.quick else "stages.json")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["harness"]:
        return harness(argv[1:])
    load_stack_env()
    a = parse_args(argv)
    base = Settings()
    plan = Plan(
        players=a.players, events=a.events, markets=a.markets, bets=a.bets, rate=1000,
        duration=0, rates=[], burst_base=0, burst_factor=0, burst_before=0, burst_seconds=0,
        burst_after_max=0, odds_rate=0, warmup=a.warmup, workers=1, partitions=a.partitions,
        batch_max=base.batch_max, batch_within=base.batch_within, seed=a.seed,
    )  # fmt: skip
    tag = uuid.uuid4().hex[:8]
    s = bench_settings(plan, tag).model_copy(update={"clickhouse_database": f"bench_{tag}"})
    where = ROOT / ".stack" / "bench" / tag
    where.mkdir(parents=True, exist_ok=True)
    log(f"stages {tag}: topics {s.topic_prefix}*, group {s.app_id}, schema {s.pg_schema}, "
        f"ClickHouse database {s.clickhouse_database}")  # fmt: skip
    results: dict[str, Any] = {"machine": machine(),
                               "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                               "plan": {k: v for k, v in vars(a).items()
                                        if k != "out"}}  # fmt: skip
    results["plan"]["batch_max"], results["plan"]["batch_within"] = s.batch_max, s.batch_within
    create_topics(s)
    for stage in STAGES:
        create_stage_topics(s, stage)
    migrate(s.migration_dsn, s.pg_schema)
    procs: list[Worker] = []
    threads: list[Paced] = []
    readers: list[DecisionReader] = []
    flushing: list[Any] = []  # the feed's producer, flushed after its heartbeats stop
    ok = False
    try:
        ok = run(a, plan, s, where, procs, threads, readers, results, flushing)
    finally:
        stop_all(threads, flushing, readers, procs)
        results["reconcile_ok"] = reconciled = reconcile(s)
        cleanup(s, where, keep=a.keep, keep_logs=not ok)
        if not a.keep:
            drop_clickhouse(s)
    ok = ok and reconciled
    results["ok"] = ok
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    if "stages" in results:
        print()
        print(table(results))
    log(
        f"wrote {a.out.relative_to(ROOT) if a.out.is_relative_to(ROOT) else a.out}; "
        f"{'every bet decided once' if ok else 'A BET WAS LOST OR DECIDED TWICE (or no reconcile)'}"
    )
    return 0 if ok else 1


def drop_clickhouse(s: Settings) -> None:
    from sinks.clickhouse.client import connect

    try:
        ch = connect(s.clickhouse_url)
        ch.command(f"DROP DATABASE IF EXISTS {s.clickhouse_database}")
        ch.close()
    except Exception as exc:
        log(f"could not drop ClickHouse database {s.clickhouse_database}: {exc}")


def run(
    a: argparse.Namespace,
    plan: Plan,
    s: Settings,
    where: Path,
    procs: list[Worker],
    threads: list[Paced],
    readers: list[DecisionReader],
    results: dict[str, Any],
    flushing: list[Any],
) -> bool:
    from sinks.clickhouse.client import connect

    procs.append(start_auditor(s, where))
    quiet = Settings.model_validate({**s.as_env(), **AUDITOR_TIMERS_OFF})
    workers = start_workers(quiet, 1, where)
    procs += workers
    ready = prepare(plan, s, threads, readers)
    flushing.append(ready.feed)
    log("set-up done: 1 worker, the auditor, players funded, events priced, warmed up")
    rows: list[dict[str, Any]] = []

    for stage in STAGES:
        mine = stage_settings(s, stage)
        reader = DecisionReader(mine)
        readers.append(reader)
        reader.start()
        h = start_harness(s, stage, where)
        procs.append(h)
        staged = Prepared(ready.bench, ready.producer, ready.feed, reader, {})
        phase = PHASES[stage]
        warm_up(staged, f"{phase}w", a.warmup, 2_000, topic=mine.topic("bets"))
        row = measure(ready, reader, phase, a.bets, mine.topic("bets"))
        h.stop()
        procs.remove(h)
        row.update(harness_stats(h.log))
        rows.append({"stage": stage, "label": LABELS[stage], **row})
        log(f"{LABELS[stage]}: {row['bets_per_s']} bets/s ({row['decided']}/{a.bets} decided)")

    # (d) the real worker, audit and all.
    row = measure(ready, ready.reader, PHASES["audit"], a.bets, s.topic("bets"))
    rows.append({"stage": "audit", "label": LABELS["audit"], **row})
    log(f"{LABELS['audit']}: {row['bets_per_s']} bets/s ({row['decided']}/{a.bets} decided)")

    # (e) and ClickHouse: the sink first catches up with what the set-up and (d) left.
    ch = connect(s.clickhouse_url)
    analytics = start_analytics(s, where)
    procs.append(analytics)
    wait_clickhouse(ch, s, 300)
    log("analytics sink caught up; measuring (e)")
    row = measure(ready, ready.reader, PHASES["clickhouse"], a.bets, s.topic("bets"),
                  until=lambda: wait_clickhouse(ch, s, 300))  # fmt: skip
    row["clickhouse_audit_rows"] = clickhouse_count(ch, s)
    rows.append({"stage": "clickhouse", "label": LABELS["clickhouse"], **row})
    log(f"{LABELS['clickhouse']}: {row['bets_per_s']} bets/s ({row['decided']}/{a.bets} "
        f"decided, ClickHouse caught up {row['seconds'] - row['decisions_s']:.2f}s after the "
        f"last decision)")  # fmt: skip
    analytics.stop()
    procs.remove(analytics)
    ch.close()
    marginal(rows)
    results["stages"] = rows

    # Baseline: the real worker, one bet per batch (one transaction per bet).
    for w in workers:
        w.stop()
        procs.remove(w)
    single = Settings.model_validate({**quiet.as_env(), "CROUPIER_BATCH_MAX": "1"})
    procs += start_workers(single, 1, where)
    warm_up(ready, "basew", min(a.warmup, 200), 200)
    row = measure(ready, ready.reader, PHASES["baseline"], a.baseline_bets, s.topic("bets"))
    results["baseline"] = {"stage": "baseline", "label": LABELS["baseline"], "batch_max": 1,
                           **row}  # fmt: skip
    d = next(r for r in rows if r["stage"] == "audit")["bets_per_s"]
    results["batched_vs_baseline"] = round(d / row["bets_per_s"], 1) if row["bets_per_s"] else None
    results["baseline_vs_batched"] = round(row["bets_per_s"] / d, 3) if d else None
    log(f"baseline: {row['bets_per_s']} bets/s ({row['decided']}/{a.baseline_bets} decided)")

    # Every stage that writes PostgreSQL: one bets row per bet, no duplicates recorded.
    counts = dict(pg_rows(s))  # phase -> bets rows
    expected = {PHASES[k]: a.bets for k in ("ledger", "trail", "audit", "clickhouse")}
    expected[PHASES["baseline"]] = a.baseline_bets
    results["postgres_rows"] = {p: {"rows": counts.get(p, 0), "sent": n}
                                for p, n in expected.items()}  # fmt: skip
    dup_rows = pg_count(s, "SELECT count(*) FROM bet_duplicates")
    results["postgres_bet_duplicates"] = dup_rows
    rows_ok = all(counts.get(p, 0) == n for p, n in expected.items()) and dup_rows == 0
    return rows_ok and all(r["ok"] for r in rows) and results["baseline"]["ok"]


def pg_rows(s: Settings) -> list[tuple[str, int]]:
    import psycopg

    with psycopg.connect(s.pg_dsn.get_secret_value(),
                         options=f"-c search_path={s.pg_schema}") as conn:  # fmt: skip
        rows = conn.execute(
            "SELECT split_part(bet_id, '-', 1), count(*) FROM bets GROUP BY 1"
        ).fetchall()
    return [(str(p), int(n)) for p, n in rows]


if __name__ == "__main__":
    raise SystemExit(main())
