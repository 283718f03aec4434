"""Jurisdiction policy as data: what each licence requires, read from one TOML file each.

A policy says how old a player must be, which limit periods players may set and how long
an increase or removal of a limit waits, whether play needs an open session and a fresh
geolocation check, and where and how regulator reports go. The files live in
``policies/`` (one per jurisdiction, ``UK.toml`` holds ``jurisdiction = "UK"``);
``croupier.policies.load_policies`` reads them, this module only parses and validates
text, so the rules stay pure.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, timedelta
from typing import Any, Literal, NoReturn

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

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
    "and the tables [limits], [sessions], [geolocation], [reporting]"
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
