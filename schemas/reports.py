"""The regulator streams ``reports.<JURISDICTION>``: one report record per audited change.

Each message is a ``ReportEnvelope``: the ``record`` and its place in the jurisdiction's
MAC chain. ``mac`` is HMAC-SHA256, keyed with the jurisdiction's report key (shared with
the regulator out of band), over the previous message's MAC (32 bytes) followed by the
record's exact JSON (``record_json``, UTF-8); the first record's ``prev_mac`` is 32 zero
bytes. ``seq`` numbers the records of a jurisdiction from 1 without a gap, so a reader can
tell a missing record from a late one, whatever partition each arrived on.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Literal

from pydantic import AwareDatetime, Field

from schemas.base import WireModel
from schemas.players import Jurisdiction

GENESIS_MAC = bytes(32)
ReportKind = Literal["player", "bet", "settlement", "payment", "casino"]


class AuditRef(WireModel):
    """The audit record a report record was made from (its chain, place and hash)."""

    chain: str
    seq: int = Field(ge=1)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class ReportRecord(WireModel):
    """One reportable change: who, what, when, how much, and the audit record behind it."""

    schema_version: Literal[1] = 1
    jurisdiction: Jurisdiction
    seq: int = Field(ge=1)
    record_id: str  # unique and stable: "<J>-<seq>", never reused
    kind: ReportKind
    action: str  # the audit action, e.g. "ledger.stake", "casino.debit", "player.limit_set"
    entity_id: str
    player_id: str
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime
    amount: str | None = None  # a decimal string in ``currency``, when money is involved
    currency: str | None = None
    status: str | None = None  # "applied" / "rejected" / "ok" ..., as the audit says
    details: dict[str, Any] = Field(default_factory=dict)
    audit: AuditRef
    corrects: str | None = None  # the record_id this one rectifies (never edits it)

    def record_json(self) -> bytes:
        return self.model_dump_json().encode()


class ReportEnvelope(WireModel):
    """A message on ``reports.<J>``: the record, its JSON as MACed, and the chain."""

    schema_version: Literal[1] = 1
    jurisdiction: Jurisdiction
    seq: int = Field(ge=1)
    record_json: str  # the exact JSON the MAC covers (ReportRecord)
    prev_mac: str = Field(pattern=r"^[0-9a-f]{64}$")
    mac: str = Field(pattern=r"^[0-9a-f]{64}$")

    def record(self) -> ReportRecord:
        return ReportRecord.model_validate_json(self.record_json)


def chain_mac(key: bytes, prev_mac: bytes, record_json: bytes) -> bytes:
    """The MAC of a record in its chain: HMAC-SHA256(key, prev_mac || record_json)."""
    return hmac.new(key, prev_mac + record_json, hashlib.sha256).digest()


def mac_ok(key: bytes, envelope: ReportEnvelope, prev_mac: bytes) -> bool:
    """Whether ``envelope`` follows ``prev_mac`` and carries the MAC its content gives."""
    if bytes.fromhex(envelope.prev_mac) != prev_mac:
        return False
    want = chain_mac(key, prev_mac, envelope.record_json.encode())
    return hmac.compare_digest(want, bytes.fromhex(envelope.mac))
