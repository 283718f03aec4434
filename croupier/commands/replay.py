"""``croupier replay``: settlements recomputed from the recorded events, beside the ledger."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime

import click

from croupier import arguments
from croupier.commands import helptext, params, printers
from croupier.commands.output import emit_json, progress
from croupier.exits import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE


def _owner() -> tuple[str, str]:
    from config.stackenv import stack_settings

    settings = stack_settings()
    # A replay builds a scratch schema beside the live one: that takes the owner's rights.
    return settings.migration_dsn, settings.pg_schema


def _reaching_postgres(ctx: click.Context, job: Callable[[click.Context], int]) -> int:
    """Run ``job`` with PostgreSQL away said in one line, exit 3."""
    import psycopg

    from sinks.base import SinkUnavailable

    try:
        return job(ctx)
    except (psycopg.OperationalError, SinkUnavailable) as exc:
        said = arguments.redact(arguments.one_line(exc))
        print(
            f"croupier: cannot reach PostgreSQL ({said}); is the stack up (`make status`) "
            "and CROUPIER_PG_DSN right?",
            file=sys.stderr,
        )
        return EXIT_NOT_RUNNING


@click.group(
    invoke_without_command=True,
    help="recompute settlements from the recorded events and compare with the ledger\n\n"
    + helptext.verbatim(helptext.REPLAY),
)
@click.option(
    "--from",
    "since",
    type=params.TIME,
    metavar="T1",
    help="range form: bets decided at or after this RFC 3339 time",
)
@click.option(
    "--to",
    "until",
    type=params.TIME,
    metavar="T2",
    help="range form: bets decided before this RFC 3339 time",
)
@click.option("--keep", is_flag=True, help="range form: keep the scratch schema (name printed)")
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
@click.pass_context
def replay(
    ctx: click.Context, since: datetime | None, until: datetime | None, keep: bool, as_json: bool
) -> int | None:
    if ctx.invoked_subcommand is not None:
        return None  # `replay settlement BET_ID`: it checks what was given here
    return _reaching_postgres(ctx, _range)


def _range(ctx: click.Context) -> int:
    from sinks.postgres.replay import replay_range

    since, until = ctx.params["since"], ctx.params["until"]
    if since and until and since >= until:
        print("croupier: --from must be before --to", file=sys.stderr)
        return EXIT_USAGE
    dsn, schema = _owner()
    with progress("replaying") as on_progress:
        ranged = replay_range(
            dsn, schema, since, until, keep=ctx.params["keep"], on_progress=on_progress
        )
    if ctx.params["as_json"]:
        emit_json(ranged.as_json())
    else:
        printers.replay_range(ranged)
    return EXIT_OK if ranged.agree else EXIT_FAILED


@replay.command(
    "settlement",
    help="one bet: replay beside the book and the ledger (exit 2: unknown bet)\n\n"
    + helptext.verbatim(helptext.REPLAY_SETTLEMENT),
)
@click.argument("bet_id", metavar="BET_ID")
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
@click.pass_context
def settlement(ctx: click.Context, bet_id: str, as_json: bool) -> int:
    ctx.params["as_json"] = as_json or bool(ctx.parent and ctx.parent.params["as_json"])
    return _reaching_postgres(ctx, _settlement)


def _settlement(ctx: click.Context) -> int:
    from sinks.postgres.replay import UnknownBet, replay_settlement

    group = ctx.parent.params if ctx.parent is not None else {}
    if group.get("since") or group.get("until") or group.get("keep"):
        print(
            "croupier: --from, --to and --keep go with the range form, "
            "not with `replay settlement`",
            file=sys.stderr,
        )
        return EXIT_USAGE
    dsn, schema = _owner()
    try:
        report = replay_settlement(dsn, schema, ctx.params["bet_id"])
    except UnknownBet as exc:
        print(f"croupier: {exc} (check the id and CROUPIER_PG_SCHEMA={schema})", file=sys.stderr)
        return EXIT_USAGE
    if ctx.params["as_json"]:
        emit_json(report.as_json())
    else:
        printers.settlement(report)
    return EXIT_OK if report.agree else EXIT_FAILED
