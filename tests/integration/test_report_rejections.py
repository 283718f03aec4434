"""The reporter sets aside an audit record it cannot report, and the streams go on; what
it stores is signed with the operator's report key, and nothing else fits the columns."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from config.settings import Settings
from schemas.reports import GENESIS_SIGNATURE, signed_message
from sinks.postgres.reports import OldReportChain, ReportSink
from sinks.signing import Pin, public_bytes
from tests.integration.helpers import query

pytestmark = pytest.mark.integration

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def audit(s: Settings, seq: int, entity: str, entity_id: str, after: Any) -> None:
    """Append an audit record to chain ``bets/0`` as the owner (the test plays the flows)."""
    body = json.dumps({"entity": entity, "entity_id": entity_id, "action": f"{entity}.x",
                       "occurred_at": "2026-11-30T08:00:00+00:00",
                       "recorded_at": "2026-11-30T08:00:00+00:00", "after": after})  # fmt: skip
    digest = hashlib.sha256(body.encode()).digest()
    query(s, "INSERT INTO audit_records (chain, seq, entity, entity_id, action, source_topic, "
             "source_partition, source_offset, body, prev_hash, hash) "
             "VALUES ('bets/0', %s, %s, %s, %s, 'bets', 0, %s, %s, %s, %s) RETURNING seq",
          (seq, entity, entity_id, f"{entity}.x", seq, body, bytes(32), digest))  # fmt: skip
    query(s, "INSERT INTO audit_heads (chain, seq, hash) VALUES ('bets/0', %s, %s) "
             "ON CONFLICT (chain) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash "
             "RETURNING seq", (seq, digest))  # fmt: skip


def derive(s: Settings) -> int:
    """One pass of the reporter over the trail (UK), signed with the session's report key."""

    async def once() -> int:
        sink = ReportSink(s.pg_dsn.get_secret_value(), s.pg_schema, consumer_group="t",
                          max_connections=1)  # fmt: skip
        await sink.open()
        try:
            return await sink.derive(KEY, {"UK"})
        finally:
            await sink.close()

    return asyncio.run(once())


def test_a_record_the_reporter_cannot_report_is_set_aside(settings: Settings) -> None:
    s = settings
    audit(s, 1, "player", "p-1", {"jurisdiction": "UK", "version": 1})
    audit(s, 2, "bet", "b-1", {"stake": "1.00"})  # no player_id: a shape it cannot report
    audit(s, 3, "casino_transaction", "tx-1", ["not", "an", "object"])
    audit(s, 4, "player", "p-1", {"jurisdiction": "UK", "version": 2})

    assert derive(s) == 4
    assert query(s, "SELECT jurisdiction, seq, audit_seq FROM report_records ORDER BY seq") == [
        ("UK", 1, 1), ("UK", 2, 4),
    ]  # fmt: skip
    rejected = query(s, "SELECT audit_chain, audit_seq, reason, error FROM report_rejections "
                        "ORDER BY audit_seq")  # fmt: skip
    assert [(c, n, r) for c, n, r, _ in rejected] == [
        ("bets/0", 2, "processing_error"), ("bets/0", 3, "processing_error"),
    ]  # fmt: skip
    assert rejected[0][3] == "KeyError: 'player_id'"
    assert rejected[1][3].startswith("TypeError: list indices")
    assert query(s, "SELECT seq FROM report_progress WHERE chain = 'bets/0'") == [(4,)]
    assert derive(s) == 0  # nothing read twice, nothing left behind


def test_the_stored_chain_is_signed_and_a_mac_no_longer_fits(settings: Settings) -> None:
    """Each stored record verifies with the public key over its jurisdiction, the previous
    signature and its JSON; a 32-byte MAC, or a record without its signer, is refused."""
    s = settings
    audit(s, 1, "player", "p-1", {"jurisdiction": "UK", "version": 1})
    audit(s, 2, "player", "p-1", {"jurisdiction": "UK", "version": 2})

    assert derive(s) == 2
    rows = query(s, "SELECT jurisdiction, record_json, prev_signature, signature, public_key "
                    "FROM report_records ORDER BY seq")  # fmt: skip
    pin, prev = Pin(public_bytes(KEY)), GENESIS_SIGNATURE
    for j, record_json, before, signature, public in rows:
        assert bytes(before) == prev and bytes(public) == public_bytes(KEY)
        assert pin.verifies(bytes(public), bytes(signature),
                            signed_message(j, prev, record_json.encode()))  # fmt: skip
        assert not pin.verifies(bytes(public), bytes(signature),
                                signed_message("DK", prev, record_json.encode()))  # fmt: skip
        prev = bytes(signature)
    assert query(s, "SELECT seq, signature FROM report_heads") == [(2, prev)]
    for prev_sig, sig, public in [(bytes(32), bytes(32), public_bytes(KEY)),
                                  (prev, bytes(64), None)]:  # fmt: skip
        with pytest.raises(psycopg.errors.CheckViolation, match="report_records_signed"):
            query(s, "INSERT INTO report_records (jurisdiction, seq, entity_id, record_json, "
                     "prev_signature, signature, public_key, audit_chain, audit_seq) "
                     "VALUES ('UK', 3, 'p-1', '{}', %s, %s, %s, 'bets/0', 9) RETURNING seq",
                  (prev_sig, sig, public))  # fmt: skip
    with pytest.raises(psycopg.errors.CheckViolation, match="report_heads_signed"):
        query(s, "UPDATE report_heads SET signature = %s RETURNING seq", (bytes(32),))


def test_a_chain_an_older_version_mac_chained_is_not_extended(settings: Settings) -> None:
    """A head holding a 32-byte MAC (written before migration 0020, played here by
    dropping its check) stops the pass with a clear error; nothing is appended."""
    s = settings
    with psycopg.connect(s.migration_dsn, options=f"-c search_path={s.pg_schema}") as owner:
        owner.execute("ALTER TABLE report_heads DROP CONSTRAINT report_heads_signed")
    query(s, "INSERT INTO report_heads (jurisdiction, seq, signature) VALUES ('UK', 1, %s) "
             "RETURNING seq", (bytes(32),))  # fmt: skip
    audit(s, 1, "player", "p-1", {"jurisdiction": "UK", "version": 1})

    with pytest.raises(OldReportChain, match="UK was MAC-chained by an older version"):
        derive(s)
    assert query(s, "SELECT count(*) FROM report_records") == [(0,)]
    assert query(s, "SELECT count(*) FROM report_progress") == [(0,)]
