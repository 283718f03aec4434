"""The double-entry ledger against the real PostgreSQL: operations, idempotency, invariants."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from config.settings import Settings
from rules import ledger as L
from sinks.postgres.ledger import Ledger, _payload

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)
D = Decimal


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    lg = Ledger.connect(settings.migration_dsn, settings.pg_schema)
    yield lg
    lg.close()


def cash(lg: Ledger, player: str) -> tuple[Decimal, Decimal]:
    (b,) = lg.balances(player)
    return b.cash, b.pending


def entries(lg: Ledger) -> int:
    row = lg.conn.execute("SELECT count(*) FROM ledger_entries").fetchone()
    return int(row[0]) if row else 0


def test_every_operation_moves_money_and_the_books_balance(ledger: Ledger) -> None:
    lg = ledger
    assert lg.post(L.deposit("pay-1", "p-1", D("100.00"), "EUR", NOW)).cash_after == D("100.00")
    for bet in ("b-win", "b-lose", "b-void", "b-hw", "b-hl", "b-cash"):
        assert lg.post(L.stake(bet, "p-1", D("10.00"), "EUR", NOW)).applied
    assert cash(lg, "p-1") == (D("40.00"), D("60.00"))
    # Payouts as the settlement rules give them at odds 2.10.
    for bet, payout, result in [
        ("b-win", "21.00", "win"), ("b-lose", "0", "lose"), ("b-void", "10.00", "void"),
        ("b-hw", "15.50", "half_win"), ("b-hl", "5.00", "half_lose"),
        ("b-cash", "7.25", "cash_out"),
    ]:  # fmt: skip
        assert lg.post(L.settle(f"s-{bet}", bet, "p-1", "EUR", D(payout), result, NOW)).applied
    assert cash(lg, "p-1") == (D("98.75"), D("0.00"))

    lg.post(L.withdrawal_reserve("pay-2", "p-1", D("50.00"), "EUR", NOW))
    assert lg.balances("p-1")[0].withdrawal_reserved == D("50.00")
    lg.post(L.withdrawal_close("pay-2", "p-1", "EUR", NOW, completed=False))  # provider failed
    lg.post(L.withdrawal_reserve("pay-3", "p-1", D("30.00"), "EUR", NOW))
    lg.post(L.withdrawal_close("pay-3", "p-1", "EUR", NOW, completed=True))
    assert cash(lg, "p-1") == (D("68.75"), D("0.00"))

    lg.post(L.casino_debit("tx-1", "p-1", D("1.00"), "EUR", NOW))
    lg.post(L.casino_credit("tx-2", "p-1", D("0.00"), "EUR", NOW))  # a losing round's credit
    lg.post(L.casino_debit("tx-3", "p-1", D("2.00"), "EUR", NOW))
    lg.post(L.casino_rollback("tx-4", "tx-3", "p-1", "EUR", NOW))
    assert cash(lg, "p-1") == (D("67.75"), D("0.00"))

    rec = lg.reconcile()
    assert rec.ok and [c.currency for c in rec.currencies] == ["EUR"]
    house = {kind: total for _, kind, _, total in rec.house}
    # What the player gained, the house lost: the books are closed.
    assert house["house_payments"] == D("-70.00")  # deposited 100, paid out 30
    assert house["house_stakes"] + house["house_payouts"] == D("1.25")  # sportsbook margin
    assert house["house_casino"] == D("1.00")


def test_settlement_rolls_back_and_settles_again_with_new_entries(ledger: Ledger) -> None:
    lg = ledger
    lg.post(L.deposit("pay-1", "p-1", D("10.00"), "EUR", NOW))
    lg.post(L.stake("b-1", "p-1", D("10.00"), "EUR", NOW))
    lg.post(L.settle("s-1", "b-1", "p-1", "EUR", D("25.00"), "win", NOW))
    again = lg.post(L.settle("s-1-bis", "b-1", "p-1", "EUR", D("25.00"), "win", NOW))
    assert (again.status, again.reason) == ("rejected", "already_settled")
    before = entries(lg)
    undone = lg.post(L.unsettle("r-1", "s-1", "p-1", "EUR", NOW))
    assert undone.applied and (undone.cash_after, undone.pending_after) == (D("0.00"), D("10.00"))
    assert entries(lg) == before + 4  # corrections are new entries, nothing edited
    assert lg.post(L.unsettle("r-2", "s-1", "p-1", "EUR", NOW)).reason == "already_closed"
    assert lg.post(L.settle("s-2", "b-1", "p-1", "EUR", D("0"), "lose", NOW)).applied
    assert cash(lg, "p-1") == (D("0.00"), D("0.00"))
    assert lg.reconcile().ok


def test_a_repeated_key_returns_the_first_result_and_moves_nothing(ledger: Ledger) -> None:
    lg = ledger
    first = lg.post(L.deposit("pay-1", "p-1", D("20.00"), "EUR", NOW))
    lg.post(L.stake("b-1", "p-1", D("5.00"), "EUR", NOW))
    count = entries(lg)
    again = lg.post(L.deposit("pay-1", "p-1", D("20.00"), "EUR", NOW.replace(hour=22)))
    assert again.duplicate and (again.txn_id, again.cash_after) == (first.txn_id, D("20.00"))
    assert entries(lg) == count and cash(lg, "p-1") == (D("15.00"), D("5.00"))
    with pytest.raises(L.IdempotencyConflict, match="deposit:pay-1"):
        lg.post(L.deposit("pay-1", "p-1", D("99.00"), "EUR", NOW))
    # A confirm after a release of the same withdrawal is the same key with other content.
    lg.post(L.withdrawal_reserve("pay-2", "p-1", D("5.00"), "EUR", NOW))
    lg.post(L.withdrawal_close("pay-2", "p-1", "EUR", NOW, completed=False))
    with pytest.raises(L.IdempotencyConflict):
        lg.post(L.withdrawal_close("pay-2", "p-1", "EUR", NOW, completed=True))


def test_a_refusal_is_a_result_too(ledger: Ledger) -> None:
    lg = ledger
    lg.post(L.deposit("pay-1", "p-1", D("5.00"), "EUR", NOW))
    refused = lg.post(L.stake("b-1", "p-1", D("10.00"), "EUR", NOW))
    assert (refused.status, refused.reason) == ("rejected", "insufficient_funds")
    lg.post(L.deposit("pay-2", "p-1", D("50.00"), "EUR", NOW))
    # The redelivered bet gets the same answer, not a second chance at a new balance.
    replay = lg.post(L.stake("b-1", "p-1", D("10.00"), "EUR", NOW))
    assert replay.duplicate and replay.reason == "insufficient_funds"
    assert cash(lg, "p-1") == (D("55.00"), D("0"))
    unknown = lg.post(L.settle("s-x", "b-missing", "p-1", "EUR", D("1"), "win", NOW))
    assert unknown.reason == "unknown_reference"


def test_a_batch_is_all_or_nothing_per_operation(ledger: Ledger) -> None:
    lg = ledger
    ops = [
        L.deposit("pay-1", "p-1", D("10.00"), "EUR", NOW),
        L.stake("b-1", "p-1", D("6.00"), "EUR", NOW),
        L.stake("b-2", "p-1", D("6.00"), "EUR", NOW),  # only 4.00 left: refused, alone
        L.stake("b-3", "p-1", D("4.00"), "EUR", NOW),
        L.deposit("pay-2", "p-2", D("3.00"), "EUR", NOW),
        L.casino_debit("tx-1", "p-2", D("1.00"), "EUR", NOW),
        L.deposit("pay-1", "p-1", D("10.00"), "EUR", NOW),  # a retry inside the batch
    ]
    results = lg.post_batch(ops)
    assert [(r.key, r.status, r.duplicate) for r in results] == [
        ("deposit:pay-1", "applied", False), ("bet:b-1", "applied", False),
        ("bet:b-2", "rejected", False), ("bet:b-3", "applied", False),
        ("deposit:pay-2", "applied", False), ("casino-debit:tx-1", "applied", False),
        ("deposit:pay-1", "applied", True),
    ]  # fmt: skip
    assert [r.cash_after for r in results[:4]] == [D("10.00"), D("4.00"), D("4.00"), D("0.00")]
    assert cash(lg, "p-1") == (D("0.00"), D("10.00")) and cash(lg, "p-2") == (D("2.00"), D("0"))
    rows = lg.conn.execute(
        """SELECT count(*) FROM ledger_entries e JOIN ledger_transactions t USING (txn_id)
            WHERE t.idempotency_key = 'bet:b-2'"""
    ).fetchone()
    assert rows == (0,)
    assert lg.reconcile().ok


def test_the_database_holds_the_invariants(ledger: Ledger) -> None:
    lg = ledger
    lg.post(L.deposit("pay-1", "p-1", D("10.00"), "EUR", NOW))
    conn = lg.conn  # the schema's owner (a superuser here): rights do not stop it, guards do
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="only through ledger_post"):
        conn.execute("UPDATE ledger_accounts SET balance = 1000 WHERE owner = 'p-1'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute("UPDATE ledger_entries SET amount = 1000")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute("DELETE FROM ledger_transactions")
    for table in ("ledger_entries", "ledger_transactions", "ledger_accounts", "player_events"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="TRUNCATE refused"):
            conn.execute(f"TRUNCATE {table} CASCADE")
    for table in ("ledger_entries", "ledger_transactions", "ledger_accounts"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="only through ledger_post"):
            conn.execute(f"INSERT INTO {table} SELECT * FROM {table} LIMIT 0")
    # The ledger's own owner (whom ledger_post runs as) still cannot break the books.
    conn.execute("SET ROLE croupier_ledger")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="only their balance"):
        conn.execute("UPDATE ledger_accounts SET owner = 'p-2' WHERE owner = 'p-1'")
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="missing account"):
        conn.execute(
            """INSERT INTO ledger_entries (txn_id, account_id, currency, amount)
               SELECT t.txn_id, -1, 'EUR', x.v
                 FROM (SELECT txn_id FROM ledger_transactions LIMIT 1) t,
                      (VALUES (5), (-5)) x(v)"""
        )
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="missing transaction"):
        conn.execute(
            """INSERT INTO ledger_entries (txn_id, account_id, currency, amount)
               SELECT -1, a.account_id, 'EUR', x.v
                 FROM (SELECT account_id FROM ledger_accounts WHERE kind = 'cash' LIMIT 1) a,
                      (VALUES (5), (-5)) x(v)"""
        )
    with pytest.raises(psycopg.errors.CheckViolation, match="does not balance"):
        conn.execute(
            """INSERT INTO ledger_entries (txn_id, account_id, currency, amount)
               SELECT txn_id, (SELECT account_id FROM ledger_accounts
                                WHERE owner = 'p-1' AND kind = 'cash'), 'EUR', 5
                 FROM ledger_transactions LIMIT 1"""
        )
    with pytest.raises(psycopg.errors.CheckViolation):
        # Even the one code path cannot take a player below zero.
        conn.execute(
            "UPDATE ledger_accounts SET balance = -1 WHERE owner = 'p-1' AND kind = 'cash'"
        )
    conn.execute("RESET ROLE")
    assert lg.reconcile().ok


def test_reconcile_finds_a_stored_balance_that_disagrees_with_the_entries(
    ledger: Ledger,
) -> None:
    lg = ledger
    lg.post(L.deposit("pay-1", "p-1", D("10.00"), "EUR", NOW))
    conn = lg.conn
    conn.execute("ALTER TABLE ledger_accounts DISABLE TRIGGER ledger_balance_guard")
    conn.execute("UPDATE ledger_accounts SET balance = 11 WHERE owner = 'p-1' AND kind = 'cash'")
    rec = lg.reconcile()
    assert not rec.ok
    assert rec.balance_drift == [("p-1", "cash", "EUR", D("11"), D("10.00"))]


def test_concurrent_connections_on_one_player_never_overdraw_or_double_apply(
    settings: Settings,
) -> None:
    dsn, schema = settings.migration_dsn, settings.pg_schema
    setup = Ledger.connect(dsn, schema)
    setup.post(L.deposit("pay-0", "hot", D("100.00"), "EUR", NOW))
    threads, per_thread = 12, 25
    results: list[L.LedgerResult] = []
    lock = threading.Lock()

    def hammer(t: int) -> None:
        lg = Ledger.connect(dsn, schema)
        try:
            for n in range(per_thread):
                # Every thread also sends bets another thread sends: concurrent duplicates.
                bet = f"b-{(t * per_thread + n) % (threads * per_thread // 2)}"
                ops = [
                    L.stake(bet, "hot", D("1.00"), "EUR", NOW),
                    L.casino_debit(f"c-{t}-{n}", f"other-{t}", D("0.50"), "EUR", NOW),
                ]
                if n % 5 == 0:
                    ops.append(L.deposit(f"d-{t}-{n}", f"other-{t}", D("5.00"), "EUR", NOW))
                got = lg.post_batch(ops) if n % 2 else [lg.post(op) for op in ops]
                with lock:
                    results.extend(got)
        finally:
            lg.close()

    workers = [threading.Thread(target=hammer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()

    stakes = [r for r in results if r.key.startswith("bet:")]
    distinct = {r.key for r in stakes}
    applied = {r.key for r in stakes if r.applied}
    # Each bet key decided once: every answer for a key is the first one.
    first = {r.key: (r.status, r.txn_id) for r in stakes if not r.duplicate}
    assert len(first) == len(distinct)
    assert all((r.status, r.txn_id) == first[r.key] for r in stakes)
    assert len(applied) == min(len(distinct), 100)  # 100.00 of funds, 1.00 stakes
    hot_cash, hot_pending = cash(setup, "hot")
    assert hot_cash == D("100.00") - len(applied) and hot_pending == len(applied)
    assert all(b.cash >= 0 for t in range(threads) for b in setup.balances(f"other-{t}"))
    assert setup.reconcile().ok
    setup.close()


def test_a_concurrent_duplicate_that_loses_the_race_returns_the_first_result(
    settings: Settings,
) -> None:
    dsn, schema = settings.migration_dsn, settings.pg_schema
    a = Ledger.connect(dsn, schema)
    b = Ledger.connect(dsn, schema)
    a.post(L.deposit("pay-0", "p-1", D("10.00"), "EUR", NOW))
    op = L.stake("b-1", "p-1", D("4.00"), "EUR", NOW)
    second: list[L.LedgerResult] = []
    with a.conn.transaction():
        (row,) = a.conn.execute("SELECT * FROM ledger_post(%s::jsonb)", (_payload([op], [0]),))
        racer = threading.Thread(target=lambda: second.append(b.post(op)))
        racer.start()
        time.sleep(0.5)
        assert racer.is_alive()  # blocked on the uncommitted key
    racer.join(30)
    assert second and second[0].duplicate and second[0].txn_id == row[5]
    assert cash(b, "p-1") == (D("6.00"), D("4.00"))
    a.close()
    b.close()


def test_wallet_commands(cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from croupier.cli import main

    settings = cli_env
    lg = Ledger.connect(settings.migration_dsn, settings.pg_schema)
    lg.post(L.deposit("pay-1", "p-1", D("22.50"), "EUR", NOW))
    lg.post(L.stake("b-1", "p-1", D("10.00"), "EUR", NOW))

    assert main(["wallet", "balance", "p-1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "player_id": "p-1", "currency": "EUR", "balance": "12.50", "pending": "10.00",
        "debt": "0.00",
    }  # fmt: skip
    assert main(["wallet", "balance", "nobody", "--json"]) == 1
    assert "has no wallet" in capsys.readouterr().err
    assert main(["wallet", "statement", "p-1", "--json"]) == 0
    lines = json.loads(capsys.readouterr().out)
    assert [(ln["operation"], ln["account"], ln["amount"]) for ln in lines] == [
        ("deposit", "cash", "22.50"), ("stake", "cash", "-10.00"), ("stake", "pending", "10.00"),
    ]  # fmt: skip
    assert main(["wallet", "reconcile"]) == 0
    assert "books balance" in capsys.readouterr().out
    lg.conn.execute("ALTER TABLE ledger_accounts DISABLE TRIGGER ledger_balance_guard")
    lg.conn.execute("UPDATE ledger_accounts SET balance = 0 WHERE owner = 'p-1' AND kind = 'cash'")
    assert main(["wallet", "reconcile", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["balance_drift"][0][:2] == ["p-1", "cash"]
    # A debt written off outside the ledger is drift too: the debt account is counted.
    assert report["debts"] == [{"currency": "EUR", "accounts": 1, "players_in_debt": 0,
                                "owed": "0.00"}]  # fmt: skip
    lg.conn.execute("UPDATE ledger_accounts SET balance = -5 WHERE owner = 'p-1' AND kind = 'debt'")
    assert main(["wallet", "reconcile", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert ["p-1", "debt", "EUR", "-5", "0"] in report["balance_drift"]
    assert report["debts"][0]["players_in_debt"] == 1 and report["debts"][0]["owed"] == "5.00"
    lg.close()


def test_a_mixed_batch_gets_every_answer_of_the_single_path(ledger: Ledger) -> None:
    """Replays, conflicts, a retry inside the batch, a new wallet of a known player (a new
    currency, whose house accounts are new too) and fresh stakes, in one call: each gets
    the answer it gets alone (migration 0017 answers known keys and opens wallets apart
    from the rest)."""
    lg = ledger
    lg.post_batch([L.deposit("pay-1", "p-1", D("10.00"), "EUR", NOW),
                   L.deposit("pay-2", "p-2", D("1.00"), "EUR", NOW)])  # fmt: skip
    refused = lg.post(L.stake("b-0", "p-2", D("5.00"), "EUR", NOW))
    assert refused.reason == "insufficient_funds"
    ops = [
        L.stake("b-1", "p-1", D("2.00"), "EUR", NOW),
        L.deposit("pay-1", "p-1", D("10.00"), "EUR", NOW),  # a replay: first result
        L.deposit("pay-3", "p-1", D("7.00"), "GBP", NOW),  # the player's first GBP
        L.stake("b-0", "p-2", D("5.00"), "EUR", NOW),  # a replay of a refusal
        L.deposit("pay-2", "p-2", D("9.00"), "EUR", NOW),  # the same key, other content
        L.stake("b-2", "p-1", D("3.00"), "GBP", NOW),
        L.stake("b-1", "p-1", D("2.00"), "EUR", NOW),  # a retry inside the batch
        L.stake("b-3", "p-3", D("1.00"), "EUR", NOW),  # a new player, nothing to stake
    ]
    got = [(r.key, r.status, r.reason, r.duplicate, r.cash_after, r.pending_after)
           for r in lg.post_batch(ops)]  # fmt: skip
    assert got == [
        ("bet:b-1", "applied", None, False, D("8.00"), D("2.00")),
        ("deposit:pay-1", "applied", None, True, D("10.00"), D("0")),
        ("deposit:pay-3", "applied", None, False, D("7.00"), D("0")),
        ("bet:b-0", "rejected", "insufficient_funds", True, D("1.00"), D("0")),
        ("deposit:pay-2", "conflict", "duplicate_conflict", True, D("1.00"), D("0")),
        ("bet:b-2", "applied", None, False, D("4.00"), D("3.00")),
        ("bet:b-1", "applied", None, True, D("8.00"), D("2.00")),
        ("bet:b-3", "rejected", "insufficient_funds", False, D("0"), D("0")),
    ]  # fmt: skip
    assert {(b.currency, b.cash, b.pending) for b in lg.balances("p-1")} == {
        ("EUR", D("8.00"), D("2.00")), ("GBP", D("4.00"), D("3.00"))}  # fmt: skip
    assert lg.reconcile().ok
    # Once more: every key known, nothing moves, the first results come back.
    again = lg.post_batch(ops)
    assert [(r.key, r.status, r.reason, r.cash_after) for r in again] == [
        (k, "conflict" if k == "deposit:pay-2" else s, r, c) for k, s, r, _, c, _ in got
    ]
    assert all(r.duplicate for r in again) and lg.reconcile().ok
