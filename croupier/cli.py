"""The ``croupier`` command's entry point: run the command line (``croupier/commands/``) and
end what went wrong in one line with the exit-code table's status (``croupier/exits.py``).

A usage error is click's message and exit 2 (raised as ``SystemExit``, as ``--help`` and
``--version`` end); a setting, an input or a service that is wrong or away is one line on
stderr without secrets, exit 2 or 3 (``explain``); anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from croupier.commands.ops import SQL_TIMEOUT
from croupier.exits import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_USAGE

__all__ = ["SQL_TIMEOUT", "explain", "main", "parse", "unreachable"]

COMPLETE_VAR = "_CROUPIER_COMPLETE"  # set by the completion script when it calls us back


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``croupier ARGV``; its exit status (``SystemExit`` for usage, help and version)."""
    from croupier.commands import root

    if argv is None and COMPLETE_VAR in os.environ:
        root.main(prog_name="croupier", complete_var=COMPLETE_VAR)  # prints, then exits
    args = list(sys.argv[1:] if argv is None else argv)
    from croupier.redact import install_log_redaction

    install_log_redaction()  # a safety net: no log line of this process shows a password
    # clickhouse-connect logs a failed request before raising it: the one line said below
    # is the command's (explain), not a second one of the driver's.
    logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)
    # And librdkafka's retries of a broker that is away (a line each, many a second) are
    # not a command's to print; a long-running process logs them (config.logs.setup).
    logging.getLogger("librdkafka").setLevel(logging.CRITICAL)
    try:
        with root.make_context("croupier", args) as ctx:
            return int(root.invoke(ctx) or 0)
    except click.exceptions.Exit as done:  # --help, --version
        raise SystemExit(done.exit_code) from None
    except click.ClickException as exc:  # a usage error: click's message, exit 2
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except (click.Abort, KeyboardInterrupt):
        return 130
    except BrokenPipeError:  # `croupier ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:
        from croupier.stack.process import StackError

        if isinstance(exc, StackError):
            print(f"croupier: {exc}", file=sys.stderr)
            return EXIT_FAILED
        explained = explain(exc)
        if explained is None:
            raise  # a bug: its traceback is what a maintainer needs
        print(f"error: {explained}", file=sys.stderr)
        return EXIT_NOT_RUNNING if unreachable(exc) else EXIT_USAGE


def parse(argv: Sequence[str]) -> dict[str, Any]:
    """The parameters ``argv`` gives its command, which is not run (the README's test);
    ``SystemExit(2)`` on a usage error, as ``main``."""
    from croupier.commands import root

    try:
        ctx = root.make_context("croupier", list(argv))
        command: click.Command = root
        while isinstance(command, click.Group):
            rest = [*ctx._protected_args, *ctx.args]
            if not rest:
                if not command.invoke_without_command:
                    ctx.fail("Missing command.")
                break
            name, found, rest = command.resolve_command(ctx, rest)
            assert found is not None and name is not None
            command, ctx = found, found.make_context(name, rest, parent=ctx)
    except click.exceptions.Exit as done:
        raise SystemExit(done.exit_code) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    params: dict[str, Any] = {}
    while ctx is not None:  # a value given to the command wins over its group's
        given = {k: v for k, v in params.items() if v not in (None, False, ())}
        params = {**params, **ctx.params, **given}
        ctx = ctx.parent  # type: ignore[assignment]  # the root's parent is None
    return params


# What a client says when its service is not there (nothing listening, no route, no
# answer in time), as against a service that answered and refused (a password, a name).
_AWAY = ("connection refused", "could not connect", "timed out", "timeout expired",
         "no route to host", "network is unreachable", "could not translate host name",
         "name or service not known", "server closed the connection", "_transport",
         "_all_brokers_down", "_timed_out", "broker transport failure",
         "connection reset", "cannot assign requested address",
         "unable to bootstrap", "nobrokersavailable", "no brokers available")  # fmt: skip


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says a service could not be reached (exit 3), not that it refused."""
    from sinks.base import SinkUnavailable

    if isinstance(exc, SinkUnavailable | ConnectionError | TimeoutError):
        return True
    module = type(exc).__module__.split(".")[0]
    if module not in ("psycopg", "confluent_kafka", "cimpl", "kafka", "clickhouse_connect",
                      "urllib3", "requests"):  # fmt: skip
        return False
    text = f"{type(exc).__name__}: {exc}".lower()  # kafka-python's NoBrokersAvailable says no more
    return any(sign in text for sign in _AWAY)


def explain(exc: BaseException) -> str | None:
    """One line, without secrets, saying what went wrong and what to fix; None for a bug.

    A bad setting, an unreachable or misaddressed service, a missing schema: things the
    user fixes. Everything else is not expected and keeps its traceback.
    """
    from pydantic import ValidationError

    from config.settings import Settings
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
