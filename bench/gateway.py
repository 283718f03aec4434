"""HTTP edge benchmark: ``croupier gateway`` in front of a worker, driven over real HTTP.

    .venv/bin/python bench/gateway.py [--rate 500] [--duration 10] [--calls 4000]
        [--bets 10000] [--concurrency 256] [--players 200] [--workers CORES]
        [--gateway-processes 1] [--private] [--sign] [--quick] [--out FILE]

Needs Kafka and PostgreSQL: the stack ``make up`` runs (via ``.stack/env`` or the service
variables), or with ``--private`` an embedded one of its own on free ports (no workers,
no services), stopped at the end. Like ``bench/casino.py`` it never touches the stack's
own flows: its own topics, consumer group and schema, its own ``croupier worker``
processes (one per core, as ``make up`` starts) and the audit trail's background work in
one ``croupier audit run`` process beside them (the stack's way), and its own gateway on
a free port, with a partner key pair and an API key made for the run (and with ``--sign``
an operator key, so every Hub88 answer is signed).

Set-up: ``--players`` players register, open a session and get a deposit of 10,000.00.
Then three phases, each timed on this machine's clock by the same process (an aiohttp
client with at most ``--concurrency`` requests in flight):

1. wallet, paced: ``/transaction/bet`` (a 1.00 stake, signed RSA-SHA256 as Hub88 does)
   at ``--rate`` calls/s for ``--duration`` s; latency per call (p50, p90, p99, max)
   from the request sent to Hub88's answer (the gateway waited for ``casino-results``);
2. wallet, as fast as it goes: ``--calls`` calls; wallet calls/s;
3. bet posts: ``--bets`` ``POST /bets`` (each answered 202 after ``acks=all``); posts/s.

Each phase also reports the gateway's CPU per request (utime + stime of every gateway
process, from /proc, all threads, in ms) and the load average as it starts: on a shared
machine the rates swing with the load, the CPU per request much less.
``--gateway-processes N`` runs ``croupier gateway run --workers N``.

Every call must be answered ``RS_OK`` (exit 1 otherwise); the goals (>= 2,000 wallet
calls/s; p99 <= 150 ms at 500 calls/s; >= 5,000 bet posts/s) are reported, not errors.
Prints a summary and writes ``bench/results/gateway.json`` (``gateway-quick.json`` with
``--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))

from bets import (  # noqa: E402
    cleanup,
    distribution_ms,
    log,
    start_auditor,
    start_workers,
    worker_env,
)

from config.kafka import make_producer  # noqa: E402
from config.settings import Settings  # noqa: E402
from config.stackenv import load_stack_env  # noqa: E402
from croupier.gateway import READY  # noqa: E402
from croupier.stack import AUDITOR_TIMERS_OFF  # noqa: E402
from croupier.stack.process import free_port  # noqa: E402

GAME = "croupier-dice"
GOALS = {"wallet_calls_per_s": 2000.0, "p99_ms_at_500": 150.0, "bet_posts_per_s": 5000.0}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--calls", type=int, default=4000)
    p.add_argument("--bets", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--players", type=int, default=200)
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="croupier worker processes (default: one per core, as make up)",
    )
    p.add_argument("--gateway-processes", type=int, default=1)
    p.add_argument("--private", action="store_true", help="an embedded stack of its own")
    p.add_argument("--sign", action="store_true", help="an operator key: Hub88 answers signed")
    p.add_argument("--quick", action="store_true", help="a short run that proves it works")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.quick:
        args.rate, args.duration = min(args.rate, 100.0), min(args.duration, 3.0)
        args.calls, args.bets, args.players = min(args.calls, 400), min(args.bets, 1000), 20
    if args.out is None:
        name = "gateway-quick.json" if args.quick else "gateway.json"
        args.out = ROOT / "bench" / "results" / name
    return args


def settings(tag: str, base: Settings) -> Settings:
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=base.kafka_bootstrap_servers,
        CROUPIER_PG_DSN=base.pg_dsn.get_secret_value(),
        CROUPIER_PG_ADMIN_DSN=base.migration_dsn,
        CROUPIER_CLICKHOUSE_URL=base.clickhouse_url,
        CROUPIER_PG_SCHEMA=f"benchgw_{tag}",
        CROUPIER_APP_ID=f"croupier-benchgw-{tag}",
        CROUPIER_TOPIC_PREFIX=f"benchgw{tag}.",
        CROUPIER_TOPIC_PARTITIONS=6,
        CROUPIER_CLOCK_SKEW_SECONDS=86_400,
        CROUPIER_REPORT_SIGNING_KEY=str(base.report_signing_key),
        CROUPIER_AUDIT_KEY=str(base.audit_key),
        # No signed checkpoints in a bench of the edge (nor a need for the audit key's file).
        CROUPIER_AUDIT_CHECKPOINT_INTERVAL=0,
    )


def done(s: Settings, topic: str) -> int:
    import psycopg

    with psycopg.connect(s.migration_dsn, options=f"-c search_path={s.pg_schema}") as conn:
        row = conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_progress WHERE topic = %s",
            (s.topic(topic),),
        ).fetchone()
    return int(row[0]) if row else 0


def wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not done in {timeout:.0f}s")
        time.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its children (the processes of ``--workers N``)."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    pids += [int(c) for c in children]
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


class Client:
    """Signs and sends; records each call's latency and answer."""

    def __init__(self, base: str, partner: Any, api_key: str, concurrency: int) -> None:
        self.base, self.partner, self.api_key = base, partner, api_key
        self.limit = asyncio.Semaphore(concurrency)
        self.session: Any = None
        self.tokens: dict[str, str] = {}  # each player's Hub88 session token
        self.gateway_pid = 0

    def sign(self, body: bytes) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        return base64.b64encode(
            self.partner.sign(body, padding.PKCS1v15(), hashes.SHA256())
        ).decode()

    def call(self, player: str) -> tuple[bytes, dict[str, str]]:
        """A signed Hub88 bet, made before the clock starts (RSA signing is the client's
        cost, ~1 ms a call here, not the gateway's)."""
        tx = uuid.uuid4().hex
        body = json.dumps(
            {
                "user": player,
                "transaction_uuid": tx,
                "request_uuid": tx,
                "round": tx,
                "game_code": GAME,
                "currency": "EUR",
                "amount": 100_000,
                "token": self.tokens[player],
            }
        ).encode()
        return body, {"X-Hub88-Signature": self.sign(body), "Content-Type": "application/json"}

    async def wallet(self, body: bytes, headers: dict[str, str]) -> tuple[float, str]:
        async with self.limit:
            started = time.perf_counter()
            async with self.session.post(
                self.base + "/transaction/bet", data=body, headers=headers
            ) as resp:
                answer = await resp.json()
            return time.perf_counter() - started, str(answer.get("status"))

    async def bet(self, player: str, at: str) -> int:
        bet_id = uuid.uuid4().hex
        body = json.dumps(
            {
                "bet_id": bet_id,
                "player_id": player,
                "placed_at": at,
                "stake": "1.00",
                "currency": "EUR",
                "odds_change": "any",
                "selections": [
                    {
                        "event_id": "m-bench",
                        "market_id": "1x2",
                        "outcome_id": "home",
                        "odds": "2.00",
                    }
                ],
            }
        ).encode()
        async with (
            self.limit,
            self.session.post(
                self.base + "/bets", data=body, headers={"X-Api-Key": self.api_key}
            ) as resp,
        ):
            await resp.read()
            return int(resp.status)


async def phases(client: Client, players: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from datetime import UTC, datetime

    import aiohttp

    out: dict[str, Any] = {}
    conn = aiohttp.TCPConnector(limit=args.concurrency * 2)
    async with aiohttp.ClientSession(connector=conn) as session:
        client.session = session
        for _ in range(50):  # warm-up: pools, connections, the worker's first batches
            await client.wallet(*client.call(random.choice(players)))
        # 1. paced
        n = int(args.rate * args.duration)
        calls = [client.call(random.choice(players)) for _ in range(n)]
        t0 = time.perf_counter()

        async def paced(i: int) -> tuple[float, str]:
            await asyncio.sleep(max(0.0, t0 + i / args.rate - time.perf_counter()))
            return await client.wallet(*calls[i])

        load, cpu0 = os.getloadavg()[0], cpu_seconds(client.gateway_pid)
        got = await asyncio.gather(*(paced(i) for i in range(n)))
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(client.gateway_pid) - cpu0
        out["wallet_paced"] = {
            "load_at_start": round(load, 1),
            "gateway_cpu_ms_per_call": round(cpu * 1000 / n, 3),
            "rate": args.rate,
            "calls": n,
            "seconds": round(elapsed, 2),
            "achieved_per_s": round(n / elapsed, 1),
            "latency_ms": distribution_ms(lat for lat, _ in got),
            "not_ok": sum(st != "RS_OK" for _, st in got),
        }
        log(f"wallet paced: {out['wallet_paced']}")
        # 2. as fast as it goes
        calls = [client.call(random.choice(players)) for _ in range(args.calls)]
        load, cpu0 = os.getloadavg()[0], cpu_seconds(client.gateway_pid)
        t0 = time.perf_counter()
        got = await asyncio.gather(*(client.wallet(*c) for c in calls))
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(client.gateway_pid) - cpu0
        out["wallet_max"] = {
            "load_at_start": round(load, 1),
            "gateway_cpu_ms_per_call": round(cpu * 1000 / args.calls, 3),
            "calls": args.calls,
            "seconds": round(elapsed, 2),
            "calls_per_s": round(args.calls / elapsed, 1),
            "latency_ms": distribution_ms(lat for lat, _ in got),
            "not_ok": sum(st != "RS_OK" for _, st in got),
        }
        log(f"wallet max: {out['wallet_max']}")
        # 3. bet posts
        at = datetime.now(UTC).replace(microsecond=0).isoformat()
        load, cpu0 = os.getloadavg()[0], cpu_seconds(client.gateway_pid)
        t0 = time.perf_counter()
        codes = await asyncio.gather(
            *(client.bet(random.choice(players), at) for _ in range(args.bets))
        )
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(client.gateway_pid) - cpu0
        out["bet_posts"] = {
            "load_at_start": round(load, 1),
            "gateway_cpu_ms_per_post": round(cpu * 1000 / args.bets, 3),
            "posts": args.bets,
            "seconds": round(elapsed, 2),
            "posts_per_s": round(args.bets / elapsed, 1),
            "not_202": sum(c != 202 for c in codes),
        }
        log(f"bet posts: {out['bet_posts']}")
    return out


def run(args: argparse.Namespace, base: Settings) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from croupier.gateway.config import add_key
    from sinks.postgres.migrate import migrate
    from topologies.topics import create_topics

    tag = uuid.uuid4().hex[:8]
    s = settings(tag, base)
    where = Path(tempfile.mkdtemp(prefix="croupier-benchgw-"))
    create_topics(s)
    migrate(s.migration_dsn, s.pg_schema)
    partner = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (where / "partners").mkdir()
    (where / "partners" / "bench.pem").write_bytes(
        partner.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    if args.sign:  # the operator's key: X-Hub88-Signature on every Hub88 answer
        operator = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (where / "operator.pem").write_bytes(
            operator.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    api_key = add_key(where, "bench")
    # The stack's way: the trail's background work in an auditor process, not the workers.
    auditor = start_auditor(s, where)
    quiet = Settings.model_validate({**s.as_env(), **AUDITOR_TIMERS_OFF})
    try:
        workers = start_workers(quiet, args.workers, where)
    except SystemExit as exc:
        # A worker can fail its start on a broker minutes old (a changelog's leader not
        # elected yet: streams/view.py retries only a missing topic); once more.
        log(f"a worker did not start ({str(exc)[-200:]}); starting again")
        time.sleep(3)
        try:
            workers = start_workers(quiet, args.workers, where)
        except BaseException:
            auditor.stop()  # not left running against a bench that gave up
            raise
    port = free_port()
    env = {
        **worker_env(s, where / "faust"),
        "CROUPIER_GATEWAY_PORT": str(port),
        "CROUPIER_GATEWAY_DIR": str(where),
        "CROUPIER_GATEWAY_RATE": "1000000",
        "CROUPIER_GATEWAY_BURST": "1000000",
        "CROUPIER_GATEWAY_WORKERS": str(args.gateway_processes),
    }
    glog = where / "gateway.log"
    with open(glog, "ab") as out:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "croupier", "gateway", "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    ok = False
    try:
        wait(
            lambda: glog.read_text(errors="replace").count(READY) >= args.gateway_processes,
            60,
            "the gateway",
        )
        players = [f"gw-{tag}-{i}" for i in range(args.players)]
        producer = make_producer(s)
        for p in players:
            for kind, extra in (
                (
                    "registered",
                    {"jurisdiction": "UK", "currency": "EUR", "birth_date": "1990-05-01"},
                ),
                ("session_started", {"session_id": f"s-{p}"}),
            ):
                msg = {"type": kind, "player_id": p, "timestamp": "2026-11-24T17:00:00Z", **extra}
                producer.produce(s.topic("players"), key=p.encode(), value=json.dumps(msg).encode())
            producer.poll(0)
        producer.flush(60)
        wait(lambda: done(s, "players") >= 2 * len(players), 120, "registrations")
        for p in players:
            msg = {
                "type": "deposit",
                "payment_id": f"d-{p}",
                "player_id": p,
                "amount": "10000.00",
                "currency": "EUR",
                "timestamp": "2026-11-24T18:00:00Z",
            }
            producer.produce(s.topic("payments"), key=p.encode(), value=json.dumps(msg).encode())
        producer.flush(60)
        wait(lambda: done(s, "payments") >= len(players), 120, "deposits")
        client = Client(f"http://127.0.0.1:{port}", partner, api_key, args.concurrency)
        client.gateway_pid = gateway.pid
        from croupier.gateway.tokens import issue

        dsn = s.pg_dsn.get_secret_value()
        client.tokens = {p: issue(dsn, s.pg_schema, p, 3600, partner="bench") for p in players}
        results = asyncio.run(phases(client, players, args))
        ok = (
            results["wallet_paced"]["not_ok"] == 0
            and results["wallet_max"]["not_ok"] == 0
            and results["bet_posts"]["not_202"] == 0
        )
        report = {
            "machine": f"{platform.node()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
            "commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip(),
            "parameters": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
            },
            "results": results,
            "goals": GOALS,
            "goals_met": {
                "wallet_calls_per_s": results["wallet_max"]["calls_per_s"]
                >= GOALS["wallet_calls_per_s"],
                "p99_ms_at_500": args.rate >= 500
                and results["wallet_paced"]["latency_ms"].get("p99", 1e9) <= GOALS["p99_ms_at_500"],
                "bet_posts_per_s": results["bet_posts"]["posts_per_s"] >= GOALS["bet_posts_per_s"],
            },
            "ok": ok,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {args.out}: goals met {report['goals_met']}")
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(30)
        except subprocess.TimeoutExpired:
            gateway.kill()
        for w in [*workers, auditor]:
            w.stop()
        cleanup(s, where, keep=False, keep_logs=not ok)
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.private:
        load_stack_env()
        return run(args, Settings())
    from croupier.stack import Stack, StackConfig

    tmp = Path(tempfile.mkdtemp(prefix="croupier-benchgw-stack-"))
    tmp.chmod(0o755)  # PostgreSQL runs as its own user and must reach its data dir
    ports: set[int] = set()
    while len(ports) < 5:
        ports.add(free_port())
    kafka, controller, pg, ch, gw = sorted(ports)
    stack = Stack(
        StackConfig(
            root=tmp,
            cache=ROOT / ".stack" / "cache",
            kafka_port=kafka,
            kafka_controller_port=controller,
            pg_port=pg,
            clickhouse_port=ch,
            gateway_port=gw,
            workers=0,
            kafka_heap="768m",
        )
    )
    try:
        env = stack.up(workers=False)  # and the stack's signing keys, made on first setup
        return run(args, Settings(**env))  # type: ignore[arg-type]  # aliases: the env names
    finally:
        stack.down()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
