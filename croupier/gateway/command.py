"""``croupier gateway``: ``run [--workers N]`` the HTTP edge, ``key add NAME`` (mint a front
end's API key, printed once), ``token issue PLAYER --partner NAME`` (a session token,
printed once), ``token revoke TOKEN|--player P``, ``openapi`` (print or ``--write`` the
checked-in document)."""

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


@gateway.group(help="players' session tokens, each for one partner (hashed at rest)")
def token() -> None:
    """Session tokens."""


def _gateway_settings() -> object:
    from config.stackenv import load_stack_env
    from croupier.gateway.config import GatewaySettings

    load_stack_env()
    return GatewaySettings()


@gateway.command("run", help="serve in the foreground (CROUPIER_GATEWAY_HOST/PORT)")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="processes sharing the port (CROUPIER_GATEWAY_WORKERS)")  # fmt: skip
def run(workers: int | None) -> int:
    import uvloop

    from config.stackenv import stack_settings as _settings
    from croupier.gateway.app import serve
    from croupier.gateway.config import GatewaySettings

    edge = _gateway_settings()
    assert isinstance(edge, GatewaySettings)
    count = edge.workers if workers is None else workers
    if count > 1:
        from croupier.gateway.processes import run_processes

        return run_processes(count)
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
@click.option("--partner", required=True, help="the aggregator (its key's name)")
def token_issue(player: str, ttl: float, partner: str) -> int:
    import psycopg

    from config.stackenv import stack_settings as _settings
    from croupier.arguments import InputError
    from croupier.gateway.tokens import issue

    _gateway_settings()  # loads .stack/env, as the other actions do
    settings = _settings()
    try:
        issued = issue(settings.pg_dsn.get_secret_value(), settings.pg_schema, player, ttl,
                       partner=partner)  # fmt: skip
    except (ValueError, psycopg.errors.CheckViolation) as exc:
        raise InputError(str(exc)) from exc
    print(issued)
    return 0


@token.command("revoke", help="revoke a token, or every token of --player")
@click.argument("token_", metavar="[TOKEN]", required=False)
@click.option("--player", help="every token of this player")
def token_revoke(token_: str | None, player: str | None) -> int:
    from config.stackenv import stack_settings as _settings
    from croupier.arguments import InputError
    from croupier.gateway.config import GatewaySettings
    from croupier.gateway.tokens import revoke

    edge = _gateway_settings()
    assert isinstance(edge, GatewaySettings)
    settings = _settings()
    try:
        n = revoke(settings.pg_dsn.get_secret_value(), settings.pg_schema, token=token_,
                   player=player)  # fmt: skip
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    print(f"revoked {n} token(s); every gateway refuses them within {edge.token_cache:g} s")
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
