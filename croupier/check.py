"""``croupier check``: the invariants of the running stack, one table row each.

Waits (up to ``--wait``) until the flows, the audit relay and the analytics sink have
caught up, then checks, from the topics, the ledger, the audit trail and ClickHouse
(``croupier/checks/``): every input has exactly one outcome; no bet decided twice; no
stake reserved or payout paid twice; no negative balance; the books balance per
currency; settlements match a replay; the audit trail verifies and rebuilds every
wallet; ClickHouse holds exactly the ledger's facts. ``--run RUN_ID`` scopes the id-keyed
rows (1, 2, 3, 6, 8) to ids and keys starting ``RUN_ID-``; the rest stay global.

Exit 0 when every row passes, 1 on a breach or when the workers did not catch up, 3 when
Kafka, PostgreSQL or ClickHouse cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from croupier.checks import Row
    from sinks.signing import Pin

EXIT_OK, EXIT_FAILED, EXIT_NOT_RUNNING = 0, 1, 3


def _unreachable(settings: Any, clickhouse: bool) -> list[str]:
    import psycopg

    from croupier.checks.kafka import reachable
    from croupier.redact import redact

    secrets = [settings.pg_dsn.get_secret_value()]
    out = []
    why = reachable(settings)
    if why is not None:
        out.append(f"Kafka at {settings.kafka_bootstrap_servers} ({why})")
    try:
        with psycopg.connect(settings.pg_dsn.get_secret_value(), connect_timeout=10):
            pass
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        out.append(f"PostgreSQL ({redact(first, secrets)})")
    if clickhouse:
        try:
            ch = _clickhouse(settings)
            ch.close()
        except Exception as exc:  # any failure to reach it: say which service and why
            out.append(redact(f"ClickHouse at {settings.clickhouse_url} ({exc})", secrets))
    return out


def _audit_pin(settings: Any) -> Pin | None:
    """The pinned audit key (``CROUPIER_AUDIT_PUBLIC_KEY``), or None."""
    from sinks.signing import parse_pin

    return parse_pin(settings.audit_public_key) if settings.audit_public_key else None


def _clickhouse(settings: Any) -> Any:
    from sinks.clickhouse.client import connect

    ch = connect(settings.clickhouse_url)
    if not ch.ping():
        ch.close()
        msg = "no answer to a ping"
        raise ConnectionError(msg)
    return ch


def run(args: argparse.Namespace) -> int:
    import psycopg

    from config.settings import Settings
    from config.stackenv import load_stack_env
    from croupier.checks import Row, run_prefix
    from croupier.checks import invariants as inv
    from croupier.commands.output import progress
    from croupier.redact import redact

    load_stack_env()
    settings = Settings()
    clickhouse = not args.skip_clickhouse
    down = _unreachable(settings, clickhouse)
    if down:
        for what in down:
            print(f"croupier: cannot reach {what}; is the stack up (`make status`)?",
                  file=sys.stderr)  # fmt: skip
        return EXIT_NOT_RUNNING
    prefix = run_prefix(args.run)
    started = time.monotonic()
    with psycopg.connect(
        settings.pg_dsn.get_secret_value(),
        options=f"-c search_path={settings.pg_schema}",
    ) as conn:
        # Read committed, statement by statement: each query runs after the topic scan it
        # is compared with, so whatever was published then is committed and seen.
        with progress("workers catching up") as on_progress:
            caught_up = inv.catch_up(
                conn, settings, wait=args.wait, clickhouse=clickhouse, on_progress=on_progress
            )
        rows: list[Row] = [caught_up]
        one, two = inv.outcomes_and_decisions(conn, settings, prefix)
        rows += [one, two, inv.money_moved_once(conn, prefix), inv.no_negative_balance(conn),
                 inv.books_balance(conn), inv.settlements_replay(conn, prefix),
                 inv.audit_trail(conn, _audit_pin(settings))]  # fmt: skip
        if clickhouse:
            ch = _clickhouse(settings)
            try:
                rows.append(inv.clickhouse_facts(conn, settings, prefix, ch))
            finally:
                ch.close()
        else:
            rows.append(Row("ClickHouse holds exactly the ledger's facts", skipped=True))
    ok = all(r.ok for r in rows)
    seconds = time.monotonic() - started
    if args.json:
        print(redact(json.dumps({"ok": ok, "run": args.run, "seconds": round(seconds, 1),
                                 "rows": [r.as_json() for r in rows]})))  # fmt: skip
    else:
        print_rows(f"run {args.run}" if args.run else "the whole stack", rows, seconds)
    return EXIT_OK if ok else EXIT_FAILED


def print_rows(scope: str, rows: list[Row], seconds: float, console: Console | None = None) -> None:
    """The verdict for people: a table (rich and coloured on a terminal, the plain text
    scripts read when piped), each breach, and one last line that holds or is BREACHED."""
    from croupier.checks import TABLE_HEAD, TABLE_RIGHT, details, table_body
    from croupier.commands.output import say, table
    from croupier.redact import redact

    body = [tuple(redact(c) for c in line) for line in table_body(rows)]
    print(f"croupier check: {scope}\n")
    table(TABLE_HEAD, body, right=TABLE_RIGHT, rule=True, verdicts=3, console=console)
    for line in details(rows):
        if line.startswith("  BREACH"):
            say(redact(line), "red", console=console)
        else:
            print(redact(line))
    ok = all(r.ok for r in rows)
    say(f"\n{'every invariant holds' if ok else 'BREACHED'} ({seconds:.1f} s)", console=console)
