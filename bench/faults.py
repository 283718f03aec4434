"""Faults: the match-day simulation while workers die and the services restart under it.

    .venv/bin/python bench/faults.py [--workers 2] [--seed 7] [--duration 60] [--rate 40]
        [--faults workers,kafka,postgres,clickhouse] [--keep]

Starts a private embedded stack (its own directory and free ports; never the one
``make up`` runs) with ``--workers`` workers, the auditor and the analytics sink. Then, one
round per fault, it runs ``croupier simulate`` (a fresh run id each round, seed
``--seed`` + round) and, a third of the way into the match, injects the fault:

- ``workers``: SIGKILL a worker, restart it, three times over, a different worker each
  time when there are several;
- ``kafka``: stop the broker, leave it down ``--outage`` seconds, start it again;
- ``kafka-kill``: the same with SIGKILL (the broker recovers its logs uncleanly);
- ``postgres``: stop PostgreSQL with ``-m immediate`` (a crash: the restart replays
  the WAL), down ``--outage`` seconds, start it again;
- ``clickhouse``: stop the ClickHouse engine for ``--clickhouse-outage`` seconds.

Throughout, the bench acts as a supervisor would (systemd, compose's ``restart:``): any
worker or service that exits is started again within seconds, and that is recorded. When the
simulation has finished, ``croupier check --run <run id>`` must pass. A last
``croupier check`` over the whole stack ends the bench. Prints a table, writes
``bench/results/faults.json``; exit status 1 when a check failed or a simulation did not
complete.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from private_stack import PrivateStack, log, private_stack  # noqa: E402

from croupier.stack.process import pid_alive, wait_unlocked  # noqa: E402

FAULTS = ("workers", "kafka", "kafka-kill", "postgres", "clickhouse")
DEFAULT_FAULTS = ("workers", "kafka", "postgres", "clickhouse")


def machine() -> str:
    import platform

    return f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}"


# -- the faults ---------------------------------------------------------------------------------


def kill_workers(ps: PrivateStack, args: argparse.Namespace) -> None:
    names = sorted(ps.workers())
    for k in range(3):
        name = names[k % len(names)]
        pid = ps.kill_worker(name)
        ps.note("SIGKILL", worker=name, pid=pid)
        time.sleep(1.0)
        restarted = ps.supervise()
        ps.note("restarted", processes=",".join(restarted) or "-", pids=ps.workers())
        time.sleep(args.gap)


def restart_kafka(ps: PrivateStack, args: argparse.Namespace, *, kill: bool = False) -> None:
    broker = ps.stack.kafka
    pid = broker.pid()
    if kill and pid is not None:
        os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.05)
        wait_unlocked(broker.home / "data" / ".lock", timeout=30)
        broker.pidfile.unlink(missing_ok=True)
        ps.note("kafka SIGKILL", pid=pid)
    else:
        broker.stop()
        ps.note("kafka stopped", pid=pid)
    time.sleep(args.outage)
    start = time.monotonic()
    broker.start()
    ps.note("kafka started", pid=broker.pid(), took_s=round(time.monotonic() - start, 1))


def restart_postgres(ps: PrivateStack, args: argparse.Namespace) -> None:
    pg = ps.stack.postgres
    pid = pg.pid()
    pg.stop(mode="immediate")
    ps.note("postgres stopped -m immediate", pid=pid)
    time.sleep(args.outage)
    start = time.monotonic()
    pg.start()
    ps.note("postgres started", pid=pg.pid(), took_s=round(time.monotonic() - start, 1))


def stop_clickhouse(ps: PrivateStack, args: argparse.Namespace) -> None:
    ch = ps.stack.clickhouse
    pid = ch.pid()
    ch.stop()
    ps.note("clickhouse stopped", pid=pid)
    time.sleep(args.clickhouse_outage)
    ch.start()
    ps.note("clickhouse started", pid=ch.pid())


INJECT: dict[str, Callable[[PrivateStack, argparse.Namespace], None]] = {
    "workers": kill_workers,
    "kafka": restart_kafka,
    "kafka-kill": lambda ps, a: restart_kafka(ps, a, kill=True),
    "postgres": restart_postgres,
    "clickhouse": stop_clickhouse,
}


# -- one round ----------------------------------------------------------------------------------


def check(ps: PrivateStack, run_id: str | None, wait: float) -> dict[str, Any]:
    args = ["check", "--json", "--wait", str(wait)]
    if run_id:
        args += ["--run", run_id]
    start = time.monotonic()
    done = ps.croupier(*args, timeout=wait + 900)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        report = {"stdout": done.stdout[-2000:]}
    failed = [r.get("name") for r in report.get("rows", []) if not r.get("ok")]
    return {"exit": done.returncode, "seconds": round(time.monotonic() - start, 1),
            "failed": failed, "report": report, "stderr": done.stderr[-2000:]}  # fmt: skip


def run_round(
    ps: PrivateStack, fault: str, n: int, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    run_id = f"f{n}{fault.replace('-', '')}-{uuid.uuid4().hex[:4]}"
    summary_file = out / f"{run_id}.json"
    sim_args = [
        "simulate", "--seed", str(args.seed + n), "--run-id", run_id,
        "--duration", str(args.duration), "--rate", str(args.rate),
        "--players", str(args.players), "--matches", str(args.matches),
        "--progress", "lines", "--timeout", str(args.timeout), "--out", str(summary_file),
    ]  # fmt: skip
    first = len(ps.events)
    ps.note("round", fault=fault, run=run_id)
    started = time.monotonic()
    sim = ps.popen(sim_args, out / f"{run_id}.log")
    time.sleep(args.duration * args.at)
    INJECT[fault](ps, args)
    restarted = ps.supervise()
    if restarted:
        ps.note("supervisor restarted", processes=",".join(restarted))
    try:
        sim_exit = sim.wait(timeout=args.duration + args.timeout + 120)
    except Exception:
        sim.kill()
        sim_exit = -1
    sim_seconds = round(time.monotonic() - started, 1)
    ps.note("simulation ended", exit=sim_exit, seconds=sim_seconds)
    restarted = ps.supervise()  # a process that died later (e.g. on a slow reconnect)
    if restarted:
        ps.note("supervisor restarted", processes=",".join(restarted))
    result = check(ps, run_id, args.wait)
    ps.note("check", run=run_id, exit=result["exit"], failed=",".join(result["failed"]) or "-")
    try:
        summary = json.loads(summary_file.read_text())
    except (OSError, json.JSONDecodeError):
        summary = {}
    return {
        "fault": fault,
        "run_id": run_id,
        "injected": ps.events[first:],
        "simulate_exit": sim_exit,
        "simulate_seconds": sim_seconds,
        "simulation": summary,
        "check": result,
        "ok": sim_exit == 0 and result["exit"] == 0,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of match per round")
    p.add_argument("--rate", type=float, default=40.0, help="base bets/s")
    p.add_argument("--players", type=int, default=200)
    p.add_argument("--matches", type=int, default=4)
    p.add_argument("--faults", default=",".join(DEFAULT_FAULTS),
                   help=f"comma-separated, in order: {', '.join(FAULTS)}")  # fmt: skip
    p.add_argument("--at", type=float, default=0.35, help="when to inject, share of duration")
    p.add_argument("--outage", type=float, default=8.0, help="seconds Kafka/PostgreSQL stay down")
    p.add_argument("--clickhouse-outage", type=float, default=20.0)
    p.add_argument("--gap", type=float, default=6.0, help="seconds between worker kills")
    p.add_argument("--timeout", type=float, default=600.0, help="simulate's wait for outcomes")
    p.add_argument("--wait", type=float, default=300.0, help="check's wait for catch-up")
    p.add_argument("--keep", action="store_true", help="keep the private stack's directory")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "faults.json")
    args = p.parse_args(argv)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        p.error(f"unknown fault(s) {', '.join(unknown)}; choose from {', '.join(FAULTS)}")
    args.fault_list = faults
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rounds: list[dict[str, Any]] = []
    started = time.time()
    with private_stack(args.workers, keep=args.keep) as ps:
        out = ps.stack.config.root / "faults"
        out.mkdir(parents=True, exist_ok=True)
        ps.supervise_in_background()
        for n, fault in enumerate(args.fault_list, start=1):
            rounds.append(run_round(ps, fault, n, args, out))
        final = check(ps, None, args.wait)
        ps.note("final check (whole stack)", exit=final["exit"],
                failed=",".join(final["failed"]) or "-")  # fmt: skip
        if args.keep:
            log(f"simulation logs under {out}")
    results = {
        "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "options": {k: v for k, v in vars(args).items() if k not in ("out", "fault_list")}
        | {"faults": args.fault_list},
        "rounds": rounds,
        "final_check": final,
        "ok": all(r["ok"] for r in rounds) and final["exit"] == 0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print()
    head = ("fault", "run", "simulate", "sim s", "check", "check s")
    print(
        f"{head[0]:<12} {head[1]:<22} {head[2]:>8} {head[3]:>6} {head[4]:>6} {head[5]:>8}  failed"
    )
    for r in rounds:
        c = r["check"]
        print(f"{r['fault']:<12} {r['run_id']:<22} {r['simulate_exit']:>8} "
              f"{r['simulate_seconds']:>6} {c['exit']:>6} {c['seconds']:>8}  "
              f"{','.join(c['failed']) or '-'}")  # fmt: skip
    print(f"{'(all)':<12} {'whole stack':<22} {'':>8} {'':>6} {final['exit']:>6} "
          f"{final['seconds']:>8}  {','.join(final['failed']) or '-'}")  # fmt: skip
    print(f"\n{'PASSED' if results['ok'] else 'FAILED'}; wrote {args.out}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
