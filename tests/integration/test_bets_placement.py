"""The bet placement transaction, driven directly against the real PostgreSQL.

One batch holds every kind of verdict (accepted singles and accumulators, protection's
refusals, a loss limit reached within the batch, the market fence, a stake the ledger
refuses, the odds table's refusal), a producer's retry and a reused bet id. What is
stored, published and audited is checked, then the same batch is replayed (the stored
decisions again, byte for byte, nothing written twice), and the audit records of stakes,
whose entries the sink no longer reads back, are held against the ledger's own rows.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from config.policies import load_policies
from config.settings import POLICY_DIR, Settings
from rules import ledger
from rules.sportsbook import Priced, Refused
from schemas.bets import BetRequest
from schemas.outbound import ReasonCode
from schemas.players import Exclusion, OpenSession, PlayerLimit, PlayerState
from schemas.records import SourcePosition
from sinks.base import Stored
from sinks.postgres.ledger import Ledger
from sinks.postgres.players import PlayerBatch, PostgresPlayerSink
from sinks.postgres.sportsbook import BetBatch, BetInput, SportsbookSink
from tests.integration.helpers import audit_trail_holds, ledger_reconciles, query

pytestmark = pytest.mark.integration

D = Decimal
NOW = datetime.now(UTC)
TOPIC = "bets"


def standing(pid: str, **fields: Any) -> PlayerState:
    return PlayerState(
        player_id=pid, jurisdiction="UK", currency="EUR", birth_date="1990-05-01",
        registered_at=NOW, version=2, last_event="registered", updated_at=NOW,
        source_partition=0, source_offset=1,
        session=OpenSession(session_id=f"s-{pid}", started_at=NOW), **fields,
    )  # fmt: skip


def item(
    bet_id: str, player: str, stake: str, legs: list[tuple[str, str]], offset: int, *,
    partition: int = 0, verdict: Priced | Refused | None = None, digest: str | None = None,
) -> BetInput:  # fmt: skip
    bet = BetRequest.model_validate({
        "bet_id": bet_id, "player_id": player, "placed_at": NOW, "stake": stake,
        "currency": "EUR", "odds_change": "none",
        "selections": [{"event_id": e, "market_id": m, "outcome_id": "home", "odds": "2.00"}
                       for e, m in legs],
    })  # fmt: skip
    if verdict is None:
        verdict = Priced((D("2.00"),) * len(legs), D(2) ** len(legs))
    source = SourcePosition(topic=TOPIC, partition=partition, offset=offset)
    value = bet.model_dump_json().encode()
    return BetInput(source, bet, digest or f"h-{bet_id}", verdict, player.encode(), value)


def first_batch() -> BetBatch:
    odds = Refused(ReasonCode.ODDS_CHANGED, "m-1/1x2/home: 2.00 is now 1.90")
    batch = BetBatch(inputs=[
        item("b-1", "p-1", "1.00", [("m-1", "1x2")], 0),
        item("b-2", "p-1", "1.00", [("m-1", "ou"), ("m-2", "1x2")], 1),  # an accumulator
        item("b-3", "p-2", "1.00", [("m-1", "1x2")], 2),  # self-excluded
        item("b-4", "p-1", "1.00", [("m-2", "1x2"), ("m-9", "1x2")], 3),  # m-9 is settled
        item("b-5", "p-3", "1.50", [("m-1", "1x2")], 0, partition=1),
        item("b-6", "p-3", "1.00", [("m-1", "1x2")], 1, partition=1),  # past the 2.00 loss limit
        item("b-7", "p-4", "1.00", [("m-1", "1x2")], 2, partition=1),  # never funded
        item("b-8", "p-1", "1.00", [("m-1", "1x2")], 4, verdict=odds),
        item("b-9", "p-1", "20000.00", [("m-1", "1x2")], 5),  # over the house's max stake
        item("b-1", "p-1", "1.00", [("m-1", "1x2")], 6),  # the producer's retry of b-1
        item("b-1", "p-1", "1.00", [("m-1", "1x2")], 7, digest="other"),  # same id, other bet
    ])  # fmt: skip
    batch.progress = {(TOPIC, 0): 8, (TOPIC, 1): 3}
    return batch


async def place(settings: Settings, batch: BetBatch) -> Stored:
    dsn, schema = settings.pg_dsn.get_secret_value(), settings.pg_schema
    sink = SportsbookSink(dsn, schema, consumer_group="place", policies=load_policies(POLICY_DIR))
    await sink.open()
    try:
        return await sink.decide(batch, NOW)
    finally:
        await sink.close()


async def register(settings: Settings) -> None:
    dsn, schema = settings.pg_dsn.get_secret_value(), settings.pg_schema
    players = PostgresPlayerSink(dsn, schema, consumer_group="place")
    await players.open()
    await players.write(PlayerBatch(states={
        "p-1": standing("p-1"),
        "p-2": standing("p-2", exclusion=Exclusion(since=NOW - timedelta(hours=1))),
        "p-3": standing("p-3", limits=(PlayerLimit(kind="loss", period="day",
                                                   amount=D("2.00"), currency="EUR",
                                                   set_at=NOW - timedelta(days=2)),)),
        "p-4": standing("p-4"),
    }))  # fmt: skip
    await players.close()


def decisions(placed: Stored) -> list[tuple[str, str, str | None]]:
    return [(d["bet_id"], d["status"], d["reason"])
            for d in (json.loads(v) for _, v in placed.outputs)]  # fmt: skip


def test_one_transaction_decides_stores_audits_and_replays_byte_for_byte(
    settings: Settings,
) -> None:
    asyncio.run(register(settings))
    book = Ledger.connect(settings.pg_dsn.get_secret_value(), settings.pg_schema)
    try:
        book.post_batch([ledger.deposit(f"d-{p}", p, D("10.00"), "EUR", NOW)
                         for p in ("p-1", "p-2", "p-3")])  # fmt: skip
    finally:
        book.close()
    query(settings, "INSERT INTO market_states (event_id, market_id, results, generation, "
          "last_at, last_type) VALUES ('m-9', '1x2', '{}', 1, now(), 'bet_settlement') "
          "RETURNING 1")  # fmt: skip

    placed = asyncio.run(place(settings, first_batch()))
    assert decisions(placed) == [
        ("b-1", "accepted", None),
        ("b-2", "accepted", None),
        ("b-3", "rejected", "self_excluded"),
        ("b-4", "rejected", "market_suspended"),
        ("b-5", "accepted", None),
        ("b-6", "rejected", "loss_limit"),
        ("b-7", "rejected", "insufficient_funds"),
        ("b-8", "rejected", "odds_changed"),
        ("b-9", "rejected", "max_stake"),
        ("b-1", "accepted", None),  # the retry gets the first answer
    ]
    assert placed.outputs[-1] == placed.outputs[0]
    assert [d.reason for _, d in placed.dead_letters] == ["duplicate_conflict"]

    stored = query(settings, "SELECT bet_id, status, reason, odds, decision, standing_version, "
                   "source_partition, source_offset FROM bets ORDER BY bet_id")  # fmt: skip
    assert [(b, s, r, o) for b, s, r, o, *_ in stored] == [
        ("b-1", "open", None, D("2.00")), ("b-2", "open", None, D("4.00")),
        ("b-3", "rejected", "self_excluded", None), ("b-4", "rejected", "market_suspended", None),
        ("b-5", "open", None, D("2.00")), ("b-6", "rejected", "loss_limit", None),
        ("b-7", "rejected", "insufficient_funds", None), ("b-8", "rejected", "odds_changed", None),
        ("b-9", "rejected", "max_stake", None),
    ]  # fmt: skip
    published = {json.loads(v)["bet_id"]: v.decode() for _, v in placed.outputs}
    assert all(row[4] == published[row[0]] for row in stored)
    assert {row[5] for row in stored} == {2}
    assert query(settings, "SELECT bet_id, leg, event_id, market_id, odds FROM bet_legs "
                 "ORDER BY 1, 2") == [
        ("b-1", 0, "m-1", "1x2", D("2.00")), ("b-2", 0, "m-1", "ou", D("2.00")),
        ("b-2", 1, "m-2", "1x2", D("2.00")), ("b-5", 0, "m-1", "1x2", D("2.00")),
    ]  # fmt: skip
    assert query(settings, "SELECT source_offset, bet_id FROM bet_duplicates") == [(6, "b-1")]
    assert query(settings, "SELECT topic, partition, next_offset FROM consumer_progress "
                 "WHERE consumer_group = 'place' ORDER BY 2") == [
        (TOPIC, 0, 8), (TOPIC, 1, 3)]  # fmt: skip
    stakes = query(settings, "SELECT idempotency_key, status, reason FROM ledger_transactions "
                   "WHERE operation = 'stake' ORDER BY 1")  # fmt: skip
    assert stakes == [("bet:b-1", "applied", None), ("bet:b-2", "applied", None),
                      ("bet:b-5", "applied", None),
                      ("bet:b-7", "rejected", "insufficient_funds")]  # fmt: skip

    # The trail: each stake's record, then every decision's, in order, on its partition's
    # chain; and the dead letter's. Every stake's entries are the ledger's own.
    trail = query(settings, "SELECT chain, seq, action, entity_id, body FROM audit_records "
                  "ORDER BY chain, seq")  # fmt: skip
    assert [(c, s, a, e) for c, s, a, e, _ in trail] == [
        ("bets/0", 1, "ledger.stake", "bet:b-1"), ("bets/0", 2, "ledger.stake", "bet:b-2"),
        ("bets/0", 3, "bet.accepted", "b-1"), ("bets/0", 4, "bet.accepted", "b-2"),
        ("bets/0", 5, "bet.rejected", "b-3"), ("bets/0", 6, "bet.rejected", "b-4"),
        ("bets/0", 7, "bet.rejected", "b-8"), ("bets/0", 8, "bet.rejected", "b-9"),
        ("bets/0", 9, "dead_letter.recorded", "bets/0/7"),
        ("bets/1", 1, "ledger.stake", "bet:b-5"), ("bets/1", 2, "ledger.stake", "bet:b-7"),
        ("bets/1", 3, "bet.accepted", "b-5"), ("bets/1", 4, "bet.rejected", "b-6"),
        ("bets/1", 5, "bet.rejected", "b-7"),
    ]  # fmt: skip
    for _, _, action, key, body in trail:
        if action == "ledger.stake":
            entries = query(
                settings,
                """SELECT a.owner, a.kind, e.amount::text FROM ledger_entries e
                     JOIN ledger_accounts a USING (account_id)
                     JOIN ledger_transactions t USING (txn_id)
                    WHERE t.idempotency_key = %s ORDER BY e.entry_id""",
                (key,),
            )
            recorded = json.loads(body)["after"]["entries"]
            assert [(e["owner"], e["account"], e["amount"]) for e in recorded] == entries
    assert json.loads(trail[2][4])["after"]["standing_version"] == 2
    audit_trail_holds(settings)
    ledger_reconciles(settings)

    # The same positions again (a crash before the offsets were committed): the stored
    # decisions, byte for byte, and nothing decided, posted or recorded again.
    counts = "SELECT (SELECT count(*) FROM audit_records), (SELECT count(*) FROM ledger_entries)"
    before = query(settings, counts)
    again = asyncio.run(place(settings, first_batch()))
    assert again.outputs == placed.outputs
    assert query(settings, counts) == before
    assert query(settings, "SELECT count(*) FROM bet_duplicates") == [(1,)]

    # A producer's retry at a new position later: the first answer, recorded as a duplicate.
    later = BetBatch(inputs=[item("b-6", "p-3", "1.00", [("m-1", "1x2")], 9, partition=1)])
    retried = asyncio.run(place(settings, later))
    assert retried.outputs == [placed.outputs[5]]
    assert query(settings, "SELECT source_partition, source_offset, bet_id FROM bet_duplicates "
                 "ORDER BY 1") == [(0, 6, "b-1"), (1, 9, "b-6")]  # fmt: skip
    audit_trail_holds(settings)


def test_a_stakes_entries_are_known_without_reading_them_back_even_in_debt(
    settings: Settings,
) -> None:
    """``ledger.known_entries`` against the rows ``ledger_post`` wrote, on both of its
    paths: the fast one, and the exact one a player in debt takes (migration 0014)."""
    book = Ledger.connect(settings.pg_dsn.get_secret_value(), settings.pg_schema)
    try:
        for op in (
            ledger.deposit("d-1", "p-d", D("10.00"), "EUR", NOW),
            ledger.stake("s-1", "p-d", D("10.00"), "EUR", NOW),
            ledger.settle("s-1/1", "s-1", "p-d", "EUR", D("20.00"), "win", NOW),
            ledger.withdrawal_reserve("w-1", "p-d", D("20.00"), "EUR", NOW),
            ledger.unsettle("s-1/2", "s-1/1", "p-d", "EUR", NOW),  # 20.00 owed
            ledger.casino_credit("c-1", "p-d", D("5.00"), "EUR", NOW),  # cash, still in debt
            ledger.deposit("d-2", "p-f", D("3.0"), "EUR", NOW),
            ledger.deposit("d-3", "p-g", D("1.00"), "EUR", NOW),
        ):
            assert book.post(op).applied, op
        assert [b.debt for b in book.balances("p-d")] == [D("20.00")]
        stakes = [
            ledger.stake("s-2", "p-d", D("1.50"), "EUR", NOW),  # exact path: in debt
            ledger.stake("s-3", "p-f", D("1.5"), "EUR", NOW),  # fast path, one decimal
            ledger.stake("s-4", "p-f", D("1"), "EUR", NOW),
            ledger.stake("s-5", "p-g", D("9.99"), "EUR", NOW),  # refused: no entries
        ]
        results = book.post_batch(stakes)
    finally:
        book.close()
    assert [r.status for r in results] == ["applied", "applied", "applied", "rejected"]
    for op, result in zip(stakes, results, strict=True):
        rows = query(
            settings,
            """SELECT a.owner, a.kind, e.amount::text FROM ledger_entries e
                 JOIN ledger_accounts a USING (account_id)
                WHERE e.txn_id = %s ORDER BY e.entry_id""",
            (result.txn_id,),
        )
        known = ledger.known_entries(op, result)
        assert known is not None
        assert [(e["owner"], e["account"], e["amount"]) for e in known] == rows
        stored = query(settings, "SELECT amount::text FROM ledger_transactions "
                       "WHERE txn_id = %s", (result.txn_id,))  # fmt: skip
        assert stored == [(str(op.amount),)]
