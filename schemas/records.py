"""Outbound records every flow shares: dead letters and audit records."""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import AwareDatetime, Field

from schemas.base import WireModel


class SourcePosition(WireModel):
    """Where a record came from in Kafka."""

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class DeadLetter(WireModel):
    """An input that could not become a decision: its exact bytes, where it was, and why."""

    schema_version: Literal[1] = 1
    source: SourcePosition
    key_base64: str | None
    value_base64: str
    reason: str
    error: str
    dead_lettered_at: AwareDatetime

    @property
    def value(self) -> bytes:
        return base64.b64decode(self.value_base64)


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
