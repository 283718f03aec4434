"""Least privilege in PostgreSQL: logged in as the application's role, every way into the
ledger and the audit trail is tried and refused; the honest paths still work.

The application role (a member of ``croupier_app``) may write the ledger only through
``ledger_post`` and the trail only through ``audit_append`` and ``audit_add_checkpoint``,
SECURITY DEFINER functions owned by the NOLOGIN roles ``croupier_ledger`` and
``croupier_audit`` (migrations 0018, 0019); decisions and report chains only through
their owners' functions (0021), which refuse what disagrees with the ledger or the trail;
nothing can be deleted.
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

from config.settings import Settings
from rules import ledger as L
from sinks.chain import GENESIS, link
from sinks.postgres.audit import checkpoint, verify
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


DECISION_TABLES = ("bets", "bet_legs", "bet_duplicates", "settlements", "market_messages",
                   "casino_rounds", "casino_transactions", "casino_calls",
                   "payment_decisions", "payment_events",
                   "report_records", "report_heads", "report_rejections")  # fmt: skip


def test_decision_and_report_tables_take_no_write_from_the_app(
    settings: Settings, app: psycopg.Connection[Any]
) -> None:
    """No INSERT, UPDATE, DELETE or TRUNCATE on a decision or report table; only their
    owners' functions write them (migration 0021)."""
    for table in DECISION_TABLES:
        for statement in (f"INSERT INTO {table} DEFAULT VALUES",
                          f"INSERT INTO {table} SELECT * FROM {table}",
                          f"UPDATE {table} SET {_first_column(settings, table)} = NULL",
                          f"DELETE FROM {table}", f"TRUNCATE {table}",
                          f"SELECT * FROM {table} FOR UPDATE"):  # fmt: skip
            text = refused(app, statement)
            assert "permission denied" in text, (statement, text)
    for statement in ["UPDATE dead_letters SET error = ''", "DELETE FROM consumer_progress",
                      "DELETE FROM players", "TRUNCATE players"]:  # fmt: skip
        assert "permission denied" in refused(app, statement), statement


def _first_column(settings: Settings, table: str) -> str:
    rows = query(settings, """SELECT column_name FROM information_schema.columns
                               WHERE table_schema = %s AND table_name = %s
                               ORDER BY ordinal_position LIMIT 1""",
                 (settings.pg_schema, table))  # fmt: skip
    return str(rows[0][0])


def _bet(bet_id: str, status: str, *, stake: str = "2.00", legs: int = 1) -> list[Any]:
    selections = [{"event_id": "e-1", "market_id": f"m-{n}", "outcome_id": "home"}
                  for n in range(legs)]  # fmt: skip
    request = {"bet_id": bet_id, "player_id": "p-1", "stake": stake, "currency": "EUR",
               "selections": selections}  # fmt: skip
    return [bet_id, "p-1", "EUR", stake, "2.0" if status == "open" else None,
            NOW.isoformat(), status, None if status == "open" else "market_closed", "h",
            json.dumps(request), "{}", NOW.isoformat(), "bets", 0,
            len(bet_id) * 7 + ord(bet_id[-1]), None]  # fmt: skip


def _legs(bet_id: str, n: int = 1) -> list[list[Any]]:
    return [[bet_id, i, "e-1", f"m-{i}", "home", "2.0", NOW.isoformat()] for i in range(n)]


def record(conn: psycopg.Connection[Any], bets: Any, legs: Any = (), dups: Any = ()) -> None:
    rows = (json.dumps(list(bets)), json.dumps(list(legs)), json.dumps(list(dups)))
    conn.execute("SELECT bets_record(%s::jsonb, %s::jsonb, %s::jsonb)", rows)


def test_a_decision_must_agree_with_the_ledger(
    settings: Settings, app: psycopg.Connection[Any]
) -> None:
    """The functions store what the house decided only as the ledger holds it: an accepted
    bet with its stake and its selections as legs, a rejected one without a stake, a
    settlement, a casino move or a payment only when the ledger moved it."""
    book = Ledger.connect(settings.pg_dsn.get_secret_value(), settings.pg_schema)
    book.post(L.stake("b-staked", "p-1", D("2.00"), "EUR", NOW))
    book.post(L.stake("b-two", "p-1", D("1.00"), "EUR", NOW))
    book.close()
    check = psycopg.errors.CheckViolation
    for bets, legs, why in [
        ([_bet("b-free", "open")], _legs("b-free"), "not as the ledger holds it"),  # no stake
        ([_bet("b-staked", "rejected")], [], "not as the ledger holds it"),  # stake kept
        ([_bet("b-staked", "open", stake="5.00")], _legs("b-staked"), "not as the ledger"),
        ([_bet("b-staked", "settled")], _legs("b-staked"), "not as the ledger holds it"),
        ([_bet("b-staked", "open")], [], "not its selections"),  # no leg
        ([_bet("b-staked", "open")], _legs("b-staked", 2), "not its selections"),  # one more
        (
            [_bet("b-staked", "open")],
            [[*_legs("b-staked")[0][:3], "m-9", "home", "2.0", NOW.isoformat()]],
            "not its selections",
        ),
    ]:
        with pytest.raises(check, match=why):
            record(app, bets, legs)
    assert query(settings, "SELECT count(*) FROM bets") == [(0,)]
    record(app, [_bet("b-staked", "open"), _bet("b-gone", "rejected")], _legs("b-staked"))
    with pytest.raises(check, match="not its selections"):  # a leg added to a stored bet
        record(app, [], [[*_legs("b-staked")[0][:1], 1, "e-1", "m-1", "home", "2.0",
                         NOW.isoformat()]])  # fmt: skip
    # A leg of a bet that was never stored (the check stands where the legs' foreign key
    # stood before migration 0026).
    with pytest.raises(check, match="not its selections"):
        record(app, [], _legs("b-nowhere"))
    assert query(settings, "SELECT count(*) FROM bet_legs WHERE bet_id = 'b-nowhere'") == [(0,)]
    assert query(settings, "SELECT bet_id, status FROM bets ORDER BY 1") == [
        ("b-gone", "rejected"), ("b-staked", "open")]  # fmt: skip

    settle = "SELECT bets_settle(%s::jsonb, %s::jsonb)"
    with pytest.raises(check, match="settlement"):  # a win the ledger never paid
        app.execute(settle, (json.dumps([["b-staked", "settled", "b-staked/1", "win", "4.00", 1]]),
                             "[]"))  # fmt: skip
    with pytest.raises(check, match="settlement"):  # a rejected bet is never settled
        app.execute(settle, (json.dumps([["b-gone", "open", None, None, None, 1]]), "[]"))
    with pytest.raises(check, match="not in the ledger"):
        app.execute(settle, ("[]", json.dumps([["b-staked/1", "b-staked", "p-1", "settlement",
                                                "win", "4.00", "{}", "odds", 0, 1]])))  # fmt: skip

    casino = "SELECT casino_record('[]'::jsonb, %s::jsonb, '[]'::jsonb, now(), '', '')"
    with pytest.raises(check, match="did not move"):  # a credit the ledger never made
        app.execute(casino, (json.dumps([["tx-1", "credit", "p-1", "r-1", "g-1", "50.00", "EUR",
                                          None, "h", "ok", None, True, None, "{}",
                                          NOW.isoformat(), "casino", 0, 1]]),))  # fmt: skip
    payments = "SELECT payments_record(%s::jsonb, '[]'::jsonb)"
    with pytest.raises(check, match="not as the ledger holds it"):  # a deposit never made
        app.execute(payments, (json.dumps([["pay-y", "open", "deposit", "p-1", "h", "accepted",
                                            None, "EUR", "{}", NOW.isoformat(), "payments", 0,
                                            1]]),))  # fmt: skip
    with pytest.raises(check, match="not as the ledger holds it"):  # a deposit made, denied
        app.execute(payments, (json.dumps([["pay-1", "open", "deposit", "p-1", "h", "rejected",
                                            "limit", "EUR", "{}", NOW.isoformat(), "payments",
                                            0, 1]]),))  # fmt: skip
    for table in ("settlements", "casino_transactions", "payment_decisions"):
        assert query(settings, f"SELECT count(*) FROM {table}") == [(0,)], table


def test_report_records_follow_their_chain_and_the_trail(
    settings: Settings, app: psycopg.Connection[Any]
) -> None:
    """report_append takes a record only as the next of its jurisdiction's chain and only
    from an audit record the trail holds; report_reject only names trail records."""
    append(app, _rows("bets/0", (0, GENESIS), ['{"n": 1}', '{"n": 2}']))
    zero, sig1, sig2 = bytes(64).hex(), "11" * 64, "22" * 64
    pub = "33" * 32

    def rec(seq: int, prev: str, sig: str, audit_seq: int = 1) -> list[Any]:
        return ["DK", seq, "p-1", "{}", prev, sig, pub, "bets/0", audit_seq]

    def report(*rows: list[Any]) -> None:
        app.execute("SELECT report_append(%s::jsonb)", (json.dumps(list(rows)),))

    check = psycopg.errors.CheckViolation
    for rows in ([rec(2, zero, sig1)],  # a gap
                 [rec(1, sig2, sig1)],  # not the genesis
                 [rec(1, zero, sig1, audit_seq=9)],  # no such audit record
                 [rec(1, zero, sig1), rec(2, zero, sig2)]):  # fmt: skip  # a fork
        with pytest.raises(check, match="does not extend its chain"):
            report(*rows)
    report(rec(1, zero, sig1), rec(2, sig1, sig2, audit_seq=2))
    with pytest.raises(check, match="does not extend its chain"):  # the head moved on
        report(rec(2, sig1, "44" * 64))
    assert query(settings, "SELECT seq FROM report_heads WHERE jurisdiction = 'DK'") == [(2,)]
    with pytest.raises(check, match="not in the trail"):
        app.execute("SELECT report_reject(%s::jsonb)", (json.dumps([["bets/0", 7, "x"]]),))
    app.execute("SELECT report_reject(%s::jsonb)", (json.dumps([["bets/0", 1, "x"]]),))


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
