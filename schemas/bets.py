"""Inbound ``bets`` topic: bet placement requests, singles and accumulators."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, TypeAdapter, model_validator

from schemas.base import Id, InboundModel, SchemaVersion, Timestamp
from schemas.money import Odds, PositiveAmount, Priced
from schemas.odds import EventId, MarketId, OutcomeId
from schemas.players import PlayerId

BetId = Id

# As in Sportradar's bet-acceptance tickets: "none" rejects any price move, "higher"
# accepts the current price when it is equal or better for the player, "any" accepts it.
OddsChangePolicy = Literal["none", "higher", "any"]


class Selection(InboundModel):
    """One leg of a bet: an outcome and the price the player saw."""

    event_id: EventId
    market_id: MarketId
    outcome_id: OutcomeId
    odds: Odds


class BetRequest(InboundModel, Priced):
    """A player asks to place a bet; several selections make an accumulator."""

    amount_fields = ("stake",)

    bet_id: BetId
    player_id: PlayerId
    placed_at: Timestamp
    stake: PositiveAmount
    odds_change: OddsChangePolicy
    selections: list[Selection] = Field(min_length=1)
    schema_version: SchemaVersion = 1

    @model_validator(mode="after")
    def _one_leg_per_market(self) -> Self:
        # Two legs on one market are either the same bet twice or outcomes that exclude
        # each other; neither is a valid accumulator.
        seen: set[tuple[str, str]] = set()
        for leg in self.selections:
            key = (leg.event_id, leg.market_id)
            if key in seen:
                msg = f"two selections on market {leg.market_id!r} of event {leg.event_id!r}"
                raise ValueError(msg)
            seen.add(key)
        return self

    @property
    def is_accumulator(self) -> bool:
        return len(self.selections) > 1


BET_REQUEST: TypeAdapter[BetRequest] = TypeAdapter(BetRequest)
