"""The regulator's side: ``croupier regulator follow`` (the signed stream, verified) and
``croupier reports write|verify`` (the stream as the regulator's files)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from croupier import arguments
from croupier.commands import params
from croupier.commands.output import emit_json
from croupier.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE


@click.group(help="the regulator's side: follow reports.<J>, verifying its signatures")
def regulator() -> None:
    """The regulator's side."""


@regulator.command(
    "follow",
    short_help="print the stream's records as their signatures verify with the operator's "
    "public key; exit 1 on a bad signature, a gap or a reordering",
    help="Follow reports.<J> from its start, verifying every record's Ed25519 signature with "
    "the operator's report public key (the regulator needs no secret of the operator's). "
    "--key-file (a MAC key shared with the operator) is gone: the stream is signed since its "
    "envelope version 2. With --json, each record is one JSON document on its own line.",
)
@click.option("--jurisdiction", required=True, metavar="J", type=params.JURISDICTION)
@click.option(
    "--public-key",
    metavar="KEY",
    help="the operator's report public key: 64 hex digits, base64, its fingerprint, "
    "or a file holding one (default CROUPIER_REPORT_PUBLIC_KEY; there is no other "
    "default)",
)
@click.option("--count", type=params.COUNT, help="stop after N verified records")
@click.option(
    "--idle-timeout",
    type=params.SECONDS,
    metavar="SECONDS",
    help="stop when nothing new arrives for this long (default: follow for ever)",
)
@click.option("--json", "as_json", is_flag=True, help="each record as its JSON (one a line)")
def follow(
    jurisdiction: str,
    public_key: str | None,
    count: int | None,
    idle_timeout: float | None,
    as_json: bool,
) -> int:
    from config.kafka import kafka_python_security
    from config.stackenv import stack_settings
    from croupier.regulator import as_json as record_json
    from croupier.regulator import follow as follow_stream
    from croupier.regulator import line
    from sinks.signing import KeyFileError, parse_pin

    settings = stack_settings()
    given = public_key or settings.report_public_key
    if not given:
        print(
            "croupier regulator: pass --public-key (or set CROUPIER_REPORT_PUBLIC_KEY) with "
            "the operator's report public key: 64 hex digits, its fingerprint, or the "
            "file the operator gave you (its .stack/reports/ed25519.pub)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        pin = parse_pin(given)
    except KeyFileError as exc:
        print(f"croupier regulator: {exc}", file=sys.stderr)
        return EXIT_USAGE
    topic = settings.topic(f"reports.{jurisdiction}")

    def show(record: Any, _: Any) -> None:
        print(record_json(record) if as_json else line(record), flush=True)

    def unreadable(envelope: Any, why: str) -> None:
        shown = (
            json.dumps({"seq": envelope.seq, "unreadable": why})
            if as_json
            else f"{envelope.seq:>6}  UNREADABLE (its signature verifies): "
            f"{arguments.printable(why)}"
        )
        print(shown, flush=True)

    result = follow_stream(
        settings.kafka_bootstrap_servers,
        topic,
        jurisdiction,
        pin,
        show=show,
        count=count,
        idle_timeout=idle_timeout,
        unreadable=unreadable,
        security=kafka_python_security(settings),
    )
    for problem in result.problems:
        print(f"croupier regulator: {topic}: {problem}", file=sys.stderr)
    if result.unreadable:
        print(
            f"croupier regulator: {topic}: {result.unreadable} record(s) verify but do not "
            "read as report records",
            file=sys.stderr,
        )
    if not as_json:
        state = "chain verified" if result.ok else "STOPPED"
        print(f"{result.verified} record(s) of {topic}: {state}", file=sys.stderr)
    return EXIT_OK if result.ok and not result.unreadable else EXIT_FAILED


@click.group(help="a jurisdiction's report stream as its regulator's files: write, verify")
def reports() -> None:
    """The regulator's files."""


def _policy(jurisdiction: str) -> tuple[Any, Any] | None:
    from config.policies import load_policies
    from config.stackenv import stack_settings

    settings = stack_settings()
    policy = load_policies(settings.policy_dir).get(jurisdiction)
    if policy is None:
        print(f"croupier reports: no policy for {jurisdiction}", file=sys.stderr)
        return None
    return settings, policy


@reports.command("write", help="write what is new (format from the policy)")
@click.option("--jurisdiction", required=True, metavar="J", type=params.JURISDICTION)
@click.option("--dir", "directory", type=click.Path(path_type=Path), help="default reports/<J>")
@click.option("--idle-timeout", type=params.SECONDS, default=5.0, hidden=True)
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
def write(jurisdiction: str, directory: Path | None, idle_timeout: float, as_json: bool) -> int:
    from croupier import report_files
    from sinks.reports import ReportError

    found = _policy(jurisdiction)
    if found is None:
        return EXIT_USAGE
    settings, policy = found
    directory = directory or Path("reports") / jurisdiction
    try:
        written = report_files.write(settings, policy, directory, idle_timeout=idle_timeout)
    except (ReportError, OSError) as exc:
        print(f"croupier reports: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for p in written.problems:
        print(
            f"croupier reports: {settings.topic(f'reports.{jurisdiction}')}: {p}", file=sys.stderr
        )
    for seq, record_id, reason in written.rejected:
        print(
            f"croupier reports: seq {seq} ({record_id!r}) could not be written as it is and "
            f"stands as a rejected entry: {arguments.printable(reason)}",
            file=sys.stderr,
        )
    if as_json:
        emit_json(
            {
                "records": written.records,
                "format": policy.reporting.format,
                "dir": str(directory),
                "files": [str(f) for f in written.files],
                "problems": [str(p) for p in written.problems],
                "rejected": [
                    {"seq": s, "record_id": r, "reason": why} for s, r, why in written.rejected
                ],
            }
        )
    elif not written.problems:
        print(
            f"{written.records} new record(s) of reports.{jurisdiction} written as "
            f"{policy.reporting.format} to {directory}: {len(written.files)} file(s)"
        )
        for f in written.files:
            print(f"  {f}")
    return EXIT_FAILED if written.problems or written.rejected else EXIT_OK


@reports.command("verify", help="check a report directory as the regulator would")
@click.option("--jurisdiction", required=True, metavar="J", type=params.JURISDICTION)
@click.option("--dir", "directory", type=click.Path(path_type=Path), help="default reports/<J>")
@click.option(
    "--public-key",
    help="the operator's report public key (hex, base64 or a file; "
    "default CROUPIER_REPORT_PUBLIC_KEY, else that of CROUPIER_REPORT_SIGNING_KEY)",
)
@click.option("--idle-timeout", type=params.SECONDS, default=5.0, hidden=True)
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
def verify(
    jurisdiction: str,
    directory: Path | None,
    public_key: str | None,
    idle_timeout: float,
    as_json: bool,
) -> int:
    from croupier import report_files
    from sinks.reports import ReportError

    found = _policy(jurisdiction)
    if found is None:
        return EXIT_USAGE
    settings, policy = found
    directory = directory or Path("reports") / jurisdiction
    if not directory.is_dir():
        print(
            f"croupier reports: {directory} is not a directory; pass --dir with the "
            "report directory to verify",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        problems = report_files.verify(settings, policy, directory, public_key)
    except (ReportError, OSError) as exc:
        print(f"croupier reports: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if as_json:
        emit_json(
            {
                "ok": not problems,
                "dir": str(directory),
                "format": policy.reporting.format,
                "problems": [str(p) for p in problems],
            }
        )
    else:
        for p in problems:
            print(f"BROKEN  {p}")
        print(
            f"{directory} ({policy.reporting.format}): "
            f"{'verifies' if not problems else f'{len(problems)} problem(s)'}"
        )
    return EXIT_FAILED if problems else EXIT_OK
