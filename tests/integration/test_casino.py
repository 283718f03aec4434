"""The casino seamless wallet end to end: the real broker, PostgreSQL and a worker.

Every rule of ``rules/casino.py`` is played through ``casino`` and answered on
``casino-results``; the ledger is checked after each story, and a burst of rounds is
played while the worker is SIGKILLed.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from config.games import load_catalogue
from config.kafka import consume_until
from config.settings import Settings
from sinks.postgres.rebuild import rebuild
from tests.conftest import StartWorker
from tests.integration.helpers import (
    audit_trail_holds,
    casino_ready,
    done,
    kill_at,
    ledger_reconciles,
    paced,
    player_event,
    produce,
    query,
    wait_for,
)

pytestmark = pytest.mark.integration

D = Decimal
GAME = "croupier-dice"  # certified in every jurisdiction Croupier has a policy for


def _uncertified_in(jurisdiction: str) -> str:
    """A game of the shipped catalogue with no valid certification for ``jurisdiction``."""
    catalogue = load_catalogue()
    today = datetime.now(UTC).date()
    for game_id in sorted(catalogue.games):
        if catalogue.check(game_id, jurisdiction, today) == "game_not_certified":
            return game_id
    raise AssertionError(f"the sample catalogue has no game uncertified in {jurisdiction}")


def call(kind: str, tx: str, player: str, rnd: str, amount: str, **extra: Any) -> bytes:
    body = {"type": kind, "transaction_id": tx, "round_id": rnd, "game_id": GAME,
            "player_id": player, "amount": amount, "currency": "EUR",
            "timestamp": datetime.now(UTC).isoformat(), **extra}  # fmt: skip
    return json.dumps(body).encode()


def answers(settings: Settings, player: str, n: int) -> list[dict[str, Any]]:
    """The first ``n`` answers to ``player``'s calls, in the order they were published."""
    records = consume_until(
        settings, [settings.topic("casino-results")],
        want=lambda rs: sum(r.key == player for r in rs) >= n, timeout=60,
    )  # fmt: skip
    mine = sorted((r for r in records if r.key == player), key=lambda r: r.offset)
    return [json.loads(r.value) for r in mine[:n]]


def brief(a: dict[str, Any]) -> str:
    return f"{a['transaction_id']} {a['error'] or a['status']} {a['balance']}"


def test_every_wallet_rule_answered_and_retries_move_nothing(
    settings: Settings, worker_factory: StartWorker
) -> None:
    casino_ready(settings, worker_factory, {"p-1": "100.00"})
    uncertified = _uncertified_in("UK")
    p = "p-1"
    calls = [
        call("debit", "tx-1", p, "r-1", "10.00"),
        call("debit", "tx-1", p, "r-1", "10.00"),  # the aggregator's retry
        call("debit", "tx-1", p, "r-1", "11.00"),  # the same id asking for more
        call("credit", "tx-2", p, "r-1", "25.00"),
        call("rollback", "tx-3", p, "r-1", "10.00", reference_transaction_id="tx-1"),
        call("debit", "tx-4", p, "r-1", "5.00"),
        call("credit", "tx-5", p, "r-1", "0.00", round_closed=True),
        call("debit", "tx-6", p, "r-1", "1.00"),
        call("credit", "tx-7", p, "r-404", "3.00"),
        call("debit", "tx-8", p, "r-2", "1000.00"),
        call("debit", "tx-9", p, "r-3", "5.00"),
        call("rollback", "tx-10", p, "r-3", "5.00", reference_transaction_id="tx-9"),
        call("rollback", "tx-10", p, "r-3", "5.00", reference_transaction_id="tx-9"),
        call("rollback", "tx-11", p, "r-3", "5.00", reference_transaction_id="tx-9"),
        call("rollback", "tx-12", p, "r-4", "2.00", reference_transaction_id="tx-late"),
        call("debit", "tx-late", p, "r-4", "2.00"),
        call("debit", "tx-13", p, "r-5", "1.00", game_id="no-such-game"),
        call("debit", "tx-14", p, "r-6", "1.00", game_id=uncertified),
    ]
    # One message at a time and one batch at a time as well: the answers must not depend
    # on where batches happen to be cut.
    produce(settings, "casino", [(p, c) for c in calls[:9]])
    produce(settings, "casino", [(p, c) for c in calls[9:]])
    got = answers(settings, p, len(calls))
    assert [brief(a) for a in got] == [
        "tx-1 ok 90.00",
        "tx-1 ok 90.00",
        "tx-1 duplicate_conflict 90.00",
        "tx-2 ok 115.00",
        "tx-3 rollback_after_credit 115.00",
        "tx-4 ok 110.00",
        "tx-5 ok 110.00",
        "tx-6 round_closed 110.00",
        "tx-7 retry_later 110.00",
        "tx-8 insufficient_funds 110.00",
        "tx-9 ok 105.00",
        "tx-10 ok 110.00",
        "tx-10 ok 110.00",
        "tx-11 ok 110.00",
        "tx-12 ok 110.00",
        "tx-late transaction_rolled_back 110.00",
        "tx-13 unknown_game 110.00",
        "tx-14 game_not_certified 110.00",
    ]
    # A retry is answered with the first answer itself, byte for byte.
    assert got[0] == got[1] and got[11] == got[12]
    assert all(a["currency"] == "EUR" and a["round_id"] for a in got)

    # The ledger moved exactly what the answers say, once per transaction id.
    moved = query(settings, "SELECT idempotency_key, operation, amount FROM ledger_transactions "
                  "WHERE operation LIKE 'casino%%' AND status = 'applied' "
                  "ORDER BY txn_id")  # fmt: skip
    assert moved == [
        ("casino-debit:tx-1", "casino_debit", D("10.00")),
        ("casino-credit:tx-2", "casino_credit", D("25.00")),
        ("casino-debit:tx-4", "casino_debit", D("5.00")),
        ("casino-credit:tx-5", "casino_credit", D("0.00")),
        ("casino-debit:tx-9", "casino_debit", D("5.00")),
        ("casino-rollback:tx-10", "casino_rollback", D("5.00")),
    ]
    cash = query(settings, "SELECT balance FROM ledger_accounts WHERE owner = %s AND kind = "
                 "'cash'", (p,))  # fmt: skip
    assert cash == [(D("110.00"),)]
    rounds = dict(
        (r, (c is not None, z is not None))
        for r, c, z in query(settings, "SELECT round_id, credited_at, closed_at FROM casino_rounds")
    )
    assert rounds == {"r-1": (True, True), "r-3": (False, False)}
    outcomes = query(settings, "SELECT outcome, count(*) FROM casino_calls GROUP BY 1 ORDER BY 1")
    assert outcomes == [("conflict", 1), ("decided", 14), ("duplicate", 2), ("retry", 1)]
    ledger_reconciles(settings)
    # Each decided call left one audit record, hash-chained: the balance before and after.
    trail = query(settings, "SELECT entity_id, action, body FROM audit_records "
                  "WHERE entity = 'casino_transaction' ORDER BY source_offset")  # fmt: skip
    assert [(e, a) for e, a, _ in trail][:3] == [
        ("tx-1", "casino.debit"), ("tx-2", "casino.credit"), ("tx-3", "casino.rollback")
    ]  # fmt: skip
    assert len(trail) == 14  # tx-7 (retry_later) changed nothing and records nothing
    first = json.loads(trail[0][2])
    assert first["before"]["balance"] == "100.00" and first["after"]["balance"] == "90.00"
    assert first["after"]["ledger_key"] == "casino-debit:tx-1" and first["after"]["moved"] is True
    refused = json.loads(trail[2][2])["after"]
    assert refused["error"] == "rollback_after_credit" and refused["moved"] is False
    audit_trail_holds(settings)
    # The relay puts every committed record on the audit topic, the stored JSON itself:
    # players', casino calls' and ledger operations' alike.
    stored = {body for (body,) in query(settings, "SELECT body FROM audit_records")}
    published = consume_until(
        settings, [settings.topic("audit")],
        want=lambda rs: {r.value.decode() for r in rs} >= stored, timeout=60,
    )  # fmt: skip
    assert {r.value.decode() for r in published} == stored
    assert {json.loads(b)["entity"] for b in stored} == {
        "player", "casino_transaction", "ledger_transaction", "payment"
    }  # fmt: skip
    # The stores are append-only: a correction is a new call, never an edit.
    with pytest.raises(Exception, match="append-only"):
        query(settings, "UPDATE casino_transactions SET amount = 0")


def test_protection_stops_debits_but_credits_and_rollbacks_are_always_paid(
    settings: Settings, worker_factory: StartWorker
) -> None:
    casino_ready(settings, worker_factory, {"p-x": "50.00", "p-l": "50.00"})
    produce(settings, "players", [("p-l", player_event(
        "limit_set", "p-l", limit="loss", period="day", amount="20.00", currency="EUR",
        timestamp=datetime.now(UTC).isoformat()))])  # fmt: skip
    wait_for(lambda: done(settings, "players") >= 5, timeout=30, what="the limit")
    produce(settings, "casino", [
        ("p-x", call("debit", "x-1", "p-x", "rx-1", "5.00")),
        ("p-x", call("debit", "x-2", "p-x", "rx-2", "5.00")),
        ("p-l", call("debit", "l-1", "p-l", "rl-1", "15.00")),
        ("p-l", call("debit", "l-2", "p-l", "rl-2", "6.00")),
        ("p-l", call("debit", "l-3", "p-l", "rl-2", "5.00")),
        ("ghost", call("debit", "g-1", "ghost", "rg-1", "1.00")),
    ])  # fmt: skip
    assert [brief(a) for a in answers(settings, "p-l", 3)] == [
        "l-1 ok 35.00", "l-2 loss_limit 35.00", "l-3 ok 30.00",
    ]  # fmt: skip
    assert [brief(a) for a in answers(settings, "ghost", 1)] == ["g-1 unknown_player 0.00"]
    assert len(answers(settings, "p-x", 2)) == 2

    produce(settings, "players", [("p-x", player_event(
        "self_excluded", "p-x", until=None, timestamp=datetime.now(UTC).isoformat()))])  # fmt: skip
    wait_for(lambda: done(settings, "players") >= 6, timeout=30, what="the exclusion")
    produce(settings, "casino", [
        ("p-x", call("debit", "x-3", "p-x", "rx-1", "1.00")),
        ("p-x", call("credit", "x-4", "p-x", "rx-1", "7.50", round_closed=True)),
        ("p-x", call("rollback", "x-5", "p-x", "rx-2", "5.00", reference_transaction_id="x-2")),
    ])  # fmt: skip
    assert [brief(a) for a in answers(settings, "p-x", 5)] == [
        "x-1 ok 45.00", "x-2 ok 40.00",
        "x-3 self_excluded 40.00", "x-4 ok 47.50", "x-5 ok 52.50",
    ]  # fmt: skip
    # A win counts back against the loss limit: the credit makes room for another debit.
    produce(settings, "casino", [
        ("p-l", call("credit", "l-4", "p-l", "rl-1", "10.00", round_closed=True)),
        ("p-l", call("debit", "l-5", "p-l", "rl-3", "10.00")),
    ])  # fmt: skip
    assert [brief(a) for a in answers(settings, "p-l", 5)][3:] == [
        "l-4 ok 40.00", "l-5 ok 30.00",
    ]  # fmt: skip
    ledger_reconciles(settings)


def test_out_of_order_calls_are_retryable_and_players_cannot_block_each_other(
    settings: Settings, worker_factory: StartWorker
) -> None:
    worker = casino_ready(settings, worker_factory, {"p-a": "50.00", "p-b": "50.00"})
    credit = call("credit", "o-2", "p-a", "ro-1", "4.00", round_closed=True)
    produce(settings, "casino", [
        ("p-a", credit),  # before its debit: retry_later, not the id's answer
        ("p-a", call("rollback", "o-9", "p-a", "ro-2", "3.00", reference_transaction_id="s-1")),
    ])  # fmt: skip
    assert len(answers(settings, "p-a", 2)) == 2  # the tombstone is in before p-b's debit
    produce(settings, "casino", [
        ("p-b", call("debit", "s-1", "p-b", "ro-3", "3.00")),  # p-a's tombstone is not p-b's
        ("p-a", call("debit", "o-1", "p-a", "ro-1", "2.00")),
        ("p-a", call("rollback", "o-3", "p-a", "ro-1", "2.00", currency="USD",
                     reference_transaction_id="o-1")),  # another currency than its debit
        ("p-a", credit),  # the aggregator's retry, now after the debit
    ])  # fmt: skip
    assert [brief(a) for a in answers(settings, "p-a", 5)] == [
        "o-2 retry_later 50.00", "o-9 ok 50.00", "o-1 ok 48.00", "o-3 invalid 48.00",
        "o-2 ok 52.00",
    ]  # fmt: skip
    assert [brief(a) for a in answers(settings, "p-b", 1)] == ["s-1 ok 47.00"]
    # The worker went on: the same process answers the next call.
    produce(settings, "casino", [("p-a", call("debit", "o-4", "p-a", "ro-4", "1.00"))])
    assert brief(answers(settings, "p-a", 6)[5]) == "o-4 ok 51.00"
    assert worker.proc.poll() is None and worker.history == []
    stored = query(settings, "SELECT transaction_id, status, error FROM casino_transactions "
                   "WHERE transaction_id LIKE 'o-%%'")  # fmt: skip
    assert sorted(stored) == [
        ("o-1", "ok", None), ("o-2", "ok", None), ("o-3", "rejected", "invalid"),
        ("o-4", "ok", None), ("o-9", "ok", None),
    ]  # fmt: skip
    assert query(settings, "SELECT outcome, count(*) FROM casino_calls WHERE transaction_id "
                 "= 'o-2' GROUP BY 1 ORDER BY 1") == [("decided", 1), ("retry", 1)]  # fmt: skip
    ledger_reconciles(settings)
    audit_trail_holds(settings)


ROUNDS_PLAYERS = 30
ROUNDS = 40  # per player: a debit and a credit (or a rollback) each


def _burst(rng: random.Random) -> tuple[list[tuple[str, bytes]], dict[str, D]]:
    """Rounds interleaved across players, some retried; the balance each must end with."""
    items: list[tuple[str, bytes]] = []
    final = {}
    for n in range(ROUNDS_PLAYERS):
        p = f"p-{n}"
        cash = D("100.00")
        for r in range(ROUNDS):
            stake = D(rng.choice(["0.50", "1.00", "2.00"]))
            debit = call("debit", f"{p}-d{r}", p, f"{p}-r{r}", str(stake))
            mine = [debit]
            if rng.random() < 0.1:
                tx, body = f"{p}-x{r}", {"reference_transaction_id": f"{p}-d{r}"}
                mine.append(call("rollback", tx, p, f"{p}-r{r}", str(stake), **body))
            else:
                win = rng.choice([D("0.00"), D("0.00"), stake * 2, stake * 5])
                mine.append(call("credit", f"{p}-c{r}", p, f"{p}-r{r}", str(win),
                                 round_closed=True))  # fmt: skip
                cash += win - stake
            if rng.random() < 0.15:
                mine.append(rng.choice(mine))  # an aggregator's retry
            items.extend((p, m) for m in mine)
        final[p] = cash
    # Players' calls interleave; each player's stay in order (one key, one partition).
    by_player: dict[str, list[bytes]] = defaultdict(list)
    for p, m in items:
        by_player[p].append(m)
    mixed: list[tuple[str, bytes]] = []
    while by_player:
        p = rng.choice(sorted(by_player))
        mixed.append((p, by_player[p].pop(0)))
        if not by_player[p]:
            del by_player[p]
    return mixed, final


def test_sigkill_during_a_burst_of_rounds_debits_and_credits_once(
    settings: Settings, worker_factory: StartWorker
) -> None:
    rng = random.Random(777)
    players = {f"p-{n}": "100.00" for n in range(ROUNDS_PLAYERS)}
    worker = casino_ready(settings, worker_factory, players)
    items, final = _burst(rng)
    producer = paced(settings, "casino", items, per=100, pause=0.05, out=[])
    kill_at(settings, worker, worker_factory, "casino", len(items),
            [(0.25, "kill"), (0.55, "kill"), (0.8, "kill")], rng)  # fmt: skip
    producer.join()
    wait_for(lambda: done(settings, "casino") >= len(items), timeout=180, what="every call")
    assert worker.history == [-9, -9, -9]

    # Every call answered at its own position, once; each transaction id decided once.
    assert query(settings, "SELECT count(*) FROM casino_calls") == [(len(items),)]
    ids = {json.loads(m)["transaction_id"] for _, m in items}
    assert query(settings, "SELECT count(*) FROM casino_transactions") == [(len(ids),)]
    assert query(settings, "SELECT count(*) FROM casino_transactions WHERE status <> 'ok'") == [
        (0,)
    ]
    # Money moved once per transaction: one ledger operation per id, balances exact.
    posted = query(settings, "SELECT count(*), count(DISTINCT idempotency_key) FROM "
                   "ledger_transactions WHERE operation LIKE 'casino%%'")  # fmt: skip
    assert posted == [(len(ids), len(ids))]
    cash = dict(query(settings, "SELECT owner, balance FROM ledger_accounts WHERE kind = 'cash'"))
    assert cash == final
    # Every answer published for an id is the same bytes, and every id was answered.
    records = consume_until(
        settings, [settings.topic("casino-results")],
        want=lambda rs: len({json.loads(r.value)["transaction_id"] for r in rs}) >= len(ids),
        timeout=60,
    )  # fmt: skip
    published: dict[str, set[bytes]] = defaultdict(set)
    for r in records:
        published[json.loads(r.value)["transaction_id"]].add(r.value)
    assert set(published) == ids and all(len(v) == 1 for v in published.values())
    ledger_reconciles(settings)
    # One audit record per transaction id, none lost or doubled by the kills; chains hold.
    chained = query(settings, "SELECT entity_id, count(*) FROM audit_records "
                    "WHERE entity = 'casino_transaction' GROUP BY 1")  # fmt: skip
    assert {e for e, _ in chained} == ids and all(n == 1 for _, n in chained)
    # ... and one per committed ledger operation (deposits and casino moves alike), so
    # every wallet rebuilds from the trail alone to what the ledger holds.
    keys = query(settings, "SELECT entity_id, count(*) FROM audit_records "
                 "WHERE entity = 'ledger_transaction' GROUP BY 1")  # fmt: skip
    posted_keys = query(settings, "SELECT idempotency_key FROM ledger_transactions")
    assert {k for k, _ in keys} == {k for (k,) in posted_keys} and all(n == 1 for _, n in keys)
    with psycopg.connect(settings.pg_dsn.get_secret_value(),
                         options=f"-c search_path={settings.pg_schema}") as conn:  # fmt: skip
        wallets = rebuild(conn)
    assert len(wallets) == ROUNDS_PLAYERS and all(w.ok for w in wallets), [
        w.differences for w in wallets if not w.ok
    ]
    audit_trail_holds(settings)
