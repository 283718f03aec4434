"""The regulator streams ``reports.<JURISDICTION>``: one report record per audited change.

Each message is a ``ReportEnvelope``: the ``record`` and its place in the jurisdiction's
signed chain. ``signature`` is Ed25519, by the operator's report key
(``CROUPIER_REPORT_SIGNING_KEY``; the regulator holds only its public key, so it can
verify and cannot forge, and the operator cannot deny), over ``signed_message``: a fixed
context, the jurisdiction, the previous message's signature (64 bytes; 64 zero bytes for
the first record) and the record's exact JSON (``record_json``, UTF-8). A record therefore
verifies in one jurisdiction's chain, at one place, only. ``public_key`` names the key that
signed (so a verifier pinned to a fingerprint can check it); a verifier never trusts it
beyond its pin. ``seq`` numbers the records of a jurisdiction from 1 without a gap, so a
reader can tell a missing record from a late one, whatever partition each arrived on.

Version 1 of the envelope was an HMAC-SHA256 chain under a key shared with the regulator
(either side could forge the other's records); version 2 replaces it.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import AwareDatetime, Field

from schemas.base import WireModel
from schemas.players import Jurisdiction

GENESIS_SIGNATURE = bytes(64)  # the "previous signature" of a chain's first record
STREAM_CONTEXT = b"croupier reports stream v2\n"
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
    """A message on ``reports.<J>``: the record, its JSON as signed, and the chain."""

    schema_version: Literal[2] = 2
    jurisdiction: Jurisdiction
    seq: int = Field(ge=1)
    record_json: str  # the exact JSON the signature covers (ReportRecord)
    prev_signature: str = Field(pattern=r"^[0-9a-f]{128}$")
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")
    public_key: str = Field(pattern=r"^[0-9a-f]{64}$")  # the signer's raw Ed25519 key

    def record(self) -> ReportRecord:
        return ReportRecord.model_validate_json(self.record_json)

    def record_bytes(self) -> bytes:
        """The record's JSON as signed (a lone surrogate passes through, never raises)."""
        return self.record_json.encode("utf-8", "surrogatepass")


def envelope_json(
    jurisdiction: str,
    seq: int,
    record_json: str,
    prev_signature: str,
    signature: str,
    public_key: str,
) -> bytes:
    """``ReportEnvelope(...).model_dump_json()``, byte for byte, written by orjson: the
    publisher writes one a record, several times faster than the model builds and dumps
    it (the fields come from the chain's own table, checked when they were stored). What
    orjson will not write as pydantic does (a lone surrogate) goes through the model."""
    try:
        return orjson.dumps({
            "schema_version": 2, "jurisdiction": jurisdiction, "seq": seq,
            "record_json": record_json, "prev_signature": prev_signature,
            "signature": signature, "public_key": public_key,
        })  # fmt: skip
    except orjson.JSONEncodeError:
        return (
            ReportEnvelope(
                jurisdiction=jurisdiction,
                seq=seq,
                record_json=record_json,
                prev_signature=prev_signature,
                signature=signature,
                public_key=public_key,
            )
            .model_dump_json()
            .encode()
        )


def signed_message(jurisdiction: str, prev_signature: bytes, record_json: bytes) -> bytes:
    """What a record's signature covers: context, jurisdiction, previous signature, JSON."""
    return STREAM_CONTEXT + jurisdiction.encode() + b"\n" + prev_signature + record_json
