"""The SAFE-style data safe: files per window, a TamperToken chain signed with the operator's
Ed25519 report key, an end-of-day report."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import xmlschema
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.reports import AuditRef, ReportRecord
from sinks.reports import ReportError
from sinks.reports.safe import (
    GENESIS_TOKEN,
    TOKEN_CONTEXT,
    TOKEN_LOG,
    XSD_PATH,
    SafeWriter,
    read_rejected,
    read_safe_file,
    verify_safe,
)

KEY = Ed25519PrivateKey.from_private_bytes(b"k" * 32)  # the operator's report key
PUBLIC = KEY.public_key().public_bytes_raw()  # what the authority holds
OTHER = Ed25519PrivateKey.from_private_bytes(b"x" * 32)  # anyone else's, the authority's too
START = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
DAY = date(2026, 3, 1)
SEALED_AT = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def record(seq: int, at: datetime) -> ReportRecord:
    """Record ``seq``: bets in DKK, every third a player change without money."""
    money = seq % 3 != 0
    return ReportRecord(
        jurisdiction="DK", seq=seq, record_id=f"DK-{seq}",
        kind="bet" if money else "player",
        action="ledger.stake" if money else "player.limit_set",
        entity_id=f"bet-{seq}", player_id=f"p-{seq % 2}",
        occurred_at=at - timedelta(seconds=1), recorded_at=at,
        amount=f"{seq}.25" if money else None, currency="DKK" if money else None,
        status="applied", details={"seq": seq, "nested": {"ok": True}, "note": "<&>"},
        audit=AuditRef(chain="ledger", seq=100 + seq, hash=hashlib.sha256(b"%d" % seq).hexdigest()),
        corrects="DK-1" if seq == 4 else None,
    )  # fmt: skip


# Every 70 s from 10:00: windows 10:00 (seqs 1-5), 10:05 (6-9), 10:10 (10-12).
RECORDS = [record(seq, START + timedelta(seconds=70 * (seq - 1))) for seq in range(1, 13)]


def writer(directory: Path, key: Ed25519PrivateKey = KEY) -> SafeWriter:
    return SafeWriter(directory, key, clock=lambda: SEALED_AT)


@pytest.fixture
def safe(tmp_path: Path) -> Path:
    w = writer(tmp_path)
    w.write(RECORDS)
    w.close()
    w.end_of_day(DAY)
    return tmp_path


def seals(directory: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (directory / TOKEN_LOG).read_text().splitlines()]


def test_files_close_per_window_and_read_back(tmp_path: Path) -> None:
    w = writer(tmp_path)
    sealed = w.write(RECORDS)
    names = [p.name for p in sealed]
    assert names == [
        "SAFE-DK-000000000001-000000000005.xml",
        "SAFE-DK-000000000006-000000000009.xml",
    ]
    last = w.close()
    assert last == tmp_path / "2026-03-01" / "SAFE-DK-000000000010-000000000012.xml"
    assert w.close() is None
    files = [*sealed, last]
    assert [r for f in files for r in read_safe_file(f)] == RECORDS
    header = ET.parse(files[1]).getroot().find("Header")
    assert header is not None
    assert header.findtext("WindowStart") == "2026-03-01T10:05:00+00:00"
    assert header.findtext("WindowEnd") == "2026-03-01T10:10:00+00:00"
    assert header.findtext("RecordCount") == "4"


def test_tokens_chain_over_the_file_hashes(safe: Path) -> None:
    prev = GENESIS_TOKEN
    for line in seals(safe):
        data = (safe / str(line["file"])).read_bytes()
        assert line["sha256"] == hashlib.sha256(data).hexdigest()
        assert line["prev_token"] == prev.hex()
        token = bytes.fromhex(str(line["token"]))
        assert len(token) == 64  # an Ed25519 signature
        KEY.public_key().verify(token, TOKEN_CONTEXT + prev + hashlib.sha256(data).digest())
        assert token == KEY.sign(TOKEN_CONTEXT + prev + hashlib.sha256(data).digest())
        prev = token
    assert [(s["first_seq"], s["last_seq"], s["records"]) for s in seals(safe)] == [
        (1, 5, 5), (6, 9, 4), (10, 12, 3),
    ]  # fmt: skip


def test_every_file_and_the_eod_report_validate_against_the_xsd(safe: Path) -> None:
    schema = xmlschema.XMLSchema10(XSD_PATH)
    files = sorted((safe / "2026-03-01").glob("*.xml"))
    assert len(files) == 4
    for path in files:
        schema.validate(path)
    assert verify_safe(safe, PUBLIC) == []


def test_eod_report_sums_per_kind_and_currency(safe: Path) -> None:
    root = ET.parse(safe / "2026-03-01" / "EOD-DK-2026-03-01.xml").getroot()
    totals = {
        (t.findtext("Kind"), t.findtext("Currency")): (t.findtext("Count"), t.findtext("Amount"))
        for t in root.iter("Total")
    }
    # Bets are seqs 1, 2, 4, 5, 7, 8, 10, 11 at "<seq>.25": 48 + 8 * 0.25.
    assert totals == {("bet", "DKK"): ("8", "50.00"), ("player", None): ("4", None)}
    assert [f.findtext("Token") for f in root.iter("File")] == [s["token"] for s in seals(safe)]
    assert root.findtext("LastToken") == seals(safe)[-1]["token"]


def test_output_is_deterministic(tmp_path: Path) -> None:
    def run(d: Path) -> dict[str, bytes]:
        w = writer(d)
        w.write(RECORDS)
        w.end_of_day(DAY)  # seals the open file of that day first
        return {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()}

    assert run(tmp_path / "a") == run(tmp_path / "b")


def test_files_go_in_the_day_of_their_window_and_each_day_has_its_report(tmp_path: Path) -> None:
    midnight = datetime(2026, 3, 2, tzinfo=UTC)
    w = writer(tmp_path)
    w.write(record(seq, midnight + timedelta(seconds=s)) for seq, s in [(1, -90), (2, 30)])
    first = w.end_of_day(DAY)  # the open file is of the next day: it stays open
    second = w.end_of_day(date(2026, 3, 2))
    lines = seals(tmp_path)
    assert [s["file"] for s in lines] == [
        "2026-03-01/SAFE-DK-000000000001-000000000001.xml",
        "2026-03-02/SAFE-DK-000000000002-000000000002.xml",
    ]
    assert ET.parse(first).getroot().findtext("LastToken") == lines[0]["token"]
    assert ET.parse(second).getroot().findtext("LastToken") == lines[1]["token"]
    assert verify_safe(tmp_path, PUBLIC) == []


def test_a_record_late_on_the_clock_stays_in_the_open_file(tmp_path: Path) -> None:
    w = writer(tmp_path)
    assert w.write([record(1, START), record(2, START - timedelta(minutes=7))]) == []
    closed = w.close()
    assert closed is not None and closed.name == "SAFE-DK-000000000001-000000000002.xml"


def test_a_new_writer_resumes_after_the_last_sealed_file(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.write(RECORDS[:5])
    w.close()
    again = writer(tmp_path)
    assert again.next_seq == 6
    with pytest.raises(ReportError, match=r"seq 7, expected seq 6"):
        again.write([RECORDS[6]])
    again.write(RECORDS[5:])
    again.close()
    assert [s["first_seq"] for s in seals(tmp_path)] == [1, 6, 10]
    assert verify_safe(tmp_path, PUBLIC) == []


@pytest.mark.parametrize(("sent", "expected"), [([1, 3], 2), ([1, 2, 2], 3), ([2], 1)])
def test_a_seq_out_of_order_or_with_a_gap_is_refused(
    tmp_path: Path, sent: list[int], expected: int
) -> None:
    with pytest.raises(ReportError, match=rf"seq {sent[-1]}, expected seq {expected}"):
        writer(tmp_path).write(RECORDS[s - 1] for s in sent)


def test_a_record_the_schema_cannot_carry_is_a_rejected_entry_and_the_writer_goes_on(
    tmp_path: Path,
) -> None:
    bad = {
        2: RECORDS[1].model_copy(update={"amount": "1e3"}),
        4: RECORDS[3].model_copy(update={"currency": "euro"}),
        # Something that fails only while the record is rendered: not JSON.
        5: RECORDS[4].model_copy(update={"details": {"when": datetime(2026, 1, 1, tzinfo=UTC)}}),
    }
    sent = [bad.get(r.seq, r) for r in RECORDS]
    w = writer(tmp_path)
    files = w.write(sent)
    files += [p for p in [w.close()] if p is not None]
    w.end_of_day(DAY)

    assert verify_safe(tmp_path, PUBLIC) == []  # the chain and the XSD hold, Rejected and all
    reasons = [(2, "DK-2", "amount '1e3' is not a decimal"),
               (4, "DK-4", "currency 'euro' is not ISO 4217"),
               (5, "DK-5", "processing_error: TypeError: Object of type datetime is not JSON "
                           "serializable")]  # fmt: skip
    assert w.rejected == reasons
    assert [e for f in files for e in read_rejected(f)] == reasons
    assert [r for f in files for r in read_safe_file(f)] == [r for r in RECORDS if r.seq not in bad]
    entry = ET.parse(files[0]).getroot().find("Rejected")
    assert entry is not None
    assert json.loads(entry.findtext("RecordJson") or "")["amount"] == "1e3"
    # The seqs after the rejected ones carried on: a new writer resumes after the last.
    assert writer(tmp_path).next_seq == 13


HOSTILE = {
    "record_id": "DK-1\x00",
    "entity_id": "bet\x00-1",
    "player_id": "p\x1b[31m-\x7f\x85",
    "action": "ledger.stake\ud800",
    "status": "ok\r\nreally\t",
    "corrects": "DK-\x01",
    "details": {"note": "\x00\ud83d\u2028<&>]]>", "n": 1},
}


@pytest.mark.parametrize("field", sorted(HOSTILE))
def test_characters_xml_cannot_carry_are_escaped_and_read_back_exactly(
    tmp_path: Path, field: str
) -> None:
    hostile = RECORDS[0].model_copy(update={field: HOSTILE[field]})
    w = writer(tmp_path)
    w.write([hostile, *RECORDS[1:5]])
    sealed = w.close()
    w.end_of_day(DAY)

    assert sealed is not None and w.rejected == []
    assert read_safe_file(sealed) == [hostile, *RECORDS[1:5]]
    assert verify_safe(tmp_path, PUBLIC) == []
    text = sealed.read_bytes()
    assert b"\x00" not in text and b"\r" not in text


def test_a_control_character_in_the_audit_chain_name_is_escaped(tmp_path: Path) -> None:
    hostile = RECORDS[0].model_copy(
        update={"audit": AuditRef(chain="ledger\x07", seq=1, hash="0" * 64)}
    )
    w = writer(tmp_path)
    w.write([hostile])
    sealed = w.close()
    assert sealed is not None and read_safe_file(sealed) == [hostile]
    assert verify_safe(tmp_path, PUBLIC) == []


def _alter_a_byte(d: Path) -> None:
    path = d / "2026-03-01" / "SAFE-DK-000000000006-000000000009.xml"
    path.write_bytes(path.read_bytes().replace(b"<Amount>7.25", b"<Amount>9.25", 1))


def _remove_a_file(d: Path) -> None:
    (d / "2026-03-01" / "SAFE-DK-000000000006-000000000009.xml").unlink()


def _swap_token_lines(d: Path) -> None:
    lines = (d / TOKEN_LOG).read_text().splitlines(keepends=True)
    lines[0], lines[1] = lines[1], lines[0]
    (d / TOKEN_LOG).write_text("".join(lines))


def _forge(d: Path, key: Ed25519PrivateKey = OTHER) -> Path:
    """Seal seq 13 in a look-alike safe under ``key``, copy the file in; returns that safe."""
    forgery = d.parent / f"{d.name}-forgery"
    w = writer(forgery, key)
    w.write([*RECORDS, record(13, START + timedelta(minutes=20))])
    forged = w.close()
    assert forged is not None
    (d / "2026-03-01" / forged.name).write_bytes(forged.read_bytes())
    return forgery


def _insert_a_forged_file(d: Path) -> None:
    _forge(d)


def _alter_the_eod_report(d: Path) -> None:
    path = d / "2026-03-01" / "EOD-DK-2026-03-01.xml"
    path.write_bytes(path.read_bytes().replace(b"<Count>4</Count>", b"<Count>3</Count>"))


TAMPERING: dict[str, tuple[Callable[[Path], None], bytes, list[str]]] = {
    "altered byte": (_alter_a_byte, PUBLIC,
                     ["SAFE-DK-000000000006-000000000009.xml (token line 2): "
                      "SHA-256 of the file does not match"]),
    "removed file": (_remove_a_file, PUBLIC, ["000000000009.xml (token line 2): file is missing"]),
    "reordered": (_swap_token_lines, PUBLIC, ["(token line 1): prev_token does not match",
                                           "(token line 1): first seq 6 does not follow last seq 0",
                                           "(token line 2): prev_token does not match",
                                           "(token line 3): prev_token does not match"]),
    "forged file": (_insert_a_forged_file, PUBLIC, ["000000000013.xml: XML file in the safe is not "
                                                 "in the token log"]),
    "wrong key": (lambda d: None, OTHER.public_key().public_bytes_raw(),
                  ["(token line 1): token is not the operator's signature",
                   "(token line 2): token is not the operator's signature",
                   "(token line 3): token is not the operator's signature"]),
    "altered eod": (_alter_the_eod_report, PUBLIC, ["EOD-DK-2026-03-01.xml: end-of-day report "
                                                 "does not match"]),
}  # fmt: skip


@pytest.mark.parametrize("case", TAMPERING)
def test_the_verifier_names_each_tampering(safe: Path, case: str) -> None:
    tamper, key, expected = TAMPERING[case]
    tamper(safe)
    problems = verify_safe(safe, key)
    assert len(problems) >= len(expected), problems
    for fragment in expected:
        assert any(fragment in p for p in problems), (fragment, problems)


def test_a_forged_token_line_without_the_key_is_caught(safe: Path) -> None:
    """An inserted file with a token line signed by another key (the authority's, say: it
    holds only the operator's public key) does not verify."""
    forged = seals(_forge(safe))[-1]
    forged["prev_token"] = seals(safe)[-1]["token"]
    with (safe / TOKEN_LOG).open("a") as log:
        log.write(json.dumps(forged) + "\n")
    problems = verify_safe(safe, PUBLIC)
    assert any("(token line 4): token is not the operator's signature" in p
               for p in problems), problems  # fmt: skip


def test_the_old_shared_key_mac_no_longer_seals(safe: Path) -> None:
    """A token line rebuilt as the old HMAC (anyone with the shared key could) is refused."""
    import hmac

    lines = seals(safe)
    first = lines[0]
    mac = hmac.new(b"k" * 32, bytes(32) + bytes.fromhex(str(first["sha256"])), hashlib.sha256)
    first["prev_token"], first["token"] = bytes(32).hex(), mac.hexdigest()
    (safe / TOKEN_LOG).write_text("".join(json.dumps(s) + "\n" for s in lines))
    problems = verify_safe(safe, PUBLIC)
    assert any("(token line 1): token is not the operator's signature" in p for p in problems)


def test_a_record_that_did_not_read_keeps_its_seq_as_a_rejected_entry(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.write(RECORDS[:2])
    w.reject("DK", 3, "DK-3", "not a report record: kind", '{"seq":3,"kind":"\\u0000?"}')
    with pytest.raises(ReportError, match="expected seq 4"):
        w.reject("DK", 5, "DK-5", "why", "{}")
    w.write(RECORDS[3:5])
    sealed = w.close()
    assert sealed is not None
    assert read_rejected(sealed) == [(3, "DK-3", "not a report record: kind")]
    assert [r.seq for r in read_safe_file(sealed)] == [1, 2, 4, 5]
    assert verify_safe(tmp_path, PUBLIC) == []
