"""SIGKILL the worker while thousands of bets and their settlements stream through.

After every restart the flows must pick up where PostgreSQL says they were: every bet has
exactly one decision (published again only byte for byte), every accepted stake is
reserved once, every bet is settled once with the payout its prices and results say,
and the ledger reconciles.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from decimal import ROUND_DOWN, Decimal
from typing import Any

import psycopg
import pytest

from config.kafka import consume_until
from config.settings import Settings
from sinks.postgres.ledger import Ledger
from sinks.postgres.rebuild import rebuild
from tests.conftest import StartWorker
from tests.integration.helpers import (
    audit_trail_holds,
    bet,
    done,
    feed,
    joined,
    kill_at,
    odds_change,
    paced,
    payment,
    produce,
    query,
    settlement,
    wait_for,
)

pytestmark = pytest.mark.integration

PLAYERS = 120
EVENTS = 12
BETS = 2500
PRICES = {"home": "2.10", "draw": "3.40", "away": "3.60"}
DEPOSIT = Decimal("1000.00")


def _bets(rng: random.Random) -> tuple[list[tuple[str, bytes]], int]:
    items: list[tuple[str, bytes]] = []
    malformed = 0
    for n in range(BETS):
        pid = f"p-{rng.randrange(PLAYERS)}"
        events = rng.sample(range(EVENTS), 2 if rng.random() < 0.2 else 1)
        legs = [(f"m-{e}", "1x2", o, PRICES[o]) for e in events
                for o in [rng.choice(sorted(PRICES))]]  # fmt: skip
        stake = f"{rng.randint(1, 30)}.00"
        items.append((pid, bet(f"b-{n}", pid, stake, legs)))
        if rng.random() < 0.03:  # a producer retry
            items.append((pid, bet(f"b-{n}", pid, stake, legs)))
        if rng.random() < 0.01:
            items.append((pid, b"{not json"))
            malformed += 1
    return items, malformed


def test_sigkill_during_bets_and_settlement_loses_nothing_and_pays_once(
    settings: Settings, worker_factory: StartWorker
) -> None:
    rng = random.Random(4242)
    players = [f"p-{n}" for n in range(PLAYERS)]
    produce(settings, "players", [kv for p in players for kv in joined(p)])
    produce(settings, "odds", [(f"m-{e}", odds_change(f"m-{e}", {"1x2": PRICES}))
                               for e in range(EVENTS)])  # fmt: skip
    worker = worker_factory(settings)
    worker.wait_ready()
    wait_for(lambda: done(settings, "players") == 2 * PLAYERS, timeout=90, what="registrations")
    deposits = [(p, payment("deposit", f"d-{p}", p, str(DEPOSIT))) for p in players]
    produce(settings, "payments", deposits)
    wait_for(lambda: done(settings, "payments") == PLAYERS, timeout=90, what="deposits")
    wait_for(lambda: done(settings, "odds") == EVENTS, timeout=30, what="odds")

    items, malformed = _bets(rng)
    delivered: list[Any] = []
    producer = paced(settings, "bets", items, per=100, pause=0.05, out=delivered)
    kill_at(settings, worker, worker_factory, "bets", len(items),
            [(0.2, "kill"), (0.5, "kill"), (0.7, "term")], rng)  # fmt: skip
    producer.join()
    wait_for(lambda: done(settings, "bets") >= len(items), timeout=180, what="every bet")

    # A bet stop and then results for every event, streamed while the worker is killed again.
    results = {e: rng.choice(sorted(PRICES)) for e in range(EVENTS)}
    settles = [
        kv for e, w in results.items() for kv in (
            (f"m-{e}", feed("bet_stop", f"m-{e}", at="2026-11-24T20:55:00Z")),
            (f"m-{e}", settlement(f"m-{e}", {"1x2": {o: "win" if o == w else "lose"
                                                     for o in PRICES}},
                                  at="2026-11-24T21:00:00Z")),
        )
    ]  # fmt: skip
    producer = paced(settings, "odds", settles, per=1, pause=0.15, out=[])
    kill_at(settings, worker, worker_factory, "odds", EVENTS + len(settles),
            [(0.6, "kill"), (0.85, "kill")], rng)  # fmt: skip
    producer.join()
    wait_for(lambda: done(settings, "odds") >= EVENTS + len(settles), timeout=120, what="settled")
    time.sleep(2)  # anything applied twice would show up now
    assert worker.history == [-9, -9, 0, -9, -9]

    # Every bets message has exactly one outcome at its own position.
    produced = {(m.partition(), m.offset()) for m in delivered}
    bets_topic = settings.topic("bets")
    rows = query(settings, "SELECT source_partition, source_offset FROM bets")
    rows += query(settings, "SELECT source_partition, source_offset FROM bet_duplicates")
    rows += query(settings, "SELECT source_partition, source_offset FROM dead_letters "
                  "WHERE source_topic = %s", (bets_topic,))  # fmt: skip
    assert len(rows) == len(items) and set(rows) == produced
    assert query(settings, "SELECT count(*) FROM bets") == [(BETS,)]
    letters = query(settings, "SELECT reason, count(*) FROM dead_letters WHERE source_topic = %s "
                    "GROUP BY 1", (bets_topic,))  # fmt: skip
    assert dict(letters) == ({"malformed_json": malformed} if malformed else {})

    # One decision per bet id on the topic: a replay republishes the same bytes.
    records = consume_until(
        settings, [settings.topic("bet-decisions")],
        want=lambda rs: len({json.loads(r.value)["bet_id"] for r in rs}) >= BETS, timeout=60,
    )  # fmt: skip
    published: dict[str, set[bytes]] = defaultdict(set)
    for r in records:
        published[json.loads(r.value)["bet_id"]].add(r.value)
    assert len(published) == BETS and all(len(v) == 1 for v in published.values())
    stored = dict(query(settings, "SELECT bet_id, decision FROM bets"))
    assert all(stored[b] == next(iter(v)).decode() for b, v in published.items())

    # Stakes reserved once, bets settled once, payouts as the prices and results say.
    accepted = query(
        settings, "SELECT bet_id, player_id, stake FROM bets WHERE status <> 'rejected'"
    )
    assert len(accepted) > BETS * 0.9
    stakes = dict(query(settings, "SELECT player_id, count(*) FROM ledger_transactions "
                        "WHERE operation = 'stake' AND status = 'applied' GROUP BY 1"))  # fmt: skip
    per_player: dict[str, int] = defaultdict(int)
    for _, pid, _ in accepted:
        per_player[pid] += 1
    assert stakes == dict(per_player)
    legs: dict[str, list[tuple[str, Decimal]]] = defaultdict(list)
    for bet_id, event_id, outcome, odds in query(
        settings, "SELECT bet_id, event_id, outcome_id, odds FROM bet_legs"
    ):
        legs[bet_id].append((outcome if results[int(event_id[2:])] == outcome else "", odds))
    assert query(settings, "SELECT count(*) FROM bets WHERE status = 'open'") == [(0,)]
    settles_per_bet = dict(query(settings, "SELECT bet_id, count(*) FROM settlements GROUP BY 1"))
    assert settles_per_bet == {b: 1 for b, _, _ in accepted}
    expected_cash: dict[str, Decimal] = dict.fromkeys(players, DEPOSIT)
    for bet_id, pid, stake in accepted:
        factor = Decimal(1)
        for won, odds in legs[bet_id]:
            factor *= odds if won else 0
        payout = (stake * factor).quantize(Decimal("0.01"), ROUND_DOWN)
        expected_cash[pid] += payout - stake
    cash = dict(query(settings, "SELECT owner, balance FROM ledger_accounts WHERE kind = 'cash'"))
    assert cash == expected_cash
    pending = query(settings, "SELECT sum(balance) FROM ledger_accounts WHERE kind = 'pending'")
    assert pending == [(Decimal(0),)]
    ledger = Ledger.connect(settings.pg_dsn.get_secret_value(), settings.pg_schema)
    try:
        assert ledger.reconcile().ok
    finally:
        ledger.close()

    # The audit trail lost nothing and doubled nothing through the kills: one record per
    # committed ledger operation and per bet decision, every chain holds, and every wallet
    # rebuilds from the trail alone to what the ledger holds.
    keys = query(settings, "SELECT entity_id, count(*) FROM audit_records "
                 "WHERE entity = 'ledger_transaction' GROUP BY 1")  # fmt: skip
    posted = query(settings, "SELECT idempotency_key FROM ledger_transactions")
    assert {k for k, _ in keys} == {k for (k,) in posted} and all(n == 1 for _, n in keys)
    decisions = query(settings, "SELECT entity_id, count(*) FROM audit_records "
                      "WHERE entity = 'bet' GROUP BY 1")  # fmt: skip
    assert len(decisions) == BETS and all(n == 1 for _, n in decisions)
    # So did every other change: odds applied (the bet stops through the kills), payment
    # decisions, dead letters.
    changes = query(settings, "SELECT action, entity_id, count(*) FROM audit_records "
                    "WHERE entity IN ('odds', 'payment', 'dead_letter') GROUP BY 1, 2")  # fmt: skip
    per_action: dict[str, set[str]] = defaultdict(set)
    for action, entity_id, n in changes:
        assert n == 1, (action, entity_id, n)
        per_action[action].add(entity_id)
    events = {f"m-{e}" for e in range(EVENTS)}
    assert per_action.pop("odds.changed") == events
    assert per_action.pop("odds.stopped") == events
    assert per_action.pop("payment.accepted") == {f"d-{p}" for p in players}
    assert per_action.pop("dead_letter.recorded", set()) == {
        f"{bets_topic}/{p}/{o}" for p, o in query(
            settings, "SELECT source_partition, source_offset FROM dead_letters")
    }  # fmt: skip
    assert not per_action
    audit_trail_holds(settings)
    with psycopg.connect(settings.pg_dsn.get_secret_value(),
                         options=f"-c search_path={settings.pg_schema}") as conn:  # fmt: skip
        wallets = rebuild(conn)
    assert len(wallets) == PLAYERS and all(w.ok for w in wallets)
