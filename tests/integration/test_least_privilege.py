"""Least privilege in PostgreSQL: logged in as the application's role, every way into the
ledger and the audit trail is tried and refused; the honest paths still work.

The application role (a member of ``croupier_app``) may write the ledger only through
``ledger_post`` and the trail only through ``audit_append`` and ``audit_add_checkpoint``,
SECURITY DEFINER functions owned by the NOLOGIN roles ``croupier_ledger`` and
``croupier_audit`` (migrations 0018, 0019); decision records are INSERT only; nothing can
be deleted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from croupier.settings import Settings
from rules import ledger as L
from sinks.postgres.audit import GENESIS, checkpoint, link, verify
from sinks.postgres.ledger import Ledger
from sinks.signing import public_bytes
from tests.integration.helpers import query

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)
D = Decimal
REFUSED = psycopg.errors.InsufficientPrivilege


@pytest.fixture
def app(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """A connection as the application's login, in the test's schema, with a funded player."""
    book = Ledger.connect(settings.pg_dsn.get_secret_value(), settings.pg_schema)
    book.post(L.deposit("pay-1", "p-1", D("10.00"), "EUR", NOW))
    book.close()
    with psycopg.connect(settings.pg_dsn.get_secret_value(), autocommit=True,
                         options=f"-c search_path={settings.pg_schema}") as conn:  # fmt: skip
        user = conn.execute("SELECT current_user").fetchone()
        assert user is not None and user[0] != "postgres"  # really the application's login
        yield conn


def balances(s: Settings) -> list[tuple[Any, ...]]:
    return query(s, "SELECT owner, kind, currency, balance FROM ledger_accounts ORDER BY 1, 2")


def refused(conn: psycopg.Connection[Any], statement: str, params: Any = None) -> str:
    """``statement`` fails as the application's role; the error's text."""
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(statement.encode(), params)
    return str(caught.value)


def test_the_app_cannot_write_the_ledger_but_through_ledger_post(
    settings: Settings, app: psycopg.Connection[Any]
) -> None:
    s = settings
    before = balances(s)
    attempts = [
        # Open an account of its own, with money in it.
        "INSERT INTO ledger_accounts (owner, kind, currency, balance) "
        "VALUES ('thief', 'cash', 'EUR', 1000)",
        # Take over another player's wallet.
        "UPDATE ledger_accounts SET owner = 'thief' WHERE owner = 'p-1'",
        # Move a balance by hand.
        "UPDATE ledger_accounts SET balance = 1000 WHERE owner = 'p-1' AND kind = 'cash'",
        # The old posting switch, then the same update.
        "SELECT set_config('croupier.ledger_posting', 'on', false); "
        "UPDATE ledger_accounts SET balance = 1000 WHERE owner = 'p-1' AND kind = 'cash'",
        # Balanced rows straight into the books.
        "INSERT INTO ledger_transactions (idempotency_key, operation, player_id, currency, "
        "amount, status, request_hash, cash_after, pending_after, occurred_at) "
        "VALUES ('forged', 'deposit', 'p-1', 'EUR', 1000, 'applied', 'h', 1010, 0, now())",
        "INSERT INTO ledger_entries (txn_id, account_id, currency, amount) "
        "SELECT t.txn_id, a.account_id, 'EUR', x.v FROM ledger_transactions t, "
        "ledger_accounts a, (VALUES (1000), (-1000)) x(v) "
        "WHERE a.owner = 'p-1' AND a.kind = 'cash' LIMIT 2",
        "DELETE FROM ledger_transactions",
        "TRUNCATE ledger_entries",
        # Lock a wallet for ever (FOR UPDATE needs UPDATE rights).
        "SELECT * FROM ledger_accounts FOR UPDATE",
        # Become the owner, or shadow its objects.
        "SET ROLE croupier_ledger",
        f"CREATE TABLE {s.pg_schema}.ledger_accounts_2 (x int)",
        "SELECT setval('ledger_transactions_txn_id_seq', 1)",
        "ALTER FUNCTION ledger_post(jsonb) SECURITY INVOKER",
    ]
    for statement in attempts:
        text = refused(app, statement)
        assert "permission denied" in text or "must be owner" in text, (statement, text)
    assert balances(s) == before
    count = query(s, "SELECT count(*) FROM ledger_transactions WHERE idempotency_key = 'forged'")
    assert count == [(0,)]


def test_ledger_post_ignores_the_callers_temporary_objects(
    settings: Settings, app: psycopg.Connection[Any]
) -> None:
    # A temporary table named like the ledger's would come first on an unpinned path.
    app.execute("CREATE TEMP TABLE ledger_accounts (owner text, kind text, currency text, "
                "balance numeric, account_id bigint)")  # fmt: skip
    app.execute("SET search_path = pg_temp, " + settings.pg_schema)
    book = Ledger(app)
    result = book.post(L.deposit("pay-2", "p-1", D("5.00"), "EUR", NOW))
    assert result.applied and result.cash_after == D("15.00")
    assert query(settings, "SELECT balance FROM ledger_accounts "
                           "WHERE owner = 'p-1' AND kind = 'cash'") == [(D("15.00"),)]  # fmt: skip
    assert app.execute("SELECT count(*) FROM pg_temp.ledger_accounts").fetchone() == (0,)


def test_the_honest_paths_work_as_the_app(settings: Settings, app: psycopg.Connection[Any]) -> None:
    book = Ledger(app)
    assert book.post(L.stake("b-1", "p-1", D("4.00"), "EUR", NOW)).applied
    assert book.post(L.withdrawal_reserve("pay-9", "p-1", D("20.00"), "EUR", NOW)).reason == (
        "insufficient_funds"
    )
    locked = app.execute("SELECT * FROM ledger_lock_cash('p-1,nobody')").fetchall()
    assert locked == [("p-1", "EUR", D("6.00"))]
    assert book.reconcile().ok


def _rows(chain: str, start: tuple[int, bytes], bodies: list[str]) -> list[list[Any]]:
    """audit_append's rows for ``bodies`` chained on from ``start`` (seq, hash)."""
    seq, prev = start
    rows = []
    for body in bodies:
        digest = link(prev, body)
        seq += 1
        rows.append([chain, seq, "bet", f"b-{seq}", "bet.placed", "bets", 0, seq, body,
                     prev.hex(), digest.hex()])  # fmt: skip
        prev = digest
    return rows


def append(conn: psycopg.Connection[Any], rows: list[list[Any]]) -> None:
    conn.execute("SELECT audit_append(%s::jsonb)", (json.dumps(rows),))


def test_the_app_appends_to_the_trail_only_on_the_chain(
    settings: Settings, app: psycopg.Connection[Any]
) -> None:
    s = settings
    first = _rows("bets/0", (0, GENESIS), ['{"n": 1}', '{"n": 2, "name": "Zoë"}'])
    append(app, first)
    head = (2, bytes.fromhex(first[-1][10]))
    assert query(s, "SELECT seq, hash FROM audit_heads WHERE chain = 'bets/0'") == [head]

    good = _rows("bets/0", head, ['{"n": 3}'])
    short_hash = [[*good[0][:10], bytes(31).hex()]]
    forked = _rows("bets/0", (1, bytes.fromhex(first[0][10])), ['{"n": "2 again"}'])
    skipped = _rows("bets/0", (3, head[1]), ['{"n": 4}'])
    restarted = _rows("bets/0", (0, GENESIS), ['{"n": "new genesis"}'])
    broken_link = _rows("bets/0", head, ['{"n": 3}', '{"n": 4}'])
    broken_link[1][9] = bytes(32).hex()
    for rows in (short_hash, forked, skipped, restarted, broken_link):
        with pytest.raises(psycopg.errors.CheckViolation, match="does not extend its chain"):
            append(app, rows)
    assert query(s, "SELECT seq, hash FROM audit_heads WHERE chain = 'bets/0'") == [head]

    for statement in [
        "UPDATE audit_records SET body = '{}'",
        "DELETE FROM audit_records",
        "TRUNCATE audit_records",
        "INSERT INTO audit_records SELECT * FROM audit_records LIMIT 1",
        "UPDATE audit_heads SET seq = 1",
        "INSERT INTO audit_heads (chain, seq, hash) VALUES ('bets/9', 1, '\\x00')",
        "DELETE FROM audit_heads",
        "SELECT * FROM audit_heads FOR UPDATE",
        "INSERT INTO audit_checkpoints (document, public_key, signature) "
        "VALUES ('{}', '\\x00', '\\x00')",
        "UPDATE audit_checkpoints SET document = '{}'",
        "DELETE FROM audit_checkpoints",
        "SET ROLE croupier_audit",
    ]:
        text = refused(app, statement)
        assert "permission denied" in text, (statement, text)

    append(app, good)
    with psycopg.connect(s.pg_dsn.get_secret_value(),
                         options=f"-c search_path={s.pg_schema}") as conn:  # fmt: skip
        assert verify(conn).ok


def test_a_checkpoint_names_only_heads_the_trail_holds(
    settings: Settings, app: psycopg.Connection[Any]
) -> None:
    key = Ed25519PrivateKey.generate()
    append(app, _rows("bets/0", (0, GENESIS), ['{"n": 1}']))
    cid, chains = checkpoint(app, key)  # the honest path, as the application
    assert cid >= 1 and chains == 1
    forged = json.dumps({"created_at": "2026-11-24T19:00:00+00:00",
                         "heads": {"bets/0": {"seq": 1, "hash": bytes(32).hex()}}})  # fmt: skip
    with pytest.raises(psycopg.errors.CheckViolation, match="does not hold"):
        app.execute("SELECT audit_add_checkpoint(%s, %s, %s)",
                    (forged, public_bytes(key), key.sign(forged.encode())))  # fmt: skip
    with pytest.raises(psycopg.errors.CheckViolation, match="not a checkpoint"):
        app.execute("SELECT audit_add_checkpoint('{}', '\\x00', '\\x00')")
    assert query(settings, "SELECT count(*) FROM audit_checkpoints") == [(1,)]


def test_decision_records_cannot_be_changed_or_removed(
    settings: Settings, app: psycopg.Connection[Any]
) -> None:
    app.execute(
        """INSERT INTO payment_decisions (payment_id, phase, type, player_id, status, reason,
               decision, decided_at, source_topic, source_partition, source_offset)
           VALUES ('pay-x', 'open', 'deposit', 'p-1', 'accepted', NULL, '{}', now(),
                   'payments', 0, 1)"""
    )
    for statement in [
        "UPDATE payment_decisions SET status = 'rejected'",
        "DELETE FROM payment_decisions",
        "UPDATE settlements SET payout = 0",
        "UPDATE casino_calls SET answer = '{}'",
        "UPDATE casino_transactions SET amount = 0",
        "UPDATE report_records SET record_json = '{}'",
        "UPDATE dead_letters SET error = ''",
        # A bet's decision stays as decided: only its settlement moves.
        "UPDATE bets SET decision = '{}'",
        "UPDATE bets SET stake = 1000",
        "UPDATE bets SET reason = NULL, status = 'open'",
        "UPDATE bet_legs SET odds = 1000",
        "UPDATE casino_rounds SET player_id = 'thief'",
        "DELETE FROM bets",
        "DELETE FROM consumer_progress",
        "DELETE FROM players",
        "TRUNCATE bets",
    ]:
        text = refused(app, statement)
        assert "permission denied" in text, (statement, text)
    assert query(settings, "SELECT status FROM payment_decisions") == [("accepted",)]
    # The settlement columns stay the application's (test_market_settling settles for real).
    app.execute("UPDATE bets SET status = status, payout = payout, settle_seq = settle_seq")
    app.execute("UPDATE bet_legs SET result = result, cancelled = cancelled")
    app.execute("UPDATE casino_rounds SET closed_at = closed_at")


def test_a_wrong_postgresql_password_is_refused(settings: Settings) -> None:
    """The embedded server asks for SCRAM passwords (never trust): a wrong one, or none, is
    refused for the application's login and the owner's alike."""
    for dsn in (settings.pg_dsn.get_secret_value(), settings.migration_dsn):
        parts = conninfo_to_dict(dsn)
        assert parts.get("password"), "the stack's DSNs carry their passwords"
        with psycopg.connect(dsn) as ok:
            assert ok.execute("SELECT 1").fetchone() == (1,)
        for wrong in ({**parts, "password": "not-the-password"}, {**parts, "password": ""}):
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(make_conninfo("", **wrong), connect_timeout=10).close()
