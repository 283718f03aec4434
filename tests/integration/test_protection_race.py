"""Two workers deciding stakes of one player at the same moment cannot together pass a limit.

The sportsbook sink is driven directly (two instances, two connections, as two workers
would hold them) against the real PostgreSQL: a player with a 10.00 daily loss limit and
twenty 1.00 stakes split between two concurrent placements. The row lock taken for a
player with a money limit serializes them, so exactly ten are accepted in all.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from config.policies import load_policies
from config.settings import POLICY_DIR, Settings
from rules import ledger
from rules.sportsbook import Priced
from schemas.bets import BetRequest
from schemas.players import OpenSession, PlayerLimit, PlayerState
from schemas.records import SourcePosition
from sinks.postgres.ledger import Ledger
from sinks.postgres.players import PlayerBatch, PostgresPlayerSink
from sinks.postgres.sportsbook import BetBatch, BetInput, SportsbookSink
from tests.integration.helpers import query

pytestmark = pytest.mark.integration


def _stakes(first: int, partition: int, now: datetime) -> BetBatch:
    batch = BetBatch()
    for n in range(first, first + 10):
        bet = BetRequest.model_validate({
            "bet_id": f"b-{n}", "player_id": "p-1", "placed_at": now, "stake": "1.00",
            "currency": "EUR", "odds_change": "any",
            "selections": [{"event_id": "m-1", "market_id": "1x2", "outcome_id": "home",
                            "odds": "2.00"}],
        })  # fmt: skip
        source = SourcePosition(topic="bets", partition=partition, offset=n)
        verdict = Priced((Decimal("2.00"),), Decimal("2.00"))
        batch.inputs.append(BetInput(source, bet, f"h-{n}", verdict))
    return batch


async def _race(settings: Settings, now: datetime) -> None:
    dsn, schema = settings.pg_dsn.get_secret_value(), settings.pg_schema
    policies = load_policies(POLICY_DIR)
    state = PlayerState(
        player_id="p-1", jurisdiction="UK", currency="EUR", birth_date="1990-05-01",
        registered_at=now, version=3, last_event="limit_set", updated_at=now,
        source_partition=0, source_offset=2,
        session=OpenSession(session_id="s-1", started_at=now),
        limits=(PlayerLimit(kind="loss", period="day", amount=Decimal("10.00"), currency="EUR",
                            set_at=now),),
    )  # fmt: skip
    players = PostgresPlayerSink(dsn, schema, consumer_group="race")
    await players.open()
    await players.write(PlayerBatch(states={"p-1": state}))
    await players.close()
    sinks = [SportsbookSink(dsn, schema, consumer_group="race", policies=policies)
             for _ in range(2)]  # fmt: skip
    for sink in sinks:
        await sink.open()
    try:
        await asyncio.gather(sinks[0].decide(_stakes(0, 0, now), now),
                             sinks[1].decide(_stakes(10, 1, now), now))  # fmt: skip
    finally:
        for sink in sinks:
            await sink.close()


def test_two_concurrent_placements_cannot_together_pass_a_loss_limit(settings: Settings) -> None:
    now = datetime.now(UTC)
    book = Ledger.connect(settings.pg_dsn.get_secret_value(), settings.pg_schema)
    try:
        book.post(ledger.deposit("d-1", "p-1", Decimal("100.00"), "EUR", now))
    finally:
        book.close()
    asyncio.run(_race(settings, now))
    rows = query(settings, "SELECT status, reason, count(*), sum(stake) FROM bets GROUP BY 1, 2")
    summary = {(status, reason): (count, total) for status, reason, count, total in rows}
    assert summary == {
        ("open", None): (10, Decimal("10.00")),
        ("rejected", "loss_limit"): (10, Decimal("10.00")),
    }
    staked = query(settings, "SELECT sum(amount) FROM ledger_transactions "
                   "WHERE operation = 'stake' AND status = 'applied'")  # fmt: skip
    assert staked == [(Decimal("10.00"),)]
