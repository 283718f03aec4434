"""Inbound ``players`` topic: registration, exclusion, limits, sessions, geolocation."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal, Self

from pydantic import AwareDatetime, Field, TypeAdapter, model_validator

from schemas.base import (
    CalendarDate,
    Id,
    InboundModel,
    IpAddress,
    SchemaVersion,
    Timestamp,
    WireModel,
)
from schemas.money import Currency, NonNegativeAmount, check_scale

Jurisdiction = Annotated[str, Field(pattern=r"^[A-Z]{2,3}$")]
PlayerId = Id
# Ids as stored in the players table before the wire's ids were narrowed to a safe
# character set: a standing written then must still load.
StoredId = Annotated[str, Field(min_length=1, max_length=128)]
# A geolocation check is trusted at most a year; a session limit is at most a year long.
MAX_GEOLOCATE_IN = 366 * 24 * 3600
MAX_SESSION_MINUTES = 366 * 24 * 60


class _PlayerEvent(InboundModel):
    player_id: PlayerId
    timestamp: Timestamp
    schema_version: SchemaVersion = 1


class Registered(_PlayerEvent):
    type: Literal["registered"]
    jurisdiction: Jurisdiction
    currency: Currency
    birth_date: CalendarDate


class SelfExcluded(_PlayerEvent):
    type: Literal["self_excluded"]
    until: Timestamp | None = None


class LimitSet(_PlayerEvent):
    """A deposit, loss or session limit set (or, with a null amount or minutes, removed)."""

    type: Literal["limit_set"]
    limit: Literal["deposit", "loss", "session"]
    period: Literal["day", "week", "month"]
    amount: NonNegativeAmount | None = None
    currency: Currency | None = None
    minutes: int | None = Field(default=None, ge=1, le=MAX_SESSION_MINUTES)

    @model_validator(mode="after")
    def _fits_the_limit(self) -> Self:
        if self.limit == "session":
            if self.amount is not None or self.currency is not None:
                msg = "a session limit takes minutes, not an amount"
                raise ValueError(msg)
        elif self.minutes is not None:
            msg = f"a {self.limit} limit takes an amount and currency, not minutes"
            raise ValueError(msg)
        elif self.amount is not None:
            if self.currency is None:
                msg = f"a {self.limit} limit amount needs its currency"
                raise ValueError(msg)
            check_scale(self.amount, self.currency)
        return self


class SessionStarted(_PlayerEvent):
    """A player's session opens; ``ip`` (optional) is the address the front end saw."""

    type: Literal["session_started"]
    session_id: Id
    ip: IpAddress | None = None


class SessionEnded(_PlayerEvent):
    """A session closes: the player or front end ended it, or Croupier did (session limit)."""

    type: Literal["session_ended"]
    session_id: Id
    reason: Literal["player", "session_limit"] = "player"


class Geolocation(_PlayerEvent):
    type: Literal["geolocation"]
    jurisdiction: Jurisdiction
    allowed: bool
    checked_at: Timestamp
    geolocate_in: int = Field(ge=0, le=MAX_GEOLOCATE_IN)
    ip: IpAddress


PlayerEvent = Annotated[
    Registered | SelfExcluded | LimitSet | SessionStarted | SessionEnded | Geolocation,
    Field(discriminator="type"),
]
PLAYER_EVENT: TypeAdapter[PlayerEvent] = TypeAdapter(PlayerEvent)


LimitKind = Literal["deposit", "loss", "session"]
Period = Literal["day", "week", "month"]


class PendingLimit(WireModel):
    """A limit increase or removal waiting out its cooling-off period."""

    amount: NonNegativeAmount | None = None
    minutes: int | None = None
    effective_at: AwareDatetime


class PlayerLimit(WireModel):
    """One of a player's limits (kind and period), as in force and as it will be.

    ``amount`` (money limits, in ``currency``) or ``minutes`` (session limits) is the value
    in force; both ``None`` means no limit. ``pending`` is a later, looser value that
    applies from its ``effective_at`` (a decrease never waits, so never pends).
    """

    kind: LimitKind
    period: Period
    amount: NonNegativeAmount | None = None
    minutes: int | None = None
    currency: Currency | None = None
    set_at: AwareDatetime
    pending: PendingLimit | None = None


class Exclusion(WireModel):
    """A self-exclusion: from ``since`` until ``until`` (``None``: indefinite)."""

    since: AwareDatetime
    until: AwareDatetime | None = None


class OpenSession(WireModel):
    session_id: str
    started_at: AwareDatetime
    ip: str | None = None


class GeoCheck(WireModel):
    """The player's latest geolocation result; trusted only until ``valid_until``.

    ``invalidated_at`` is set when a later event shows another IP address.
    """

    jurisdiction: Jurisdiction
    allowed: bool
    checked_at: AwareDatetime
    valid_until: AwareDatetime
    ip: str
    invalidated_at: AwareDatetime | None = None


class PlayerState(WireModel):
    """A player's standing as the ``players`` table holds it (the changelog's value).

    ``version`` counts the events applied; ``source_offset`` is the offset of the last one
    in its partition, which makes a redelivered event a no-op. The player-protection
    fields (exclusion, limits, open session, geolocation) are what ``rules.compliance``
    judges every money movement against.
    """

    player_id: StoredId
    jurisdiction: Jurisdiction
    currency: Currency
    birth_date: date
    registered_at: AwareDatetime
    version: int = Field(ge=1)
    last_event: str
    updated_at: AwareDatetime
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
    exclusion: Exclusion | None = None
    limits: tuple[PlayerLimit, ...] = ()
    session: OpenSession | None = None
    geolocation: GeoCheck | None = None

    def limit(self, kind: LimitKind, period: Period) -> PlayerLimit | None:
        for item in self.limits:
            if (item.kind, item.period) == (kind, period):
                return item
        return None
