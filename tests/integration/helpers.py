"""Helpers for integration tests: produce with offsets, read PostgreSQL, wait for things."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from config.kafka import make_producer
from config.settings import Settings
from sinks.postgres.audit import verify
from sinks.postgres.ledger import Ledger
from tests.conftest import StartWorker, WorkerProcess


def produce(settings: Settings, topic: str, items: Iterable[tuple[str, bytes]]) -> list[Any]:
    """Produce ``(key, value)`` pairs to a contract topic; return the delivered messages
    in the order of ``items`` (delivery reports arrive per partition, not in that order)."""
    delivered: dict[int, Any] = {}
    errors: list[Any] = []

    def report(index: int) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, msg: Any) -> None:
            if err:
                errors.append(err)
            else:
                delivered[index] = msg

        return on_delivery

    producer = make_producer(settings)
    count = 0
    for count, (key, value) in enumerate(items, start=1):
        producer.produce(
            settings.topic(topic), key=key.encode(), value=value, on_delivery=report(count - 1)
        )
        producer.poll(0)
    assert producer.flush(30) == 0, "producer could not deliver everything"
    assert not errors, errors
    assert len(delivered) == count
    return [delivered[i] for i in range(count)]


def query(settings: Settings, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run SQL in the test's schema as its owner (a test may do what the application cannot)."""
    with psycopg.connect(
        settings.migration_dsn, options=f"-c search_path={settings.pg_schema}"
    ) as conn:
        return conn.execute(sql.encode(), params).fetchall()


def wait_for(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def rows_recorded(settings: Settings) -> int:
    """Consumed player messages that left their row: events plus dead letters."""
    total = query(
        settings,
        "SELECT (SELECT count(*) FROM player_events) + (SELECT count(*) FROM dead_letters)",
    )
    return int(total[0][0])


def player_event(kind: str, player_id: str, **fields: Any) -> bytes:
    base: dict[str, Any] = {"type": kind, "player_id": player_id,
                            "timestamp": "2026-11-24T17:00:00Z"}  # fmt: skip
    if kind == "registered":
        base.update(jurisdiction="UK", currency="EUR", birth_date="1990-05-01")
    if kind in ("session_started", "session_ended"):
        base.update(session_id="s-1")
    base.update(fields)
    return json.dumps(base).encode()


def joined(player_id: str, **registration: Any) -> list[tuple[str, bytes]]:
    """A player ready to play: registered, with a session open (every policy requires one)."""
    return [
        (player_id, player_event("registered", player_id, **registration)),
        (player_id, player_event("session_started", player_id, session_id=f"s-{player_id}")),
    ]


# -- the sportsbook's wire messages --------------------------------------------------------

T0 = "2026-11-24T19:00:00Z"
# A bet's placed_at must be within the clock tolerance of the server's decision time
# (the test settings allow a day): one time per test session, so a producer's retry built
# twice is byte for byte the same bet.
BETS_AT = datetime.now(UTC).replace(microsecond=0).isoformat()


def odds_change(event_id: str, markets: dict[str, dict[str, str]], *, at: str = T0,
                status: str = "active", producer: str | None = None) -> bytes:  # fmt: skip
    msg: dict[str, Any] = {
        "type": "odds_change", "event_id": event_id, "timestamp": at,
        "markets": [
            {"market_id": m, "status": status,
             "outcomes": [{"outcome_id": o, "odds": p} for o, p in prices.items()]}
            for m, prices in markets.items()
        ],
    }  # fmt: skip
    if producer:
        msg["producer"] = producer
    return json.dumps(msg).encode()


def feed(kind: str, event_id: str, *, at: str, **fields: Any) -> bytes:
    """A bet_stop, bet_cancel or rollback message."""
    return json.dumps({"type": kind, "event_id": event_id, "timestamp": at, **fields}).encode()


def settlement(event_id: str, results: dict[str, dict[str, str]], *, at: str) -> bytes:
    return json.dumps({
        "type": "bet_settlement", "event_id": event_id, "timestamp": at,
        "markets": [
            {"market_id": m, "outcomes": [{"outcome_id": o, "result": r} for o, r in res.items()]}
            for m, res in results.items()
        ],
    }).encode()  # fmt: skip


def bet(bet_id: str, player_id: str, stake: str, legs: list[tuple[str, str, str, str]], *,
        policy: str = "none", currency: str = "EUR", at: str = BETS_AT) -> bytes:  # fmt: skip
    return json.dumps({
        "bet_id": bet_id, "player_id": player_id, "placed_at": at, "stake": stake,
        "currency": currency, "odds_change": policy,
        "selections": [{"event_id": e, "market_id": m, "outcome_id": o, "odds": p}
                       for e, m, o, p in legs],
    }).encode()  # fmt: skip


def payment(kind: str, payment_id: str, player_id: str, amount: str | None = None) -> bytes:
    msg: dict[str, Any] = {"type": kind, "payment_id": payment_id, "player_id": player_id,
                           "timestamp": "2026-11-24T18:00:00Z"}  # fmt: skip
    if amount is not None:
        msg.update(amount=amount, currency="EUR")
    return json.dumps(msg).encode()


def done(settings: Settings, topic: str) -> int:
    """How many messages of a (fresh, per-test) topic the flows have finished."""
    rows = query(settings, "SELECT coalesce(sum(next_offset), 0) FROM consumer_progress "
                 "WHERE topic = %s", (settings.topic(topic),))  # fmt: skip
    return int(rows[0][0])


def balance(settings: Settings, player_id: str) -> tuple[Any, Any]:
    """(cash, pending) of a player's EUR wallet."""
    rows = query(settings, "SELECT kind, balance FROM ledger_accounts WHERE owner = %s "
                 "AND currency = 'EUR'", (player_id,))  # fmt: skip
    got = dict(rows)
    return got.get("cash"), got.get("pending")


def paced(settings: Settings, topic: str, items: list[tuple[str, bytes]], *, per: int,
          pause: float, out: list[Any]) -> threading.Thread:  # fmt: skip
    """Produce ``items`` ``per`` at a time with ``pause`` between, in a thread (started)."""

    def publish() -> None:
        for start in range(0, len(items), per):
            out.extend(produce(settings, topic, items[start : start + per]))
            time.sleep(pause)

    thread = threading.Thread(target=publish)
    thread.start()
    return thread


def kill_at(settings: Settings, worker: WorkerProcess, start: StartWorker, topic: str,
            total: int, plan: list[tuple[float, str]], rng: random.Random) -> None:  # fmt: skip
    """At each fraction of ``total`` done on ``topic``, SIGKILL (or SIGTERM) and restart."""
    for fraction, how in plan:

        def progressed(target: float = total * fraction) -> bool:
            return done(settings, topic) >= target

        wait_for(progressed, timeout=180, what=f"{topic} {fraction:.0%}")
        time.sleep(rng.uniform(0, 0.2))
        if how == "kill":
            worker.kill()
        else:
            assert worker.terminate() == 0, worker.problems()
        start(settings, restart_of=worker)
        worker.wait_ready()


def casino_ready(settings: Settings, worker_factory: StartWorker, players: dict[str, str]) -> Any:
    """A worker, and ``players`` (id -> deposit) registered, in session, and funded."""
    produce(settings, "players", [kv for p in players for kv in joined(p)])
    w = worker_factory(settings)
    w.wait_ready()
    wait_for(lambda: done(settings, "players") == 2 * len(players), timeout=60, what="players")
    produce(settings, "payments", [(p, payment("deposit", f"d-{p}", p, amount))
                                   for p, amount in players.items()])  # fmt: skip
    wait_for(lambda: done(settings, "payments") == len(players), timeout=60, what="deposits")
    return w


def ledger_reconciles(settings: Settings) -> None:
    ledger = Ledger.connect(settings.pg_dsn.get_secret_value(), settings.pg_schema)
    try:
        assert ledger.reconcile().ok
    finally:
        ledger.close()


def audit_trail_holds(settings: Settings) -> None:
    """Every hash chain of the test's schema recomputes."""
    with psycopg.connect(settings.pg_dsn.get_secret_value(),
                         options=f"-c search_path={settings.pg_schema}") as conn:  # fmt: skip
        result = verify(conn)
    assert result.ok, result.problems


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a log written with CROUPIER_LOG_FORMAT=json, parsed; each one must
    be a JSON object with a level, a logger and a message."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert lines, f"{path} is empty"
    for line in lines:
        assert line["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, line
        assert isinstance(line["logger"], str) and line["logger"], line
        assert isinstance(line["message"], str), line
        assert isinstance(line["process"], int) and "time" in line, line
    return lines
