"""SCI-style batches: written, resumed, rectified, and every tampering the verifier must see."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from schemas.reports import AuditRef, ReportRecord
from sinks.reports import ReportError
from sinks.reports.sci import (
    SciWriter,
    current_view,
    encode_batch,
    records_sha256,
    verify_sci,
)

T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def record(seq: int, amount: str = "10.00", corrects: str | None = None) -> ReportRecord:
    at = T0 + timedelta(seconds=seq)
    return ReportRecord(
        jurisdiction="ES", seq=seq, record_id=f"ES-{seq}", kind="bet", action="ledger.stake",
        entity_id=f"bet-{seq}", player_id="p-1", occurred_at=at, recorded_at=at,
        amount=amount, currency="EUR", status="applied",
        audit=AuditRef(chain="ledger", seq=seq, hash=f"{seq:064x}"), corrects=corrects,
    )  # fmt: skip


def lot(directory: Path, number: int) -> Path:
    return directory / f"LOTE-ES-{number:08d}.json"


@pytest.fixture
def four_batches(tmp_path: Path) -> Path:
    """Records 1..10 in batches of 3: three full batches and a flushed one of 1."""
    writer = SciWriter(tmp_path, KEY, batch_size=3)
    assert [p.name for p in writer.write(record(s) for s in range(1, 11))] == [
        lot(tmp_path, n).name for n in (1, 2, 3)
    ]
    assert writer.flush() == lot(tmp_path, 4)
    assert writer.flush() is None
    return tmp_path


def test_batches_chain_and_verify(four_batches: Path) -> None:
    docs = [json.loads(lot(four_batches, n).read_bytes()) for n in (1, 2, 3, 4)]
    assert [(d["first_seq"], d["last_seq"]) for d in docs] == [(1, 3), (4, 6), (7, 9), (10, 10)]
    assert docs[1]["records"][0] == json.loads(record(4).record_json())
    assert docs[3]["created_at"] == docs[3]["records"][-1]["recorded_at"]
    assert docs[0]["previous_batch_sha256"] == "0" * 64
    assert verify_sci(four_batches, raw(KEY)) == []


def test_a_new_writer_resumes_refuses_a_gap_and_sets_a_duplicate_id_aside(
    four_batches: Path,
) -> None:
    writer = SciWriter(four_batches, KEY, batch_size=3)
    with pytest.raises(ReportError, match="seq 12, expected 11"):
        writer.write([record(12)])
    duplicate = record(11).model_copy(update={"record_id": "ES-3"})
    assert writer.write([duplicate, record(12), record(13)]) == [lot(four_batches, 5)]
    reason = "record id already delivered; ids are never reused"
    assert writer.rejected == [(11, "ES-3", reason)]
    doc = json.loads(lot(four_batches, 5).read_bytes())
    assert [r["seq"] for r in doc["records"]] == [12, 13]
    assert doc["rejected"] == [{"seq": 11, "record_id": "ES-3", "reason": reason,
                                "record": duplicate.model_dump(mode="json")}]  # fmt: skip
    assert (doc["first_seq"], doc["last_seq"]) == (11, 13)
    assert verify_sci(four_batches, raw(KEY)) == []
    assert SciWriter(four_batches, KEY).last_seq == 13


def test_a_rectification_corrects_the_view_and_keeps_the_original(four_batches: Path) -> None:
    writer = SciWriter(four_batches, KEY)
    with pytest.raises(ReportError, match="cannot rectify ES-99"):
        writer.rectify("ES-99", record(11))
    writer.write([record(11, corrects="ES-99")])  # set aside; the writer goes on
    assert writer.rejected == [(11, "ES-11", "rectifies 'ES-99', which was never delivered")]
    writer.write([writer.rectify("ES-2", record(12, amount="12.50"))])
    writer.write([writer.rectify("ES-12", record(13, amount="12.00"))])  # a fix of the fix
    writer.flush()
    assert verify_sci(four_batches, raw(KEY)) == []
    view = current_view(four_batches)
    assert list(view) == [f"ES-{s}" for s in range(1, 11)]  # nothing deleted, nothing added
    assert view["ES-2"]["amount"] == "12.00" and view["ES-2"]["record_id"] == "ES-13"
    assert view["ES-1"]["amount"] == "10.00"
    original = json.loads(lot(four_batches, 1).read_bytes())["records"][1]
    assert (original["record_id"], original["amount"]) == ("ES-2", "10.00")


def test_the_verifier_sees_an_altered_record(four_batches: Path) -> None:
    path = lot(four_batches, 2)
    path.write_bytes(path.read_bytes().replace(b'"amount": "10.00"', b'"amount": "99.00"', 1))
    problems = verify_sci(four_batches, raw(KEY))
    assert f"{path.name}: signature does not verify with the given public key" in problems
    assert f"{path.name}: records_sha256 does not match its records" in problems
    chain = "previous_batch_sha256 does not match the previous batch file"
    assert f"{lot(four_batches, 3).name}: {chain}" in problems


def test_the_verifier_sees_a_deleted_batch(four_batches: Path) -> None:
    lot(four_batches, 2).unlink()
    lot(four_batches, 2).with_suffix(".json.sig").unlink()
    assert verify_sci(four_batches, raw(KEY)) == [
        "LOTE-ES-00000002.json: missing; batch numbers must not skip"
    ]


def test_the_verifier_sees_a_batch_signed_with_another_key(four_batches: Path) -> None:
    path = lot(four_batches, 3)
    path.with_suffix(".json.sig").write_bytes(Ed25519PrivateKey.generate().sign(path.read_bytes()))
    assert verify_sci(four_batches, raw(KEY)) == [
        f"{path.name}: signature does not verify with the given public key"
    ]


def test_the_verifier_sees_two_batches_swapped(four_batches: Path) -> None:
    two, three, tmp = lot(four_batches, 2), lot(four_batches, 3), four_batches / "swap"
    for suffix in ("", ".sig"):
        a, b = Path(f"{two}{suffix}"), Path(f"{three}{suffix}")
        a.rename(tmp)
        b.rename(a)
        tmp.rename(b)
    problems = verify_sci(four_batches, raw(KEY))
    assert not any("signature" in p for p in problems)  # each file is still genuine
    assert f"{two.name}: holds batch LOTE-ES-00000003 (number 3)" in problems
    assert f"{two.name}: previous_batch_sha256 does not match the previous batch file" in problems
    assert f"{two.name}: ES-7: seq 7, expected 4 (a gap or reordering)" in problems


def test_the_verifier_sees_a_rectification_of_an_unknown_id(four_batches: Path) -> None:
    # The writer refuses it, so forge it as a faulty operator would: re-hashed and re-signed.
    path = lot(four_batches, 4)
    doc = json.loads(path.read_bytes())
    doc["records"][0]["corrects"] = "ES-99"
    doc["records_sha256"] = records_sha256(doc["records"])
    path.write_bytes(encode_batch(doc))
    path.with_suffix(".json.sig").write_bytes(KEY.sign(path.read_bytes()))
    assert verify_sci(four_batches, raw(KEY)) == [
        f"{path.name}: ES-10: rectifies ES-99, not delivered before it"
    ]


HOSTILE = {
    "entity_id": "bet\x00-1",
    "player_id": "p\x1b[31m\ud800",
    "action": "ledger.stake\r\n",
    "details": {"note": "\udfff\x00", "n": 1},
}


@pytest.mark.parametrize("field", sorted(HOSTILE))
def test_any_character_is_delivered_and_verifies(tmp_path: Path, field: str) -> None:
    hostile = record(2).model_copy(update={field: HOSTILE[field]})
    writer = SciWriter(tmp_path, KEY, batch_size=10)
    writer.write([record(1), hostile, record(3)])
    path = writer.flush()
    assert path is not None and writer.rejected == []
    assert verify_sci(tmp_path, raw(KEY)) == []
    delivered = json.loads(path.read_bytes())["records"][1]
    assert delivered == hostile.model_dump(mode="json")


def test_a_record_that_cannot_be_serialised_is_set_aside(tmp_path: Path) -> None:
    odd = record(2).model_copy(update={"details": {"at": object()}})  # no JSON for it
    writer = SciWriter(tmp_path, KEY, batch_size=10)
    writer.write([record(1), odd, record(3)])
    path = writer.flush()
    assert path is not None
    [(seq, rid, reason)] = writer.rejected
    assert (seq, rid) == (2, "ES-2") and reason.startswith("processing_error: ")
    assert verify_sci(tmp_path, raw(KEY)) == []
    assert [r["seq"] for r in json.loads(path.read_bytes())["records"]] == [1, 3]


def test_a_record_that_did_not_read_keeps_its_seq_as_a_rejected_entry(tmp_path: Path) -> None:
    writer = SciWriter(tmp_path, KEY, batch_size=10)
    writer.write([record(1)])
    assert writer.reject("ES", 2, "ES-2", "not a report record: kind", '{"seq": 2}') == []
    with pytest.raises(ReportError, match="seq 4"):
        writer.reject("ES", 4, "ES-4", "why", "{}")
    writer.write([record(3)])
    path = writer.flush()
    assert path is not None and verify_sci(tmp_path, raw(KEY)) == []
    doc = json.loads(path.read_bytes())
    assert doc["rejected"] == [{"seq": 2, "record_id": "ES-2", "record": {"seq": 2},
                                "reason": "not a report record: kind"}]  # fmt: skip
