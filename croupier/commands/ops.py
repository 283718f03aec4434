"""Operating the platform: ``sql``, ``check``, ``status``, ``simulate``, ``dashboard``,
``demo``. The long-running work lives in its own module (``croupier/check.py``,
``simulate.py``, ``status.py``, ``dashboard``); these are its command lines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import click

from croupier import arguments
from croupier.commands import params
from croupier.exits import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_OK

SQL_TIMEOUT = 30.0  # seconds: an analyst's query, not a batch job (the analyst's cap)

STATUS_HELP = """The platform's health as its metrics say: rates, consumer lag, decisions by
reason, dead letters, batch latency and feeds, summed over every process's /metrics
endpoint (scraped twice, --interval apart). It works from any machine that reaches the
endpoints (--url); exit 0 when every endpoint answers, 1 when some do, 3 when none does.
For the processes this machine runs (pids, addresses, up or down), see `croupier stack
status`."""


@click.command(
    help="query ClickHouse (CROUPIER_CLICKHOUSE_URL); exit 1 on a refused query, "
    "3 when ClickHouse is unreachable"
)
@click.argument("query")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="the rows as one JSON list (--format json)")
@click.option(
    "--timeout",
    type=params.SECONDS,
    default=SQL_TIMEOUT,
    help=f"seconds the query may run (default {SQL_TIMEOUT:g}); ClickHouse stops it "
    "after that and the command exits 1",
)
def sql(query: str, fmt: str, as_json: bool, timeout: float) -> int:
    from config.stackenv import stack_settings
    from croupier.sql import SqlError, Unreachable, run

    settings = stack_settings()
    # As the analyst (read-only, time-capped) when the stack has one; else the one URL given.
    url = settings.clickhouse_analyst_url or settings.clickhouse_url
    try:
        text = run(
            url, settings.clickhouse_database, query, "json" if as_json else fmt, timeout=timeout
        )
    except Unreachable as exc:  # the URL may carry a password: never printed
        print(f"croupier sql: {arguments.redact(str(exc))}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except SqlError as exc:
        print(f"croupier sql: {arguments.redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.write(text)
    return EXIT_OK


@click.command(
    help="the invariants, from topics, ledger, audit trail and ClickHouse; exit 1 on any breach"
)
@click.option(
    "--run", metavar="RUN_ID", help="check only the inputs whose key or id starts with RUN_ID-"
)
@click.option(
    "--json",
    "json",
    is_flag=True,
    help="print one JSON object (rows with name, "
    "checked, breaches, ok, examples) instead of the table",
)
@click.option(
    "--wait",
    type=params.NUMBER,
    default=60.0,
    metavar="SECONDS",
    help="how long to wait for the workers to catch up (default 60)",
)
@click.option(
    "--skip-clickhouse", is_flag=True, help="leave ClickHouse out (its row, the sink's lag)"
)
def check(**given: object) -> int:
    from croupier import check as checks

    return checks.run(argparse.Namespace(**given))


@click.command(
    help=STATUS_HELP,
    short_help="the platform's health from its metrics: rates, "
    "lag, decisions, feeds (see also `stack status`)",
)
@click.option("--json", "json", is_flag=True, help=params.JSON_HELP)
@click.option(
    "--interval",
    type=params.NUMBER,
    default=1.0,
    metavar="S",
    help="seconds between the two scrapes the rates come from (default 1)",
)
@click.option(
    "--url",
    multiple=True,
    metavar="URL",
    help="a metrics endpoint (repeatable); default: CROUPIER_METRICS_URLS, else "
    "<CROUPIER_STACK_DIR>/metrics.json from `croupier stack up`",
)
def status(json: bool, interval: float, url: tuple[str, ...]) -> int:
    from croupier import status as health

    return health.run(argparse.Namespace(json=json, interval=interval, url=list(url)))


@click.command(help="a reproducible match day on the running stack, live")
@click.option("--seed", type=int, help="default: the plan's (croupier/sim/plan.py)")
@click.option("--players", type=int, help="default: the plan's (croupier/sim/plan.py)")
@click.option("--matches", type=int, help="default: the plan's (croupier/sim/plan.py)")
@click.option("--rate", type=params.NUMBER, help="bets a second, base")
@click.option("--duration", type=params.NUMBER, help="seconds of match time, kick-off to full time")
@click.option("--spike-factor", type=params.NUMBER, help="the kick-off spike, times the base rate")
@click.option("--run-id", help="prefix of every id and key (default sim<seed>-<hex>)")
@click.option(
    "--json",
    "json_arg",
    is_flag=False,
    flag_value="-",
    default=None,
    metavar="[PATH]",
    help="print the summary as one JSON document on stdout (the "
    "text goes to stderr); `--json PATH`, the old form, means --out PATH",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    metavar="PATH",
    help="write the summary there too (it is always written under .stack/sim/)",
)
@click.option(
    "--progress",
    type=click.Choice(["auto", "lines", "off"]),
    default="auto",
    show_default=True,
    help="auto: redraw on a TTY, else a line every ~5 s",
)
@click.option(
    "--timeout",
    type=params.NUMBER,
    default=120.0,
    show_default=True,
    help="seconds to wait for the outcomes at the end",
)
def simulate(json_arg: str | None, out: Path | None, **given: object) -> int:
    from croupier import simulate as sim
    from croupier.sim.plan import Options

    plan = Options()  # what an option left out is: the plan's defaults, said once
    for name in ("seed", "players", "matches", "rate", "duration", "spike_factor"):
        if given[name] is None:
            given[name] = getattr(plan, name)
    if json_arg not in (None, "-"):
        print(
            "croupier simulate: `--json PATH` is deprecated: write `--out PATH` (and `--json` "
            "alone prints the summary on stdout)",
            file=sys.stderr,
        )
        out = out or Path(str(json_arg))
    return sim.run(argparse.Namespace(json=out, print_json=json_arg == "-", **given))


@click.command(help="the platform live in a browser page on 127.0.0.1")
@click.option(
    "--port",
    type=int,
    default=None,
    help="port on 127.0.0.1 (default CROUPIER_DASHBOARD_PORT, else 9390)",
)
@click.option(
    "--url",
    multiple=True,
    help="a metrics endpoint (repeatable); default: "
    "CROUPIER_METRICS_URLS, else the stack's metrics.json",
)
def dashboard(port: int | None, url: tuple[str, ...]) -> int:
    import os

    from croupier import dashboard as page

    chosen = port or int(os.environ.get("CROUPIER_DASHBOARD_PORT") or page.DEFAULT_PORT)
    return page.run(argparse.Namespace(port=chosen, url=list(url)))


@click.command(help="the main job on the running stack: every rule, step by step")
@click.option("--timeout", type=params.SECONDS, default=120.0, show_default=True)
def demo(timeout: float) -> int:
    from croupier.demo import run_demo

    return run_demo(timeout=timeout)
