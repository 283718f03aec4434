"""Analytics sink benchmark: audit records from Kafka into the embedded ClickHouse engine.

    .venv/bin/python bench/analytics.py [--records 500000] [--rate 5000] [--duration 30]
        [--batch-max 50000] [--batch-wait 0.25] [--clickhouse-url URL] [--keep] [--out FILE]

Needs Kafka (the stack ``make up`` runs, via ``.stack/env``, or ``KAFKA_BOOTSTRAP_SERVERS``).
It never touches the stack's own flows: its own topic (``benchanalytics<tag>.audit``, 6
partitions), consumer group and ClickHouse database. Unless ``--clickhouse-url`` names one,
it starts its own embedded engine (``python -m sinks.clickhouse.server`` over a fresh data
directory on a free port), the same process the stack runs, so nothing else loads it.

The records are audit-shaped: real ``AuditRecord`` JSON in the mix a sportsbook and casino
make (per ten: three bet decisions, three stakes with their entries, one settlement with
four entries, two casino calls, one odds change of three prices), each with its own ids.
The sink is ``croupier analytics run``, a process of its own, as the stack runs it.

1. Throughput: ``--records`` records are produced first; then the sink starts, and the
   time runs from when it says it consumes (schema applied) until ``audit_log`` holds
   every record. Records/s into ``audit_log``; rows/s counts the rows the materialized
   views wrote too (bets, transactions, entries, ...), all queryable at the end.
2. Lag: with the sink caught up, ``--rate`` records/s for ``--duration`` seconds. Every
   50 ms the bench asks ClickHouse how far each partition is queryable (``max(kafka_offset)``);
   a record's lag is the first such answer that includes it minus its Kafka timestamp
   (set when it was produced): p50, p99, max. The polling adds up to 50 ms.

Prints a summary and writes ``bench/results/analytics.json``. Exit 1 when a record is
missing or counted twice at the end; a goal missed (>= 50,000 records/s; lag p99 < 2 s at
5,000/s) is reported, not an error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from casino import machine  # noqa: E402  (bench/ is on the path: this script's folder)

from config.kafka import librdkafka_conf  # noqa: E402
from config.settings import Settings  # noqa: E402
from config.stackenv import load_stack_env  # noqa: E402
from croupier.stack.process import free_port  # noqa: E402
from schemas.records import AuditRecord, SourcePosition  # noqa: E402
from sinks.clickhouse.client import ClickHouse, connect  # noqa: E402

PARTITIONS = 6
T = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)


# -- records --------------------------------------------------------------------------------


def _template(entity: str, action: str, after: dict[str, Any], **extra: Any) -> str:
    """A record's JSON with ``{i}`` where its ids go (braces of the JSON doubled)."""
    body = AuditRecord(
        entity=entity, entity_id="ID{i}", action=action,
        source=SourcePosition(topic="bench", partition=0, offset=0),
        occurred_at=T, recorded_at=T, before=extra.get("before"), after=after,
    ).model_dump_json()  # fmt: skip
    return body.replace("{", "{{").replace("}", "}}").replace("ID{{i}}", "{i}")


def _entries(*e: tuple[str, str, str]) -> list[dict[str, str]]:
    return [{"owner": o, "account": a, "amount": m} for o, a, m in e]


def _ledger(op: str, amount: str, entries: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    return {"txn_id": 1, "key": "k", "operation": op, "player_id": "p-7", "currency": "EUR",
            "amount": amount, "payout": None, "result": None, "reference": None,
            "status": "applied", "reason": None, "cash_after": "10.00", "pending_after": "0.00",
            "entries": entries, **extra}  # fmt: skip


TEMPLATES = [
    *[_template("bet", "bet.accepted", {
        "bet_id": "b", "player_id": "p-7", "status": "accepted", "reason": None,
        "odds": "2.10", "decided_at": T.isoformat(), "stake": "1.00", "currency": "EUR",
        "selections": [{"event_id": "m-1", "market_id": "1x2", "outcome_id": "home",
                        "odds": "2.10"}], "standing_version": 3})] * 3,
    *[_template("ledger_transaction", "ledger.stake", _ledger(
        "stake", "1.00", _entries(("p-7", "cash", "-1.00"), ("p-7", "pending", "1.00"))))] * 3,
    _template("ledger_transaction", "ledger.settle", _ledger(
        "settle", "0", _entries(("p-7", "pending", "-1.00"), ("house", "house_stakes", "1.00"),
                                ("house", "house_payouts", "-2.10"), ("p-7", "cash", "2.10")),
        payout="2.10", result="win", reference="bet:b")),
    *[_template("casino_transaction", "casino.debit", {
        "type": "debit", "player_id": "p-7", "round_id": "r", "game_id": "croupier-dice",
        "amount": "1.00", "currency": "EUR", "reference_transaction_id": None,
        "rng_build": None, "request_hash": "0" * 64, "status": "ok", "error": None,
        "moved": True, "ledger_key": "casino-debit:x", "balance": "9.00"},
        before={"balance": "10.00", "currency": "EUR"})] * 2,
    _template("odds", "odds.changed", {"producer": "live", "markets": {"1x2": {
        "status": "active", "odds": {"home": "2.10", "draw": "3.40", "away": "3.60"},
        "updated_at": T.isoformat(), "version": 2}}}),
]  # fmt: skip


def records(start: int, n: int) -> list[bytes]:
    return [
        TEMPLATES[i % len(TEMPLATES)].format(i=f"r-{i}").encode() for i in range(start, start + n)
    ]


# -- the parts ------------------------------------------------------------------------------


class Engine:
    """A private embedded ClickHouse engine process."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="bench-analytics-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.home / "server.log", "wb")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sinks.clickhouse.server", "--path", str(self.home / "data"),
             "--port", str(self.port)], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        from croupier.stack.clickhouse import ping

        deadline = time.monotonic() + 30
        while not ping(self.url):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"the engine did not start; see {self.home / 'server.log'}")
            time.sleep(0.1)

    def stop(self, keep: bool) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()
        if not keep:
            import shutil

            shutil.rmtree(self.home, ignore_errors=True)


def produce(s: Settings, start: int, n: int, *, rate: float | None = None) -> dict[str, Any]:
    """Produce records ``start`` .. ``start + n``; at ``rate``/s when given (paced in 10 ms
    steps), else as fast as the producer goes. Returns how long it took."""
    from config.kafka import make_producer

    producer = make_producer(s, **{"linger.ms": 5 if rate else 50, "compression.type": "lz4",
                                   "batch.num.messages": 10000,
                                   "queue.buffering.max.messages": 2_000_000})  # fmt: skip
    topic = s.topic("audit")
    values = records(start, n)
    errors: list[Any] = []

    def report(err: Any, msg: Any) -> None:
        if err:
            errors.append(err)

    t0 = time.perf_counter()
    for i, value in enumerate(values):
        if rate and i % max(1, int(rate / 100)) == 0:
            ahead = t0 + i / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        while True:
            try:
                producer.produce(topic, key=f"r-{start + i}".encode(), value=value,
                                 on_delivery=report)  # fmt: skip
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    took = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"produce failed: {errors[:3]}")
    return {"records": n, "seconds": round(took, 2), "per_s": round(n / took)}


def start_sink(s: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **s.as_env(), "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        argv = [sys.executable, "-m", "croupier", "analytics", "run"]
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for_log(log: Path, marker: bytes, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while marker not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the sink did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.01)


def count(ch: ClickHouse, db: str, table: str = "audit_log", final: bool = False) -> int:
    sql = f"SELECT count() FROM {db}.{table}{' FINAL' if final else ''}"  # noqa: S608 - ours
    return int(ch.query(sql)[0][0])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- phases ---------------------------------------------------------------------------------

DERIVED = ("bets", "ledger_transactions", "casino_transactions", "odds_changes")  # fmt: skip


def throughput(s: Settings, ch: ClickHouse, engine_pid: int | None, n: int,
               log: Path) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:  # fmt: skip
    db = s.clickhouse_database
    produced = produce(s, 0, n)
    print(f"produced {n} records in {produced['seconds']} s ({produced['per_s']}/s)")
    sink = start_sink(s, log)
    wait_for_log(log, b"analytics sink: consuming", sink, 60)
    t0 = time.perf_counter()
    cpu0 = cpu_seconds(sink.pid), cpu_seconds(engine_pid) if engine_pid else 0.0
    while count(ch, db) < n:
        if sink.poll() is not None:
            raise SystemExit(f"the sink exited:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    took = time.perf_counter() - t0
    cpu1 = cpu_seconds(sink.pid), cpu_seconds(engine_pid) if engine_pid else 0.0
    derived = {t: count(ch, db, t) for t in DERIVED}
    rows = n + sum(derived.values())
    result = {
        "records": n, "seconds": round(took, 2), "records_per_s": round(n / took),
        "rows_written": rows, "rows_per_s": round(rows / took), "derived_rows": derived,
        "batches": log.read_text().count("inserted"),
        "cpu_s": {"sink": round(cpu1[0] - cpu0[0], 2), "engine": round(cpu1[1] - cpu0[1], 2)},
        "produced": produced,
    }  # fmt: skip
    print(f"throughput: {n} records in {took:.2f} s = {n / took:,.0f} records/s, "
          f"{rows / took:,.0f} rows/s with the derived tables")  # fmt: skip
    return result, sink


def lag(s: Settings, ch: ClickHouse, start: int, rate: float, duration: float) -> dict[str, Any]:
    """Produce at ``rate`` while polling what is queryable; per-record lag from its Kafka
    timestamp to the first poll that sees it."""
    db = s.clickhouse_database
    n = int(rate * duration)
    stamps: dict[tuple[int, int], int] = {}  # (partition, offset) -> Kafka timestamp (ms)
    from config.kafka import make_producer

    producer = make_producer(s, **{"linger.ms": 5, "compression.type": "lz4"})
    topic = s.topic("audit")
    values = records(start, n)
    polls: list[tuple[float, dict[int, int]]] = []
    stop = threading.Event()

    heads = f"SELECT kafka_partition, max(kafka_offset) FROM {db}.audit_log GROUP BY 1"  # noqa: S608

    def poll_clickhouse() -> None:
        client = connect(s.clickhouse_url)
        try:
            while not stop.is_set():
                rows = client.query(heads)
                polls.append((time.time() * 1000, {int(p): int(o) for p, o in rows}))
                stop.wait(0.05)
        finally:
            client.close()

    def report(err: Any, msg: Any) -> None:
        if not err:
            stamps[(msg.partition(), msg.offset())] = msg.timestamp()[1]

    poller = threading.Thread(target=poll_clickhouse)
    poller.start()
    t0 = time.perf_counter()
    for i, value in enumerate(values):
        if i % max(1, int(rate / 100)) == 0:
            ahead = t0 + i / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        producer.produce(topic, key=f"r-{start + i}".encode(), value=value, on_delivery=report)
        producer.poll(0)
    producer.flush(60)
    sent = time.perf_counter() - t0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        last = polls[-1][1] if polls else {}
        if len(stamps) == n and all(last.get(p, -1) >= o for p, o in stamps):
            break
        time.sleep(0.1)
    stop.set()
    poller.join()
    lags: list[float] = []
    missing = 0
    for (p, o), ts in stamps.items():
        seen = next((t for t, heads in polls if heads.get(p, -1) >= o), None)
        if seen is None:
            missing += 1
        else:
            lags.append(seen - ts)
    lags.sort()

    def q(x: float) -> float:
        return round(lags[min(len(lags) - 1, int(x * len(lags)))] / 1000, 3) if lags else -1.0

    result = {"rate": rate, "duration_s": duration, "records": n,
              "achieved_rate": round(n / sent), "p50_s": q(0.5), "p90_s": q(0.9),
              "p99_s": q(0.99), "max_s": round(lags[-1] / 1000, 3) if lags else -1.0,
              "never_seen": missing, "polls": len(polls)}  # fmt: skip
    print(f"lag at {rate:,.0f}/s: p50 {result['p50_s']} s, p99 {result['p99_s']} s, "
          f"max {result['max_s']} s ({missing} never seen)")  # fmt: skip
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--records", type=int, default=500_000)
    p.add_argument("--rate", type=float, default=5_000)
    p.add_argument("--duration", type=float, default=30)
    p.add_argument("--batch-max", type=int, default=None, help="CROUPIER_ANALYTICS_BATCH_MAX")
    p.add_argument("--batch-wait", type=float, default=None, help="CROUPIER_ANALYTICS_BATCH_WAIT")
    p.add_argument("--clickhouse-url", help="an engine or server to use instead of a private one")
    p.add_argument("--keep", action="store_true", help="keep the topic, database and engine")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "analytics.json")
    args = p.parse_args(argv)

    load_stack_env()
    tag = uuid.uuid4().hex[:8]
    engine = None if args.clickhouse_url else Engine()
    url = args.clickhouse_url or (engine.url if engine else "")
    base = Settings()
    update: dict[str, Any] = {
        "clickhouse_url": url, "clickhouse_database": f"bench_{tag}",
        "topic_prefix": f"benchanalytics{tag}.", "topic_partitions": PARTITIONS,
        "app_id": f"croupier-benchanalytics-{tag}",
    }  # fmt: skip
    if args.batch_max:
        update["analytics_batch_max"] = args.batch_max
    if args.batch_wait:
        update["analytics_batch_wait"] = args.batch_wait
    s = base.model_copy(update=update)
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(librdkafka_conf(s))
    for f in admin.create_topics([NewTopic(s.topic("audit"), PARTITIONS, 1)]).values():
        f.result()
    info = machine()
    print(f"machine: {info}")
    log = Path(tempfile.gettempdir()) / f"bench-analytics-{tag}.log"
    ch = connect(url)
    sink: subprocess.Popen[bytes] | None = None
    problems: list[str] = []
    try:
        thr, sink = throughput(s, ch, engine.proc.pid if engine else None, args.records, log)
        time.sleep(1.0)
        lat = lag(s, ch, args.records, args.rate, args.duration)
        total = args.records + lat["records"]
        db = s.clickhouse_database
        final = count(ch, db, final=True)
        raw = count(ch, db)
        if final != total:
            problems.append(f"audit_log holds {final} distinct records of {total} produced")
        if lat["never_seen"]:
            problems.append(f"{lat['never_seen']} records of the lag phase never seen")
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait(60)
        if not args.keep:
            try:
                ch.command(f"DROP DATABASE IF EXISTS {s.clickhouse_database}")
            except Exception as exc:
                print(f"note: dropping the database: {exc}")
            admin.delete_topics([s.topic("audit")])
            admin.delete_consumer_groups([f"{s.app_id}-analytics"])
        ch.close()
        if engine is not None:
            engine.stop(args.keep)
    result = {
        "machine": info,
        "code": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "plan": {"records": args.records, "rate": args.rate, "duration": args.duration,
                 "batch_max": s.analytics_batch_max, "batch_wait": s.analytics_batch_wait,
                 "partitions": PARTITIONS, "engine": "private" if engine else url},
        "throughput": thr, "lag": lat,
        "end": {"audit_log_rows": raw, "distinct_records": final, "produced": total},
        "goals": {"records_per_s>=50000": thr["records_per_s"] >= 50_000,
                  "lag_p99<2s_at_5000/s": 0 <= lat["p99_s"] < 2 and args.rate >= 5000},
        "problems": problems, "ok": not problems,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"throughput": thr, "lag": lat, "goals": result["goals"],
                      "problems": problems}, indent=2))  # fmt: skip
    print(f"wrote {args.out}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
