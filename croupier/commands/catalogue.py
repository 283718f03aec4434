"""``croupier policies`` and ``croupier games``: the jurisdiction policies and the casino game
registry operators edit: list them, check them."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from croupier.commands import helptext, params
from croupier.commands.output import emit_json, table
from croupier.exits import EXIT_OK, EXIT_USAGE

PATH = click.Path(path_type=Path)


@click.group(
    help="jurisdiction policies (policies/*.toml): list, check\n\n"
    + helptext.verbatim(helptext.POLICIES)
)
def policies() -> None:
    """The jurisdiction policies."""


def _policies(directory: Path | None) -> object:
    from config.policies import load_policies
    from config.settings import Settings
    from rules.policy import PolicyError

    try:
        return load_policies(directory if directory is not None else Settings().policy_dir)
    except PolicyError as exc:
        print(f"croupier: {exc}", file=sys.stderr)
        return None


@policies.command("list", help="a table of the policies in force (or --json)")
@click.option("--json", "as_json", is_flag=True, help="the full policies as a JSON list")
@click.option("--dir", "directory", type=PATH, metavar="DIR", help="the policy directory")
def policies_list(as_json: bool, directory: Path | None) -> int:
    from rules.policy import Policies

    found = _policies(directory)
    if not isinstance(found, Policies):
        return EXIT_USAGE
    if as_json:
        emit_json([p.model_dump(mode="json") for p in found.values()], indent=2)
        return EXIT_OK
    table(
        [
            "jurisdiction",
            "version",
            "effective_from",
            "minimum_age",
            "cooling_off_h",
            "reality_check_min",
            "geolocation",
            "session",
            "reporting",
        ],
        [
            [
                p.jurisdiction,
                str(p.version),
                p.effective_from.isoformat(),
                str(p.minimum_age),
                f"{p.limits.cooling_off_hours:g}",
                f"{p.sessions.reality_check_minutes:g}",
                "required" if p.geolocation.required else "-",
                "required" if p.sessions.required else "-",
                f"{p.reporting.topic} ({p.reporting.format})",
            ]
            for p in found.values()
        ],
    )
    return EXIT_OK


@policies.command("check", help="validate every policy file; exit 2 on a bad one")
@click.argument("directory", type=PATH, required=False, metavar="DIR")
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
def policies_check(directory: Path | None, as_json: bool) -> int:
    from rules.policy import Policies

    found = _policies(directory)
    if not isinstance(found, Policies):
        return EXIT_USAGE
    if as_json:
        emit_json({"ok": True, "policies": list(found.jurisdictions)})
    else:
        print(f"{len(found)} policies ok: {', '.join(found.jurisdictions)}")
    return EXIT_OK


@click.group(
    help="the casino game registry (games/catalogue.toml): list, check\n\n"
    + helptext.verbatim(helptext.GAMES)
)
def games() -> None:
    """The game registry."""


def _catalogue(path: Path | None) -> object:
    from config.games import load_catalogue
    from config.settings import Settings
    from rules.games import CatalogueError

    try:
        return load_catalogue(path if path is not None else Settings().games_catalogue)
    except CatalogueError as exc:
        print(f"croupier: {exc}", file=sys.stderr)
        return None


@games.command("list", help="a table of the games and where each is certified")
@click.option("--json", "as_json", is_flag=True, help="the full registry as JSON")
@click.option(
    "--jurisdiction", type=params.JURISDICTION, metavar="J", help="only games certified in J today"
)
@click.option("--file", "path", type=PATH, metavar="FILE", help="the catalogue file")
def games_list(as_json: bool, jurisdiction: str | None, path: Path | None) -> int:
    from config.games import GAME_COLUMNS, table_rows, to_json
    from rules.games import Catalogue

    catalogue = _catalogue(path)
    if not isinstance(catalogue, Catalogue):
        return EXIT_USAGE
    if as_json:
        emit_json(to_json(catalogue), indent=2)
    else:
        table(GAME_COLUMNS, table_rows(catalogue, jurisdiction))
    return EXIT_OK


@games.command("check", help="validate the catalogue; exit 2 on a bad one")
@click.argument("path", type=PATH, required=False, metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
def games_check(path: Path | None, as_json: bool) -> int:
    from rules.games import Catalogue

    catalogue = _catalogue(path)
    if not isinstance(catalogue, Catalogue):
        return EXIT_USAGE
    if as_json:
        emit_json({"ok": True, "games": sorted(catalogue.games)})
    else:
        print(f"{len(catalogue.games)} games ok")
    return EXIT_OK
