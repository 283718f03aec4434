"""Settling through ``SportsbookSink.apply_market_message`` against the real PostgreSQL.

The sink is driven directly, one message at a time, through a feed that settles, repeats,
arrives late, rolls back, resettles and cancels (whole markets and time windows), with a
settlement key an older version burnt, and once with a step the ledger refuses.
``transcript`` reads what every call returns and every table settling writes; the test
pins the statuses, each bet's settlement history and numbers, the markets' states and
that what is stored is what was published.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from config.settings import Settings
from rules import ledger as L
from rules.sportsbook import Priced
from schemas.bets import BetRequest
from schemas.odds import ODDS_MESSAGE
from schemas.records import SourcePosition
from sinks.postgres.ledger import Ledger
from sinks.postgres.sportsbook import (
    BetBatch,
    BetInput,
    SettlementMessage,
    SettlementRefused,
    SportsbookSink,
)
from tests.integration.helpers import query

pytestmark = pytest.mark.integration

D = Decimal
T0 = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 24, 22, 0, tzinfo=UTC)  # when the sink settles

# (bet id, player, stake, legs: (market, outcome, odds)); batch A at T0, batch B 10 min later.
BATCH_A = [
    ("b-1", "p-1", "10.00", [("1x2", "home", "2.10")]),
    ("b-2", "p-2", "5.00", [("1x2", "away", "3.60")]),
    ("b-3", "p-1", "2.00", [("1x2", "home", "2.10"), ("ou", "over", "1.90")]),
]
BATCH_B = [
    ("b-4", "p-2", "4.00", [("ou", "over", "1.90")]),
    ("b-5", "p-1", "3.00", [("1x2", "draw", "3.40")]),
]


def minutes(n: int) -> str:
    return (T0 + timedelta(minutes=n)).isoformat()


def message(kind: str, at: int, **fields: Any) -> SettlementMessage:
    parsed = ODDS_MESSAGE.validate_python(
        {"type": kind, "event_id": "m-1", "timestamp": minutes(at), **fields}
    )
    assert not isinstance(parsed, str)
    return parsed  # type: ignore[return-value]  # the four settlement kinds only


def results(market: str, **outcomes: str | tuple[str, str]) -> dict[str, Any]:
    listed = []
    for outcome, result in outcomes.items():
        if isinstance(result, tuple):
            listed.append({"outcome_id": outcome, "result": result[0],
                           "dead_heat_factor": result[1]})  # fmt: skip
        else:
            listed.append({"outcome_id": outcome, "result": result})
    return {"market_id": market, "outcomes": listed}


WINDOW = {"start_time": minutes(5), "end_time": minutes(15)}  # batch B, not batch A
# (offset, message): offset 1 twice is a replay of one position; 2 repeats 1 at a new one.
FEED: list[tuple[int, SettlementMessage]] = [
    (1, message("bet_settlement", 110, markets=[
        results("1x2", home="win", draw="lose", away="lose")])),
    (1, message("bet_settlement", 110, markets=[
        results("1x2", home="win", draw="lose", away="lose")])),
    (2, message("bet_settlement", 110, markets=[
        results("1x2", home="win", draw="lose", away="lose")])),
    (3, message("bet_settlement", 115, markets=[results("ou", over=("win", "0.5"))])),
    (4, message("rollback_bet_settlement", 120, market_ids=["1x2"])),
    (5, message("bet_settlement", 118, markets=[results("1x2", home="lose")])),  # late
    (6, message("bet_settlement", 125, markets=[
        results("1x2", home="lose", draw="lose", away="win")])),
    (7, message("bet_cancel", 130, **WINDOW)),  # every market of the event
    (8, message("rollback_bet_cancel", 135, **WINDOW)),
    (9, message("bet_cancel", 140, market_ids=["ou"])),
    (10, message("rollback_bet_settlement", 145)),
    (11, message("rollback_bet_cancel", 150, market_ids=["ou"])),
    (12, message("bet_settlement", 155, markets=[
        results("1x2", home="win", draw="lose", away="lose"), results("ou", over="lose")])),
]  # fmt: skip


def batch(bets: list[tuple[str, str, str, list[tuple[str, str, str]]]], at: datetime) -> BetBatch:
    out = BetBatch()
    for bet_id, player, stake, legs in bets:
        request = BetRequest.model_validate({
            "bet_id": bet_id, "player_id": player, "placed_at": at, "stake": stake,
            "currency": "EUR", "odds_change": "none",
            "selections": [{"event_id": "m-1", "market_id": m, "outcome_id": o, "odds": odds}
                           for m, o, odds in legs],
        })  # fmt: skip
        prices = tuple(D(odds) for _, _, odds in legs)
        total = D(1)
        for price in prices:
            total *= price
        source = SourcePosition(topic="bets", partition=0, offset=int(bet_id[2:]))
        out.inputs.append(BetInput(source, request, f"h-{bet_id}", Priced(prices, total)))
    return out


async def _run(settings: Settings) -> list[Any]:
    sink = SportsbookSink(settings.pg_dsn.get_secret_value(), settings.pg_schema,
                          consumer_group="settling")  # fmt: skip
    await sink.open()
    calls: list[Any] = []
    try:
        await sink.decide(batch(BATCH_A, T0), T0)
        await sink.decide(batch(BATCH_B, T0 + timedelta(minutes=10)), T0 + timedelta(minutes=10))
        for offset, msg in FEED:
            source = SourcePosition(topic="odds", partition=0, offset=offset)
            out = await sink.apply_market_message(source, msg, ["1x2", "ou", "other"], NOW)
            calls.append({
                "offset": offset,
                "changed": out.changed,
                "settlements": [(k.decode(), v.decode()) for k, v in out.settlements],
            })  # fmt: skip
    finally:
        await sink.close()
    return calls


def transcript(settings: Settings) -> dict[str, Any]:
    """Every call's answer, then every table settling writes, in full."""

    def rows(sql: str) -> list[list[str]]:
        return [[json.dumps(v) if isinstance(v, dict | list) else str(v) for v in row]
                for row in query(settings, sql)]  # fmt: skip

    return {
        "calls": asyncio.run(_run(settings)),
        "market_states": rows("SELECT event_id, market_id, results, cancelled, generation, "
                              "last_at, last_type FROM market_states ORDER BY 1, 2"),
        "bet_legs": rows("SELECT bet_id, leg, market_id, outcome_id, result, dead_heat_factor, "
                         "cancelled FROM bet_legs ORDER BY 1, 2"),
        "bets": rows("SELECT bet_id, status, settlement_id, result, payout, settle_seq "
                     "FROM bets ORDER BY 1"),
        "settlements": rows("SELECT settlement_id, bet_id, player_id, kind, result, payout, "
                            "message, source_offset FROM settlements ORDER BY 1"),
        "market_messages": rows("SELECT source_offset, event_id, type, payload, changed "
                                "FROM market_messages ORDER BY 1"),
        "ledger": rows("SELECT idempotency_key, operation, status, reason "
                       "FROM ledger_transactions WHERE idempotency_key LIKE 'settlement:%%' "
                       "ORDER BY txn_id"),
    }  # fmt: skip


def history(seen: dict[str, Any], bet_id: str) -> list[tuple[str, str, str | None, str]]:
    """The bet's settlement messages, in the order published (a replay's once)."""
    out: dict[str, tuple[str, str, str | None, str]] = {}
    for call in seen["calls"]:
        for _, value in call["settlements"]:
            s = json.loads(value)
            if s["bet_id"] == bet_id:
                out.setdefault(s["settlement_id"], (s["settlement_id"], s["kind"], s["result"],
                                                    s["payout"]))  # fmt: skip
    return list(out.values())


def test_a_feed_settles_resettles_rolls_back_and_cancels_the_book(settings: Settings) -> None:
    book = Ledger.connect(settings.pg_dsn.get_secret_value(), settings.pg_schema)
    try:
        for player in ("p-1", "p-2"):
            book.post(L.deposit(f"d-{player}", player, D("100.00"), "EUR", T0))
        # An older version's refusal under b-1's first rollback key: the step skips it.
        stale = book.post(L.unsettle("b-1/2", "b-1/1", "p-1", "EUR", T0))
        assert (stale.status, stale.reason) == ("rejected", "unknown_reference")
    finally:
        book.close()

    seen = transcript(settings)
    calls = seen["calls"]
    first, replayed, repeated = calls[0], calls[1], calls[2]
    assert first["changed"] == {"1x2": "settled"}
    assert replayed == first  # the same position: what the first run stored, byte for byte
    assert repeated == {"offset": 2, "changed": {}, "settlements": []}
    assert calls[5] == {"offset": 5, "changed": {}, "settlements": []}  # older than the market
    assert [c["changed"] for c in calls[3:]] == [
        {"ou": "settled"}, {"1x2": "suspended"}, {}, {"1x2": "settled"}, {}, {},
        {"ou": "cancelled"}, {"1x2": "suspended", "ou": "cancelled"}, {"ou": "suspended"},
        {"1x2": "settled", "ou": "settled"},
    ]  # fmt: skip

    assert history(seen, "b-1") == [
        ("b-1/1", "settled", "win", "21.00"),
        ("b-1/3", "rolled_back", None, "0.00"),  # b-1/2 is burnt
        ("b-1/4", "resettled", "lose", "0.00"),
        ("b-1/5", "rolled_back", None, "0.00"),
        ("b-1/6", "resettled", "win", "21.00"),
    ]
    assert history(seen, "b-4") == [
        ("b-4/1", "settled", "win", "3.80"),  # dead heat: 4.00 x 1.90 x 0.5
        ("b-4/2", "rolled_back", None, "0.00"),
        ("b-4/3", "voided", "void", "4.00"),  # the window covers batch B
        ("b-4/4", "rolled_back", None, "0.00"),
        ("b-4/5", "resettled", "win", "3.80"),
        ("b-4/6", "rolled_back", None, "0.00"),
        ("b-4/7", "voided", "void", "4.00"),  # the whole market cancelled
        ("b-4/8", "rolled_back", None, "0.00"),  # ... and standing again, with no results
        ("b-4/9", "resettled", "lose", "0.00"),
    ]
    assert seen["bets"] == [
        ["b-1", "settled", "b-1/6", "win", "21.00", "6"],
        ["b-2", "settled", "b-2/5", "lose", "0.00", "5"],
        ["b-3", "settled", "b-3/5", "lose", "0.00", "5"],
        ["b-4", "settled", "b-4/9", "lose", "0.00", "9"],
        ["b-5", "settled", "b-5/9", "lose", "0.00", "9"],
    ]
    settled_1x2 = ('{"away": {"result": "lose", "dead_heat_factor": null}, '
                   '"draw": {"result": "lose", "dead_heat_factor": null}, '
                   '"home": {"result": "win", "dead_heat_factor": null}}')  # fmt: skip
    assert seen["market_states"] == [
        ["m-1", "1x2", settled_1x2, "False", "7", "2026-11-24 21:35:00+00:00", "bet_settlement"],
        # A windowed cancel of the whole event reaches every market known, legs or not.
        ["m-1", "other", "None", "False", "2", "2026-11-24 21:15:00+00:00",
         "rollback_bet_cancel"],
        ["m-1", "ou", '{"over": {"result": "lose", "dead_heat_factor": null}}', "False", "7",
         "2026-11-24 21:35:00+00:00", "bet_settlement"],
    ]  # fmt: skip
    stored = [json.loads(row[4]) for row in seen["market_messages"]]
    assert stored == [c["changed"] for c in (calls[0], *calls[2:])]
    ledger_steps = seen["ledger"]
    assert ledger_steps[0] == ["settlement:b-1/2", "unsettle", "rejected", "unknown_reference"]
    assert all(status == "applied" for _, _, status, _ in ledger_steps[1:])
    published = {v for c in calls for _, v in c["settlements"]}
    assert published == {row[6] for row in seen["settlements"]}  # stored as published


def test_a_step_the_ledger_refuses_fails_the_whole_message(settings: Settings) -> None:
    dsn, schema = settings.pg_dsn.get_secret_value(), settings.pg_schema
    book = Ledger.connect(dsn, schema)
    try:
        book.post(L.deposit("d-1", "p-1", D("100.00"), "EUR", T0))
    finally:
        book.close()
    win = FEED[0][1]

    async def run() -> None:
        sink = SportsbookSink(dsn, schema, consumer_group="settling")
        await sink.open()
        try:
            await sink.decide(batch(BATCH_A[:1], T0), T0)
            closing = L.settle("b-1/9", "b-1", "p-1", "EUR", D("0.00"), "lose", T0)
            book = Ledger.connect(dsn, schema)  # the book and the ledger now disagree
            try:
                assert book.post(closing).applied
            finally:
                book.close()
            source = SourcePosition(topic="odds", partition=0, offset=1)
            with pytest.raises(SettlementRefused, match="settlement:b-1/1 of bet b-1 refused"):
                await sink.apply_market_message(source, win, [], NOW)
        finally:
            await sink.close()

    asyncio.run(run())
    # Nothing of the message is stored: not the market, not the legs, not the refusal.
    assert query(settings, "SELECT count(*) FROM market_states") == [(0,)]
    assert query(settings, "SELECT count(*) FROM market_messages") == [(0,)]
    assert query(settings, "SELECT result FROM bet_legs") == [(None,)]
    assert query(settings, "SELECT status, settle_seq FROM bets") == [("open", 0)]
    keys = query(settings, "SELECT idempotency_key FROM ledger_transactions "
                 "WHERE idempotency_key LIKE 'settlement:%%'")  # fmt: skip
    assert keys == [("settlement:b-1/9",)]
