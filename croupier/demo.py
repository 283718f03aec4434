"""``croupier demo``: the main job on the running stack.

For now it shows the plumbing end to end: player events (and one malformed message)
go into Kafka, the worker decides them, and the demo prints what came out on the
``audit`` and ``dead-letters`` topics and what PostgreSQL holds. Later flows grow it
into the match-day simulation.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

from croupier.cli import EXIT_FAILED, EXIT_OK, load_stack_env
from croupier.kafka import consume_until, make_producer
from croupier.settings import Settings


def _events(run: str) -> list[tuple[str, bytes]]:
    now = datetime.now(UTC).isoformat()
    out: list[tuple[str, bytes]] = []
    for n, jurisdiction in enumerate(["UK", "DK", "ES", "NJ"], start=1):
        pid = f"demo-{run}-p{n}"
        registered = {
            "type": "registered", "player_id": pid, "jurisdiction": jurisdiction,
            "currency": "EUR", "birth_date": "1990-05-01", "timestamp": now,
        }  # fmt: skip
        out.append((pid, json.dumps(registered).encode()))
    session = {"type": "session_started", "player_id": f"demo-{run}-p1", "session_id": "s-1",
               "timestamp": now}  # fmt: skip
    out.append((f"demo-{run}-p1", json.dumps(session).encode()))
    stranger = {"type": "session_started", "player_id": f"demo-{run}-nobody",
                "session_id": "s-9", "timestamp": now}  # fmt: skip
    out.append((f"demo-{run}-nobody", json.dumps(stranger).encode()))
    out.append((f"demo-{run}-p2", b'{"type": "registered", "player_id": '))  # malformed
    return out


def run_demo(*, timeout: float = 120.0) -> int:
    load_stack_env()
    settings = Settings()
    run = uuid.uuid4().hex[:8]
    events = _events(run)
    producer = make_producer(settings)
    for key, value in events:
        producer.produce(settings.topic("players"), key=key.encode(), value=value)
    producer.flush(30)
    print(f"produced {len(events)} player events (run {run}) to {settings.topic('players')}")

    started = time.monotonic()
    mine = f"demo-{run}-"
    records = consume_until(
        settings,
        [settings.topic("audit"), settings.topic("dead-letters")],
        want=lambda rs: sum(1 for r in rs if r.key.startswith(mine)) >= len(events),
        timeout=timeout,
    )
    ours = [r for r in records if r.key.startswith(mine)]
    for r in ours:
        doc = json.loads(r.value)
        if r.topic.endswith("dead-letters"):
            print(f"  dead letter  {r.key:<22} {doc['reason']}: {doc['error'][:70]}")
        else:
            print(
                f"  audit        {r.key:<22} {doc['action']} -> version {doc['after']['version']}"
            )
    elapsed = time.monotonic() - started
    print(f"worker answered {len(ours)} of {len(events)} events in {elapsed:.1f}s")
    rows = _postgres_rows(settings, mine)
    print(f"PostgreSQL ({settings.pg_schema}): {rows} rows for this run, one per event")
    return EXIT_OK if len(ours) >= len(events) and rows == len(events) else EXIT_FAILED


def _postgres_rows(settings: Settings, prefix: str) -> int:
    import psycopg

    with psycopg.connect(
        settings.pg_dsn.get_secret_value(), options=f"-c search_path={settings.pg_schema}"
    ) as conn:
        row = conn.execute(
            """SELECT (SELECT count(*) FROM player_events WHERE player_id LIKE %(p)s)
                    + (SELECT count(*) FROM dead_letters
                       WHERE convert_from(key, 'UTF8') LIKE %(p)s)""",
            {"p": f"{prefix}%"},
        ).fetchone()
    return int(row[0]) if row else 0
