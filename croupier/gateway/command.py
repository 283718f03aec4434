"""``croupier gateway``: ``run [--workers N]`` the HTTP edge, ``key add NAME`` (mint a front
end's API key, printed once), ``token issue PLAYER --partner NAME`` (a session token,
printed once), ``token revoke TOKEN|--player P``,
``openapi`` (print or ``--write`` the checked-in document)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

OPENAPI_FILE = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "gateway.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    run_p = sub.add_parser("run", help="serve in the foreground (CROUPIER_GATEWAY_HOST/PORT)")
    run_p.add_argument("--workers", type=int, default=None,
                       help="processes sharing the port (CROUPIER_GATEWAY_WORKERS)")  # fmt: skip
    run_p.set_defaults(func=run)
    key = sub.add_parser("key", help="front ends' API keys (hashed at rest)")
    ksub = key.add_subparsers(dest="key_action", required=True)
    add = ksub.add_parser("add", help="mint a key for NAME and print it once")
    add.add_argument("name")
    add.set_defaults(func=key_add)
    token = sub.add_parser("token", help="players' Hub88 session tokens (hashed at rest)")
    tsub = token.add_subparsers(dest="token_action", required=True)
    issue = tsub.add_parser("issue", help="issue PLAYER a session token and print it once")
    issue.add_argument("player")
    issue.add_argument("--ttl", type=float, default=86_400.0,
                       help="seconds it lives (default a day, at most 30 days)")  # fmt: skip
    issue.add_argument("--partner", required=True, help="the aggregator (its key's name)")
    issue.set_defaults(func=token_issue)
    revoke = tsub.add_parser("revoke", help="revoke a token, or every token of --player")
    revoke.add_argument("token", nargs="?")
    revoke.add_argument("--player")
    revoke.set_defaults(func=token_revoke)
    doc = sub.add_parser("openapi", help="print the OpenAPI document (or --write it)")
    doc.add_argument("--write", action="store_true", help=f"write {OPENAPI_FILE.name}")
    doc.set_defaults(func=openapi)


def _gateway_settings() -> object:
    from config.stackenv import load_stack_env
    from croupier.gateway.config import GatewaySettings

    load_stack_env()
    return GatewaySettings()


def run(args: argparse.Namespace) -> int:
    import uvloop

    from config.stackenv import stack_settings as _settings
    from croupier.gateway.app import serve
    from croupier.gateway.config import GatewaySettings

    gateway = _gateway_settings()
    assert isinstance(gateway, GatewaySettings)
    workers = gateway.workers if args.workers is None else args.workers
    if workers > 1:
        from croupier.gateway.processes import run_processes

        return run_processes(workers)
    uvloop.run(serve(_settings(), gateway))
    return 0


def key_add(args: argparse.Namespace) -> int:
    from croupier.arguments import InputError
    from croupier.gateway.config import GatewaySettings, add_key

    gateway = _gateway_settings()
    assert isinstance(gateway, GatewaySettings)
    try:
        key = add_key(gateway.directory, args.name)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    print(key)
    return 0


def token_issue(args: argparse.Namespace) -> int:
    import psycopg

    from config.stackenv import stack_settings as _settings
    from croupier.arguments import InputError
    from croupier.gateway.tokens import issue

    _gateway_settings()  # loads .stack/env, as the other actions do
    settings = _settings()
    try:
        token = issue(settings.pg_dsn.get_secret_value(), settings.pg_schema, args.player,
                      args.ttl, partner=args.partner)  # fmt: skip
    except (ValueError, psycopg.errors.CheckViolation) as exc:
        raise InputError(str(exc)) from exc
    print(token)
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    from config.stackenv import stack_settings as _settings
    from croupier.arguments import InputError
    from croupier.gateway.config import GatewaySettings
    from croupier.gateway.tokens import revoke

    gateway = _gateway_settings()
    assert isinstance(gateway, GatewaySettings)
    settings = _settings()
    try:
        n = revoke(settings.pg_dsn.get_secret_value(), settings.pg_schema, token=args.token,
                   player=args.player)  # fmt: skip
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    print(f"revoked {n} token(s); every gateway refuses them within {gateway.token_cache:g} s")
    return 0


def rendered() -> str:
    from croupier.gateway.openapi import document

    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def openapi(args: argparse.Namespace) -> int:
    text = rendered()
    if args.write:
        OPENAPI_FILE.parent.mkdir(parents=True, exist_ok=True)
        OPENAPI_FILE.write_text(text)
    else:
        print(text, end="")
    return 0
