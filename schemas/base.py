"""Base models and the field types every wire message shares: ids, times, versions, text.

Inbound messages (``InboundModel``) are strict: a JSON value of the wrong type is refused,
never coerced (``"allowed": "yes"`` is not a bool, ``"3600"`` is not an int, a number is not
a time). Ids are short and drawn from a safe set of characters, so they can be keys,
file names, SQL text and log words without escaping. Times are RFC 3339 strings with a
zone. The published JSON Schemas carry the same patterns and bounds.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)


class WireModel(BaseModel):
    """A message on the wire: immutable, unknown fields rejected, JSON in and out."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class InboundModel(WireModel):
    """A message from an upstream producer: strict, no value of another type is coerced.

    Python code building one passes the Python types (``Decimal``, an aware ``datetime``)
    or the wire's strings for amounts and times; JSON is decoded by ``schemas.decode``.
    """

    model_config = ConfigDict(strict=True)


def safe_text(text: str, limit: int) -> str:
    """``text`` made printable (control characters as ``?``) and cut to ``limit``."""
    text = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(value: object, limit: int = 40) -> str:
    """``value`` as it may appear in an error: printable and cut to ``limit`` characters."""
    return safe_text(repr(value) if isinstance(value, str) else type(value).__name__, limit)


# Ids: player, bet, event, market, outcome, payment, transaction, round, game, session,
# producer. Letters, digits and ``. _ : -``: no space, no control character, nothing a
# database, a file system or a terminal treats specially.
ID_CHARS = r"A-Za-z0-9._:-"
ID_MAX_LENGTH = 128
ID_PATTERN = rf"^[{ID_CHARS}]+$"
Id = Annotated[str, Field(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
# An id Croupier derives from others ("settlement:<bet_id>/<n>"): longer, and "/" too.
REFERENCE_MAX_LENGTH = 256
Reference = Annotated[
    str, Field(min_length=1, max_length=REFERENCE_MAX_LENGTH, pattern=r"^[A-Za-z0-9._:/|-]+$")
]
PRODUCER_MAX_LENGTH = 64
ProducerId = Annotated[str, Field(min_length=1, max_length=PRODUCER_MAX_LENGTH, pattern=ID_PATTERN)]

# Free text a producer may add (a payment provider's failure reason): bounded, printable,
# one line. A NUL would be refused by PostgreSQL's text and jsonb; other control
# characters break report files and logs.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
TEXT_MAX_LENGTH = 1000
Text = Annotated[str, Field(max_length=TEXT_MAX_LENGTH, pattern=TEXT_PATTERN)]


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"({_OCTET}\.){{3}}{_OCTET}")


def _ip_address(value: Any) -> Any:
    # Kept a string (it is stored and compared as written), but it must parse as one.
    # Dotted IPv4 is checked by a pattern: ``ipaddress`` costs more than the whole decode.
    if isinstance(value, str) and not _IPV4.fullmatch(value):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            msg = f"{shown(value)} is not an IPv4 or IPv6 address"
            raise ValueError(msg) from None
    return value


IP_MAX_LENGTH = 45  # the longest IPv6 text form, an IPv4-mapped address
IpAddress = Annotated[
    str,
    Field(min_length=2, max_length=IP_MAX_LENGTH, pattern=r"^[0-9A-Fa-f.:]+$"),
    AfterValidator(_ip_address),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": IP_MAX_LENGTH,
            "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
            "description": "an IPv4 or IPv6 address",
        }
    ),
]


# Times: RFC 3339 with a zone (``Z`` or ``+01:00``), from 1970 to the last day of year
# 9999 in UTC, at most nine fraction digits (kept to the microsecond). A time whose offset
# would carry it past year 9999 is refused here, not by an OverflowError further on. How
# far from the server's clock a time may be is the rules' call (``clock_skew``).
TIMESTAMP_PATTERN = (
    r"^(19[7-9][0-9]|[2-9][0-9]{3})-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, tzinfo=UTC)


def _timestamp(value: Any) -> Any:
    if isinstance(value, str):
        if not _TIMESTAMP.fullmatch(value):
            msg = (
                f"{shown(value)} is not an RFC 3339 time with a timezone, such as "
                "'2026-11-24T19:00:00Z' or '2026-11-24T20:00:00+01:00'"
            )
            raise ValueError(msg)
        value = datetime.fromisoformat(value)  # ValueError for a 30th of February
    elif not isinstance(value, datetime):
        msg = f"must be an RFC 3339 time string such as '2026-11-24T19:00:00Z', not {shown(value)}"
        raise ValueError(msg)
    if value.utcoffset() is None:
        msg = "needs a timezone (Z or an offset such as +01:00)"
        raise ValueError(msg)
    try:
        inside = EARLIEST <= value < LATEST
    except OverflowError:  # an offset that takes it past year 9999
        inside = False
    if not inside:
        msg = "must be between 1970-01-01 and 9999-12-31 (UTC)"
        raise ValueError(msg)
    return value


Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_timestamp),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": TIMESTAMP_PATTERN,
            "description": "RFC 3339 time with a timezone",
        }
    ),
]
"""An inbound time: an RFC 3339 string with a zone on the wire, an aware datetime in Python."""

DATE_PATTERN = r"^(19|2[0-9])[0-9]{2}-[0-9]{2}-[0-9]{2}$"
_DATE = re.compile(DATE_PATTERN)


def _date(value: Any) -> Any:
    if isinstance(value, str):
        if not _DATE.fullmatch(value):
            msg = f"{shown(value)} is not a date such as '1990-05-01' (years 1900 to 2999)"
            raise ValueError(msg)
        return date.fromisoformat(value)
    if isinstance(value, datetime) or not isinstance(value, date):
        msg = f"must be a date string such as '1990-05-01', not {shown(value)}"
        raise ValueError(msg)
    return value


CalendarDate = Annotated[
    date,
    BeforeValidator(_date),
    WithJsonSchema({"type": "string", "format": "date", "pattern": DATE_PATTERN}),
]
"""An inbound calendar date (``1990-05-01``), years 1900 to 2999."""


def _exactly_one(value: Any) -> Any:
    # A Literal[1] takes True and 1.0 too (they equal 1): the version is the integer 1.
    if type(value) is not int:
        msg = f"schema_version must be the integer 1, not {shown(value)}"
        raise ValueError(msg)
    return value


SchemaVersion = Annotated[Literal[1], BeforeValidator(_exactly_one)]


def _exact(value: Decimal) -> Decimal:
    if not value.is_finite():
        msg = "amount must be a finite decimal"
        raise ValueError(msg)
    return value


# Money and odds travel as decimal strings; a JSON number would have passed through a float.
DecimalStr = Annotated[
    Decimal,
    AfterValidator(_exact),
    PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json"),
]


def hash_of(dumped: str) -> str:
    """The request hash of a request already written as JSON (``request_hash``)."""
    return hashlib.sha256(dumped.encode()).hexdigest()


def request_hash(model: BaseModel, *, exclude: set[str] | None = None) -> str:
    """What a request asks for, whatever its JSON's key order or spacing: SHA-256 of the
    model's JSON (``exclude``: fields a retry may change and still be the same request)."""
    return hash_of(model.model_dump_json(exclude=exclude))
