"""``croupier gateway``: ``run`` the HTTP edge, ``key add NAME`` (mint a front end's API
key, printed once), ``token issue PLAYER`` (a Hub88 session token, printed once),
``openapi`` (print or ``--write`` the checked-in document)."""

from __future__ import annotations

import json
from pathlib import Path

import click

OPENAPI_FILE = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "gateway.json"


@click.group(help="the HTTP edge: wallet, payment webhooks, bet API")
def gateway() -> None:
    """The HTTP edge."""


@gateway.group(help="front ends' API keys (hashed at rest)")
def key() -> None:
    """API keys."""


@gateway.group(help="players' Hub88 session tokens (hashed at rest)")
def token() -> None:
    """Session tokens."""


def _gateway_settings() -> object:
    from config.stackenv import load_stack_env
    from croupier.gateway.config import GatewaySettings

    load_stack_env()
    return GatewaySettings()


@gateway.command("run", help="serve in the foreground (CROUPIER_GATEWAY_HOST/PORT)")
def run() -> int:
    import uvloop

    from config.stackenv import stack_settings as _settings
    from croupier.gateway.app import serve
    from croupier.gateway.config import GatewaySettings

    edge = _gateway_settings()
    assert isinstance(edge, GatewaySettings)
    uvloop.run(serve(_settings(), edge))
    return 0


@key.command("add", help="mint a key for NAME and print it once")
@click.argument("name")
def key_add(name: str) -> int:
    from croupier.arguments import InputError
    from croupier.gateway.config import GatewaySettings, add_key

    edge = _gateway_settings()
    assert isinstance(edge, GatewaySettings)
    try:
        minted = add_key(edge.directory, name)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    print(minted)
    return 0


@token.command("issue", help="issue PLAYER a session token and print it once")
@click.argument("player")
@click.option("--ttl", type=float, default=86_400.0,
              help="seconds it lives (default a day, at most 30 days)")  # fmt: skip
def token_issue(player: str, ttl: float) -> int:
    import psycopg

    from config.stackenv import stack_settings as _settings
    from croupier.arguments import InputError
    from croupier.gateway.tokens import issue

    _gateway_settings()  # loads .stack/env, as the other actions do
    settings = _settings()
    try:
        issued = issue(settings.pg_dsn.get_secret_value(), settings.pg_schema, player, ttl)
    except (ValueError, psycopg.errors.CheckViolation) as exc:
        raise InputError(str(exc)) from exc
    print(issued)
    return 0


def rendered() -> str:
    from croupier.gateway.openapi import document

    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


@gateway.command("openapi", help="print the OpenAPI document (or --write it)")
@click.option("--write", is_flag=True, help=f"write {OPENAPI_FILE.name}")
def openapi(write: bool) -> int:
    text = rendered()
    if write:
        OPENAPI_FILE.parent.mkdir(parents=True, exist_ok=True)
        OPENAPI_FILE.write_text(text)
    else:
        print(text, end="")
    return 0
