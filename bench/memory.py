"""Worker memory benchmark: one worker's resident memory over a long run of bets.

    .venv/bin/python bench/memory.py [--bets 1000000] [--chunk 50000] [--warmup-bets N]
        [--players 2000] [--events 500] [--markets 4] [--odds-rate 10]
        [--flat-slope 1.0] [--keep] [--out bench/results/memory.json]

Needs Kafka and PostgreSQL (the stack ``make up`` runs, via ``.stack/env``). Like
``bench/bets.py`` (whose set-up it uses) it works on its own topics, group and schema,
deleted at the end unless ``--keep``, with one ``croupier worker`` and the
``croupier audit run`` process beside it, as the stack runs them.

The bets (``bench/bets.py``'s mix, under ``--odds-rate`` odds changes a second) go in
chunks of ``--chunk`` (default: a twentieth of ``--bets``, at most 50,000), each produced
as fast as possible; once every bet of a chunk is decided, the worker's resident set
(``VmRSS`` of ``/proc/<pid>/status``) is sampled (the auditor's too, for reference). The
samples up to ``--warmup-bets`` (default a tenth of ``--bets``) are the warm-up (caches,
pools, Faust's buffers fill); after it the bench reports the growth (last sample minus
the first after the warm-up), the least-squares slope in MB per 100,000 bets, and says
memory is flat when the slope is under ``--flat-slope`` MB per 100,000 bets.

Prints the samples and the verdict and writes ``bench/results/memory.json``. Exit 1
when a bet was lost or decided twice, or the ledger does not reconcile; memory that
grows is reported (``"flat": false``), not an exit status. The JSON is rewritten after
every sample (``"complete": false`` until the end), so a long run stopped early keeps
what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bets import (  # noqa: E402  (bench/ is on the path: this script's folder)
    DecisionReader,
    Paced,
    Plan,
    Worker,
    bench_settings,
    cleanup,
    log,
    prepare,
    query_counts,
    reconcile,
    send,
    start_auditor,
    start_workers,
    stop_all,
)
from casino import machine  # noqa: E402

from config.settings import Settings  # noqa: E402
from config.stackenv import load_stack_env  # noqa: E402
from croupier.stack import AUDITOR_TIMERS_OFF  # noqa: E402
from sinks.postgres.migrate import migrate  # noqa: E402
from topologies.topics import create_topics  # noqa: E402

PER = 100_000  # the slope's unit: MB per this many bets


def rss_mb(pid: int) -> float:
    """The process's resident set size in MB (MiB), from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    msg = f"no VmRSS for process {pid}"
    raise RuntimeError(msg)


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of ``ys`` over ``xs`` (0 with fewer than two distinct xs)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def verdict(samples: Sequence[dict[str, Any]], warmup: int, flat_slope: float) -> dict[str, Any]:
    """Growth and slope of the worker's RSS over the samples taken after ``warmup`` bets."""
    after = [x for x in samples if x["bets"] >= warmup]
    if len(after) < 2:
        return {"samples_after_warmup": len(after), "flat": None,
                "why": "fewer than two samples after the warm-up"}  # fmt: skip
    xs = [float(x["bets"]) for x in after]
    ys = [float(x["worker_rss_mb"]) for x in after]
    per = slope(xs, ys) * PER
    growth = ys[-1] - ys[0]
    return {
        "samples_after_warmup": len(after),
        "rss_after_warmup_mb": ys[0],
        "rss_at_end_mb": ys[-1],
        "rss_max_mb": max(ys),
        "growth_mb": round(growth, 1),
        "growth_pct": round(100 * growth / ys[0], 1) if ys[0] else None,
        "slope_mb_per_100k_bets": round(per, 2),
        "flat_slope_limit": flat_slope,
        "flat": abs(per) < flat_slope,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--bets", type=int, default=1_000_000)
    p.add_argument("--chunk", type=int, default=None, help="bets between two samples")
    p.add_argument("--warmup-bets", type=int, default=None,
                   help="bets before the samples that count (default: --bets / 10)")  # fmt: skip
    p.add_argument("--players", type=int, default=2_000,
                   help="players, each registered, funded and with a session open")  # fmt: skip
    p.add_argument("--events", type=int, default=500)
    p.add_argument("--markets", type=int, default=4, help="markets per event")
    p.add_argument("--odds-rate", type=float, default=10, help="odds changes a second")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--flat-slope", type=float, default=1.0,
                   help="MB per 100,000 bets under which memory counts as flat")  # fmt: skip
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="leave topics, group and schema")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "memory.json")
    a = p.parse_args(argv)
    if a.bets < 1:
        p.error("--bets must be positive")
    a.chunk = a.chunk or max(1, min(50_000, a.bets // 20))
    a.warmup_bets = a.bets // 10 if a.warmup_bets is None else a.warmup_bets
    return a


def main(argv: Sequence[str] | None = None) -> int:
    load_stack_env()
    a = parse_args(argv)
    base = Settings()
    plan = Plan(
        players=a.players, events=a.events, markets=a.markets, bets=a.bets, rate=1000,
        duration=0, rates=[], burst_base=0, burst_factor=0, burst_before=0, burst_seconds=0,
        burst_after_max=0, odds_rate=a.odds_rate, warmup=2_000, workers=1,
        partitions=a.partitions, batch_max=base.batch_max, batch_within=base.batch_within,
        seed=a.seed,
    )  # fmt: skip
    tag = uuid.uuid4().hex[:8]
    s = bench_settings(plan, tag)
    where = ROOT / ".stack" / "bench" / tag
    where.mkdir(parents=True, exist_ok=True)
    log(f"memory {tag}: topics {s.topic_prefix}*, group {s.app_id}, schema {s.pg_schema}")
    results: dict[str, Any] = {
        "machine": machine(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "plan": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
    }
    create_topics(s)
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
    ok = ok and reconciled
    results["ok"] = ok
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    report(results)
    log(f"wrote {a.out.relative_to(ROOT) if a.out.is_relative_to(ROOT) else a.out}")
    return 0 if ok else 1


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
    auditor = start_auditor(s, where)
    procs.append(auditor)
    quiet = Settings.model_validate({**s.as_env(), **AUDITOR_TIMERS_OFF})
    [worker] = start_workers(quiet, 1, where)
    procs.append(worker)
    ready = prepare(plan, s, threads, readers)
    flushing.append(ready.feed)
    bench, producer, reader = ready.bench, ready.producer, ready.reader
    topic = s.topic("bets")
    pid = worker.proc.pid

    def sample(done: int, t0: float) -> dict[str, Any]:
        return {"bets": done, "seconds": round(time.monotonic() - t0, 1),
                "worker_rss_mb": rss_mb(pid),
                "auditor_rss_mb": rss_mb(auditor.proc.pid)}  # fmt: skip

    t0 = time.monotonic()
    samples = [sample(0, t0)]
    log(f"after set-up: worker RSS {samples[0]['worker_rss_mb']} MB")
    done = 0
    ok = True
    while done < a.bets:
        n = min(a.chunk, a.bets - done)
        for _bet_id, key, value in bench.bets("m", n, start=done):
            send(producer, topic, key, value)
        producer.flush(60)
        done += n
        if not reader.wait(["m"], done, max(300, n / 20)):
            log(f"only {reader.decided['m']} of {done} bets decided in time")
            ok = False
            break
        samples.append(sample(done, t0))
        # What a long run has so far, should it be stopped before the end.
        partial = {**results, "samples": samples, "complete": False,
                   "verdict": verdict(samples, a.warmup_bets, a.flat_slope)}  # fmt: skip
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(partial, indent=2) + "\n")
        x = samples[-1]
        log(f"{done:>9,} bets: worker RSS {x['worker_rss_mb']} MB, auditor "
            f"{x['auditor_rss_mb']} MB, {done / x['seconds']:.0f} bets/s")  # fmt: skip
    results["samples"] = samples
    results["complete"] = ok
    results["bets_decided"] = reader.decided["m"]
    results["duplicates"] = reader.duplicates["m"]
    results["republished"] = reader.republished["m"]
    results["outcomes"] = dict(reader.outcomes.get("m", {}))
    results["verdict"] = verdict(samples, a.warmup_bets, a.flat_slope)
    rows, dups = query_counts(s)
    results["postgres"] = {"bets_rows": rows, "bet_duplicates": dups}
    want = done + plan.warmup  # the set-up's warm-up bets are in the table too
    return ok and reader.duplicates["m"] == 0 and rows == want and dups == 0


def report(r: dict[str, Any]) -> None:
    v = r.get("verdict", {})
    print()
    print(f"  {'bets':>10} {'worker RSS MB':>14} {'auditor RSS MB':>15}")
    for x in r.get("samples", []):
        print(f"  {x['bets']:>10,} {x['worker_rss_mb']:>14} {x['auditor_rss_mb']:>15}")
    if v.get("flat") is None:
        print(f"  memory: no verdict ({v.get('why')})")
        return
    print(f"  after the warm-up ({r['plan']['warmup_bets']:,} bets): "
          f"{v['rss_after_warmup_mb']} MB -> {v['rss_at_end_mb']} MB, growth "
          f"{v['growth_mb']:+} MB ({v['growth_pct']:+}%), slope "
          f"{v['slope_mb_per_100k_bets']:+} MB per 100k bets")  # fmt: skip
    word = "FLAT" if v["flat"] else "GROWING"
    print(f"  memory: {word} (flat = |slope| < {v['flat_slope_limit']} MB per 100k bets)")


if __name__ == "__main__":
    raise SystemExit(main())
