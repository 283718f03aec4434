"""Jurisdiction policy as data: what each licence requires, read from one TOML file each.

A policy says how old a player must be, which limit periods players may set and how long
an increase or removal of a limit waits, whether play needs an open session and a fresh
geolocation check, where and how regulator reports go, and the house's liability limits
per bet. The files live in ``policies/`` (one per jurisdiction, ``UK.toml`` holds
``jurisdiction = "UK"``); ``config.policies.load_policies`` reads them, this module only
parses and validates text, so the rules stay pure.

Liability limits (``[liability]``, optional): the house default is ``HOUSE_LIABILITY``
below, in code, so every jurisdiction has limits even when its file says nothing; a
policy's ``[liability]`` table overrides it key by key, and its ``max_stake`` and
``max_payout`` tables currency by currency. ``JurisdictionPolicy.liability_limits`` is the
result, and ``Policies.liability`` gives the house default for a player of no known
jurisdiction.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Annotated, Any, Literal, NoReturn

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from schemas.money import CURRENCY_PATTERN, check_scale

Period = Literal["day", "week", "month"]
ReportFormat = Literal["json", "safe", "sci"]

PERIOD_ORDER: tuple[Period, ...] = ("day", "week", "month")


class PolicyError(ValueError):
    """A policy that cannot be used: bad TOML, bad content, or a clash between policies.

    The message names the source (a file name) and each bad field, and says what to fix.
    """

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


class PolicyModel(BaseModel):
    """A section of a policy file: immutable, unknown keys rejected, TOML types kept."""

    # strict: a TOML string "18" is not an age and "yes" is not a boolean.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class LimitPolicy(PolicyModel):
    """The limits players may set, and how long loosening one waits."""

    # A TOML array, hence not strict: only here may a list become a set.
    periods: frozenset[Period] = Field(min_length=1, strict=False)
    cooling_off_hours: float = Field(ge=0, allow_inf_nan=False)

    @property
    def cooling_off(self) -> timedelta:
        """How long an increase or removal of a limit waits before it applies."""
        return timedelta(hours=self.cooling_off_hours)

    @field_serializer("periods")
    def _ordered(self, periods: frozenset[Period]) -> list[str]:
        return [p for p in PERIOD_ORDER if p in periods]


class SessionPolicy(PolicyModel):
    """Whether play needs an open session, and how often a reality check interrupts it."""

    required: bool
    reality_check_minutes: float = Field(gt=0, allow_inf_nan=False)

    @property
    def reality_check(self) -> timedelta:
        """The interval between reality checks in a session."""
        return timedelta(minutes=self.reality_check_minutes)


class GeolocationPolicy(PolicyModel):
    """Whether play needs a fresh geolocation check, and the safety margin on its expiry."""

    required: bool
    buffer_seconds: int = Field(ge=0)

    @property
    def buffer(self) -> timedelta:
        """A check is valid until ``checked_at + geolocate_in - buffer``."""
        return timedelta(seconds=self.buffer_seconds)


class ReportingPolicy(PolicyModel):
    """Where the jurisdiction's regulator reports go, and in which shape."""

    topic: str = Field(min_length=1)
    # json: a JSON stream; safe: Danish SAFE-style XML; sci: Spanish SCI-style batches.
    format: ReportFormat


# No policy may accept combined odds above this, and a bet priced above it is refused
# before its price is even rounded: the analytics store keeps 18 integer digits of odds.
ODDS_CEILING = Decimal(10) ** 12


def _exact_number(value: Any) -> Any:
    # A TOML float is binary (0.1 is not 0.1): limits are written as integers or strings.
    if isinstance(value, bool | float):
        msg = 'write the number as an integer or a string such as "10000.00", not a float'
        raise ValueError(msg)
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except ArithmeticError:
            number = None
        if number is None or not number.is_finite():
            msg = f"{value!r} is not a decimal number"
            raise ValueError(msg)
        return number
    return value


LimitNumber = Annotated[Decimal, BeforeValidator(_exact_number), Field(gt=0)]
Currency = Annotated[str, Field(pattern=CURRENCY_PATTERN)]


class LiabilityPolicy(PolicyModel):
    """The most one bet may risk for the house; a key left out keeps the house default.

    ``max_stake`` and ``max_payout`` are per currency (a table of ISO 4217 codes), since
    a policy has no exchange rates: a bet in a currency no table names is refused.
    """

    max_stake: dict[Currency, LimitNumber] | None = None
    max_legs: int | None = Field(default=None, ge=1)
    max_odds: LimitNumber | None = None
    max_payout: dict[Currency, LimitNumber] | None = None

    @field_validator("max_stake", "max_payout")
    @classmethod
    def _fits_the_currency(cls, amounts: dict[str, Decimal] | None) -> dict[str, Decimal] | None:
        for currency, amount in (amounts or {}).items():
            check_scale(amount, currency)
        return amounts

    @field_validator("max_odds")
    @classmethod
    def _odds_in_range(cls, odds: Decimal | None) -> Decimal | None:
        if odds is not None and not Decimal(1) < odds <= ODDS_CEILING:
            msg = f"must be above 1 and at most {ODDS_CEILING:,}"
            raise ValueError(msg)
        return odds

    @field_serializer("max_stake", "max_payout")
    def _amounts_as_text(self, amounts: dict[str, Decimal] | None) -> dict[str, str] | None:
        return None if amounts is None else {c: str(a) for c, a in sorted(amounts.items())}

    @field_serializer("max_odds")
    def _odds_as_text(self, odds: Decimal | None) -> str | None:
        return None if odds is None else str(odds)


@dataclass(frozen=True)
class LiabilityLimits:
    """The limits in force for one jurisdiction's bets: every key set."""

    max_stake: Mapping[str, Decimal]
    max_legs: int
    max_odds: Decimal
    max_payout: Mapping[str, Decimal]

    def over(self, policy: LiabilityPolicy) -> LiabilityLimits:
        """These limits with ``policy``'s keys (and currencies) in place of ours."""
        return LiabilityLimits(
            max_stake=MappingProxyType({**self.max_stake, **(policy.max_stake or {})}),
            max_legs=self.max_legs if policy.max_legs is None else policy.max_legs,
            max_odds=self.max_odds if policy.max_odds is None else policy.max_odds,
            max_payout=MappingProxyType({**self.max_payout, **(policy.max_payout or {})}),
        )


def _per_currency(stake: int) -> Mapping[str, Decimal]:
    # Round amounts of about the same value in each currency the house takes.
    rates = {"EUR": "1", "GBP": "1", "USD": "1", "CHF": "1", "CAD": "1.5", "AUD": "1.5",
             "DKK": "7.5", "SEK": "10", "NOK": "10", "JPY": "150"}  # fmt: skip
    return MappingProxyType({c: stake * Decimal(r) for c, r in sorted(rates.items())})


# The house default: what a sportsbook typically caps a single bet at. A jurisdiction's
# [liability] table overrides it; edit here to change it for every jurisdiction.
HOUSE_LIABILITY = LiabilityLimits(
    max_stake=_per_currency(10_000),
    max_legs=20,
    max_odds=Decimal(10_000),
    max_payout=_per_currency(250_000),
)


class JurisdictionPolicy(PolicyModel):
    """Everything Croupier enforces differently per licence, as one versioned document."""

    jurisdiction: str = Field(pattern=r"^[A-Z]{2,3}$")
    version: int = Field(ge=1)
    effective_from: date
    regulator: str = Field(min_length=1)
    minimum_age: int = Field(ge=16, le=25)
    limits: LimitPolicy
    sessions: SessionPolicy
    geolocation: GeolocationPolicy
    reporting: ReportingPolicy
    liability: LiabilityPolicy = LiabilityPolicy()

    @property
    def liability_limits(self) -> LiabilityLimits:
        """The liability limits of this jurisdiction's bets: the house's, overridden."""
        return HOUSE_LIABILITY.over(self.liability)

    @model_validator(mode="after")
    def _topic_matches(self) -> JurisdictionPolicy:
        expected = f"reports.{self.jurisdiction}"
        if self.reporting.topic != expected:
            kind, template = "report_topic", "is '{topic}' but must be '{expected}' ({rule})"
            raise PydanticCustomError(
                kind,
                template,
                {
                    "field": "reporting.topic",
                    "topic": self.reporting.topic,
                    "expected": expected,
                    "rule": "reports.<jurisdiction>",
                },
            )
        return self


def _fields_at(loc: tuple[int | str, ...]) -> list[str] | None:
    """The keys allowed in the table at ``loc``, or ``None`` when it is not a table."""
    model: type[BaseModel] = JurisdictionPolicy
    for part in loc:
        info = model.model_fields.get(str(part))
        annotation = info.annotation if info else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return list(model.model_fields)


def _problem(error: ErrorDetails) -> str:
    loc = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    path = path or str(ctx.get("field", "(policy)"))
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        known = f" (allowed here: {', '.join(allowed)})" if allowed else ""
        return f"{path}: unknown key{known}"
    if error["type"] == "missing":
        return f"{path}: missing " + ("table" if _fields_at(loc) is not None else "key")
    given = error["input"]
    if isinstance(given, dict | BaseModel) or "field" in ctx:
        return f"{path}: {error['msg']}"
    shown = repr(given) if isinstance(given, str) else str(given)
    return f"{path}: {error['msg']} (got {shown})"


_LAYOUT = (
    "a policy has the keys jurisdiction, version, effective_from, regulator, minimum_age "
    "and the tables [limits], [sessions], [geolocation], [reporting] (and, optionally, "
    "[liability])"
)


def _invalid(source: str, exc: ValidationError) -> NoReturn:
    errors = exc.errors()
    problems = "\n".join(f"  {_problem(e)}" for e in errors)
    layout = any(e["type"] in ("extra_forbidden", "missing") for e in errors)
    msg = (
        f"{source}: invalid jurisdiction policy:\n{problems}\n"
        f"Fix the field(s) above in {source}" + (f"; {_LAYOUT}." if layout else ".")
    )
    raise PolicyError(msg, source=source) from exc


def parse_policy(text: str, source: str) -> JurisdictionPolicy:
    """The policy that TOML ``text`` describes; ``source`` (a file name) names it in errors."""
    try:
        document: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{source}: not valid TOML: {exc}; fix the syntax (see https://toml.io)"
        raise PolicyError(msg, source=source) from exc
    try:
        return JurisdictionPolicy.model_validate(document)
    except ValidationError as exc:
        _invalid(source, exc)


class Policies(Mapping[str, JurisdictionPolicy]):
    """The policies in force, by jurisdiction: immutable, iterated in sorted order."""

    __slots__ = ("_by_jurisdiction",)
    _by_jurisdiction: dict[str, JurisdictionPolicy]

    def __init__(self, policies: Iterable[JurisdictionPolicy] = ()) -> None:
        by_jurisdiction: dict[str, JurisdictionPolicy] = {}
        for policy in policies:
            if policy.jurisdiction in by_jurisdiction:
                first = by_jurisdiction[policy.jurisdiction]
                msg = (
                    f"duplicate jurisdiction {policy.jurisdiction!r}: two policies given "
                    f"(versions {first.version} and {policy.version}); keep one policy per "
                    "jurisdiction"
                )
                raise PolicyError(msg)
            by_jurisdiction[policy.jurisdiction] = policy
        object.__setattr__(self, "_by_jurisdiction", dict(sorted(by_jurisdiction.items())))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        msg = "Policies is immutable"
        raise AttributeError(msg)

    def __delattr__(self, name: str) -> NoReturn:
        msg = "Policies is immutable"
        raise AttributeError(msg)

    def __getitem__(self, jurisdiction: str) -> JurisdictionPolicy:
        return self._by_jurisdiction[jurisdiction]

    def __contains__(self, jurisdiction: object) -> bool:
        return jurisdiction in self._by_jurisdiction

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_jurisdiction)

    def __len__(self) -> int:
        return len(self._by_jurisdiction)

    def __repr__(self) -> str:
        return f"Policies({', '.join(self._by_jurisdiction)})"

    @property
    def jurisdictions(self) -> tuple[str, ...]:
        """The jurisdictions with a policy, sorted."""
        return tuple(self._by_jurisdiction)

    def liability(self, jurisdiction: str | None) -> LiabilityLimits:
        """The liability limits for a player of ``jurisdiction``; the house default for
        one with no policy (or none known)."""
        policy = self._by_jurisdiction.get(jurisdiction) if jurisdiction else None
        return HOUSE_LIABILITY if policy is None else policy.liability_limits
