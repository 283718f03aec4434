"""Scale-out: the match-day simulation on 1 and on 2 workers in one consumer group.

    .venv/bin/python bench/scaleout.py [--workers 1,2] [--seed 7] [--rate 150]
        [--duration 60] [--spike-factor 20] [--players 2000] [--matches 8]

For each worker count, a private embedded stack (its own directory and free ports) with
that many workers, the auditor and the analytics sink; the same simulation (same seed, so
the same events) runs on it, then ``croupier check --run`` on it. The workers share the
inbound topics' partitions (Kafka's group protocol splits them); which worker owns which
partitions is read from the group and recorded. Prints a table of throughput, latency and
the check, writes ``bench/results/scaleout.json``; exit status 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from faults import check, machine  # noqa: E402
from private_stack import PrivateStack, log, private_stack  # noqa: E402


def assignment(ps: PrivateStack) -> dict[str, list[str]]:
    """Which group member holds which inbound partitions (from the broker)."""
    from confluent_kafka.admin import AdminClient

    from config.kafka import librdkafka_conf
    from config.settings import Settings
    from streams.flow import flow_groups

    settings = Settings(**ps.stack.service_env())  # type: ignore[arg-type]
    admin = AdminClient(librdkafka_conf(settings))
    out: dict[str, list[str]] = {}
    for _group, future in admin.describe_consumer_groups(flow_groups(settings)).items():
        for member in future.result(timeout=20).members:
            parts = member.assignment.topic_partitions if member.assignment else []
            out.setdefault(member.client_id.rpartition("@")[2] or member.host, []).extend(
                f"{tp.topic}/{tp.partition}" for tp in parts)  # fmt: skip
    return {k: sorted(v) for k, v in out.items()}


def one(n: int, args: argparse.Namespace) -> dict[str, Any]:
    with private_stack(n, prefix=f"croupier-scale{n}-") as ps:
        out = ps.stack.config.root / "scaleout"
        out.mkdir(parents=True, exist_ok=True)
        run_id = f"scale{n}"
        summary_file = out / "summary.json"
        sim_args = [
            "simulate", "--seed", str(args.seed), "--run-id", run_id,
            "--duration", str(args.duration), "--rate", str(args.rate),
            "--spike-factor", str(args.spike_factor), "--players", str(args.players),
            "--matches", str(args.matches), "--progress", "lines",
            "--timeout", "900", "--out", str(summary_file),
        ]  # fmt: skip
        start = time.monotonic()
        done = ps.croupier(*sim_args, timeout=args.duration + 1200)
        seconds = round(time.monotonic() - start, 1)
        (out / "simulate.log").write_text(done.stdout + done.stderr)
        log(f"{n} worker(s): simulate exit {done.returncode} in {seconds} s")
        owners = assignment(ps)
        result = check(ps, run_id, 300)
        log(f"{n} worker(s): check exit {result['exit']}")
        try:
            summary = json.loads(summary_file.read_text())
        except (OSError, json.JSONDecodeError):
            summary = {"stdout": done.stdout[-3000:]}
        return {
            "workers": n,
            "simulate_exit": done.returncode,
            "simulate_seconds": seconds,
            "partitions": owners,
            "simulation": summary,
            "check": result,
            "ok": done.returncode == 0 and result["exit"] == 0,
        }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="1,2")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rate", type=float, default=150.0)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--spike-factor", type=float, default=20.0)
    p.add_argument("--players", type=int, default=2000)
    p.add_argument("--matches", type=int, default=8)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scaleout.json")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    runs = [one(n, args) for n in counts]
    results = {
        "machine": machine(),
        "options": {k: v for k, v in vars(args).items() if k != "out"},
        "runs": runs,
        "ok": all(r["ok"] for r in runs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    for r in runs:
        print(f"\n== {r['workers']} worker(s): simulate exit {r['simulate_exit']}, "
              f"check exit {r['check']['exit']} =="
              f"\n{json.dumps(r['simulation'].get('summary', r['simulation']), indent=1)[:1500]}"
              f"\npartitions: {json.dumps(r['partitions'])}")  # fmt: skip
    print(f"\n{'PASSED' if results['ok'] else 'FAILED'}; wrote {args.out}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
