"""The casino sink alone: ``CasinoSink.decide`` on batches of calls, no Kafka, no worker.

    .venv/bin/python bench/casino_sink.py [--players 1000] [--rounds 5000] [--batch 500]
        [--partitions 3] [--warmup 2] [--keep] [--profile FILE] [--out FILE]

Needs PostgreSQL (``CROUPIER_PG_DSN`` and ``CROUPIER_PG_ADMIN_DSN``, or the ones
``make up`` wrote: ``. .stack/env``). Creates its own schema (``benchsink_<tag>``, dropped
at the end unless ``--keep``). ``--players`` UK players are registered with a session
open (their standings written by the players sink, as the players flow writes them) and
funded by a deposit. A round is a 1.00 EUR debit on ``croupier-dice`` by a uniformly
chosen player and a credit of 0.00 or a win with ``round_closed``. Calls come in
batches of ``--batch`` from ``--partitions`` partitions of one topic (a worker's share,
by player): the rounds' debits first, then, in the next batch, the credits closing
them. Each batch's progress is filled as the flow fills it.

Times each ``decide`` (one transaction) on this process's clock and prints, per batch
kind and in all, the milliseconds per 1,000 calls (mean, median, min, max over the
timed batches), and this process's CPU time in them (Python and psycopg: the rest is
PostgreSQL and waiting). Checks every answer is ``ok`` with the balance foreseen, that a replay of
the first batch republishes its answers byte for byte, and that the ledger reconciles.
Writes ``bench/results/casino_sink.json`` (or ``--out``). ``--profile FILE`` runs the
timed batches under cProfile and writes its stats to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import platform
import random
import statistics
import sys
import time
import uuid
import zlib
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from config.games import load_catalogue  # noqa: E402
from config.policies import load_policies  # noqa: E402
from config.settings import Settings  # noqa: E402
from config.stackenv import load_stack_env  # noqa: E402
from rules import ledger as L  # noqa: E402
from rules.players import apply_player_event  # noqa: E402
from schemas.casino import CASINO_CALL  # noqa: E402
from schemas.players import PLAYER_EVENT, PlayerState  # noqa: E402
from schemas.records import SourcePosition  # noqa: E402
from sinks.postgres.casino import CasinoBatch, CasinoInput, CasinoSink  # noqa: E402
from sinks.postgres.ledger import Ledger  # noqa: E402
from sinks.postgres.migrate import migrate  # noqa: E402
from sinks.postgres.players import PlayerBatch, PostgresPlayerSink, SessionChange  # noqa: E402

GAME = "croupier-dice"
CURRENCY = "EUR"
DEPOSIT = Decimal("1000000.00")
STAKE = Decimal("1.00")
WINS = [Decimal("1.50"), Decimal("2.00"), Decimal("3.00"), Decimal("10.00")]
LOSS_SHARE = 0.55
TOPIC = "bench.casino"
GROUP = "croupier-benchsink"


def partition_of(player: str, partitions: int) -> int:
    return zlib.crc32(player.encode()) % partitions


async def register(dsn: str, schema: str, players: list[str], policies: Any) -> None:
    """Standings and sessions as the players flow writes them; a deposit each."""
    now = datetime.now(UTC)
    at = now.isoformat()
    batch = PlayerBatch()
    for n, p in enumerate(players):
        state: PlayerState | None = None
        events = [
            {"type": "registered", "player_id": p, "jurisdiction": "UK", "currency": CURRENCY,
             "birth_date": "1990-05-01", "timestamp": at},
            {"type": "session_started", "player_id": p, "session_id": f"s-{p}", "timestamp": at},
        ]  # fmt: skip
        for k, doc in enumerate(events):
            event = PLAYER_EVENT.validate_json(json.dumps(doc))
            got = apply_player_event(state, event, partition=0, offset=2 * n + k,
                                     policies=policies, now=now)  # fmt: skip
            assert isinstance(got, PlayerState), got
            state = got
        assert state is not None
        batch.states[p] = state
        batch.sessions.append(SessionChange(p, f"s-{p}", now))
    sink = PostgresPlayerSink(dsn, schema, consumer_group=GROUP)
    await sink.open()
    try:
        await sink.write(batch)
    finally:
        await sink.close()
    ledger = Ledger.connect(dsn, schema)
    try:
        for i in range(0, len(players), 1000):
            ops = [L.deposit(f"d-{p}", p, DEPOSIT, CURRENCY, now) for p in players[i : i + 1000]]
            assert all(r.applied for r in ledger.post_batch(ops))
    finally:
        ledger.close()


class Casino:
    """The aggregator's side: the calls of each batch and the balances foreseen."""

    def __init__(self, players: list[str], partitions: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.players = players
        self.partitions = partitions
        self.balances = dict.fromkeys(players, DEPOSIT)
        self.offsets = [0] * partitions
        self.round = 0

    def batches(self, rounds: int) -> list[tuple[str, list[CasinoInput], list[Decimal]]]:
        """Debit batch then credit batch, ``rounds`` rounds each: (kind, inputs, balances)."""
        at = datetime.now(UTC).isoformat()
        docs: dict[str, list[dict[str, Any]]] = {"debit": [], "credit": []}
        for _ in range(rounds):
            self.round += 1
            player, rid = self.rng.choice(self.players), f"r-{self.round}"
            common = {"round_id": rid, "game_id": GAME, "player_id": player,
                      "currency": CURRENCY, "timestamp": at}  # fmt: skip
            win = Decimal("0.00") if self.rng.random() < LOSS_SHARE else self.rng.choice(WINS)
            docs["debit"].append({"type": "debit", "transaction_id": f"{rid}-d", **common,
                                  "amount": str(STAKE)})  # fmt: skip
            docs["credit"].append({"type": "credit", "transaction_id": f"{rid}-c", **common,
                                   "amount": str(win), "round_closed": True})  # fmt: skip
        out = []
        for kind in ("debit", "credit"):
            inputs, foreseen = [], []
            # As a worker sees them: by partition, in offset order within each.
            for doc in sorted(docs[kind], key=lambda d: partition_of(d["player_id"],
                                                                     self.partitions)):  # fmt: skip
                player = doc["player_id"]
                part = partition_of(player, self.partitions)
                value = json.dumps(doc).encode()
                src = SourcePosition(topic=TOPIC, partition=part, offset=self.offsets[part])
                self.offsets[part] += 1
                inputs.append(CasinoInput(src, CASINO_CALL.validate_json(value),
                                          player.encode(), value))  # fmt: skip
                sign = -1 if kind == "debit" else 1
                self.balances[player] += sign * Decimal(doc["amount"])
                foreseen.append(self.balances[player])
            out.append((kind, inputs, foreseen))
        return out


def batch_of(inputs: list[CasinoInput]) -> CasinoBatch:
    batch = CasinoBatch(inputs=list(inputs))
    for item in inputs:
        key = (item.source.topic, item.source.partition)
        batch.progress[key] = max(batch.progress.get(key, 0), item.source.offset + 1)
    return batch


def check(answers: list[tuple[bytes, bytes]], inputs: list[CasinoInput],
          foreseen: list[Decimal]) -> None:  # fmt: skip
    assert len(answers) == len(inputs), (len(answers), len(inputs))
    for (key, value), item, balance in zip(answers, inputs, foreseen, strict=True):
        doc = json.loads(value)
        assert key == item.call.player_id.encode()
        assert doc["transaction_id"] == item.call.transaction_id, doc
        assert doc["status"] == "ok" and Decimal(doc["balance"]) == balance, (doc, balance)


def summary(ms_per_1000: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(ms_per_1000), 1),
        "median": round(statistics.median(ms_per_1000), 1),
        "min": round(min(ms_per_1000), 1),
        "max": round(max(ms_per_1000), 1),
    }


async def run(args: argparse.Namespace, s: Settings) -> dict[str, Any]:
    dsn, schema = s.pg_dsn.get_secret_value(), s.pg_schema
    policies = load_policies(s.policy_dir)
    catalogue = load_catalogue(jurisdictions=policies.jurisdictions)
    players = [f"p-{n}" for n in range(args.players)]
    t0 = time.perf_counter()
    await register(dsn, schema, players, policies)
    setup_s = time.perf_counter() - t0
    casino = Casino(players, args.partitions, args.seed)
    sink = CasinoSink(dsn, schema, consumer_group=GROUP, policies=policies, catalogue=catalogue,
                      max_connections=1)  # fmt: skip
    await sink.open()
    timings: dict[str, list[float]] = {"debit": [], "credit": []}
    cpu = 0.0  # this process's CPU time in the timed decides: Python and psycopg's C
    profiler = cProfile.Profile() if args.profile else None
    replay_ms = 0.0
    try:
        per_pair = args.batch
        first: tuple[list[CasinoInput], list[tuple[bytes, bytes]]] | None = None
        for n in range(args.warmup + args.rounds // per_pair):
            for kind, inputs, foreseen in casino.batches(per_pair):
                batch = batch_of(inputs)
                now = datetime.now(UTC)
                if profiler is not None and n >= args.warmup:
                    profiler.enable()
                start, cpu_start = time.perf_counter(), time.process_time()
                answered = await sink.decide(batch, now)
                took = time.perf_counter() - start
                if n >= args.warmup:
                    cpu += time.process_time() - cpu_start
                if profiler is not None:
                    profiler.disable()
                check(answered.outputs, inputs, foreseen)
                if n >= args.warmup:
                    timings[kind].append(took * 1000 / len(inputs) * 1000)
                if first is None:
                    first = (inputs, answered.outputs)
        assert first is not None
        # A replay of a batch's positions republishes what it answered, byte for byte.
        start = time.perf_counter()
        again = await sink.decide(batch_of(first[0]), datetime.now(UTC))
        replay_ms = (time.perf_counter() - start) * 1000 / len(first[0]) * 1000
        assert again.outputs == first[1], "a replay answered other bytes"
    finally:
        await sink.close()
    if profiler is not None:
        profiler.dump_stats(args.profile)
    ledger = Ledger.connect(dsn, schema)
    try:
        rec = ledger.reconcile()
        cash = "SELECT owner, balance FROM ledger_accounts WHERE kind = 'cash'"
        held = dict(ledger.conn.execute(cash).fetchall())
        progress = ledger.conn.execute(
            "SELECT partition, next_offset FROM consumer_progress WHERE consumer_group = %s",
            (GROUP,),
        ).fetchall()
    finally:
        ledger.close()
    drift = [p for p, b in casino.balances.items() if held.get(p) != b]
    everything = timings["debit"] + timings["credit"]
    return {
        "setup_seconds": round(setup_s, 1),
        "batches_timed": len(everything),
        "ms_per_1000_calls": summary(everything),
        "debit_batches_ms_per_1000": summary(timings["debit"]),
        "credit_batches_ms_per_1000": summary(timings["credit"]),
        "calls_per_s_one_connection": round(1_000_000 / statistics.fmean(everything)),
        "client_cpu_ms_per_1000": round(cpu * 1000 / (len(everything) * args.batch) * 1000, 1),
        "replay_ms_per_1000": round(replay_ms, 1),
        "balances_drift": len(drift),
        "reconcile_ok": rec.ok,
        "progress_in_transaction": sorted((int(p), int(o)) for p, o in progress),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--players", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5000, help="rounds timed (2 calls each)")
    p.add_argument("--batch", type=int, default=500, help="calls per batch")
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2, help="debit+credit batch pairs untimed")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep the schema")
    p.add_argument("--profile", help="cProfile the timed batches into this file")
    p.add_argument("--label", default="", help="a name for this run in the JSON")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "casino_sink.json"))
    args = p.parse_args()
    load_stack_env()
    tag = uuid.uuid4().hex[:8]
    s = Settings(CROUPIER_PG_SCHEMA=f"benchsink_{tag}")
    migrate(s.migration_dsn, s.pg_schema)
    t0 = time.perf_counter()
    sum(range(10**7))
    probe = round((time.perf_counter() - t0) * 10, 2)
    out: dict[str, Any] = {
        "label": args.label,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
        "probe_sum_range_1e8_s": probe,
        "players": args.players,
        "batch": args.batch,
        "partitions": args.partitions,
        "rounds_timed": args.rounds,
        "schema": s.pg_schema,
    }
    try:
        out |= asyncio.run(run(args, s))
    finally:
        if not args.keep:
            with psycopg.connect(s.migration_dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(s.pg_schema)))  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for key, value in out.items():
        print(f"{key:>28}: {value}")
    ok = out["reconcile_ok"] and not out["balances_drift"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
