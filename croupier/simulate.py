"""``croupier simulate``: a reproducible football match day on the running stack, live.

Players register in the four jurisdictions (with what each policy needs: a session, a
geolocation check in NJ), set limits and deposit; matches are priced by a feed with
heartbeats and churn; goals stop and re-price the markets; bets arrive at ``--rate`` with
a kick-off spike, in a realistic mix (accumulators, stale prices, unknown markets,
malformed messages, producer retries, bets during stops, stakes beyond the balance);
casino rounds run throughout; one player self-excludes mid-match; at full time every
market settles, and one match's settlement is rolled back and settled again.
Every id and Kafka key starts with ``<run_id>-``, so ``croupier check --run RUN_ID``
can scope to the run. See ``croupier/sim/`` for the plan and the machinery.

Exit status: 0 when every input got its outcome (and every accepted bet its final
settlement), 1 when the wait timed out or an outcome is missing or contradictory, 2 for
bad options, 3 when the stack is not reachable.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any

from croupier.sim.plan import Options

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]{0,40}(-[A-Za-z0-9_.]{1,40})*$")


def run(args: argparse.Namespace) -> int:
    from config.policies import load_policies
    from config.settings import Settings
    from config.stackenv import load_stack_env
    from croupier.exits import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE
    from croupier.sim import report
    from croupier.sim.plan import make_plan
    from croupier.sim.run import (
        FeedClock,
        Live,
        Progress,
        SetupFailed,
        play,
        send_setup,
        undelivered,
        wait_consumed,
        wait_outcomes,
    )
    from croupier.sim.track import Outcomes, Sender, Unreachable

    options = Options(
        seed=args.seed,
        players=args.players,
        matches=args.matches,
        rate=args.rate,
        duration=args.duration,
        spike_factor=args.spike_factor,
    )
    run_id = args.run_id or f"sim{args.seed}-{secrets.token_hex(3)}"
    if not RUN_ID.match(run_id):
        print(
            f"croupier simulate: --run-id {run_id!r}: letters, digits, '.', '_', '-'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    load_stack_env()
    settings = Settings()
    policies = load_policies(settings.policy_dir)
    geo = frozenset(j for j, p in policies.items() if p.geolocation.required)
    try:
        plan = make_plan(options, run_id, geo)
    except ValueError as exc:
        print(f"croupier simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # --json: the summary is the one document on stdout; the running text goes to stderr.
    print_json = bool(getattr(args, "print_json", False))
    out = sys.stderr if print_json else sys.stdout
    print(
        f"croupier simulate: run {run_id}, seed {options.seed}: {options.players} players, "
        f"{options.matches} matches, {options.rate:g} bets/s (x{options.spike_factor:g} at "
        f"kick-off), {options.duration:g} s of match time; Kafka "
        f"{settings.kafka_bootstrap_servers}",
        file=out,
        flush=True,
    )
    try:
        outcomes = Outcomes(settings, f"{run_id}-")
    except Unreachable as exc:
        print(
            f"croupier simulate: {exc}; is the stack up? (`croupier stack status`)", file=sys.stderr
        )
        return EXIT_NOT_RUNNING
    outcomes.start()
    sender = Sender(settings)
    live = Live(plan, sender, outcomes)
    progress = Progress(live, args.progress, out)
    clock = FeedClock()
    interrupted = threading.Event()
    started = time.monotonic()
    setup_deadline = started + max(60.0, args.timeout)
    left: dict[str, list[str]] = {}
    status = EXIT_OK
    try:
        try:
            sent = send_setup(sender, plan.setup, clock, args.timeout)
            wait_consumed(settings, sent, setup_deadline)
            send_setup(sender, plan.deposits, clock, args.timeout)
            want = {s.ref for s in plan.deposits}
            while time.monotonic() < setup_deadline:
                with outcomes.lock:
                    if all(("payment-decisions", r) in outcomes.seen for r in want):
                        break
                time.sleep(0.1)
        except SetupFailed as exc:
            print(f"croupier simulate: {exc}; are the workers running?", file=sys.stderr)
            return EXIT_NOT_RUNNING
        print(
            f"set-up done in {time.monotonic() - started:.1f} s; the match day starts "
            f"({plan.end:.0f} s)",
            file=out,
            flush=True,
        )
        if args.progress != "off":
            progress.start()
        play(plan, live, clock, interrupted)
        queued = sender.flush(max(30.0, args.timeout))
        left = wait_outcomes(plan, sender, outcomes, time.monotonic() + args.timeout)
        lost = undelivered(sender.sent)
        if queued or lost:
            left["undelivered"] = [s.step.ref or s.step.kind for s in lost]
    except KeyboardInterrupt:
        interrupted.set()
        status = 130
    finally:
        if progress.is_alive():
            progress.stop()
        sender.flush(10)
        outcomes.stop()
    summary = report.summarise(plan, live, left)
    problems = {
        k: v
        for k, v in (
            ("missing", summary["missing"]),
            ("unsettled", summary["unsettled"]),
            ("undelivered", left.get("undelivered", [])),
            ("decided more than once", summary["decided_more_than_once"]),
            ("contradictory", summary["contradictory"]),
        )
        if v
    }
    if status == EXIT_OK and problems:
        status = EXIT_FAILED
    manifest = {
        "run_id": run_id,
        "seed": options.seed,
        "options": {k: getattr(options, k) for k in Options.__dataclass_fields__}
        | {"timeout": args.timeout},
        "started_at": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - (time.monotonic() - started))
        ),
        "planned": plan.counts(),
        "timeline": plan.timeline(),
        "self_excluded": {"player_id": plan.excluded[0], "at": round(plan.excluded[1], 3)},
        "rolled_back": plan.rolled_back,
        "summary": summary,
        "progress": [vars(s) for s in live.samples],
        "exit_status": status,
    }
    print("\nsummary", file=out)
    report.show(summary, out)
    for what, ids in problems.items():
        print(
            f"  {what}: {len(ids)}: {' '.join(ids[:20])}{' ...' if len(ids) > 20 else ''}", file=out
        )
    where = Path(os.environ.get("CROUPIER_STACK_DIR", ".stack")) / "sim" / f"{run_id}.json"
    for path in [where, *([args.json] if args.json else [])]:
        try:
            _write(path, manifest)
            print(f"  wrote {path}", file=out)
        except OSError as exc:
            print(f"croupier simulate: cannot write {path}: {exc}", file=sys.stderr)
    verdict = {
        EXIT_OK: "every input got its outcome",
        EXIT_FAILED: "outcomes missing or contradictory (above)",
    }.get(status, "interrupted")
    print(f"run {run_id}: {verdict}", file=out)
    if print_json:
        print(json.dumps(manifest, default=str))
    return status


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(path)
