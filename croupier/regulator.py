"""The regulator's side: follow ``reports.<J>`` and verify its signed chain while reading.

Written as a regulator would run it: a plain kafka-python consumer with no consumer group
(nothing on the operator's side changes), the operator's report *public* key (a ``Pin``:
the key itself, or its fingerprint, checked against the key each record names), and
nothing of Croupier's but the record model; no secret of the operator's is needed, so the
regulator can verify and cannot forge. ``security`` holds its kafka-python TLS and SASL
arguments (``config.kafka.kafka_python_security`` makes them from the settings).
Messages arrive from several partitions, so records are put back in ``seq`` order before
they are checked; a repeat of a verified record (the operator's at-least-once publishing)
is recognised by its signature and passed over. A record whose signature does not verify
(altered, signed by another key, moved from another jurisdiction or another place in the
chain), or content that differs from a record already verified under the same ``seq``,
stops the reader; a ``seq`` still missing when the stream goes quiet with later records
waiting is reported as a gap. A record whose signature verifies but whose JSON does not
read as a report record (written by an older, laxer version, say) is authentic: it is
handed to ``unreadable`` and the reading goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from croupier.arguments import printable
from schemas.reports import GENESIS_SIGNATURE, ReportEnvelope, ReportRecord, signed_message
from sinks.signing import Pin, fingerprint


def signature_ok(pin: Pin, jurisdiction: str, envelope: ReportEnvelope, prev: bytes) -> bool:
    """Whether ``envelope`` is the record that follows signature ``prev`` in
    ``jurisdiction``'s chain, signed by the pinned key."""
    if envelope.jurisdiction != jurisdiction or bytes.fromhex(envelope.prev_signature) != prev:
        return False
    message = signed_message(jurisdiction, prev, envelope.record_bytes())
    return pin.verifies(
        bytes.fromhex(envelope.public_key), bytes.fromhex(envelope.signature), message
    )


@dataclass
class Followed:
    """How far the chain verified, and what stopped it or could not be read."""

    verified: int = 0
    problems: list[str] = field(default_factory=list)
    last_signature: bytes = GENESIS_SIGNATURE
    unreadable: int = 0  # verified records whose JSON is not a report record

    @property
    def ok(self) -> bool:
        return not self.problems


def follow(
    bootstrap: str,
    topic: str,
    jurisdiction: str,
    pin: Pin,
    *,
    show: Callable[[ReportRecord, ReportEnvelope], None],
    count: int | None = None,
    idle_timeout: float | None = None,
    unreadable: Callable[[ReportEnvelope, str], None] | None = None,
    security: Mapping[str, Any] | None = None,
) -> Followed:
    """Read ``topic`` from its start, verifying as it goes; stop after ``count`` verified
    records, after ``idle_timeout`` seconds with nothing new, or at the first problem."""
    from kafka import KafkaConsumer

    consumer: Any = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap.split(","),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(idle_timeout * 1000) if idle_timeout else float("inf"),
        **(security or {}),
    )
    try:
        return check(consumer, jurisdiction, pin, show=show, count=count, unreadable=unreadable)
    finally:
        consumer.close()


def check(
    messages: Iterable[Any],
    jurisdiction: str,
    pin: Pin,
    *,
    show: Callable[[ReportRecord, ReportEnvelope], None],
    count: int | None = None,
    unreadable: Callable[[ReportEnvelope, str], None] | None = None,
) -> Followed:
    """Verify ``messages`` (Kafka messages: ``value``, ``partition``, ``offset``) as they
    come, in any order across partitions; what ``follow`` does with what it reads."""
    out = Followed()
    pending: dict[int, ReportEnvelope] = {}
    seen: dict[int, str] = {}  # seq -> signature of the verified record
    for message in messages:
        try:
            envelope = ReportEnvelope.model_validate_json(message.value)
        except ValidationError:
            out.problems.append(
                f"unreadable message at partition {message.partition} offset "
                f"{message.offset}: not a report envelope"
            )
            break
        if envelope.seq in seen:
            if seen[envelope.seq] != envelope.signature:
                out.problems.append(
                    f"seq {envelope.seq} arrived again with other content (signature "
                    f"{envelope.signature[:16]}…, verified {seen[envelope.seq][:16]}…)"
                )
                break
            continue  # a repeat of a verified record
        pending[envelope.seq] = envelope
        while out.verified + 1 in pending:
            nxt = pending.pop(out.verified + 1)
            if not signature_ok(pin, jurisdiction, nxt, out.last_signature):
                out.problems.append(
                    f"bad signature at seq {nxt.seq}: the record was altered, moved from "
                    "another place or jurisdiction, or signed by a key that is not the "
                    "pinned one (signer's fingerprint "
                    f"{fingerprint(bytes.fromhex(nxt.public_key))}, pinned {pin.fingerprint})"
                )
                return out
            try:
                record = nxt.record()
            except ValidationError as exc:
                why = f"not a report record: {_first_error(exc)}"
                if unreadable is None:
                    out.problems.append(f"seq {nxt.seq} verifies but is {why}")
                    return out
                out.unreadable += 1
                unreadable(nxt, why)
            else:
                if record.seq != nxt.seq or record.jurisdiction != jurisdiction:
                    out.problems.append(
                        f"seq {nxt.seq} verifies but its record says "
                        f"{printable(record.jurisdiction)} seq {record.seq}"
                    )
                    return out
                show(record, nxt)
            out.last_signature = bytes.fromhex(nxt.signature)
            seen[nxt.seq] = nxt.signature
            out.verified += 1
            if count is not None and out.verified >= count:
                return out
    if pending and out.ok:
        out.problems.append(
            f"gap: seq {out.verified + 1} never arrived, while {len(pending)} later "
            f"record(s) did (up to seq {max(pending)})"
        )
    return out


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}"[:300]


def line(record: ReportRecord) -> str:
    """One record as a line for a terminal (control characters shown as escapes)."""
    money = f" {record.amount} {record.currency}" if record.amount is not None else ""
    text = (f"{record.seq:>6}  {record.recorded_at.isoformat()}  {record.kind:<10} "
            f"{record.action:<24} {record.player_id}{money}  {record.status or ''}")  # fmt: skip
    return printable(text)


def as_json(record: ReportRecord) -> str:
    return json.dumps(json.loads(record.record_json()))
