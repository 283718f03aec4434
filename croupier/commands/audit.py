"""``croupier audit``: the hash-chained trail: verify, sign, export, rebuild wallets from it."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from croupier.commands import params, printers
from croupier.commands.output import emit_json, progress
from croupier.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    import psycopg

    from config.settings import Settings
    from sinks.signing import Pin

NO_PIN = (
    "no pinned public key: set CROUPIER_AUDIT_PUBLIC_KEY or pass --public-key (the key "
    "you hold, or its fingerprint: `croupier audit checkpoint` prints it); the key a "
    "checkpoint names is never trusted"
)


def _pin(given: str | None, setting: str | None) -> Pin | None:
    """The pinned audit key: ``--public-key``, else the setting; None when neither."""
    from sinks.signing import parse_pin

    text = given or setting
    return parse_pin(text) if text else None


def _settings() -> Settings:
    from config.stackenv import stack_settings

    return stack_settings()


def _connect(settings: Settings) -> psycopg.Connection[tuple[object, ...]]:
    import psycopg

    return psycopg.connect(
        settings.pg_dsn.get_secret_value(), options=f"-c search_path={settings.pg_schema}"
    )


@click.group(help="the hash-chained audit trail")
def audit() -> None:
    """The audit trail."""


@audit.command("verify", help="recompute every chain; exit 1 naming the first bad record of each")
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
@click.option(
    "--public-key",
    help="the pinned Ed25519 public key checkpoints must be signed by: "
    "hex, base64, its fingerprint, or a file (default CROUPIER_AUDIT_PUBLIC_KEY)",
)
@click.option(
    "--bundle",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="verify an exported bundle alone (no database)",
)
def verify(as_json: bool, public_key: str | None, bundle: Path | None) -> int:
    from sinks.postgres import audit as trail

    if bundle is not None:
        return _verify_bundle(bundle, public_key, as_json)
    settings = _settings()
    pin = _pin(public_key, settings.audit_public_key)
    if pin is None:
        print(f"croupier: {NO_PIN}", file=sys.stderr)
        return EXIT_USAGE
    with _connect(settings) as conn:
        result = trail.verify(conn)
        checkpoints, signed = trail.verify_checkpoints(conn, pin)
    found = [*(result.problems or []), *signed]
    ok = not found
    if as_json:
        emit_json(
            {
                "ok": ok,
                "chains": result.chains,
                "records": result.records,
                "checkpoints": checkpoints,
                "problems": [{"chain": p.chain, "seq": p.seq, "problem": p.what} for p in found],
            }
        )
    else:
        printers.problems(found)
        state = "everything verifies" if ok else f"{len(found)} problem(s)"
        print(
            f"{result.records} audit records in {result.chains} chains, {checkpoints} "
            f"signed checkpoints, pinned key {pin.fingerprint}: {state}"
        )
    return EXIT_OK if ok else EXIT_FAILED


def _verify_bundle(bundle: Path, public_key: str | None, as_json: bool) -> int:
    """``audit verify --bundle``: no settings, no database; only the file and a pinned key."""
    from sinks.audit_bundle import BundleError, verify_bundle

    pin = _pin(public_key, os.environ.get("CROUPIER_AUDIT_PUBLIC_KEY"))
    if pin is None:
        print(f"croupier: {NO_PIN}", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = verify_bundle(bundle, pin)
    except BundleError as exc:
        print(f"croupier: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if as_json:
        emit_json(report.to_json())
    else:
        printers.problems(report.problems)
        state = "everything verifies" if report.ok else f"{len(report.problems)} problem(s)"
        print(
            f"bundle {bundle} ({report.header.get('from')} .. {report.header.get('to')}): "
            f"{report.chains.records} records in {report.chains.chains} chains, pinned key "
            f"{report.trusted_key}: {state}"
        )
    return EXIT_OK if report.ok else EXIT_FAILED


@audit.command("checkpoint", help="sign every chain's head (key: CROUPIER_AUDIT_KEY)")
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
def checkpoint(as_json: bool) -> int:
    from sinks import signing
    from sinks.postgres import audit as trail

    settings = _settings()
    with _connect(settings) as conn:  # the database first: it being away is exit 3
        key = signing.load_private_key(settings.audit_key, what="audit key")
        public = signing.public_bytes(key)
        pinned = _pin(None, settings.audit_public_key)
        if pinned is not None and not pinned.matches(public):
            print(
                f"croupier: the audit key {settings.audit_key} (fingerprint "
                f"{signing.fingerprint(public)}) is not the pinned key "
                f"{pinned.fingerprint} (CROUPIER_AUDIT_PUBLIC_KEY); nothing signed",
                file=sys.stderr,
            )
            return EXIT_FAILED
        cid, chains = trail.checkpoint(conn, key)
    if as_json:
        emit_json(
            {
                "checkpoint": cid,
                "chains": chains,
                "public_key": public.hex(),
                "fingerprint": signing.fingerprint(public),
            }
        )
        return EXIT_OK
    print(
        f"checkpoint {cid}: {chains} chain heads signed by Ed25519 key "
        f"{public.hex()} (fingerprint {signing.fingerprint(public)})"
    )
    return EXIT_OK


@audit.command(
    "keygen",
    help="make the audit signing key (CROUPIER_AUDIT_KEY) and its .pub; never replaces one",
)
@click.option(
    "--reports",
    is_flag=True,
    help="make the report signing key (CROUPIER_REPORT_SIGNING_KEY) instead",
)
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
def keygen(reports: bool, as_json: bool) -> int:
    from sinks import signing

    settings = _settings()
    path = settings.report_signing_key if reports else settings.audit_key
    try:
        key = signing.generate(path)
    except signing.KeyFileError as exc:
        print(f"croupier: {exc}", file=sys.stderr)
        return EXIT_FAILED
    public = signing.public_bytes(key)
    pin = "CROUPIER_REPORT_PUBLIC_KEY" if reports else "CROUPIER_AUDIT_PUBLIC_KEY"
    if as_json:
        emit_json(
            {
                "key": str(path),
                "public_key": public.hex(),
                "public_file": str(signing.public_file(path)),
                "fingerprint": signing.fingerprint(public),
                "pin": pin,
            }
        )
        return EXIT_OK
    print(
        f"{path}: a new Ed25519 key (mode 0600); public key {public.hex()} in "
        f"{signing.public_file(path)}, fingerprint {signing.fingerprint(public)}"
    )
    print(f"pin it where it is verified: {pin}={public.hex()}")
    return EXIT_OK


@audit.command(
    "run",
    help="relay the trail to `audit`, derive the regulator reports and sign "
    "checkpoints, in the foreground (the workers' timers, in a process of their own)",
)
def run() -> int:
    from config.policies import load_policies
    from streams.auditor import main

    settings = _settings()
    return main(settings, load_policies(settings.policy_dir))


@audit.command(
    "rebuild", help="a wallet (or every one) rebuilt from the audit trail, beside the ledger"
)
@click.argument("player", required=False, metavar="PLAYER")
@click.option("--all", "every", is_flag=True, help="every player's wallet")
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
def rebuild(player: str | None, every: bool, as_json: bool) -> int:
    from sinks.postgres.rebuild import rebuild as from_trail

    settings = _settings()
    if (player is None) == (not every):
        print("croupier: name a PLAYER or give --all", file=sys.stderr)
        return EXIT_USAGE
    with _connect(settings) as conn, progress("rebuilding wallets") as on_progress:
        wallets = from_trail(conn, None if every else player, on_progress=on_progress)
    if not wallets:
        print(f"croupier: no ledger or audit trail for {player}", file=sys.stderr)
        return EXIT_USAGE
    bad = [w for w in wallets if not w.ok]
    if as_json:
        emit_json({"ok": not bad, "wallets": [w.to_json() for w in wallets]})
    else:
        printers.rebuilt(wallets, wallets if player else bad)
    return EXIT_FAILED if bad else EXIT_OK


@audit.command(
    "export", help="a self-contained bundle of [--from, --to) a regulator verifies alone"
)
@click.option("--from", "start", type=params.TIME, required=True, metavar="TIME")
@click.option("--to", "end", type=params.TIME, required=True, metavar="TIME")
@click.option(
    "--out", type=click.Path(path_type=Path), metavar="FILE", help="default audit-FROM-TO.jsonl"
)
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
def export(start: datetime, end: datetime, out: Path | None, as_json: bool) -> int:
    from sinks import signing
    from sinks.audit_bundle import write_bundle
    from sinks.postgres import audit as trail

    settings = _settings()
    if end <= start:
        print("croupier: --to must be after --from", file=sys.stderr)
        return EXIT_USAGE
    with _connect(settings) as conn:
        key = signing.load_private_key(settings.audit_key, what="audit key")
        out = out or Path(f"audit-{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}.jsonl")
        with progress("exporting audit records") as on_progress:
            lines = write_bundle(
                out, trail.export_lines(conn, key, start, end, on_progress=on_progress)
            )
    if as_json:
        emit_json({"bundle": str(out), "records": lines - 2, "checkpoints": 1})
        return EXIT_OK
    print(f"{out}: {lines - 2} audit records, one signed checkpoint, the public key")
    return EXIT_OK
