"""How to write a batch of rows in one statement: ``COPY`` against one ``jsonb`` parameter.

    .venv/bin/python bench/row_writes.py [--rows 500] [--rounds 12] [--out FILE]

Needs a PostgreSQL (``CROUPIER_PG_DSN``, or the one ``make up`` runs via ``.stack/env``).
Writes batches of ``--rows`` bet-shaped rows (the columns and sizes of ``bets``) into a
temporary table, each batch its own transaction, by four means in interleaved rounds:
``COPY`` (what cannot travel in a psycopg pipeline), and one ``INSERT ... SELECT`` whose
rows come in one parameter as JSON arrays read with ``jsonb_array_elements`` or
``json_array_elements``, or as JSON objects with ``jsonb_populate_recordset``. Prints the
median and lowest wall time a batch and this process's CPU a batch (the client's side),
and writes them as JSON. The placement, casino and audit writers use the ``jsonb`` arrays
(``sinks/postgres/``): BENCHMARKS.md has the figures that chose it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.settings import Settings  # noqa: E402
from config.stackenv import load_stack_env  # noqa: E402

COLUMNS = (
    "bet_id", "player_id", "currency", "stake", "odds", "placed_at", "status", "reason",
    "request_hash", "request", "decision", "decided_at", "source_topic", "source_partition",
    "source_offset", "standing_version",
)  # fmt: skip
TABLE = """CREATE TEMP TABLE b (
    bet_id text PRIMARY KEY, player_id text NOT NULL, currency char(3) NOT NULL,
    stake numeric NOT NULL, odds numeric, placed_at timestamptz NOT NULL, status text NOT NULL,
    reason text, request_hash text NOT NULL, request jsonb NOT NULL, decision text NOT NULL,
    decided_at timestamptz NOT NULL, source_topic text NOT NULL, source_partition integer NOT
    NULL, source_offset bigint NOT NULL, standing_version bigint)"""
POSITIONAL = """SELECT r->>0, r->>1, r->>2, (r->>3)::numeric, (r->>4)::numeric,
    (r->>5)::timestamptz, r->>6, r->>7, r->>8, (r->>9)::jsonb, r->>10, (r->>11)::timestamptz,
    r->>12, (r->>13)::int, (r->>14)::bigint, (r->>15)::bigint"""
OBJECTS_SQL = "INSERT INTO b SELECT * FROM jsonb_populate_recordset(NULL::b, %s::jsonb)"
Row = tuple[Any, ...]


class Rows:
    def __init__(self) -> None:
        self.n = 0
        self.now = datetime.now(UTC)
        stamp = self.now.isoformat()
        self.request = json.dumps({
            "schema_version": 1, "bet_id": "b-x", "player_id": "p-123", "stake": "1.00",
            "currency": "EUR", "placed_at": stamp, "selections": [{
                "event_id": "ev-12", "market_id": "1x2", "outcome_id": "home", "odds": "2.10"}],
        })  # fmt: skip
        self.decision = json.dumps({"bet_id": "b-x", "player_id": "p-123",
                                    "status": "accepted", "reason": None, "odds": "2.10",
                                    "decided_at": stamp})  # fmt: skip

    def batch(self, size: int) -> list[Row]:
        out = []
        for _ in range(size):
            self.n += 1
            out.append((f"b-{self.n}", "p-123", "EUR", Decimal("1.00"), Decimal("2.10"), self.now,
                        "open", None, "ab" * 32, self.request, self.decision, self.now, "bets",
                        3, self.n, 7))  # fmt: skip
        return out


def as_json(row: Row) -> list[Any]:
    return [v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, Decimal)
            else v for v in row]  # fmt: skip


def writers(conn: psycopg.Connection[Any]) -> dict[str, Callable[[list[Row]], None]]:
    cols = ", ".join(COLUMNS)

    def copy(rows: list[Row]) -> None:
        with conn.cursor() as cur, cur.copy(f"COPY b ({cols}) FROM STDIN") as out:
            for row in rows:
                out.write_row(row)

    def jsonb_arrays(rows: list[Row]) -> None:
        conn.execute(f"INSERT INTO b ({cols}) {POSITIONAL} FROM jsonb_array_elements(%s::jsonb) r",
                     (json.dumps([as_json(r) for r in rows]),))  # fmt: skip

    def json_arrays(rows: list[Row]) -> None:
        conn.execute(f"INSERT INTO b ({cols}) {POSITIONAL} FROM json_array_elements(%s::json) r",
                     (json.dumps([as_json(r) for r in rows]),))  # fmt: skip

    def jsonb_objects(rows: list[Row]) -> None:
        objects = [dict(zip(COLUMNS, as_json(r), strict=True)) for r in rows]
        for o in objects:
            o["request"] = json.loads(o["request"])
        conn.execute(OBJECTS_SQL, (json.dumps(objects),))

    return {"copy": copy, "jsonb_arrays": jsonb_arrays, "json_arrays": json_arrays,
            "jsonb_objects": jsonb_objects}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=500)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "row_writes.json")
    args = p.parse_args()
    load_stack_env()
    settings = Settings()
    source = Rows()
    with psycopg.connect(settings.pg_dsn.get_secret_value()) as conn:
        conn.execute(TABLE)
        conn.commit()
        ways = writers(conn)
        wall: dict[str, list[float]] = {name: [] for name in ways}
        cpu: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, write in ways.items():
                rows = source.batch(args.rows)
                started, used = time.perf_counter(), time.process_time()
                write(rows)
                conn.commit()
                wall[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - used)
    results = {
        name: {"median_ms": round(statistics.median(wall[name]) * 1e3, 2),
               "min_ms": round(min(wall[name]) * 1e3, 2),
               "client_cpu_ms": round(statistics.median(cpu[name]) * 1e3, 2)}
        for name in ways
    }  # fmt: skip
    for name, r in results.items():
        print(
            f"{name:14s} a batch of {args.rows}: median {r['median_ms']:6.1f} ms, "
            f"lowest {r['min_ms']:6.1f}, client CPU {r['client_cpu_ms']:5.1f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": args.rows, "rounds": args.rounds,
                                    "results": results}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
