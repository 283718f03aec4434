"""Outbound records every flow shares: dead letters and audit records."""

from __future__ import annotations

import base64
import hashlib
from datetime import date, datetime
from typing import Any, Literal, Self

import orjson
from pydantic import AwareDatetime, Field, PrivateAttr

from schemas.base import WireModel, safe_text


class SourcePosition(WireModel):
    """Where a record came from in Kafka."""

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


# A dead letter must fit a Kafka record (1 MB by default) once base64-encoded, with its
# audit record around it: it carries at most this much of the input's value and key. The
# whole input is stored in PostgreSQL's ``dead_letters`` and stays at its Kafka position.
MAX_LETTER_VALUE_BYTES = 256 * 1024
MAX_LETTER_KEY_BYTES = 4 * 1024
MAX_LETTER_ERROR_CHARS = 1000


class DeadLetter(WireModel):
    """An input that could not become a decision: its exact bytes, where it was, and why.

    A value over ``MAX_LETTER_VALUE_BYTES`` (or a key over ``MAX_LETTER_KEY_BYTES``) is
    carried cut to that size, with ``truncated`` set and the whole value's size and
    SHA-256; PostgreSQL's ``dead_letters`` keeps the whole bytes.
    """

    schema_version: Literal[1] = 1
    source: SourcePosition
    key_base64: str | None
    value_base64: str
    reason: str
    error: str
    dead_lettered_at: AwareDatetime
    truncated: bool = False
    value_size: int | None = Field(default=None, ge=0)
    value_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    key_size: int | None = Field(default=None, ge=0)

    _whole: tuple[bytes | None, bytes] | None = PrivateAttr(default=None)

    @classmethod
    def of(
        cls,
        source: SourcePosition,
        key: bytes | None,
        value: bytes,
        reason: str,
        error: str,
        at: datetime,
    ) -> Self:
        """The dead letter of ``key``/``value`` at ``source``, cut to fit a Kafka record."""
        cut_value = len(value) > MAX_LETTER_VALUE_BYTES
        cut_key = key is not None and len(key) > MAX_LETTER_KEY_BYTES
        letter = cls(
            source=source,
            key_base64=None
            if key is None
            else base64.b64encode(key[:MAX_LETTER_KEY_BYTES]).decode(),
            value_base64=base64.b64encode(value[:MAX_LETTER_VALUE_BYTES]).decode(),
            reason=reason,
            error=safe_text(error, MAX_LETTER_ERROR_CHARS),
            dead_lettered_at=at,
            truncated=cut_value or cut_key,
            value_size=len(value) if cut_value else None,
            value_sha256=hashlib.sha256(value).hexdigest() if cut_value else None,
            key_size=len(key) if cut_key and key is not None else None,
        )
        letter._whole = (key, value)
        return letter

    @property
    def value(self) -> bytes:
        """The input's value: whole when this process built the letter, else as carried."""
        return self._whole[1] if self._whole is not None else base64.b64decode(self.value_base64)

    @property
    def key(self) -> bytes | None:
        """The input's key: whole when this process built the letter, else as carried."""
        if self._whole is not None:
            return self._whole[0]
        return None if self.key_base64 is None else base64.b64decode(self.key_base64)


class AuditRecord(WireModel):
    """One state change, with what caused it and the state before and after."""

    schema_version: Literal[1] = 1
    entity: str
    entity_id: str
    action: str
    source: SourcePosition
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def _moment(value: Any) -> orjson.Fragment:
    """A datetime or a date as orjson writes it, when that is as pydantic writes it: a
    UTC offset with seconds (a zone's local mean time before 1900 or so) is not."""
    if isinstance(value, datetime):
        offset = value.utcoffset()
        if offset is not None and offset.seconds % 60:
            raise TypeError(value)
        return orjson.Fragment(orjson.dumps(value, option=orjson.OPT_UTC_Z))
    if isinstance(value, date):
        return orjson.Fragment(orjson.dumps(value))
    raise TypeError(value)


def audit_json(record: AuditRecord) -> str:
    """``record.model_dump_json()``, byte for byte, written by orjson: every decision
    writes one or two, and orjson writes them about three times faster than pydantic's
    serializer does for their free-form ``before`` and ``after``. What orjson would write
    otherwise than pydantic, or not at all (a Decimal, an integer beyond 64 bits, a
    non-string key, a lone surrogate, a subclass of a builtin), goes through the model
    (``tests/unit/test_audit_json.py`` holds the two to the same bytes for arbitrary
    records)."""
    src = record.source
    try:
        return orjson.dumps(
            {"schema_version": record.schema_version, "entity": record.entity,
             "entity_id": record.entity_id, "action": record.action,
             "source": {"topic": src.topic, "partition": src.partition, "offset": src.offset},
             "occurred_at": record.occurred_at, "recorded_at": record.recorded_at,
             "before": record.before, "after": record.after},
            default=_moment,
            option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
            | orjson.OPT_PASSTHROUGH_DATACLASS,
        ).decode()  # fmt: skip
    except orjson.JSONEncodeError:
        return record.model_dump_json()
