"""The casino game registry as data: which game may be played where, on which certificate.

A regulator lets a casino game run only as the build an accredited test lab certified,
for the jurisdictions the certificate names, while it is valid. The catalogue records
that evidence per game (lab, certificate id, jurisdictions, RTP, SHA-256 of the certified
build, issue and expiry dates) so a casino call can be refused with ``game_not_certified``
before any money moves, and an auditor can see which certificate allowed a round.
``config.games.load_catalogue`` reads ``games/catalogue.toml``; this module only parses
and validates text, so the rules stay pure.

Dates are calendar days and validity is half-open, as elsewhere in Croupier: a
certification covers the days from ``issued`` up to, not including, ``expires``.
"""

from __future__ import annotations

import re
import tomllib
from collections import defaultdict
from collections.abc import Collection, Iterable
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, NoReturn

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from rules.decimals import MONEY_CONTEXT

# A closed set, not free text: regulators accept reports only from the labs they approved,
# and a typo ("GLI " or "Gaming Labs") would otherwise pass as a new lab and split every
# report by lab. A lab we start working with is a one-line, reviewed change here.
Lab = Literal[
    "GLI",
    "BMM Testlabs",
    "eCOGRA",
    "iTech Labs",
    "NMi",
    "Gaming Associates",
    "SIQ",
    "Quinel",
    "Trisigma",
]
GameType = Literal["slot", "table", "live", "crash", "dice", "other"]
# provider: the provider's remote game server draws the outcomes; croupier: our own RNG
# (rng/generator.py) does, so the certified build hash is the hash of our source.
RngSource = Literal["provider", "croupier"]
GameRefusal = Literal["unknown_game", "game_not_certified"]

RTP_MIN = Decimal(80)
RTP_MAX = Decimal(100)
_CENT = Decimal("0.01")
_JURISDICTION = re.compile(r"[A-Z]{2,3}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# The wire limit of schemas.casino.GameId, without whitespace, so ids match casino calls.
_GAME_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_CERTIFICATE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9./_-]{2,63}")


class CatalogueError(ValueError):
    """A catalogue that cannot be used: bad TOML, a bad field, or a clash between entries.

    The message names the source (a file) and each bad field, and says what to fix.
    """

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


class GameModel(BaseModel):
    """A part of the catalogue: immutable, unknown keys rejected, TOML types kept."""

    # strict: a TOML string "2024-03-14" is not a date and "96.5" is not an RTP.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def _jurisdiction(code: str) -> str:
    if not _JURISDICTION.fullmatch(code):
        kind, template = "jurisdiction_code", "must be 2-3 capital letters, such as UK or NJ"
        raise PydanticCustomError(kind, template)
    return code


class Certification(GameModel):
    """One lab certificate: the build it certified, where, at what RTP, and for how long."""

    test_lab: Lab
    certificate_id: str
    # A TOML array, hence not strict: only here may a list become a tuple.
    jurisdictions: tuple[str, ...] = Field(min_length=1, strict=False)
    rtp: Decimal
    build_hash: str
    issued: date
    expires: date | None = None

    @field_validator("certificate_id")
    @classmethod
    def _certificate_id(cls, value: str) -> str:
        if not _CERTIFICATE_ID.fullmatch(value):
            kind = "certificate_id"
            template = "must be 3-64 letters, digits and . / _ - as printed on the certificate"
            raise PydanticCustomError(kind, template)
        return value

    @field_validator("jurisdictions")
    @classmethod
    def _jurisdictions(cls, codes: tuple[str, ...]) -> tuple[str, ...]:
        for code in codes:
            _jurisdiction(code)
        twice = sorted({c for c in codes if codes.count(c) > 1})
        if twice:
            kind, template = "jurisdiction_repeated", "lists {codes} more than once"
            raise PydanticCustomError(kind, template, {"codes": ", ".join(twice)})
        return codes

    @field_validator("rtp", mode="before")
    @classmethod
    def _rtp_is_a_number(cls, value: object, info: ValidationInfo) -> object:
        # TOML floats arrive as Decimal (parse_float=Decimal) and integers as int; JSON
        # carries a Decimal as a string. A TOML string or a Python float is a mistake.
        if isinstance(value, int) and not isinstance(value, bool):
            return Decimal(value)
        if isinstance(value, Decimal):
            return value
        if isinstance(value, str) and info.mode == "json":
            try:
                return Decimal(value)
            except InvalidOperation:
                pass
        kind, template = "rtp_type", "must be a number such as 96.50 (a percentage), not {kind}"
        raise PydanticCustomError(kind, template, {"kind": type(value).__name__})

    @field_validator("rtp")
    @classmethod
    def _rtp_is_sane(cls, value: Decimal) -> Decimal:
        # 80: New Jersey's floor for a slot machine is 83% and no game we carry pays back
        # less than about 85%, so below 80 is a typo (a house edge, a fraction); 100 or more
        # is no casino game. Providers publish RTPs to two decimals.
        # (NaN and infinities never get here: pydantic refuses them as not finite.)
        if not RTP_MIN <= value < RTP_MAX:
            if 0 < value <= 1:
                kind, template = "rtp_fraction", "is a percentage: write 96.50 for 96.5%"
                raise PydanticCustomError(kind, template)
            kind, template = (
                "rtp_range",
                "must be a percentage from {low} up to, not including, 100",
            )
            raise PydanticCustomError(kind, template, {"low": str(RTP_MIN)})
        if value != value.quantize(_CENT, context=MONEY_CONTEXT):
            kind, template = "rtp_precision", "has more than two decimals; write it as certified"
            raise PydanticCustomError(kind, template)
        return value.quantize(_CENT, context=MONEY_CONTEXT)

    @field_validator("build_hash")
    @classmethod
    def _build_hash(cls, value: str) -> str:
        if not _SHA256.fullmatch(value):
            kind = "build_hash"
            template = "must be the SHA-256 of the certified build: 64 lowercase hex digits"
            raise PydanticCustomError(kind, template)
        return value

    @field_validator("expires")
    @classmethod
    def _after_issued(cls, value: date | None, info: ValidationInfo) -> date | None:
        issued = info.data.get("issued")
        if value is not None and issued is not None and value <= issued:
            kind, template = "expires_before_issued", "must be after issued ({issued})"
            raise PydanticCustomError(kind, template, {"issued": issued.isoformat()})
        return value

    def valid_on(self, on: date) -> bool:
        """Whether the certificate holds on day ``on``: issued by then and not yet expired."""
        return self.issued <= on and (self.expires is None or on < self.expires)

    def covers(self, jurisdiction: str, on: date) -> bool:
        """Whether the certificate allows the game in ``jurisdiction`` on day ``on``."""
        return jurisdiction in self.jurisdictions and self.valid_on(on)


class Game(GameModel):
    """A game Croupier offers, and every certificate it holds."""

    game_id: str
    name: str = Field(min_length=1, max_length=200)
    provider: str = Field(min_length=1, max_length=200)
    type: GameType
    rng: RngSource = "provider"
    # May be empty (``certifications = []``): a game integrated but awaiting certification.
    certifications: tuple[Certification, ...] = Field(strict=False)

    @field_validator("game_id")
    @classmethod
    def _game_id(cls, value: str) -> str:
        if not _GAME_ID.fullmatch(value):
            kind = "game_id"
            template = "must be 1-128 letters, digits and . _ : - (the id casino calls carry)"
            raise PydanticCustomError(kind, template)
        return value

    def certified_in(self, on: date) -> tuple[str, ...]:
        """The jurisdictions where some certificate allows the game on day ``on``, sorted."""
        return tuple(
            sorted({j for c in self.certifications if c.valid_on(on) for j in c.jurisdictions})
        )


def _repeated_certificates(games: Iterable[Game]) -> dict[str, list[str]]:
    """Certificate ids held more than once, with the games that hold them."""
    holders: dict[str, list[str]] = defaultdict(list)
    for game in games:
        for certification in game.certifications:
            holders[certification.certificate_id].append(game.game_id)
    return {cid: ids for cid, ids in holders.items() if len(ids) > 1}


class Catalogue(GameModel):
    """Every game Croupier offers, by game id, and the answer to "may it run here today?"."""

    games: dict[str, Game]

    @model_validator(mode="after")
    def _consistent(self) -> Catalogue:
        # parse_catalogue reports these with their places in the file; this guards a
        # catalogue built in code.
        for key, game in self.games.items():
            if key != game.game_id:
                msg = f"games[{key!r}] holds the game {game.game_id!r}; key it by its game_id"
                raise ValueError(msg)
        for certificate_id, holders in _repeated_certificates(self.games.values()).items():
            msg = f"certificate_id {certificate_id!r} is held more than once ({holders})"
            raise ValueError(msg)
        return self

    def get(self, game_id: str) -> Game | None:
        """The game ``game_id``, or ``None`` when the catalogue does not have it."""
        return self.games.get(game_id)

    def certification_for(self, game_id: str, jurisdiction: str, on: date) -> Certification | None:
        """The certificate that allows ``game_id`` in ``jurisdiction`` on day ``on``.

        When several do (a renewal overlapping the old certificate), the latest issued one,
        which certified the build that should be running; on a tie, the one valid longest.
        """
        game = self.games.get(game_id)
        if game is None:
            return None
        valid = [c for c in game.certifications if c.covers(jurisdiction, on)]
        return max(valid, key=lambda c: (c.issued, c.expires or date.max), default=None)

    def check(self, game_id: str, jurisdiction: str, on: date) -> GameRefusal | None:
        """``None`` when ``game_id`` may be played in ``jurisdiction`` on day ``on``.

        Otherwise the reason: ``unknown_game`` (not in the catalogue) or
        ``game_not_certified`` (no certificate covers the jurisdiction on that day:
        none at all, not yet issued, or expired).
        """
        if game_id not in self.games:
            return "unknown_game"
        if self.certification_for(game_id, jurisdiction, on) is None:
            return "game_not_certified"
        return None


class _CatalogueFile(GameModel):
    """The file's layout: a list of ``[[games]]`` tables, before it is keyed by id."""

    games: tuple[Game, ...] = Field(min_length=1, strict=False)


_ALLOWED = {
    (): list(_CatalogueFile.model_fields),
    ("games",): list(Game.model_fields),
    ("games", "certifications"): list(Certification.model_fields),
}

_LAYOUT = (
    "a catalogue is a list of [[games]] tables (game_id, name, provider, type, optional rng, "
    "certifications), each with [[games.certifications]] tables (test_lab, certificate_id, "
    "jurisdictions, rtp, build_hash, issued, optional expires)"
)


def _path(loc: Iterable[int | str]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _game_hint(document: dict[str, Any], index: int | str) -> str:
    """`` [game 'starburst']`` for ``games[index]`` when it has a readable id, else ``""``."""
    games = document.get("games")
    if isinstance(index, int) and isinstance(games, list) and 0 <= index < len(games):
        entry = games[index]
        if isinstance(entry, dict) and isinstance(entry.get("game_id"), str):
            return f" [game {entry['game_id']!r}]"
    return ""


def _problem(error: ErrorDetails, document: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    path = _path(loc) or "(catalogue)"
    hint = _game_hint(document, loc[1]) if len(loc) > 1 and loc[0] == "games" else ""
    if error["type"] == "extra_forbidden":
        allowed = _ALLOWED.get(tuple(p for p in loc[:-1] if isinstance(p, str)))
        known = f" (allowed here: {', '.join(allowed)})" if allowed else ""
        return f"{path}: unknown key{known}{hint}"
    if error["type"] == "missing":
        return f"{path}: missing key{hint}"
    given = error["input"]
    if isinstance(given, dict | list | BaseModel):
        return f"{path}: {error['msg']}{hint}"
    shown = repr(given) if isinstance(given, str) else str(given)
    return f"{path}: {error['msg']} (got {shown}){hint}"


def _raise(
    source: str, problems: list[str], *, layout: bool, cause: Exception | None = None
) -> NoReturn:
    lines = "\n".join(f"  {p}" for p in problems)
    msg = f"{source}: invalid game catalogue:\n{lines}\nFix the field(s) above in {source}" + (
        f"; {_LAYOUT}." if layout else "."
    )
    raise CatalogueError(msg, source=source) from cause


def _clashes(games: tuple[Game, ...], jurisdictions: Collection[str] | None) -> list[str]:
    """What no single game shows: repeated ids, and jurisdictions Croupier has no licence for."""
    problems = []
    first_at: dict[str, int] = {}
    for i, game in enumerate(games):
        if game.game_id in first_at:
            problems.append(
                f"games[{i}].game_id: {game.game_id!r} is also the id of "
                f"games[{first_at[game.game_id]}]; game ids must be unique"
            )
        first_at.setdefault(game.game_id, i)
    certificate_at: dict[str, str] = {}
    for i, game in enumerate(games):
        for k, certification in enumerate(game.certifications):
            here = f"games[{i}].certifications[{k}]"
            cid = certification.certificate_id
            if cid in certificate_at:
                problems.append(
                    f"{here}.certificate_id: {cid!r} is also the id of {certificate_at[cid]}; "
                    f"certificate ids must be unique [game {game.game_id!r}]"
                )
            certificate_at.setdefault(cid, here)
            if jurisdictions is None:
                continue
            for m, code in enumerate(certification.jurisdictions):
                if code not in jurisdictions:
                    problems.append(
                        f"{here}.jurisdictions[{m}]: {code!r} is not a jurisdiction Croupier "
                        f"is licensed in ({', '.join(sorted(jurisdictions))}) "
                        f"[game {game.game_id!r}]"
                    )
    return problems


def parse_catalogue(
    text: str, source: str, *, jurisdictions: Collection[str] | None = None
) -> Catalogue:
    """The catalogue that TOML ``text`` describes; ``source`` (a file) names it in errors.

    ``jurisdictions``, when given (the jurisdictions with a policy), is every code a
    certificate may name: a certificate for a market we are not licensed in is a mistake.
    """
    try:
        # Decimal: an RTP of 96.50 stays 96.50, not the nearest binary float.
        document: dict[str, Any] = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{source}: not valid TOML: {exc}; fix the syntax (see https://toml.io)"
        raise CatalogueError(msg, source=source) from exc
    try:
        parsed = _CatalogueFile.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors()
        layout = any(e["type"] in ("extra_forbidden", "missing") for e in errors)
        _raise(source, [_problem(e, document) for e in errors], layout=layout, cause=exc)
    problems = _clashes(parsed.games, jurisdictions)
    if problems:
        _raise(source, problems, layout=False)
    return Catalogue(games={g.game_id: g for g in sorted(parsed.games, key=lambda g: g.game_id)})
