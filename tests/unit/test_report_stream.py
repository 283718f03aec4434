"""``reports.<J>`` is signed with the operator's report key and verified with its public key.

The chain is built the way the reporter builds it (``key.sign(signed_message(...))``) and
checked the way ``regulator follow`` checks it (``croupier.regulator.check``, the reader
without its Kafka consumer): a signed chain verifies with the public key, or with its
fingerprint; an altered record, a record moved to another jurisdiction or another place,
a record signed by another key (the regulator's own, say), a gap and a repeat with other
content each stop it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from config.settings import Settings
from croupier.regulator import Followed, check, signature_ok
from schemas.reports import (
    GENESIS_SIGNATURE,
    AuditRef,
    ReportEnvelope,
    ReportRecord,
    signed_message,
)
from sinks.signing import KeyFileError, Pin, fingerprint, public_bytes
from streams import reports

OPERATOR = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PIN = Pin(public_bytes(OPERATOR))


def record(j: str, seq: int) -> ReportRecord:
    return ReportRecord(
        jurisdiction=j, seq=seq, record_id=f"{j}-{seq}", kind="bet", action="bet.decided",
        entity_id=f"bet-{seq}", player_id="p-1", occurred_at="2026-11-30T08:00:00Z",
        recorded_at="2026-11-30T08:00:00Z", amount="10.00", currency="EUR", status="accepted",
        audit=AuditRef(chain="bets", seq=seq, hash="0" * 64),
    )  # fmt: skip


def envelope(
    j: str, seq: int, body: bytes, prev: bytes, key: Ed25519PrivateKey = OPERATOR
) -> ReportEnvelope:
    """One message as the reporter signs it."""
    signature = key.sign(signed_message(j, prev, body))
    return ReportEnvelope(jurisdiction=j, seq=seq, record_json=body.decode(),
                          prev_signature=prev.hex(), signature=signature.hex(),
                          public_key=public_bytes(key).hex())  # fmt: skip


def chain(j: str, n: int, key: Ed25519PrivateKey = OPERATOR) -> list[ReportEnvelope]:
    out, prev = [], GENESIS_SIGNATURE
    for seq in range(1, n + 1):
        out.append(envelope(j, seq, record(j, seq).record_json(), prev, key))
        prev = bytes.fromhex(out[-1].signature)
    return out


@dataclass
class Message:
    """What the reader takes from a Kafka message."""

    value: bytes
    partition: int = 0
    offset: int = 0


def read(j: str, envelopes: list[ReportEnvelope], pin: Pin = PIN) -> tuple[Followed, list[int]]:
    shown: list[int] = []
    messages = [Message(e.model_dump_json().encode(), i % 3, i) for i, e in enumerate(envelopes)]
    followed = check(messages, j, pin, show=lambda r, _: shown.append(r.seq))
    return followed, shown


def test_a_signed_chain_verifies_with_the_public_key_or_its_fingerprint() -> None:
    envelopes = chain("DK", 4)
    for pin in (PIN, Pin(None, fingerprint(public_bytes(OPERATOR)))):
        followed, shown = read("DK", envelopes, pin)
        assert followed.ok and followed.verified == 4 and shown == [1, 2, 3, 4]
    # Out of order across partitions, and repeated (at-least-once): still the chain.
    mixed = [envelopes[2], envelopes[0], envelopes[3], envelopes[1], envelopes[0]]
    followed, shown = read("DK", mixed)
    assert followed.ok and shown == [1, 2, 3, 4]
    assert envelopes[0].schema_version == 2 and len(envelopes[0].signature) == 128


def test_an_altered_record_fails() -> None:
    envelopes = chain("DK", 3)
    doc = json.loads(envelopes[1].record_json)
    doc["amount"] = "1000.00"
    envelopes[1] = envelopes[1].model_copy(update={"record_json": json.dumps(doc)})
    followed, shown = read("DK", envelopes)
    assert not followed.ok and shown == [1]
    assert "bad signature at seq 2" in followed.problems[0]


def test_a_record_moved_to_another_jurisdiction_fails() -> None:
    """DK's first record, relabelled ES (envelope and record alike), is no ES record."""
    dk = chain("DK", 1)[0]
    moved_json = dk.record_json.replace('"jurisdiction":"DK"', '"jurisdiction":"ES"')
    for moved in (
        dk.model_copy(update={"jurisdiction": "ES"}),
        dk.model_copy(update={"jurisdiction": "ES", "record_json": moved_json}),
    ):
        followed, _ = read("ES", [moved])
        assert not followed.ok and "bad signature at seq 1" in followed.problems[0]
        assert not signature_ok(PIN, "ES", moved, GENESIS_SIGNATURE)
    # Nor does a reader of ES take DK's record as it stands.
    assert not signature_ok(PIN, "ES", dk, GENESIS_SIGNATURE)
    assert signature_ok(PIN, "DK", dk, GENESIS_SIGNATURE)


def test_a_reordered_pair_fails() -> None:
    """Records 2 and 3 swapped (their envelopes renumbered to fit): the chain breaks."""
    one, two, three = chain("DK", 3)
    swapped = [one, three.model_copy(update={"seq": 2}), two.model_copy(update={"seq": 3})]
    followed, shown = read("DK", swapped)
    assert not followed.ok and shown == [1] and "bad signature at seq 2" in followed.problems[0]
    # Even re-signed by the operator in the new order, a record must say its own place.
    resigned = [one, envelope("DK", 2, three.record_json.encode(), bytes.fromhex(one.signature))]
    followed, shown = read("DK", resigned)
    assert not followed.ok and "its record says DK seq 3" in followed.problems[0]


def test_a_record_signed_by_another_key_fails() -> None:
    """The regulator (or anyone) signing with a key of its own cannot pass the pin."""
    other = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    forged = chain("DK", 2, other)
    for pin in (PIN, Pin(None, fingerprint(public_bytes(OPERATOR)))):
        followed, _ = read("DK", forged, pin)
        assert not followed.ok and "bad signature at seq 1" in followed.problems[0]
        assert fingerprint(public_bytes(other)) in followed.problems[0]
    # A forged record appended to a genuine chain: the genuine part verifies, it does not.
    genuine = chain("DK", 2)
    tail = envelope("DK", 3, record("DK", 3).record_json(), bytes.fromhex(genuine[-1].signature),
                    other)  # fmt: skip
    followed, shown = read("DK", [*genuine, tail])
    assert shown == [1, 2] and "bad signature at seq 3" in followed.problems[0]
    # Naming the operator's key does not help a signature that is not its.
    named = tail.model_copy(update={"public_key": public_bytes(OPERATOR).hex()})
    followed, _ = read("DK", [*genuine, named], Pin(None, fingerprint(public_bytes(OPERATOR))))
    assert "bad signature at seq 3" in followed.problems[0]


def test_a_gap_and_a_changed_repeat_are_reported() -> None:
    one, two, three = chain("DK", 3)
    followed, shown = read("DK", [one, three])
    assert shown == [1] and "gap: seq 2 never arrived" in followed.problems[0]
    other = chain("DK", 1, Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34))))[0]
    followed, _ = read("DK", [one, two, other])
    assert "seq 1 arrived again with other content" in followed.problems[0]


@given(position=st.integers(min_value=0), change=st.integers(min_value=1, max_value=255))
def test_any_single_byte_change_of_the_record_json_fails(position: int, change: int) -> None:
    body = record("DK", 1).record_json()
    at = position % len(body)
    altered = body[:at] + bytes([body[at] ^ change]) + body[at + 1 :]
    signature = OPERATOR.sign(signed_message("DK", GENESIS_SIGNATURE, body))
    public = public_bytes(OPERATOR)
    assert PIN.verifies(public, signature, signed_message("DK", GENESIS_SIGNATURE, body))
    assert not PIN.verifies(public, signature, signed_message("DK", GENESIS_SIGNATURE, altered))
    # And through the envelope, as the reader sees it (bytes that are not UTF-8 stay bytes).
    text = altered.decode("utf-8", "surrogateescape")
    sent = ReportEnvelope(jurisdiction="DK", seq=1, record_json=text,
                          prev_signature=GENESIS_SIGNATURE.hex(), signature=signature.hex(),
                          public_key=public.hex())  # fmt: skip
    assert not signature_ok(PIN, "DK", sent, GENESIS_SIGNATURE)


def test_the_reporter_never_starts_without_the_report_key(tmp_path: Path) -> None:
    """No key file: a clear error saying how to make one, and no key made."""
    missing = tmp_path / "reports" / "ed25519.pem"
    settings = Settings(CROUPIER_REPORT_SIGNING_KEY=str(missing))
    with pytest.raises(KeyFileError, match="audit keygen"):
        reports.register(object(), settings, sink=object(),  # type: ignore[arg-type]  # not reached
                         policies=SimpleNamespace(jurisdictions=["DK"]))  # type: ignore[arg-type]  # fmt: skip
    assert not missing.exists() and not missing.parent.exists()
