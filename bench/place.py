"""The bet placement transaction alone: ``SportsbookSink.place`` per 1,000 bets.

    .venv/bin/python bench/place.py [--players 1000] [--batches 20] [--batch 500] [--rounds 3]

Needs a PostgreSQL (``CROUPIER_PG_DSN``, or the one ``make up`` runs via ``.stack/env``).
Makes a fresh schema, registers and funds ``--players`` UK players (one in ten with a loss
limit, so the locked path of player protection runs too), then places batches of
``--batch`` bets through the sink with the real policies: 80 % singles and 20 %
accumulators of two or three legs, every one accepted (the run fails otherwise), spread
over ``--partitions`` source partitions so each batch appends to several audit chains as
a worker's does. Each round places ``--batches`` fresh batches after one warm-up batch;
the printed number is milliseconds per 1,000 bets (median batch, and the round's total;
and this process's CPU time, the sink's Python side, and the CPU time of the ``make up``
stack's PostgreSQL server, both less noisy on a shared machine than the clock),
then a replay of one batch (every bet known: the stored decisions published again).
Writes ``bench/results/place.json``; drops its schema at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpu import postgres_cpu_seconds  # noqa: E402

from config.policies import load_policies  # noqa: E402
from config.settings import Settings  # noqa: E402
from config.stackenv import load_stack_env  # noqa: E402
from rules import ledger as L  # noqa: E402
from rules.sportsbook import Priced, price_text  # noqa: E402
from schemas.bets import BetRequest  # noqa: E402
from schemas.players import OpenSession, PlayerLimit, PlayerState  # noqa: E402
from schemas.records import SourcePosition  # noqa: E402
from sinks.postgres.ledger import Ledger  # noqa: E402
from sinks.postgres.migrate import migrate  # noqa: E402
from sinks.postgres.players import PlayerBatch, PostgresPlayerSink  # noqa: E402
from sinks.postgres.sportsbook import BetBatch, BetInput, SportsbookSink  # noqa: E402

PRICES = (Decimal("1.50"), Decimal("2.10"), Decimal("3.40"))


def players(n: int, now: datetime) -> dict[str, PlayerState]:
    out = {}
    for i in range(n):
        pid = f"p-{i}"
        limits: tuple[PlayerLimit, ...] = ()
        if i % 10 == 0:  # a loss limit far above what the run stakes: locked, never reached
            limits = (PlayerLimit(kind="loss", period="day", amount=Decimal("100000.00"),
                                  currency="EUR", set_at=now),)  # fmt: skip
        out[pid] = PlayerState(
            player_id=pid, jurisdiction="UK", currency="EUR", birth_date="1990-05-01",
            registered_at=now, version=1, last_event="registered", updated_at=now,
            source_partition=0, source_offset=i,
            session=OpenSession(session_id=f"s-{i}", started_at=now), limits=limits,
        )  # fmt: skip
    return out


class Bets:
    """Fresh bets, numbered across the run; offsets grow per partition as Kafka's do."""

    def __init__(self, players: int, partitions: int) -> None:
        self.n = 0
        self.players = players
        self.partitions = partitions
        self.offsets = [0] * partitions

    def batch(self, size: int, now: datetime) -> BetBatch:
        out = BetBatch()
        for _ in range(size):
            n = self.n
            self.n += 1
            legs = 1 if n % 5 else 2 + n % 2  # 20 % accumulators of 2 or 3 legs
            sels = [{"event_id": f"m-{(n + k) % 200}-{k}", "market_id": "1x2",
                     "outcome_id": "home", "odds": str(PRICES[k])}
                    for k in range(legs)]  # fmt: skip
            bet = BetRequest.model_validate({
                "bet_id": f"b-{n}", "player_id": f"p-{n % self.players}", "placed_at": now,
                "stake": "1.00", "currency": "EUR", "odds_change": "none", "selections": sels,
            })  # fmt: skip
            total = Decimal(1)
            for k in range(legs):
                total *= PRICES[k]
            part = n % self.partitions
            src = SourcePosition(topic="bets", partition=part, offset=self.offsets[part])
            self.offsets[part] += 1
            out.progress[("bets", part)] = self.offsets[part]
            verdict = Priced(PRICES[:legs], price_text(total))
            value = bet.model_dump_json().encode()
            out.inputs.append(BetInput(src, bet, f"h-{n}", verdict, bet.player_id.encode(), value))
        return out


async def run(args: argparse.Namespace, settings: Settings, schema: str) -> dict[str, Any]:
    dsn = settings.pg_dsn.get_secret_value()
    now = datetime.now(UTC)
    states = players(args.players, now)
    psink = PostgresPlayerSink(dsn, schema, consumer_group="bench-place")
    await psink.open()
    await psink.write(PlayerBatch(states=states))
    await psink.close()
    book = Ledger.connect(dsn, schema)
    try:
        book.post_batch([L.deposit(f"d-{p}", p, Decimal("100000.00"), "EUR", now) for p in states])
    finally:
        book.close()

    sink = SportsbookSink(dsn, schema, consumer_group="bench-place",
                          policies=load_policies(settings.policy_dir))  # fmt: skip
    await sink.open()
    bets = Bets(args.players, args.partitions)
    rounds = []
    replay_ms = []
    try:
        for _ in range(args.rounds):
            await place_all(sink, [bets.batch(args.batch, datetime.now(UTC))])  # warm-up
            batches = [bets.batch(args.batch, datetime.now(UTC)) for _ in range(args.batches)]
            cpu, server = time.process_time(), postgres_cpu_seconds()
            times = await place_all(sink, batches)
            cpu, server = time.process_time() - cpu, postgres_cpu_seconds() - server
            per_1000 = [t * 1000 / args.batch * 1000 for t in times]
            rounds.append({"median_ms_per_1000": round(statistics.median(per_1000), 1),
                           "total_ms_per_1000": round(sum(times) * 1e6
                                                      / (args.batch * args.batches), 1),
                           "client_cpu_ms_per_1000": round(cpu * 1e6
                                                           / (args.batch * args.batches), 1),
                           "server_cpu_ms_per_1000": round(server * 1e6
                                                           / (args.batch * args.batches), 1),
                           "min_ms_per_1000": round(min(per_1000), 1),
                           "max_ms_per_1000": round(max(per_1000), 1)})  # fmt: skip
            again = await place_all(sink, batches[:1], replay=True)
            replay_ms.append(round(again[0] * 1e6 / args.batch, 1))
    finally:
        await sink.close()
    return {"rounds": rounds, "replay_ms_per_1000": replay_ms}


async def place_all(
    sink: SportsbookSink, batches: list[BetBatch], *, replay: bool = False
) -> list[float]:
    times = []
    for batch in batches:
        start = time.perf_counter()
        placed = await sink.decide(batch, datetime.now(UTC))
        times.append(time.perf_counter() - start)
        refused = [json.loads(v) for _, v in placed.outputs if b'"rejected"' in v]
        if len(placed.outputs) != len(batch.inputs):
            msg = f"{len(batch.inputs)} bets, {len(placed.outputs)} decisions published"
            raise SystemExit(msg)
        if refused and not replay:
            msg = f"{len(refused)} bets refused, e.g. {refused[:3]}"
            raise SystemExit(msg)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--players", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--label", default="", help="a name for this run in the JSON")
    parser.add_argument("--keep", action="store_true", help="keep the scratch schema")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "place.json")
    args = parser.parse_args()

    load_stack_env()
    settings = Settings()
    schema = f"bench_place_{uuid.uuid4().hex[:8]}"
    migrate(settings.migration_dsn, schema)
    try:
        result = asyncio.run(run(args, settings, schema))
    finally:
        if not args.keep:  # the stack is shared: leave nothing behind
            with psycopg.connect(settings.migration_dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    out = {
        "label": args.label,
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "players": args.players,
        "batch": args.batch,
        "batches_per_round": args.batches,
        "schema": schema,
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for key, value in out.items():
        print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
