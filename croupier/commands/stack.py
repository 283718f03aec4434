"""The local stack and the services' set-up: ``stack``, ``topics``, ``db``, ``worker``,
``analytics``."""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

import click

from croupier.commands import params, printers
from croupier.commands.output import emit_json, table
from croupier.exits import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE

STACK_STATUS_HELP = """The local processes this machine runs for the stack (Kafka, PostgreSQL,
ClickHouse, workers, gateway): each one's mode, pid and address. Exit 0 when every part
runs, 3 otherwise. For the platform's health as its metrics say (rates, lag, decisions,
feeds), from any machine, see `croupier status`."""


def _parent_flag(ctx: click.Context, name: str) -> Any:
    """A group-level option (``stack --json status``, the form argparse also took)."""
    return ctx.parent.params.get(name) if ctx.parent is not None else None


@click.group(help="the local stack: up, down, status (the processes on this machine)")
@click.option("--no-workers", is_flag=True, hidden=True)
@click.option("--json", "as_json", is_flag=True, hidden=True)
def stack(no_workers: bool, as_json: bool) -> None:
    """The local stack."""


@stack.command("up", help="start the embedded stack (or what is missing of it); print its env")
@click.option("--no-workers", is_flag=True, help="start no worker")
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
@click.pass_context
def stack_up(ctx: click.Context, no_workers: bool, as_json: bool) -> int:
    from croupier.redact import redact
    from croupier.stack import Stack, StackConfig

    the = Stack(StackConfig.from_env())
    env = the.up(workers=not (no_workers or _parent_flag(ctx, "no_workers")))
    if as_json or _parent_flag(ctx, "as_json"):
        emit_json(
            {
                "env": {k: redact(v) for k, v in env.items()},
                "env_file": str(the.env_file),
                "logs": str(the.logs),
            }
        )
        return EXIT_OK
    for name, value in env.items():
        print(f"{name}={redact(value)}")  # the values themselves are in the env file
    print(f"wrote {the.env_file}; logs in {the.logs}")
    return EXIT_OK


@stack.command("down", help="stop the local stack; its data stays")
def stack_down() -> int:
    from croupier.stack import Stack, StackConfig

    the = Stack(StackConfig.from_env())
    the.down()
    print("stack stopped; data kept under", the.config.root)
    return EXIT_OK


@stack.command("status", help=STACK_STATUS_HELP)
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
@click.pass_context
def stack_status(ctx: click.Context, as_json: bool) -> int:
    import json

    from croupier.redact import redact
    from croupier.stack import Stack, StackConfig

    parts = Stack(StackConfig.from_env()).status()
    if as_json or _parent_flag(ctx, "as_json"):
        print(redact(json.dumps([p.as_dict() for p in parts], indent=2)))
    else:
        table(
            ["part", "mode", "state", "where"],
            [
                [
                    p.name,
                    p.mode,
                    "running" if p.running else "stopped",
                    redact(p.where) + (f" pid {p.pid}" if p.pid else ""),
                ]
                for p in parts
            ],
            verdicts=2,
        )
    return EXIT_OK if all(p.running for p in parts) else EXIT_NOT_RUNNING


@click.group(help="Kafka topics of the wire contract")
@click.option("--timeout", type=params.NUMBER, default=None, hidden=True)
def topics(timeout: float | None) -> None:
    """Kafka topics."""


@topics.command(
    "create",
    help="every topic of the wire contract (idempotent); exit 1 on a "
    "topic that exists with other settings",
)
@click.option(
    "--timeout", type=params.NUMBER, default=None, help="seconds to wait for Kafka (default 30)"
)
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
@click.pass_context
def topics_create(ctx: click.Context, timeout: float | None, as_json: bool) -> int:
    from config.stackenv import stack_settings
    from topologies.topics import create_topics

    wait = timeout if timeout is not None else _parent_flag(ctx, "timeout")
    outcomes = create_topics(stack_settings(), timeout=30.0 if wait is None else wait)
    if as_json:
        emit_json([{"topic": o.name, "status": o.status, "detail": o.detail} for o in outcomes])
    else:
        printers.topics(outcomes)
    return EXIT_FAILED if any(o.status == "mismatch" for o in outcomes) else EXIT_OK


@click.group(help="PostgreSQL schema")
def db() -> None:
    """PostgreSQL."""


@db.command("migrate", help="apply the schema migrations (idempotent)")
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
def db_migrate(as_json: bool) -> int:
    from config.stackenv import stack_settings
    from sinks.postgres.migrate import ensure_app_login, migrate

    settings = stack_settings()
    applied = migrate(settings.migration_dsn, settings.pg_schema)
    login = ensure_app_login(settings.migration_dsn, settings.pg_dsn.get_secret_value())
    if as_json:
        emit_json({"schema": settings.pg_schema, "applied": list(applied), "login": login})
        return EXIT_OK
    if login:
        print(
            f"login {login}: a member of croupier_app (writes the ledger, trail, decisions "
            "and reports only through their functions)"
        )
    print(f"schema {settings.pg_schema}: applied {', '.join(applied) or 'nothing (up to date)'}")
    return EXIT_OK


@click.command(help="run a Croupier worker (Faust) in the foreground")
@click.option(
    "--name",
    default=None,
    help="this worker's name, on its log lines and its Kafka client ids (CROUPIER_WORKER_NAME)",
)
@click.option("--loglevel", default="info", show_default=True)
def worker(name: str | None, loglevel: str) -> int:
    import asyncio

    import uvloop
    from faust.worker import Worker

    from config import logs
    from config.stackenv import stack_settings
    from rules.games import CatalogueError
    from rules.policy import PolicyError
    from topologies.app import create_app

    if name:
        os.environ["CROUPIER_WORKER_NAME"] = name  # its settings, logs and Kafka ids
    settings = stack_settings()
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
    runner = Worker(app, loglevel=loglevel, quiet=True, logging_config=logs.dict_config(loglevel))
    runner.execute_from_commandline()  # exits the process when the worker stops
    return EXIT_OK


@click.group(help="the ClickHouse fan-out: run the sink, apply the schema, wait for it")
@click.option("--timeout", type=params.SECONDS, default=None, hidden=True)
def analytics(timeout: float | None) -> None:
    """ClickHouse."""


@analytics.command("run", help="consume the audit topic into ClickHouse (foreground)")
def analytics_run() -> int:
    from config.stackenv import stack_settings
    from croupier import analytics as sink

    return sink.run(stack_settings())


@analytics.command("schema", help="apply the ClickHouse DDL")
def analytics_schema() -> int:
    from config.stackenv import stack_settings
    from croupier import arguments
    from sinks.base import SinkUnavailable
    from sinks.clickhouse.sink import AuditLogWriter

    settings = stack_settings()
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


@analytics.command(
    "wait", help="until the sink has caught up with the audit topic (exit 1 on --timeout)"
)
@click.option("--timeout", type=params.SECONDS, default=None, help="seconds (default 60)")
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
@click.pass_context
def analytics_wait(ctx: click.Context, timeout: float | None, as_json: bool) -> int:
    from config.stackenv import stack_settings
    from croupier import analytics as sink

    settings = stack_settings()
    wait = timeout or _parent_flag(ctx, "timeout") or 60.0
    caught_up = sink.wait_caught_up(settings, timeout=wait)
    behind = 0 if caught_up else sink.lag(settings)
    if as_json:
        emit_json({"caught_up": caught_up, "behind": behind, "timeout": wait})
    elif not caught_up:
        print(
            f"croupier: the analytics sink is {behind} record(s) behind after {wait:g} s",
            file=sys.stderr,
        )
    return EXIT_OK if caught_up else EXIT_FAILED
