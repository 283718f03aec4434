"""The players flow's audit records are hash-chained in PostgreSQL, and tampering shows.

Player events go through a real worker; every applied event leaves one audit record in
the chain of its source partition, in the same transaction as the standing. Then each
kind of tampering (alter, remove from the middle, remove from the end, reorder, insert)
is done to a copy of the trail, and ``verify`` names the first bad record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from config.settings import Settings
from croupier.cli import main
from sinks.chain import GENESIS, link
from sinks.postgres.audit import (
    checkpoint,
    export_lines,
    verify,
    verify_checkpoints,
)
from sinks.signing import Pin, fingerprint, generate, load_private_key, public_bytes
from tests.conftest import ROOT, StartWorker
from tests.integration.helpers import done, joined, player_event, produce, query, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def trail(settings: Settings, worker_factory: StartWorker) -> Settings:
    worker = worker_factory(settings)
    worker.wait_ready()
    events: list[tuple[str, bytes]] = []
    for n in range(12):
        pid = f"p-{n}"
        events += joined(pid)
        events.append((pid, player_event("limit_set", pid, limit="loss", period="day",
                                         amount="50.00", currency="EUR")))  # fmt: skip
    events.append(("p-0", player_event("self_excluded", "p-0", until=None)))
    events.append(("p-1", player_event("registered", "p-1")))  # a retry: unchanged, no audit
    produce(settings, "players", events)
    wait_for(lambda: done(settings, "players") == len(events), timeout=60, what="the events")
    return settings


@pytest.fixture
def copy(trail: Settings) -> Iterator[Callable[[], psycopg.Connection[Any]]]:
    """A fresh copy of the trail (no append-only triggers) to tamper with, each call."""
    dsn, live = trail.migration_dsn, trail.pg_schema
    scratch = f"{live}_copy"
    conns: list[psycopg.Connection[Any]] = []

    def make() -> psycopg.Connection[Any]:
        for old in conns:  # its open transaction would hold the copy's tables
            old.close()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {scratch} CASCADE")
            admin.execute(f"CREATE SCHEMA {scratch}")
            for table in ("audit_records", "audit_heads"):
                admin.execute(f"CREATE TABLE {scratch}.{table} AS TABLE {live}.{table}")
        conn = psycopg.connect(dsn, options=f"-c search_path={scratch}")
        conns.append(conn)
        return conn

    yield make
    for conn in conns:
        conn.close()
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {scratch} CASCADE")


def test_every_applied_player_event_is_chained_and_verifies(
    trail: Settings, cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    applied = query(trail, "SELECT count(*) FROM player_events WHERE outcome = 'applied'")
    audited = query(trail, "SELECT count(*) FROM audit_records")
    assert applied == audited == [(12 * 3 + 1,)]
    # One chain per source partition, numbered from 1 without a gap.
    chains = query(trail, "SELECT chain, count(*), min(seq), max(seq) FROM audit_records "
                   "GROUP BY chain ORDER BY chain")  # fmt: skip
    assert {c.rsplit("/", 1)[0] for c, *_ in chains} == {trail.topic("players")}
    assert all(lo == 1 and hi == n for _, n, lo, hi in chains)
    # The record is the exact JSON the audit topic got, with before and after.
    body = query(trail, "SELECT body FROM audit_records WHERE action = 'player.self_excluded'")
    doc = json.loads(body[0][0])
    assert doc["entity_id"] == "p-0" and doc["before"]["exclusion"] is None
    assert doc["after"]["exclusion"]["until"] is None
    # Append-only for the application.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        query(trail, "UPDATE audit_records SET body = '{}'")

    assert main(["audit", "verify", "--json"]) == 2  # no pinned key: it says so
    assert "no pinned public key" in capsys.readouterr().err
    assert main(["audit", "verify", "--json", "--public-key", "00" * 32]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {
        "ok": True, "chains": len(chains), "records": 37, "checkpoints": 0, "problems": [],
    }  # fmt: skip


def _first(conn: psycopg.Connection[Any]) -> tuple[str, int, str]:
    result = verify(conn)
    assert not result.ok and result.problems
    p = result.problems[0]
    return p.chain, p.seq, p.what


def test_alteration_removal_reordering_and_insertion_are_each_named(
    trail: Settings, copy: Callable[[], psycopg.Connection[Any]]
) -> None:
    conn = copy()
    assert verify(conn).ok
    chain, length = conn.execute("SELECT chain, count(*) FROM audit_records GROUP BY chain "
                                 "ORDER BY 2 DESC, 1 LIMIT 1").fetchone() or ("", 0)  # fmt: skip
    assert length >= 4

    conn = copy()  # altered: a limit's amount changed in place
    conn.execute("UPDATE audit_records SET body = replace(body, '50.00', '500.00') "
                 "WHERE chain = %s AND seq = 3", (chain,))  # fmt: skip
    assert _first(conn)[:2] == (chain, 3) and "altered" in _first(conn)[2]

    conn = copy()  # removed from the middle
    conn.execute("DELETE FROM audit_records WHERE chain = %s AND seq = 2", (chain,))
    assert _first(conn)[:2] == (chain, 3) and "removed or inserted" in _first(conn)[2]

    conn = copy()  # removed from the end (the head still remembers)
    conn.execute("DELETE FROM audit_records WHERE chain = %s AND seq = %s", (chain, length))
    assert _first(conn)[:2] == (chain, length) and "head" in _first(conn)[2]

    conn = copy()  # reordered: two records swap places
    conn.execute("""UPDATE audit_records SET seq = CASE seq WHEN 2 THEN 3 ELSE 2 END
                     WHERE chain = %s AND seq IN (2, 3)""", (chain,))  # fmt: skip
    assert _first(conn)[:2] == (chain, 2)

    conn = copy()  # inserted: a forged record slipped in, the rest renumbered
    conn.execute("UPDATE audit_records SET seq = seq + 1000 WHERE chain = %s AND seq >= 2",
                 (chain,))  # fmt: skip
    conn.execute("UPDATE audit_records SET seq = seq - 999 WHERE chain = %s AND seq > 1000",
                 (chain,))  # fmt: skip
    conn.execute("""INSERT INTO audit_records
                    SELECT chain, 2, entity, entity_id, action, source_topic, source_partition,
                           source_offset, body, prev_hash, hash, recorded_at
                      FROM audit_records WHERE chain = %s AND seq = 1""", (chain,))  # fmt: skip
    assert _first(conn)[:2] == (chain, 2)


def test_a_signed_checkpoint_catches_a_chain_rewritten_with_recomputed_hashes(
    trail: Settings, copy: Callable[[], psycopg.Connection[Any]], tmp_path: Path
) -> None:
    key = generate(tmp_path / "audit" / "ed25519.pem")
    assert (tmp_path / "audit" / "ed25519.pem").stat().st_mode & 0o777 == 0o600
    assert load_private_key(tmp_path / "audit" / "ed25519.pem").private_bytes_raw() == (
        key.private_bytes_raw()
    )
    pin = Pin(public_bytes(key))
    with psycopg.connect(trail.migration_dsn,
                         options=f"-c search_path={trail.pg_schema}") as live:  # fmt: skip
        cid, chains = checkpoint(live, key)
        assert cid == 1 and chains >= 1
        assert verify_checkpoints(live, pin) == (1, [])
        assert verify_checkpoints(live, Pin(None, fingerprint(public_bytes(key)))) == (1, [])
        # The live table refuses to lose or change a checkpoint.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            live.execute("DELETE FROM audit_checkpoints")
        live.rollback()

    conn = copy()
    conn.execute("CREATE TABLE audit_checkpoints AS TABLE "
                 f"{trail.pg_schema}.audit_checkpoints")  # fmt: skip
    chain = conn.execute("SELECT chain FROM audit_records ORDER BY chain LIMIT 1").fetchone()
    assert chain is not None
    # Rewrite the chain from its first record on, recomputing every hash and the head:
    # the chain alone verifies again, the signed checkpoint does not.
    rows = conn.execute("SELECT seq, body FROM audit_records WHERE chain = %s ORDER BY seq",
                        (chain[0],)).fetchall()  # fmt: skip
    prev = GENESIS
    for seq, body in rows:
        if seq == 1:
            body = body.replace('"p-', '"forged-p-', 1)
        digest = link(prev, body)
        conn.execute(
            "UPDATE audit_records SET body = %s, prev_hash = %s, hash = %s "
            "WHERE chain = %s AND seq = %s",
            (body, prev, digest, chain[0], seq),
        )
        prev = digest
    conn.execute("UPDATE audit_heads SET hash = %s WHERE chain = %s", (prev, chain[0]))
    assert verify(conn).ok
    count, problems = verify_checkpoints(conn, pin)
    assert count == 1 and [p.chain for p in problems] == [chain[0]]
    assert "rewritten" in problems[0].what

    # A checkpoint re-signed by someone else fails against the trusted key.
    conn = copy()
    conn.execute("CREATE TABLE audit_checkpoints AS TABLE "
                 f"{trail.pg_schema}.audit_checkpoints")  # fmt: skip
    forger = Ed25519PrivateKey.generate()
    document = conn.execute("SELECT document FROM audit_checkpoints").fetchone()
    assert document is not None
    conn.execute("UPDATE audit_checkpoints SET public_key = %s, signature = %s",
                 (public_bytes(forger), forger.sign(document[0].encode())))  # fmt: skip
    assert verify_checkpoints(conn, Pin(public_bytes(forger)))[1] == []  # its own key...
    for pinned in (pin, Pin(None, pin.fingerprint)):  # ...but not the pinned one
        _, problems = verify_checkpoints(conn, pinned)
        assert [p.what.split(" (")[0].split(", not")[0] for p in problems] == [
            f"its row names key {fingerprint(public_bytes(forger))}",
            f"its signature does not verify with the pinned key {pin.fingerprint}",
        ], problems


def _bundle_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``croupier`` in a process that can reach no database: as on a regulator's machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROUPIER_")}
    env |= {"CROUPIER_PG_DSN": "postgresql://nobody@127.0.0.1:1/none",
            "CROUPIER_STACK_DIR": "/nonexistent"}  # fmt: skip
    argv = [sys.executable, "-m", "croupier", "audit", "verify", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd=ROOT)


def test_an_exported_bundle_verifies_alone_and_shows_any_tampering(
    trail: Settings, cli_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    key_file = tmp_path / "ed25519.pem"
    monkeypatch.setenv("CROUPIER_AUDIT_KEY", str(key_file))
    bundle = tmp_path / "dk-week.jsonl"
    args = ["audit", "export", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-02T00:00:00Z"]
    assert main([*args, "--out", str(bundle)]) == 2  # no key: an error, and no key made
    assert "croupier audit keygen" in capsys.readouterr().err and not key_file.exists()
    generate(key_file)
    start = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    end = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    time.sleep(1.1)  # the period is over when it is exported
    assert main(["audit", "export", "--from", start, "--to", end, "--out", str(bundle)]) == 0
    assert "37 audit records" in capsys.readouterr().out
    # The export reports its progress record by record (what `audit export`'s bar shows).
    seen: list[tuple[int, int]] = []
    with psycopg.connect(trail.pg_dsn.get_secret_value(),
                         options=f"-c search_path={trail.pg_schema}") as conn:  # fmt: skip
        exported = export_lines(conn, load_private_key(key_file), datetime.fromisoformat(start),
                                datetime.fromisoformat(end),
                                on_progress=lambda n, total: seen.append((n, total)))  # fmt: skip
        assert len(list(exported)) == 2 + 37
    assert seen == [(n, 37) for n in range(1, 38)]
    public = public_bytes(load_private_key(key_file))
    trusted = public.hex()

    ok = _bundle_cli(trail, "--bundle", str(bundle), "--public-key", trusted, "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] and report["records"] == 37
    assert report["fingerprint"] == fingerprint(public)
    by_fingerprint = _bundle_cli(
        trail, "--bundle", str(bundle), "--public-key", fingerprint(public)
    )
    assert by_fingerprint.returncode == 0, by_fingerprint.stdout + by_fingerprint.stderr
    # Without a pinned key it refuses, rather than trust the key the bundle names.
    unpinned = _bundle_cli(trail, "--bundle", str(bundle))
    assert unpinned.returncode == 2 and "no pinned public key" in unpinned.stderr

    lines = bundle.read_text().splitlines()
    header, signed, records = lines[0], lines[1], lines[2:]
    chain = json.loads(records[0])["chain"]
    mine = [n for n, line in enumerate(records) if json.loads(line)["chain"] == chain]
    assert len(mine) >= 4

    def tampered(name: str, new_records: list[str], new_header: str = header) -> dict[str, Any]:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join([new_header, signed, *new_records]) + "\n")
        run = _bundle_cli(trail, "--bundle", str(path), "--public-key", trusted, "--json")
        assert run.returncode == 1, (name, run.stdout, run.stderr)
        problem: dict[str, Any] = json.loads(run.stdout)["problems"][0]
        return problem

    second, third = mine[1], mine[2]
    altered = records.copy()
    doc = json.loads(altered[second])
    doc["body"] = doc["body"].replace('"p-', '"forged-p-', 1)  # the player it was about
    altered[second] = json.dumps(doc)
    assert tampered("altered", altered)["seq"] == 2
    assert "altered" in tampered("altered", altered)["problem"]
    removed = records[:second] + records[second + 1 :]
    assert tampered("removed", removed)["seq"] == 3
    reordered = records.copy()
    reordered[second], reordered[third] = reordered[third], reordered[second]
    assert tampered("reordered", reordered)["seq"] == 3
    inserted = [*records[: second + 1], records[second], *records[second + 1 :]]
    assert tampered("inserted", inserted)["seq"] == 2
    truncated = [r for n, r in enumerate(records) if n != mine[-1]]
    assert "head" in tampered("truncated", truncated)["problem"]

    # Someone else's key: the signature does not hold against the key the regulator trusts.
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    run = _bundle_cli(trail, "--bundle", str(bundle), "--public-key", other)
    assert run.returncode == 1 and "signature does not verify" in run.stdout
    # Not a bundle at all: a usage error that says so.
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"hello": 1}\n')
    run = _bundle_cli(trail, "--bundle", str(junk), "--public-key", trusted)
    assert run.returncode == 2 and "header" in run.stderr


def test_workers_sign_checkpoints_on_a_timer_when_a_chain_moved(
    settings: Settings, worker_factory: StartWorker, tmp_path: Path
) -> None:
    key_file = tmp_path / "ed25519.pem"
    trusted = public_bytes(generate(key_file))
    timed = settings.model_copy(update={"audit_checkpoint_interval": 1.0, "audit_key": key_file,
                                        "audit_public_key": trusted.hex()})  # fmt: skip
    worker = worker_factory(timed)
    worker.wait_ready()
    produce(timed, "players", joined("p-1"))
    wait_for(lambda: done(timed, "players") == 2, timeout=60, what="the events")

    def checkpoints() -> int:
        return int(query(timed, "SELECT count(*) FROM audit_checkpoints")[0][0])

    wait_for(lambda: checkpoints() >= 1, timeout=30, what="a checkpoint")
    time.sleep(3)  # three more ticks with no chain moving: nothing more to sign
    assert checkpoints() == 1
    produce(timed, "players", [("p-1", player_event("self_excluded", "p-1", until=None))])
    wait_for(lambda: checkpoints() == 2, timeout=30, what="a checkpoint of the new head")
    with psycopg.connect(timed.migration_dsn,
                         options=f"-c search_path={timed.pg_schema}") as conn:  # fmt: skip
        assert verify_checkpoints(conn, Pin(trusted)) == (2, [])


def test_the_pinned_key_decides_and_a_changed_key_is_an_alert(
    trail: Settings, cli_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """``audit checkpoint`` prints the fingerprint; ``audit verify`` checks every checkpoint
    against the pinned key only; a checkpoint by another key (a new key file, or whoever can
    write ``audit_checkpoints``) fails verification, and the key watch logs and counts it."""
    from prometheus_client import REGISTRY

    from streams.audit_keys import KeyWatch

    key_file = tmp_path / "audit" / "ed25519.pem"
    monkeypatch.setenv("CROUPIER_AUDIT_KEY", str(key_file))
    assert main(["audit", "checkpoint"]) == 2  # no key: a clear error, and none is made
    assert "croupier audit keygen" in capsys.readouterr().err and not key_file.exists()
    assert main(["audit", "keygen"]) == 0
    made = capsys.readouterr().out
    public = (tmp_path / "audit" / "ed25519.pub").read_text().strip()
    assert f"CROUPIER_AUDIT_PUBLIC_KEY={public}" in made
    assert main(["audit", "keygen"]) == 1  # never replaced
    assert "never replaced" in capsys.readouterr().err
    assert main(["audit", "checkpoint"]) == 0
    fp = fingerprint(bytes.fromhex(public))
    assert f"(fingerprint {fp})" in capsys.readouterr().out

    monkeypatch.setenv("CROUPIER_AUDIT_PUBLIC_KEY", str(tmp_path / "audit" / "ed25519.pub"))
    assert main(["audit", "verify"]) == 0
    assert f"1 signed checkpoints, pinned key {fp}: everything verifies" in capsys.readouterr().out

    # The key is lost: no new one is made over its .pub, which pins the old one...
    monkeypatch.setenv("CROUPIER_AUDIT_PUBLIC_KEY", public)  # the pin, kept elsewhere
    key_file.rename(tmp_path / "old.pem")
    assert main(["audit", "keygen"]) == 1
    assert "without its private key" in capsys.readouterr().err
    # ...until it is moved away on purpose. The new key then signs nothing...
    (tmp_path / "audit" / "ed25519.pub").rename(tmp_path / "old.pub")
    generate(key_file)
    assert main(["audit", "checkpoint"]) == 1
    assert f"not the pinned key {fp}" in capsys.readouterr().err
    # ...and a checkpoint inserted with it (as the owner: whoever can write the table) is
    # caught by verify, by the pin given as a fingerprint too, and raised by the key watch.
    new = load_private_key(key_file)
    with psycopg.connect(trail.migration_dsn,
                         options=f"-c search_path={trail.pg_schema}") as conn:  # fmt: skip
        cid, _ = checkpoint(conn, new)
        watch = KeyWatch(trail.model_copy(update={"audit_key": tmp_path / "old.pem",
                                                  "audit_public_key": public}))  # fmt: skip

        def alerts() -> float:
            return REGISTRY.get_sample_value("croupier_audit_key_alerts_total",
                                             {"what": "checkpoint"}) or 0.0  # fmt: skip

        before = alerts()
        with caplog.at_level("ERROR", logger="streams.audit_keys"):
            assert watch.check(conn) == [cid]
        assert alerts() == before + 1
        assert (
            f"audit checkpoint {cid} is signed by key {fingerprint(public_bytes(new))}, "
            f"not the pinned key {fp}" in caplog.text
        )
        assert watch.check(conn) == []  # each checkpoint alerts once per process
        signer = KeyWatch(trail.model_copy(update={"audit_key": key_file,
                                                   "audit_public_key": public}))  # fmt: skip
        assert not signer.may_sign() and signer.sign(conn) is None
    for pinned in (public, fp):
        assert main(["audit", "verify", "--json", "--public-key", pinned]) == 1
        report = json.loads(capsys.readouterr().out)
        assert report["checkpoints"] == 2 and not report["ok"]
        assert [p["chain"] for p in report["problems"]][:1] == [f"checkpoint {cid}"]
        assert "the signing key changed" in report["problems"][0]["problem"]
