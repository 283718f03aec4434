"""Read the game catalogue (``games/catalogue.toml``) into ``rules.games.Catalogue``, and show it.

``table_rows`` (under ``GAME_COLUMNS``) and ``to_json`` are what ``croupier games list``
prints; they do no I/O (they read the clock only when no day is given), so the command stays
a thin shell around them.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from config.shipped import shipped
from rules.games import Catalogue, CatalogueError, Game, parse_catalogue

# The catalogue shipped with Croupier, found like the policies (DEFAULT_POLICY_DIR).
DEFAULT_CATALOGUE = shipped("games") / "catalogue.toml"


def load_catalogue(
    path: Path | None = None, *, jurisdictions: Collection[str] | None = None
) -> Catalogue:
    """The catalogue in ``path`` (default: the shipped one).

    ``jurisdictions`` (e.g. ``load_policies(...).jurisdictions``), when given, is every
    jurisdiction a certificate may name.
    """
    path = DEFAULT_CATALOGUE if path is None else path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        msg = (
            f"{path}: no such game catalogue file; check the path "
            f"(the shipped catalogue is {DEFAULT_CATALOGUE})"
        )
        raise CatalogueError(msg, source=str(path)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{path}: cannot read the game catalogue ({exc})"
        raise CatalogueError(msg, source=str(path)) from exc
    return parse_catalogue(text, source=str(path), jurisdictions=jurisdictions)


def _today() -> date:
    # Certificates are dated in calendar days; Croupier's clock is UTC.
    return datetime.now(UTC).date()


def _offered(catalogue: Catalogue, jurisdiction: str | None, on: date) -> list[Game]:
    games = sorted(catalogue.games.values(), key=lambda g: g.game_id)
    if jurisdiction is None:
        return games
    return [g for g in games if catalogue.check(g.game_id, jurisdiction, on) is None]


GAME_COLUMNS = ("game_id", "name", "provider", "type", "rtp", "certified")


def table_rows(
    catalogue: Catalogue, jurisdiction: str | None = None, *, on: date | None = None
) -> list[tuple[str, ...]]:
    """One row of ``GAME_COLUMNS`` per game: what it is, its RTP and where it is certified.

    ``rtp`` and ``certified`` count only certificates valid on ``on`` (default: today,
    UTC); a game with none shows ``-``. With ``jurisdiction``, only the games that may run
    there that day are listed, and ``rtp`` is the one certified for that jurisdiction.
    """
    day = _today() if on is None else on
    rows: list[tuple[str, ...]] = []
    for game in _offered(catalogue, jurisdiction, day):
        if jurisdiction is None:
            rtps = {c.rtp for c in game.certifications if c.valid_on(day)}
        else:
            certification = catalogue.certification_for(game.game_id, jurisdiction, day)
            rtps = {certification.rtp} if certification else set()
        certified = game.certified_in(day)
        rows.append(
            (
                game.game_id,
                game.name,
                game.provider,
                game.type,
                "/".join(f"{r:.2f}" for r in sorted(rtps)) or "-",
                ",".join(certified) or "-",
            )
        )
    return rows


def to_json(
    catalogue: Catalogue, jurisdiction: str | None = None, *, on: date | None = None
) -> list[dict[str, Any]]:
    """The games as JSON-ready dicts (RTPs as strings, dates ISO), sorted by game id.

    Each dict is the whole ``Game`` and reads back with ``Game.model_validate``. With
    ``jurisdiction``, only the games that may run there on ``on`` (default: today, UTC).
    """
    day = _today() if on is None else on
    return [g.model_dump(mode="json") for g in _offered(catalogue, jurisdiction, day)]
