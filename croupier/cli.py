"""The ``croupier`` command line. Exit status 0 means what was asked for holds."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.settings import Settings
from config.stackenv import stack_settings
from croupier import arguments
from croupier.exits import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from sinks.postgres.replay import RangeReport, SettlementReport
    from sinks.signing import Pin

SQL_TIMEOUT = 30.0  # seconds: an analyst's query, not a batch job (the analyst's cap)


def _settings() -> Settings:
    return stack_settings()


def cmd_stack(args: argparse.Namespace) -> int:
    from croupier.redact import redact
    from croupier.stack import Stack, StackConfig

    stack = Stack(StackConfig.from_env())
    if args.action == "up":
        env = stack.up(workers=not args.no_workers)
        for name, value in env.items():
            print(f"{name}={redact(value)}")  # the values themselves are in the env file
        print(f"wrote {stack.env_file}; logs in {stack.logs}")
        return EXIT_OK
    if args.action == "down":
        stack.down()
        print("stack stopped; data kept under", stack.config.root)
        return EXIT_OK
    parts = stack.status()
    if args.json:
        print(redact(json.dumps([p.as_dict() for p in parts], indent=2)))
    else:
        width = max(len(p.name) for p in parts)
        for p in parts:
            state = "running" if p.running else "stopped"
            pid = f" pid {p.pid}" if p.pid else ""
            print(f"{p.name:<{width}}  {p.mode:<8}  {state:<7}  {redact(p.where)}{pid}")
    return EXIT_OK if all(p.running for p in parts) else EXIT_NOT_RUNNING


def cmd_topics(args: argparse.Namespace) -> int:
    from topologies.topics import create_topics

    settings = _settings()
    outcomes = create_topics(settings, timeout=args.timeout)
    for o in outcomes:
        print(f"{o.status:<8} {o.name}{'  ' + o.detail if o.detail else ''}")
    return EXIT_FAILED if any(o.status == "mismatch" for o in outcomes) else EXIT_OK


def cmd_db(args: argparse.Namespace) -> int:
    from sinks.postgres.migrate import ensure_app_login, migrate

    settings = _settings()
    applied = migrate(settings.migration_dsn, settings.pg_schema)
    login = ensure_app_login(settings.migration_dsn, settings.pg_dsn.get_secret_value())
    if login:
        print(f"login {login}: a member of croupier_app (writes the ledger, trail, decisions "
              "and reports only through their functions)")  # fmt: skip
    print(f"schema {settings.pg_schema}: applied {', '.join(applied) or 'nothing (up to date)'}")
    return EXIT_OK


def cmd_wallet(args: argparse.Namespace) -> int:
    from sinks.postgres.ledger import Ledger

    settings = _settings()
    ledger = Ledger.connect(settings.pg_dsn.get_secret_value(), settings.pg_schema)
    try:
        if args.action == "balance":
            return _wallet_balance(ledger, args)
        if args.action == "statement":
            return _wallet_statement(ledger, args)
        return _wallet_reconcile(ledger, args)
    finally:
        ledger.close()


def _wallet_balance(ledger: Any, args: argparse.Namespace) -> int:
    balances = [b for b in ledger.balances(args.player) if args.currency in (None, b.currency)]
    if not balances:
        print(f"croupier: player {args.player!r} has no wallet"
              + (f" in {args.currency}" if args.currency else ""), file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    if args.json:
        docs = [b.as_json() for b in balances]
        print(json.dumps(docs[0] if len(docs) == 1 else docs))
    else:
        for b in balances:
            shown = b.as_json()
            print(f"{b.player_id}  {b.currency}  balance {shown['balance']}  "
                  f"pending {shown['pending']}  reserved {b.withdrawal_reserved}  "
                  f"debt {shown['debt']}")  # fmt: skip
    return EXIT_OK


def _wallet_statement(ledger: Any, args: argparse.Namespace) -> int:
    lines = ledger.statement(args.player, since=args.since, until=args.until)
    if args.json:
        print(json.dumps([{"recorded_at": ln.recorded_at.isoformat(), "key": ln.key,
                           "operation": ln.operation, "account": ln.account,
                           "currency": ln.currency, "amount": str(ln.amount),
                           "balance_after": str(ln.balance_after)} for ln in lines]))  # fmt: skip
        return EXIT_OK
    for ln in lines:
        print(f"{ln.recorded_at:%Y-%m-%d %H:%M:%S}  {ln.operation:<18} {ln.account:<18} "
              f"{ln.amount:>12} {ln.currency}  -> {ln.balance_after:>12}  {ln.key}")  # fmt: skip
    return EXIT_OK


def _wallet_reconcile(ledger: Any, args: argparse.Namespace) -> int:
    rec = ledger.reconcile()
    if args.json:
        print(json.dumps({
            "ok": rec.ok,
            "currencies": [{"currency": c.currency, "debits": str(c.debits),
                            "credits": str(c.credits), "entries": c.entries,
                            "balanced": c.balanced} for c in rec.currencies],
            "unbalanced_transactions": [[str(v) for v in r] for r in rec.unbalanced_transactions],
            "balance_drift": [[str(v) for v in r] for r in rec.balance_drift],
            "house": [[str(v) for v in r] for r in rec.house],
            "debts": [d.as_json() for d in rec.debts],
        }))  # fmt: skip
    else:
        for c in rec.currencies:
            state = "balanced" if c.balanced else "IMBALANCE"
            print(f"{c.currency}  debits {c.debits}  credits {c.credits}  "
                  f"entries {c.entries}  {state}")  # fmt: skip
        for row in rec.unbalanced_transactions:
            print(f"unbalanced transaction {row[0]} in {row[1]}: {row[2]}")
        for owner, kind, cur, stored, derived in rec.balance_drift:
            print(f"balance drift {owner} {kind} {cur}: stored {stored}, entries say {derived}")
        for d in rec.debts:
            shown = d.as_json()
            print(f"{d.currency}  debt accounts {d.accounts}  in debt {d.in_debt}  "
                  f"owed {shown['owed']}")  # fmt: skip
        print("books balance" if rec.ok else "books DO NOT balance")
    return EXIT_OK if rec.ok else EXIT_FAILED


def cmd_replay(args: argparse.Namespace) -> int:
    import psycopg

    from sinks.base import SinkUnavailable

    settings = _settings()
    # A replay builds a scratch schema beside the live one: that takes the owner's rights.
    dsn, schema = settings.migration_dsn, settings.pg_schema
    try:
        return _replay(args, dsn, schema)
    except (psycopg.OperationalError, SinkUnavailable) as exc:
        said = arguments.redact(arguments.one_line(exc))
        print(f"croupier: cannot reach PostgreSQL ({said}); is the stack up (`make status`) "
              "and CROUPIER_PG_DSN right?", file=sys.stderr)  # fmt: skip
        return EXIT_NOT_RUNNING


def _replay(args: argparse.Namespace, dsn: str, schema: str) -> int:
    from sinks.postgres.replay import UnknownBet, replay_range, replay_settlement

    if args.what == "settlement":
        if args.since or args.until or args.keep:
            print("croupier: --from, --to and --keep go with the range form, "
                  "not with `replay settlement`", file=sys.stderr)  # fmt: skip
            return EXIT_USAGE
        try:
            report = replay_settlement(dsn, schema, args.bet_id)
        except UnknownBet as exc:
            print(f"croupier: {exc} (check the id and CROUPIER_PG_SCHEMA={schema})",
                  file=sys.stderr)  # fmt: skip
            return EXIT_USAGE
        if args.json:
            print(json.dumps(report.as_json()))
        else:
            _print_settlement(report)
        return EXIT_OK if report.agree else EXIT_FAILED
    if args.since and args.until and args.since >= args.until:
        print("croupier: --from must be before --to", file=sys.stderr)
        return EXIT_USAGE
    ranged = replay_range(dsn, schema, args.since, args.until, keep=args.keep)
    if args.json:
        print(json.dumps(ranged.as_json()))
    else:
        _print_range(ranged)
    return EXIT_OK if ranged.agree else EXIT_FAILED


def _print_settlement(report: SettlementReport) -> None:
    b, doc = report.bet, report.as_json()
    head = f"bet {b.bet_id} of {b.player_id}: stake {doc['stake']} {b.currency}, {b.status}"
    if b.odds is None:
        print(f"{head} ({b.reason}); nothing to settle")
    else:
        print(f"{head} at {b.odds}; {report.messages} settlement message(s) of its events "
              "replayed")  # fmt: skip
    history = doc["replay"]["history"] if doc["replay"] else []
    if history or report.settlements or report.ledger:
        print("history        replay                      settlements table           ledger")
        ids = [h["settlement_id"] for h in history]
        ids += [
            s["settlement_id"] for s in doc["book"]["settlements"] if s["settlement_id"] not in ids
        ]
        ids += [t["key"].removeprefix("settlement:") for t in doc["ledger"]["settlements"]
                if t["key"].removeprefix("settlement:") not in ids]  # fmt: skip
        mine = {h["settlement_id"]: h for h in history}
        book = {s["settlement_id"]: s for s in doc["book"]["settlements"]}
        led = {t["key"].removeprefix("settlement:"): t for t in doc["ledger"]["settlements"]}
        for sid in ids:
            print(f"  {sid:<12} {_step(mine.get(sid)):<27} {_step(book.get(sid)):<27} "
                  f"{_ledger_step(led.get(sid))}")  # fmt: skip
    for c in report.checks:
        print(f"  {'ok' if c.ok else 'DIFFERS':<7} {c.name:<19} {c.detail}")
    print("replay, book and ledger agree" if report.agree
          else "replay, book and ledger DO NOT agree")  # fmt: skip


def _step(s: dict[str, Any] | None) -> str:
    if s is None:
        return "-"
    return " ".join(str(v) for v in (s["kind"], s["result"], s["payout"]) if v is not None)


def _ledger_step(t: dict[str, Any] | None) -> str:
    if t is None:
        return "-"
    if t["status"] != "applied":
        return f"{t['operation']} {t['status']} ({t['reason']})"
    return f"{t['operation']} cash {t['cash']}"


def _print_range(report: RangeReport) -> None:
    if not report.players:
        print("no bet was decided in the range; nothing to replay")
        return
    print(f"replayed {len(report.players)} player(s): {report.bets} bet(s), "
          f"{report.bets_in_range} decided in the range; {report.messages} settlement "
          f"message(s); {report.recorded_operations} other ledger operation(s)")  # fmt: skip
    where = f"kept as schema {report.scratch_schema}" if report.kept else "dropped"
    print(f"scratch schema {where}")
    for note in report.notes:
        print(f"note: {note}")
    for d in report.differences:
        print(f"  DIFFERS {d.what}  {d.field}: live {d.live}, replay {d.replay}")
    print("no differences: the replay agrees with the live tables" if report.agree
          else f"{len(report.differences)} difference(s) from the live tables")  # fmt: skip


def cmd_worker(args: argparse.Namespace) -> int:
    import asyncio

    import uvloop
    from faust.worker import Worker

    from rules.games import CatalogueError
    from rules.policy import PolicyError
    from topologies.app import create_app

    if args.name:
        os.environ["CROUPIER_WORKER_NAME"] = args.name  # its settings, logs and Kafka ids
    settings = _settings()
    # libuv's event loop: the flows' scheduling, sockets and timers cost a fraction of
    # asyncio's pure-Python loop (BENCHMARKS.md, issue 16).
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        app = create_app(settings)  # loads and validates the policies and the game registry
    except (PolicyError, CatalogueError) as exc:
        print(f"croupier worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Decision latency: move what start-up allocated out of the collector's sight and let
    # the young generation grow, so full collections (pauses of tens of ms) are rare.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    from config import logs

    worker = Worker(app, loglevel=args.loglevel, quiet=True,
                    logging_config=logs.dict_config(args.loglevel))  # fmt: skip
    worker.execute_from_commandline()  # exits the process when the worker stops
    return EXIT_OK


NO_PIN = ("no pinned public key: set CROUPIER_AUDIT_PUBLIC_KEY or pass --public-key (the key "
          "you hold, or its fingerprint: `croupier audit checkpoint` prints it); the key a "
          "checkpoint names is never trusted")  # fmt: skip


def _audit_pin(given: str | None, setting: str | None) -> Pin | None:
    """The pinned audit key: ``--public-key``, else the setting; None when neither."""
    from sinks.signing import parse_pin

    text = given or setting
    return parse_pin(text) if text else None


def _verify_bundle(args: argparse.Namespace) -> int:
    """``audit verify --bundle``: no settings, no database; only the file and a pinned key."""
    from sinks.audit_bundle import BundleError, verify_bundle

    pin = _audit_pin(args.public_key, os.environ.get("CROUPIER_AUDIT_PUBLIC_KEY"))
    if pin is None:
        print(f"croupier: {NO_PIN}", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = verify_bundle(args.bundle, pin)
    except BundleError as exc:
        print(f"croupier: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        for p in report.problems:
            print(f"BROKEN  {p.chain}  record {p.seq}: {p.what}")
        state = "everything verifies" if report.ok else f"{len(report.problems)} problem(s)"
        print(f"bundle {args.bundle} ({report.header.get('from')} .. {report.header.get('to')}): "
              f"{report.chains.records} records in {report.chains.chains} chains, pinned key "
              f"{report.trusted_key}: {state}")  # fmt: skip
    return EXIT_OK if report.ok else EXIT_FAILED


def _keygen(args: argparse.Namespace, settings: Settings) -> int:
    """``audit keygen``: make the audit key (or ``--reports``: the report key), never replace."""
    from sinks import signing

    path = settings.report_signing_key if args.reports else settings.audit_key
    try:
        key = signing.generate(path)
    except signing.KeyFileError as exc:
        print(f"croupier: {exc}", file=sys.stderr)
        return EXIT_FAILED
    public = signing.public_bytes(key)
    pin = "CROUPIER_REPORT_PUBLIC_KEY" if args.reports else "CROUPIER_AUDIT_PUBLIC_KEY"
    print(f"{path}: a new Ed25519 key (mode 0600); public key {public.hex()} in "
          f"{signing.public_file(path)}, fingerprint {signing.fingerprint(public)}")  # fmt: skip
    print(f"pin it where it is verified: {pin}={public.hex()}")
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    import psycopg

    from sinks import signing
    from sinks.postgres import audit

    if args.action == "verify" and args.bundle is not None:
        return _verify_bundle(args)
    settings = _settings()
    if args.action == "keygen":
        return _keygen(args, settings)
    pin = None
    if args.action == "verify":
        pin = _audit_pin(args.public_key, settings.audit_public_key)
        if pin is None:
            print(f"croupier: {NO_PIN}", file=sys.stderr)
            return EXIT_USAGE
    if args.action == "run":
        from config.policies import load_policies
        from streams.auditor import main

        return main(settings, load_policies(settings.policy_dir))
    with psycopg.connect(
        settings.pg_dsn.get_secret_value(), options=f"-c search_path={settings.pg_schema}"
    ) as conn:
        if args.action == "rebuild":
            from sinks.postgres.rebuild import rebuild

            if (args.player is None) == (not args.all):
                print("croupier: name a PLAYER or give --all", file=sys.stderr)
                return EXIT_USAGE
            wallets = rebuild(conn, None if args.all else args.player)
            if not wallets:
                print(f"croupier: no ledger or audit trail for {args.player}", file=sys.stderr)
                return EXIT_USAGE
            bad = [w for w in wallets if not w.ok]
            if args.json:
                print(json.dumps({"ok": not bad, "wallets": [w.to_json() for w in wallets]}))
            else:
                for w in wallets if args.player else bad:
                    shown = ", ".join(f"{k} {v} {c}" for (c, k), v in sorted(w.balances.items()))
                    print(f"{w.player_id}: {w.operations} operations, {len(w.entries)} entries "
                          f"from the trail; {shown or 'no balance'}: "
                          f"{'agrees with the ledger' if w.ok else 'DIFFERS'}")  # fmt: skip
                    for d in w.differences:
                        print(f"  {d}")
                print(f"{len(wallets)} wallet(s) rebuilt from the audit trail, "
                      f"{len(bad)} differ from the ledger")  # fmt: skip
            return EXIT_FAILED if bad else EXIT_OK
        if args.action == "export":
            from sinks.audit_bundle import write_bundle

            if args.to <= args.start:
                print("croupier: --to must be after --from", file=sys.stderr)
                return EXIT_USAGE
            key = signing.load_private_key(settings.audit_key, what="audit key")
            out = args.out or Path(
                f"audit-{args.start:%Y%m%dT%H%M%S}-{args.to:%Y%m%dT%H%M%S}.jsonl"
            )
            lines = write_bundle(out, audit.export_lines(conn, key, args.start, args.to))
            print(f"{out}: {lines - 2} audit records, one signed checkpoint, the public key")
            return EXIT_OK
        if args.action == "checkpoint":
            key = signing.load_private_key(settings.audit_key, what="audit key")
            public = signing.public_bytes(key)
            pinned = _audit_pin(None, settings.audit_public_key)
            if pinned is not None and not pinned.matches(public):
                print(f"croupier: the audit key {settings.audit_key} (fingerprint "
                      f"{signing.fingerprint(public)}) is not the pinned key "
                      f"{pinned.fingerprint} (CROUPIER_AUDIT_PUBLIC_KEY); nothing signed",
                      file=sys.stderr)  # fmt: skip
                return EXIT_FAILED
            cid, chains = audit.checkpoint(conn, key)
            print(f"checkpoint {cid}: {chains} chain heads signed by Ed25519 key "
                  f"{public.hex()} (fingerprint {signing.fingerprint(public)})")  # fmt: skip
            return EXIT_OK
        assert pin is not None  # verify, the last action, has its pin
        result = audit.verify(conn)
        checkpoints, signed = audit.verify_checkpoints(conn, pin)
    problems = [*(result.problems or []), *signed]
    ok = not problems
    if args.json:
        print(json.dumps({"ok": ok, "chains": result.chains, "records": result.records,
                          "checkpoints": checkpoints,
                          "problems": [{"chain": p.chain, "seq": p.seq, "problem": p.what}
                                       for p in problems]}))  # fmt: skip
    else:
        for p in problems:
            print(f"BROKEN  {p.chain}  record {p.seq}: {p.what}")
        state = "everything verifies" if ok else f"{len(problems)} problem(s)"
        print(f"{result.records} audit records in {result.chains} chains, {checkpoints} "
              f"signed checkpoints, pinned key {pin.fingerprint}: {state}")  # fmt: skip
    return EXIT_OK if ok else EXIT_FAILED


def cmd_analytics(args: argparse.Namespace) -> int:
    from croupier import analytics
    from sinks.base import SinkUnavailable
    from sinks.clickhouse.sink import AuditLogWriter

    settings = _settings()
    if args.action == "run":
        return analytics.run(settings)
    if args.action == "wait":
        if analytics.wait_caught_up(settings, timeout=args.timeout):
            return EXIT_OK
        behind = analytics.lag(settings)
        print(f"croupier: the analytics sink is {behind} record(s) behind after "
              f"{args.timeout:g} s", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    writer = AuditLogWriter(settings.clickhouse_url, settings.clickhouse_database)
    try:
        writer.open()  # applies the schema
    except SinkUnavailable as exc:
        print(f"croupier: {arguments.redact(str(exc))}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    finally:
        writer.close()
    print(f"ClickHouse database {settings.clickhouse_database}: schema applied")
    return EXIT_OK


def cmd_sql(args: argparse.Namespace) -> int:
    from croupier.sql import SqlError, Unreachable, run

    settings = _settings()
    # As the analyst (read-only, time-capped) when the stack has one; else the one URL given.
    url = settings.clickhouse_analyst_url or settings.clickhouse_url
    try:
        text = run(url, settings.clickhouse_database, args.query, args.format,
                   timeout=args.timeout)  # fmt: skip
    except Unreachable as exc:  # the URL may carry a password: never printed
        print(f"croupier sql: {arguments.redact(str(exc))}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except SqlError as exc:
        print(f"croupier sql: {arguments.redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.write(text)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from croupier.demo import run_demo

    return run_demo(timeout=args.timeout)


def cmd_policies(args: argparse.Namespace) -> int:
    from config.policies import load_policies
    from rules.policy import PolicyError

    directory = args.dir if args.dir is not None else Settings().policy_dir
    try:
        policies = load_policies(directory)
    except PolicyError as exc:
        print(f"croupier: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "check":
        print(f"{len(policies)} policies ok: {', '.join(policies.jurisdictions)}")
        return EXIT_OK
    if args.json:
        print(json.dumps([p.model_dump(mode="json") for p in policies.values()], indent=2))
        return EXIT_OK
    rows = [("jurisdiction", "version", "effective_from", "minimum_age", "cooling_off_h",
             "reality_check_min", "geolocation", "session", "reporting")]  # fmt: skip
    for p in policies.values():
        rows.append((p.jurisdiction, str(p.version), p.effective_from.isoformat(),
                     str(p.minimum_age), f"{p.limits.cooling_off_hours:g}",
                     f"{p.sessions.reality_check_minutes:g}",
                     "required" if p.geolocation.required else "-",
                     "required" if p.sessions.required else "-",
                     f"{p.reporting.topic} ({p.reporting.format})"))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def cmd_games(args: argparse.Namespace) -> int:
    from config.games import load_catalogue, render_table, to_json
    from rules.games import CatalogueError

    path = args.file if args.file is not None else Settings().games_catalogue
    try:
        catalogue = load_catalogue(path)
    except CatalogueError as exc:
        print(f"croupier: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "check":
        print(f"{len(catalogue.games)} games ok")
        return EXIT_OK
    if args.json:
        print(json.dumps(to_json(catalogue), indent=2))
        return EXIT_OK
    print(render_table(catalogue, args.jurisdiction))
    return EXIT_OK


def cmd_dice(args: argparse.Namespace) -> int:
    from croupier.dice import Bet, DiceRefused, DiceTable
    from rules import dice
    from rules.games import CatalogueError

    if args.pick is not None and not 1 <= args.pick <= dice.FACES:
        print(f"croupier dice: --pick is a face, 1 to {dice.FACES}", file=sys.stderr)
        return EXIT_USAGE
    try:
        arguments.stake(args.stake, args.currency)
    except arguments.InputError as exc:
        print(f"croupier dice: --stake: {exc}", file=sys.stderr)
        return EXIT_USAGE
    settings = _settings()
    try:
        table = DiceTable(settings, manifest_path=args.manifest)
    except (DiceRefused, CatalogueError) as exc:
        print(f"croupier dice: the table refuses to open: {exc}", file=sys.stderr)
        return EXIT_USAGE
    bets = [
        Bet(args.player, args.stake, args.pick or table.rng.between(1, dice.FACES), args.currency)
        for _ in range(args.rounds)
    ]
    played = table.play(bets, timeout=args.timeout)
    if args.json:
        print(json.dumps({"rng_build": table.build, "rounds": [p.to_json() for p in played]},
                         indent=2))  # fmt: skip
    else:
        print(f"Croupier Dice, RNG build {table.build[:16]}…, pays {dice.PAYOUT}x on the pick")
        for p in played:
            if p.roll is None:
                print(f"  {p.round_id}: debit {p.debit['status']} ({p.debit.get('error')})")
                continue
            credit = p.credit["status"] if p.credit else "unanswered"
            balance = p.credit["balance"] if p.credit else "?"
            print(f"  {p.round_id}: pick {p.bet.pick} roll {p.roll} win {p.win} "
                  f"(credit {credit}, balance {balance})")  # fmt: skip
    silent = sum(1 for p in played if p.debit["status"] == "unanswered" or
                 (p.roll is not None and p.credit is None))  # fmt: skip
    if silent:
        print(f"croupier dice: {silent} round(s) got no answer within --timeout {args.timeout:g} s "
              "(is a worker running? `croupier stack status`)", file=sys.stderr)  # fmt: skip
    return EXIT_OK if all(p.completed for p in played) else EXIT_FAILED


def cmd_rng(args: argparse.Namespace) -> int:
    from rng.battery import DEFAULT_SAMPLES, run_battery
    from rng.certify import RngNotCertified, load_manifest, verify

    manifest = load_manifest()
    try:
        build = verify(manifest)
    except RngNotCertified as exc:
        print(f"croupier rng: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.action == "verify":
        print(f"{manifest.module} is the certified build {build}")
        print(f"certificate {manifest.certificate}, {manifest.lab}, {manifest.standard}, "
              f"{manifest.certified.isoformat()}")  # fmt: skip
        return EXIT_OK
    report = run_battery(samples=args.samples or DEFAULT_SAMPLES)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    return EXIT_OK if report.passed else EXIT_FAILED


def cmd_regulator(args: argparse.Namespace) -> int:
    from config.kafka import kafka_python_security
    from croupier.regulator import as_json, follow, line
    from sinks.signing import KeyFileError, parse_pin

    settings = _settings()
    given = args.public_key or settings.report_public_key
    if not given:
        print("croupier regulator: pass --public-key (or set CROUPIER_REPORT_PUBLIC_KEY) with "
              "the operator's report public key: 64 hex digits, its fingerprint, or the "
              "file the operator gave you (its .stack/reports/ed25519.pub)",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    try:
        pin = parse_pin(given)
    except KeyFileError as exc:
        print(f"croupier regulator: {exc}", file=sys.stderr)
        return EXIT_USAGE
    topic = settings.topic(f"reports.{args.jurisdiction}")

    def show(record: Any, _: Any) -> None:
        print(as_json(record) if args.json else line(record), flush=True)

    def unreadable(envelope: Any, why: str) -> None:
        shown = (json.dumps({"seq": envelope.seq, "unreadable": why}) if args.json
                 else f"{envelope.seq:>6}  UNREADABLE (its signature verifies): "
                      f"{arguments.printable(why)}")  # fmt: skip
        print(shown, flush=True)

    result = follow(settings.kafka_bootstrap_servers, topic, args.jurisdiction, pin, show=show,
                    count=args.count, idle_timeout=args.idle_timeout, unreadable=unreadable,
                    security=kafka_python_security(settings))  # fmt: skip
    for problem in result.problems:
        print(f"croupier regulator: {topic}: {problem}", file=sys.stderr)
    if result.unreadable:
        print(f"croupier regulator: {topic}: {result.unreadable} record(s) verify but do not "
              "read as report records", file=sys.stderr)  # fmt: skip
    if not args.json:
        state = "chain verified" if result.ok else "STOPPED"
        print(f"{result.verified} record(s) of {topic}: {state}", file=sys.stderr)
    return EXIT_OK if result.ok and not result.unreadable else EXIT_FAILED


def cmd_reports(args: argparse.Namespace) -> int:
    from config.policies import load_policies
    from croupier import report_files
    from sinks.reports import ReportError

    settings = _settings()
    policy = load_policies(settings.policy_dir).get(args.jurisdiction)
    if policy is None:
        print(f"croupier reports: no policy for {args.jurisdiction}", file=sys.stderr)
        return EXIT_USAGE
    directory = args.dir or Path("reports") / args.jurisdiction
    if args.action == "verify":
        if not directory.is_dir():
            print(f"croupier reports: {directory} is not a directory; pass --dir with the "
                  "report directory to verify", file=sys.stderr)  # fmt: skip
            return EXIT_USAGE
        try:
            problems = report_files.verify(settings, policy, directory, args.public_key)
        except (ReportError, OSError) as exc:
            print(f"croupier reports: {exc}", file=sys.stderr)
            return EXIT_FAILED
        for p in problems:
            print(f"BROKEN  {p}")
        print(f"{directory} ({policy.reporting.format}): "
              f"{'verifies' if not problems else f'{len(problems)} problem(s)'}")  # fmt: skip
        return EXIT_FAILED if problems else EXIT_OK
    try:
        written = report_files.write(settings, policy, directory, idle_timeout=args.idle_timeout)
    except (ReportError, OSError) as exc:
        print(f"croupier reports: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for p in written.problems:
        print(f"croupier reports: {settings.topic(f'reports.{args.jurisdiction}')}: {p}",
              file=sys.stderr)  # fmt: skip
    if written.problems:
        return EXIT_FAILED
    print(f"{written.records} new record(s) of reports.{args.jurisdiction} written as "
          f"{policy.reporting.format} to {directory}: {len(written.files)} file(s)")  # fmt: skip
    for f in written.files:
        print(f"  {f}")
    for seq, record_id, reason in written.rejected:
        print(f"croupier reports: seq {seq} ({record_id!r}) could not be written as it is and "
              f"stands as a rejected entry: {arguments.printable(reason)}",
              file=sys.stderr)  # fmt: skip
    return EXIT_FAILED if written.rejected else EXIT_OK


def _count(text: str) -> int:
    return arguments.positive_int(text, most=1_000_000_000)


def _samples(text: str) -> int:
    # Fewer leave the battery's chi-square cells too empty to test (it refuses them).
    value = arguments.positive_int(text, most=100_000_000)
    if value < 10_000:
        msg = f"{text!r}: the battery needs at least 10000 outputs per stream"
        raise argparse.ArgumentTypeError(msg)
    return value


def _currency(text: str) -> str:
    if len(text) != 3 or not text.isascii() or not text.isupper() or not text.isalpha():
        msg = f"{text[:20]!r} is not an ISO 4217 currency code such as EUR"
        raise argparse.ArgumentTypeError(msg)
    return text


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        msg = f"{text!r} has no time zone; write it as RFC 3339, e.g. 2026-11-24T00:00:00Z"
        raise argparse.ArgumentTypeError(msg)
    return value


REPLAY_SETTLEMENT_HELP = """\
Recompute one bet's settlement from the recorded events only: the bet as received
(bets.request), each leg's accepted price (bet_legs.odds) and every settlement-kind
message of its events (market_messages), replayed in the order they were processed with
the feed's rules (rules/replay.py) and priced by rules/sportsbook.settle_bet. Shown
beside the book (bets, settlements) and the ledger (bet:<id> and every
settlement:<id>/<n>, payouts read from the entries). Exit 0 when replay, book and ledger
agree (settlement in force, legs, price, stake and the whole settlement history), 1 when
they do not, 2 when no bet has that id.
"""

REPLAY_HELP = """\
croupier replay settlement BET_ID [--json]
    one bet recomputed beside the book and the ledger (see `replay settlement -h`).

croupier replay [--from T1] [--to T2] [--json] [--keep]
    every player with a bet decided (bets.decided_at) in [T1, T2) is re-run, with their
    whole history, into a fresh scratch PostgreSQL schema, and the result is compared
    with the live tables. Exit 0 when nothing differs, 1 on any difference.

    Re-run through the real code: each bet's placement (SportsbookSink.place: market
    fence, stake through the ledger, the ledger's refusals, the stored decision and
    legs) and every recorded settlement-kind message of the bets' events
    (SportsbookSink.apply_market_message: market state, leg results, settlement math,
    rollbacks, resettlements, ledger postings).
    Taken as recorded: the odds table's and compliance's verdicts (accepted bets at
    their recorded leg prices; bets refused before the ledger keep their reason; bets
    the ledger refused are placed again for the ledger to decide); the players' other
    ledger operations (deposits, withdrawals, casino), re-posted as the same requests;
    the times (decided_at, settled_at) and the live order (each step at the first
    ledger transaction it posted; a step that posted nothing, by its start time).
    Compared: bets (status, reason, odds, decision JSON, settlement, payout), legs,
    settlements (kind, result, payout, JSON), every ledger transaction of the players
    (status, amounts, balances after) and their balances; the scratch ledger must
    reconcile. The scratch schema is dropped unless --keep.
"""


POLICIES_HELP = """\
The jurisdiction policies: one TOML file per jurisdiction (UK.toml holds
jurisdiction = "UK"), read from DIR, else from $CROUPIER_POLICY_DIR, else from the
policies/ shipped with Croupier (the source tree's, or an install's share/croupier/).

croupier policies list [--json] [--dir DIR]
    a table of the policies (--json: the full policies as a JSON list).
croupier policies check [DIR]
    validate every file; exit 0 and print "N policies ok", or exit 2 and print what to
    fix in which file.
"""


GAMES_HELP = """\
The casino game registry: every game Croupier's wallet takes debits for, with its
provider and its certifications (test lab, certificate id, jurisdictions, RTP, the
SHA-256 of the certified build, issue and expiry dates). Read from FILE, else from
$CROUPIER_GAMES_CATALOGUE, else from games/catalogue.toml shipped with Croupier. A
debit for a game missing here is refused unknown_game; for a game with no certification
valid today for the player's jurisdiction, game_not_certified.

croupier games list [--json] [--jurisdiction J] [--file FILE]
    a table of the games (--json: the whole registry as a JSON list).
croupier games check [FILE]
    validate the catalogue; exit 0 and print "N games ok", or exit 2 and say what to fix.
"""


DICE_HELP = """\
Croupier Dice: pick a face of one fair die; the pick pays 5.82x the stake (RTP 97.00%).
Each round is a debit through the casino wallet, a roll by the certified generator
(rng/generator.py) once the stake is taken, and a credit (zero on a loss) that closes
the round; both calls carry the generator's build hash, stored for audit. The table
refuses to open (exit 2) unless the generator is the build rng/manifest.json certifies
and a certification of croupier-dice in the game registry names that build.

croupier dice play --player P [--stake 1.00] [--pick N] [--rounds N] [--timeout S] [--json]
    exit 0 when every round completed, 1 when a debit was refused (the reason is shown)
    or an answer did not come within --timeout seconds (default 60; a debit with no
    answer is rolled back), 2 on an argument the table cannot take (a stake must be
    above 0 and in the currency's minor units) or when the table refuses to open.
"""


RNG_HELP = """\
The generator Croupier's own games draw with (rng/generator.py): the operating system's
CSPRNG, scaled without bias by rejection sampling, shuffled by Fisher-Yates.

croupier rng verify
    exit 0 when the module's SHA-256 is the build rng/manifest.json certifies, else 1.
croupier rng test [--samples N] [--json]
    the statistical battery a test lab runs, at 99% confidence, on the raw and the
    scaled output (chi-square frequency, runs, serial correlation, gap, poker, coupon
    collector; see rng/battery.py for the method and the retest rule). Prints the
    report; exit 0 when every test passes, 1 when one fails, both only on a certified
    build.
"""


def build_parser() -> argparse.ArgumentParser:
    from croupier import __version__

    parser = argparse.ArgumentParser(prog="croupier", description=__doc__)
    parser.add_argument("--version", action="version", version=f"croupier {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="the local stack: up, down, status")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("--no-workers", action="store_true", help="up: start no worker")
    stack.add_argument("--json", action="store_true", help="status: print JSON")
    stack.set_defaults(func=cmd_stack)

    topics = sub.add_parser("topics", help="Kafka topics of the wire contract")
    topics.add_argument("action", choices=["create"])
    topics.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for Kafka (default 30)")  # fmt: skip
    topics.set_defaults(func=cmd_topics)

    db = sub.add_parser("db", help="PostgreSQL schema")
    db.add_argument("action", choices=["migrate"])
    db.set_defaults(func=cmd_db)

    wallet = sub.add_parser("wallet", help="the ledger: balances, statements, reconciliation")
    wsub = wallet.add_subparsers(dest="action", required=True)
    balance = wsub.add_parser("balance", help="a player's balance and open stakes")
    balance.add_argument("player")
    balance.add_argument("--currency", help="only this currency")
    balance.add_argument("--json", action="store_true")
    statement = wsub.add_parser("statement", help="a player's entries, with running balances")
    statement.add_argument("player")
    statement.add_argument("--from", dest="since", type=_aware, help="RFC 3339 time, inclusive")
    statement.add_argument("--to", dest="until", type=_aware, help="RFC 3339 time, exclusive")
    statement.add_argument("--json", action="store_true")
    reconcile = wsub.add_parser("reconcile", help="prove the books; exit 1 on any imbalance")
    reconcile.add_argument("--json", action="store_true")
    wallet.set_defaults(func=cmd_wallet)

    replay = sub.add_parser(
        "replay",
        help="recompute settlements from the recorded events and compare with the ledger",
        description=REPLAY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument("--from", dest="since", type=_aware, metavar="T1",
                        help="range form: bets decided at or after this RFC 3339 time")  # fmt: skip
    replay.add_argument("--to", dest="until", type=_aware, metavar="T2",
                        help="range form: bets decided before this RFC 3339 time")  # fmt: skip
    replay.add_argument("--keep", action="store_true",
                        help="range form: keep the scratch schema (name printed)")  # fmt: skip
    replay.add_argument("--json", action="store_true")
    rsub = replay.add_subparsers(dest="what", metavar="settlement BET_ID")
    one = rsub.add_parser(
        "settlement",
        help="one bet: replay beside the book and the ledger (exit 2: unknown bet)",
        description=REPLAY_SETTLEMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    one.add_argument("bet_id", metavar="BET_ID")
    one.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    replay.set_defaults(func=cmd_replay)

    audit = sub.add_parser("audit", help="the hash-chained audit trail")
    asub = audit.add_subparsers(dest="action", required=True)
    averify = asub.add_parser(
        "verify", help="recompute every chain; exit 1 naming the first bad record of each"
    )
    averify.add_argument("--json", action="store_true")
    averify.add_argument(
        "--public-key", help="the pinned Ed25519 public key checkpoints must be signed by: hex, "
        "base64, its fingerprint, or a file (default CROUPIER_AUDIT_PUBLIC_KEY)",
    )  # fmt: skip
    averify.add_argument("--bundle", type=Path, metavar="FILE",
                         help="verify an exported bundle alone (no database)")  # fmt: skip
    asub.add_parser("checkpoint", help="sign every chain's head (key: CROUPIER_AUDIT_KEY)")
    akeygen = asub.add_parser(
        "keygen", help="make the audit signing key (CROUPIER_AUDIT_KEY) and its .pub; never "
        "replaces one",
    )  # fmt: skip
    akeygen.add_argument(
        "--reports", action="store_true",
        help="make the report signing key (CROUPIER_REPORT_SIGNING_KEY) instead",
    )  # fmt: skip
    asub.add_parser(
        "run", help="relay the trail to `audit`, derive the regulator reports and sign "
        "checkpoints, in the foreground (the workers' timers, in a process of their own)",
    )  # fmt: skip
    arebuild = asub.add_parser(
        "rebuild", help="a wallet (or every one) rebuilt from the audit trail, beside the ledger"
    )
    arebuild.add_argument("player", nargs="?", metavar="PLAYER")
    arebuild.add_argument("--all", action="store_true", help="every player's wallet")
    arebuild.add_argument("--json", action="store_true")
    aexport = asub.add_parser(
        "export", help="a self-contained bundle of [--from, --to) a regulator verifies alone"
    )
    aexport.add_argument("--from", dest="start", type=_aware, required=True, metavar="TIME")
    aexport.add_argument("--to", type=_aware, required=True, metavar="TIME")
    aexport.add_argument("--out", type=Path, metavar="FILE", help="default audit-FROM-TO.jsonl")
    audit.set_defaults(func=cmd_audit)

    worker = sub.add_parser("worker", help="run a Croupier worker (Faust) in the foreground")
    worker.add_argument("--name", default=None,
                        help="this worker's name, on its log lines and its Kafka client ids "
                             "(CROUPIER_WORKER_NAME)")  # fmt: skip
    worker.add_argument("--loglevel", default="info")
    worker.set_defaults(func=cmd_worker)

    from croupier.gateway import command as gateway_command

    gateway = sub.add_parser("gateway", help="the HTTP edge: wallet, payment webhooks, bet API")
    gateway_command.add_arguments(gateway)

    policies = sub.add_parser(
        "policies",
        help="jurisdiction policies (policies/*.toml): list, check",
        description=POLICIES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    psub = policies.add_subparsers(dest="action", required=True)
    plist = psub.add_parser("list", help="a table of the policies in force (or --json)")
    plist.add_argument("--json", action="store_true", help="the full policies as a JSON list")
    plist.add_argument("--dir", type=Path, metavar="DIR", help="the policy directory")
    pcheck = psub.add_parser("check", help="validate every policy file; exit 2 on a bad one")
    pcheck.add_argument("dir", type=Path, nargs="?", metavar="DIR", help="the policy directory")
    policies.set_defaults(func=cmd_policies)

    games = sub.add_parser(
        "games",
        help="the casino game registry (games/catalogue.toml): list, check",
        description=GAMES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gsub = games.add_subparsers(dest="action", required=True)
    glist = gsub.add_parser("list", help="a table of the games and where each is certified")
    glist.add_argument("--json", action="store_true", help="the full registry as JSON")
    glist.add_argument("--jurisdiction", metavar="J", type=arguments.jurisdiction,
                       help="only games certified in J today")  # fmt: skip
    glist.add_argument("--file", type=Path, metavar="FILE", help="the catalogue file")
    gcheck = gsub.add_parser("check", help="validate the catalogue; exit 2 on a bad one")
    gcheck.add_argument("file", type=Path, nargs="?", metavar="FILE", help="the catalogue")
    games.set_defaults(func=cmd_games)

    dice_cmd = sub.add_parser(
        "dice",
        help="Croupier Dice, the house's own game, through the casino wallet",
        description=DICE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dsub = dice_cmd.add_subparsers(dest="action", required=True)
    dplay = dsub.add_parser("play", help="play rounds for a player; exit 1 unless all complete")
    dplay.add_argument("--player", required=True, type=arguments.business_id)
    dplay.add_argument("--stake", type=arguments.decimal_text, default=Decimal("1.00"),
                       help="a positive amount in the currency's minor units")  # fmt: skip
    dplay.add_argument("--currency", default="EUR", type=_currency)
    dplay.add_argument("--pick", type=int, help="the face to bet on (default: a random one)")
    dplay.add_argument("--rounds", type=arguments.positive_int, default=1)
    dplay.add_argument("--timeout", type=arguments.seconds, default=60.0,
                       help="seconds to wait for each answer")  # fmt: skip
    dplay.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)  # tests: a tampered one
    dplay.add_argument("--json", action="store_true")
    dice_cmd.set_defaults(func=cmd_dice)

    rng_cmd = sub.add_parser(
        "rng",
        help="the certified random number generator: verify its build, run the battery",
        description=RNG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rsub_rng = rng_cmd.add_subparsers(dest="action", required=True)
    rsub_rng.add_parser("verify", help="is rng/generator.py the certified build? (exit 0/1)")
    rtest = rsub_rng.add_parser("test", help="the statistical battery; exit 1 if a test fails")
    rtest.add_argument("--samples", type=_samples,
                       help="outputs per stream, 10000 to 100000000 (default 200000)")  # fmt: skip
    rtest.add_argument("--json", action="store_true")
    rng_cmd.set_defaults(func=cmd_rng)

    regulator = sub.add_parser(
        "regulator", help="the regulator's side: follow reports.<J>, verifying its signatures"
    )
    regsub = regulator.add_subparsers(dest="action", required=True)
    rfollow = regsub.add_parser(
        "follow", help="print the stream's records as their signatures verify with the "
        "operator's public key; exit 1 on a bad signature, a gap or a reordering",
        description="Follow reports.<J> from its start, verifying every record's Ed25519 "
        "signature with the operator's report public key (the regulator needs no secret "
        "of the operator's). --key-file (a MAC key shared with the operator) is gone: the "
        "stream is signed since its envelope version 2.",
    )  # fmt: skip
    rfollow.add_argument("--jurisdiction", required=True, metavar="J", type=arguments.jurisdiction)
    rfollow.add_argument(
        "--public-key", metavar="KEY",
        help="the operator's report public key: 64 hex digits, base64, its fingerprint, or a "
        "file holding one (default CROUPIER_REPORT_PUBLIC_KEY; there is no other default)",
    )  # fmt: skip
    rfollow.add_argument("--count", type=_count, help="stop after N verified records")
    rfollow.add_argument(
        "--idle-timeout", type=arguments.seconds, metavar="SECONDS",
        help="stop when nothing new arrives for this long (default: follow for ever)",
    )  # fmt: skip
    rfollow.add_argument("--json", action="store_true", help="each record as its JSON")
    regulator.set_defaults(func=cmd_regulator)

    reports_cmd = sub.add_parser(
        "reports", help="a jurisdiction's report stream as its regulator's files: write, verify"
    )
    repsub = reports_cmd.add_subparsers(dest="action", required=True)
    for name, what in (("write", "write what is new (format from the policy)"),
                       ("verify", "check a report directory as the regulator would")):  # fmt: skip
        one_rep = repsub.add_parser(name, help=what)
        one_rep.add_argument("--jurisdiction", required=True, metavar="J",
                             type=arguments.jurisdiction)  # fmt: skip
        one_rep.add_argument("--dir", type=Path, help="default reports/<J>")
        if name == "verify":
            one_rep.add_argument(
                "--public-key", help="the operator's report public key (hex, base64 or a file; "
                "default CROUPIER_REPORT_PUBLIC_KEY, else that of CROUPIER_REPORT_SIGNING_KEY)",
            )  # fmt: skip
        one_rep.add_argument("--idle-timeout", type=arguments.seconds, default=5.0,
                             help=argparse.SUPPRESS)  # fmt: skip
    reports_cmd.set_defaults(func=cmd_reports)

    analytics_cmd = sub.add_parser(
        "analytics", help="the ClickHouse fan-out: run the sink, or apply the schema"
    )
    analytics_cmd.add_argument(
        "action", choices=["run", "schema", "wait"],
        help="run: consume the audit topic into ClickHouse (foreground); schema: apply the "
        "DDL; wait: until the sink has caught up with the audit topic (exit 1 on --timeout)",
    )  # fmt: skip
    analytics_cmd.add_argument("--timeout", type=arguments.seconds, default=60.0,
                               help="wait: seconds")  # fmt: skip
    analytics_cmd.set_defaults(func=cmd_analytics)

    sql = sub.add_parser(
        "sql", help="query ClickHouse (CROUPIER_CLICKHOUSE_URL); exit 1 on a refused query, "
        "3 when ClickHouse is unreachable",
    )  # fmt: skip
    sql.add_argument("query", help='a statement, e.g. "SELECT * FROM ggr_by_market"')
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table")
    sql.add_argument("--timeout", type=arguments.seconds, default=SQL_TIMEOUT,
                     help=f"seconds the query may run (default {SQL_TIMEOUT:g}); ClickHouse "
                     "stops it after that and the command exits 1")  # fmt: skip
    sql.set_defaults(func=cmd_sql)

    from croupier import check as check_mod
    from croupier import dashboard as dashboard_mod
    from croupier import simulate as simulate_mod
    from croupier import status as status_mod

    for name, mod, what in (
        ("simulate", simulate_mod, "a reproducible match day on the running stack, live"),
        ("check", check_mod, "the invariants, from topics, ledger, audit trail and ClickHouse; "
         "exit 1 on any breach"),
        ("status", status_mod, "the workers' metrics at a glance: rates, lag, decisions, feeds"),
        ("dashboard", dashboard_mod, "the platform live in a browser page on 127.0.0.1"),
    ):  # fmt: skip
        one = sub.add_parser(name, help=what)
        mod.add_arguments(one)
        one.set_defaults(func=mod.run)

    demo = sub.add_parser("demo", help="the main job on the running stack")
    demo.add_argument("--timeout", type=arguments.seconds, default=120.0)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from croupier.redact import install_log_redaction
    from croupier.stack.process import StackError

    install_log_redaction()  # a safety net: no log line of this process shows a password
    # clickhouse-connect logs a failed request before raising it: the one line said below
    # is the command's (explain), not a second one of the driver's.
    logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)
    # And librdkafka's retries of a broker that is away (a line each, many a second) are
    # not a command's to print; a long-running process logs them (config.logs.setup).
    logging.getLogger("librdkafka").setLevel(logging.CRITICAL)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except StackError as exc:
        print(f"croupier: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        explained = explain(exc)
        if explained is None:
            raise  # a bug: its traceback is what a maintainer needs
        print(f"error: {explained}", file=sys.stderr)
        return EXIT_NOT_RUNNING if unreachable(exc) else EXIT_USAGE


# What a client says when its service is not there (nothing listening, no route, no
# answer in time), as against a service that answered and refused (a password, a name).
_AWAY = ("connection refused", "could not connect", "timed out", "timeout expired",
         "no route to host", "network is unreachable", "could not translate host name",
         "name or service not known", "server closed the connection", "_transport",
         "_all_brokers_down", "_timed_out", "broker transport failure",
         "connection reset", "cannot assign requested address")  # fmt: skip


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says a service could not be reached (exit 3), not that it refused."""
    from sinks.base import SinkUnavailable

    if isinstance(exc, SinkUnavailable | ConnectionError | TimeoutError):
        return True
    module = type(exc).__module__.split(".")[0]
    if module not in ("psycopg", "confluent_kafka", "cimpl", "kafka", "clickhouse_connect",
                      "urllib3", "requests"):  # fmt: skip
        return False
    text = str(exc).lower()
    return any(sign in text for sign in _AWAY)


def explain(exc: BaseException) -> str | None:
    """One line, without secrets, saying what went wrong and what to fix; None for a bug.

    A bad setting, an unreachable or misaddressed service, a missing schema: things the
    user fixes. Everything else is not expected and keeps its traceback.
    """
    from pydantic import ValidationError

    from croupier.arguments import InputError, one_line, redact
    from sinks.base import SinkUnavailable
    from sinks.signing import KeyFileError

    secrets = [os.environ.get(n, "") for n in ("CROUPIER_PG_DSN", "CROUPIER_PG_ADMIN_DSN")]
    if isinstance(exc, ValidationError) and exc.title == Settings.__name__:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or exc.title
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return (f"bad setting {where}: {first['msg']}{more} (fix the environment variable "
                "or .stack/env)")  # fmt: skip
    if isinstance(exc, InputError | KeyFileError):
        return str(exc)
    if isinstance(exc, SinkUnavailable):
        return f"{redact(one_line(exc), secrets)} (is the stack up? `croupier stack status`)"
    said = _service_error(exc, secrets)
    if said is None and isinstance(exc, OSError) and exc.filename is not None:
        said = f"{redact(one_line(exc), secrets)} (check the path and its permissions)"
    return said


def _service_error(exc: BaseException, secrets: list[str]) -> str | None:
    from croupier.arguments import one_line, redact

    text = redact(one_line(exc), secrets)
    module = type(exc).__module__.split(".")[0]
    if module == "psycopg":
        import psycopg

        if isinstance(exc, psycopg.OperationalError):
            return (f"PostgreSQL: {text} (check CROUPIER_PG_DSN and that PostgreSQL runs: "
                    "`croupier stack status`)")  # fmt: skip
        if isinstance(exc, psycopg.ProgrammingError) and "connection" in str(exc).lower():
            return ("CROUPIER_PG_DSN is not a valid connection string (a libpq URI, "
                    "postgresql://user@host:port/db, or key=value pairs)")  # fmt: skip
        if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
            return (f"PostgreSQL: {text} (check CROUPIER_PG_SCHEMA, and run "
                    "`croupier db migrate` once)")  # fmt: skip
        return None
    if module in ("confluent_kafka", "cimpl", "kafka"):
        return f"Kafka: {text} (check KAFKA_BOOTSTRAP_SERVERS and that Kafka runs)"
    from sinks.clickhouse.client import UnsupportedUrl

    if isinstance(exc, UnsupportedUrl):
        return f"CROUPIER_CLICKHOUSE_URL: {text}"
    if module == "clickhouse_connect":
        return f"ClickHouse: {text} (check CROUPIER_CLICKHOUSE_URL and that ClickHouse runs)"
    return None
