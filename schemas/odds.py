"""Inbound ``odds`` topic: prices, bet stops, settlements, cancels, rollbacks, heartbeats.

Modelled on Sportradar's Unified Odds Feed. Every message may name its ``producer``;
``alive`` is a producer's heartbeat and belongs to no event. ``market_ids`` left out of
``bet_stop``, ``bet_cancel`` and the rollbacks means every market of the event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal, Self

from pydantic import Field, TypeAdapter, model_validator

from schemas.base import Id, InboundModel, ProducerId, SchemaVersion, Timestamp
from schemas.money import DeadHeatFactor, Odds

EventId = Id
MarketId = Id
OutcomeId = Id
Producer = ProducerId
MarketIds = Annotated[list[MarketId], Field(min_length=1)]

MarketStatus = Literal["active", "suspended", "deactivated", "settled", "cancelled", "handed_over"]
OutcomeResult = Literal["win", "lose", "void", "half_win", "half_lose"]


def _no_repeats(ids: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            msg = f"{what} {i!r} appears twice"
            raise ValueError(msg)
        seen.add(i)


class _OddsMessage(InboundModel):
    timestamp: Timestamp
    producer: Producer | None = None
    schema_version: SchemaVersion = 1


class _EventMessage(_OddsMessage):
    event_id: EventId


class _MarketsOptional(_EventMessage):
    market_ids: MarketIds | None = None

    @model_validator(mode="after")
    def _markets_once(self) -> Self:
        _no_repeats(self.market_ids or (), "market")
        return self


class _TimeWindow(_MarketsOptional):
    # Bets placed in [start_time, end_time) are affected; a missing end is open-ended.
    start_time: Timestamp | None = None
    end_time: Timestamp | None = None

    @model_validator(mode="after")
    def _window_in_order(self) -> Self:
        if self.start_time and self.end_time and self.start_time >= self.end_time:
            msg = "start_time must be before end_time"
            raise ValueError(msg)
        return self


class OutcomeOdds(InboundModel):
    """One outcome's current price."""

    outcome_id: OutcomeId
    odds: Odds


class MarketOdds(InboundModel):
    """A market's status and prices; an active market must price at least one outcome."""

    market_id: MarketId
    status: MarketStatus
    outcomes: list[OutcomeOdds] = Field(default_factory=list)

    @model_validator(mode="after")
    def _priced_when_active(self) -> Self:
        if self.status == "active" and not self.outcomes:
            msg = "an active market needs at least one outcome"
            raise ValueError(msg)
        _no_repeats((o.outcome_id for o in self.outcomes), "outcome")
        return self


class OddsChange(_EventMessage):
    """New prices or statuses for some markets of an event."""

    type: Literal["odds_change"]
    markets: list[MarketOdds] = Field(min_length=1)

    @model_validator(mode="after")
    def _markets_once(self) -> Self:
        _no_repeats((m.market_id for m in self.markets), "market")
        return self


class BetStop(_MarketsOptional):
    """Stop accepting bets on the listed markets (all markets of the event when absent)."""

    type: Literal["bet_stop"]


class OutcomeSettlement(InboundModel):
    """How one outcome resolved; ``dead_heat_factor`` scales a winning outcome's payout."""

    outcome_id: OutcomeId
    result: OutcomeResult
    dead_heat_factor: DeadHeatFactor | None = None

    @model_validator(mode="after")
    def _dead_heat_on_wins(self) -> Self:
        # A dead heat splits a win; on any other result the factor means nothing, so a
        # producer sending one has misread the feed.
        if self.dead_heat_factor is not None and self.result != "win":
            msg = f"dead_heat_factor only applies to a win, not {self.result}"
            raise ValueError(msg)
        return self


class MarketSettlement(InboundModel):
    """The results of one market's outcomes."""

    market_id: MarketId
    outcomes: list[OutcomeSettlement] = Field(min_length=1)

    @model_validator(mode="after")
    def _outcomes_once(self) -> Self:
        _no_repeats((o.outcome_id for o in self.outcomes), "outcome")
        return self


class BetSettlement(_EventMessage):
    """Results for some markets of an event: bets on them can be settled."""

    type: Literal["bet_settlement"]
    markets: list[MarketSettlement] = Field(min_length=1)

    @model_validator(mode="after")
    def _markets_once(self) -> Self:
        _no_repeats((m.market_id for m in self.markets), "market")
        return self


class BetCancel(_TimeWindow):
    """Void bets on the listed markets, optionally only those placed within a time window."""

    type: Literal["bet_cancel"]


class RollbackBetSettlement(_MarketsOptional):
    """Undo an earlier settlement of the listed markets: their bets are open again."""

    type: Literal["rollback_bet_settlement"]


class RollbackBetCancel(_TimeWindow):
    """Undo an earlier cancel of the listed markets and window: the bets stand again."""

    type: Literal["rollback_bet_cancel"]


class Alive(_OddsMessage):
    """A producer's heartbeat; a producer that falls silent has its markets suspended."""

    type: Literal["alive"]
    producer: Producer


OddsMessage = Annotated[
    OddsChange
    | BetStop
    | BetSettlement
    | BetCancel
    | RollbackBetSettlement
    | RollbackBetCancel
    | Alive,
    Field(discriminator="type"),
]
ODDS_MESSAGE: TypeAdapter[OddsMessage] = TypeAdapter(OddsMessage)
