"""Inbound ``players`` topic: registration, exclusion, limits, sessions, geolocation."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, TypeAdapter, field_validator

from schemas.base import DecimalStr, WireModel

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Jurisdiction = Annotated[str, Field(pattern=r"^[A-Z]{2,3}$")]
PlayerId = Annotated[str, Field(min_length=1, max_length=128)]


class _PlayerEvent(WireModel):
    player_id: PlayerId
    timestamp: AwareDatetime
    schema_version: Literal[1] = 1


class Registered(_PlayerEvent):
    type: Literal["registered"]
    jurisdiction: Jurisdiction
    currency: Currency
    birth_date: date


class SelfExcluded(_PlayerEvent):
    type: Literal["self_excluded"]
    until: AwareDatetime | None = None


class LimitSet(_PlayerEvent):
    type: Literal["limit_set"]
    limit: Literal["deposit", "loss", "session"]
    period: Literal["day", "week", "month"]
    amount: DecimalStr | None = None
    currency: Currency | None = None
    minutes: int | None = Field(default=None, ge=1)

    @field_validator("amount")
    @classmethod
    def _non_negative(cls, value: DecimalStr | None) -> DecimalStr | None:
        if value is not None and value < 0:
            msg = "a limit amount cannot be negative"
            raise ValueError(msg)
        return value


class SessionStarted(_PlayerEvent):
    type: Literal["session_started"]
    session_id: str = Field(min_length=1)


class SessionEnded(_PlayerEvent):
    type: Literal["session_ended"]
    session_id: str = Field(min_length=1)


class Geolocation(_PlayerEvent):
    type: Literal["geolocation"]
    jurisdiction: Jurisdiction
    allowed: bool
    checked_at: AwareDatetime
    geolocate_in: int = Field(ge=0)
    ip: str


PlayerEvent = Annotated[
    Registered | SelfExcluded | LimitSet | SessionStarted | SessionEnded | Geolocation,
    Field(discriminator="type"),
]
PLAYER_EVENT: TypeAdapter[PlayerEvent] = TypeAdapter(PlayerEvent)


class PlayerState(WireModel):
    """A player's standing as the ``players`` table holds it (the changelog's value).

    ``version`` counts the events applied; ``source_offset`` is the offset of the last one
    in its partition, which makes a redelivered event a no-op.
    """

    player_id: PlayerId
    jurisdiction: Jurisdiction
    currency: Currency
    birth_date: date
    registered_at: AwareDatetime
    version: int = Field(ge=1)
    last_event: str
    updated_at: AwareDatetime
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
