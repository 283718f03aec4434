"""Ledger operations per second on PostgreSQL: one transaction per operation vs batched.

    .venv/bin/python bench/ledger.py [--players 10000] [--batched 100000] [--single 5000]

Needs a PostgreSQL (``CROUPIER_PG_DSN``, or the one ``make up`` runs via ``.stack/env``).
Uses a fresh schema, prints the numbers, writes ``bench/results/ledger.json``, and ends
with ``croupier wallet reconcile``'s check on what it wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.settings import Settings  # noqa: E402
from config.stackenv import load_stack_env  # noqa: E402
from rules import ledger as L  # noqa: E402
from sinks.postgres.ledger import Ledger  # noqa: E402
from sinks.postgres.migrate import migrate  # noqa: E402

NOW = datetime.now(UTC)
STAKE = Decimal("1.00")


def timed_batches(ledger: Ledger, ops: list[L.LedgerOp], size: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(ops), size):
        results = ledger.post_batch(ops[i : i + size])
        assert all(r.applied for r in results), "a benchmark operation was refused"
    return time.perf_counter() - start


def parallel(dsn: str, schema: str, work: list[list[L.LedgerOp]], size: int) -> float:
    """Post each list on its own connection at the same time; the wall-clock seconds."""
    failures: list[BaseException] = []

    def run(ops: list[L.LedgerOp]) -> None:
        own = Ledger.connect(dsn, schema)
        try:
            timed_batches(own, ops, size)
        except BaseException as exc:
            failures.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=run, args=(ops,)) for ops in work]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if failures:
        raise failures[0]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--players", type=int, default=10_000)
    parser.add_argument("--batched", type=int, default=100_000, help="stakes, batched path")
    parser.add_argument("--single", type=int, default=5_000, help="stakes, one per transaction")
    parser.add_argument("--batch", type=int, default=1_000, help="operations per batch")
    parser.add_argument("--threads", type=int, default=4, help="connections, hot-house run")
    args = parser.parse_args()

    load_stack_env()
    settings = Settings()
    dsn = settings.pg_dsn.get_secret_value()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    migrate(settings.migration_dsn, schema)
    ledger = Ledger.connect(dsn, schema)
    players = [f"p-{n}" for n in range(args.players)]
    out: dict[str, object] = {
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "players": args.players,
        "batch": args.batch,
    }

    deposits = [L.deposit(f"d-{p}", p, Decimal("1000000.00"), "EUR", NOW) for p in players]
    timed_batches(ledger, deposits, args.batch)

    singles = [
        L.stake(f"s-{n}", players[n % len(players)], STAKE, "EUR", NOW) for n in range(args.single)
    ]
    start = time.perf_counter()
    for op in singles:
        assert ledger.post(op).applied
    single_rate = args.single / (time.perf_counter() - start)

    batched = [
        L.stake(f"b-{n}", players[n % len(players)], STAKE, "EUR", NOW) for n in range(args.batched)
    ]
    batched_rate = args.batched / timed_batches(ledger, batched, args.batch)

    # Two connections at once, each with its own half of the players: what two workers
    # (one per core, each owning its partitions) do.
    halves = [[op for op in batched2 if int(op.player_id[2:]) % 2 == h] for h in (0, 1)
              for batched2 in [[L.stake(f"b2-{n}", players[n % len(players)], STAKE, "EUR", NOW)
                                for n in range(args.batched)]]]  # fmt: skip
    two_rate = args.batched / parallel(dsn, schema, halves, args.batch)

    # Replaying the same batches moves nothing and returns the first results.
    replay_rate = args.batched / timed_batches(ledger, batched, args.batch)

    hot_player = [L.stake(f"h-{n}", players[0], Decimal("0.01"), "EUR", NOW) for n in range(20_000)]
    hot_player_rate = len(hot_player) / timed_batches(ledger, hot_player, args.batch)

    # Hot house: every operation moves money against the same house account, from several
    # connections at once. No house row is locked, so they do not queue behind each other.
    per_thread = args.batched // args.threads
    work = [[L.casino_debit(f"c-{t}-{n}", players[(n * args.threads + t) % len(players)],
                            STAKE, "EUR", NOW) for n in range(per_thread)]
            for t in range(args.threads)]  # fmt: skip
    hot_house_rate = per_thread * args.threads / parallel(dsn, schema, work, args.batch)

    rec = ledger.reconcile()
    out |= {
        "single_tx_ops_per_s": round(single_rate),
        "batched_ops_per_s": round(batched_rate),
        "batched_vs_single": round(batched_rate / single_rate, 1),
        "batched_2_connections_ops_per_s": round(two_rate),
        "replay_ops_per_s": round(replay_rate),
        "hot_player_ops_per_s": round(hot_player_rate),
        f"hot_house_ops_per_s_{args.threads}_connections": round(hot_house_rate),
        "reconcile_ok": rec.ok,
        "entries": sum(c.entries for c in rec.currencies),
        "schema": schema,
    }
    (ROOT / "bench" / "results" / "ledger.json").write_text(json.dumps(out, indent=2) + "\n")
    for key, value in out.items():
        print(f"{key:>36}: {value}")
    ledger.close()
    if not rec.ok:
        raise SystemExit("reconcile found an imbalance")


if __name__ == "__main__":
    main()
