"""Inbound ``casino`` topic: seamless-wallet calls from game aggregators.

A ``debit`` takes a stake, a ``credit`` pays a win (zero for a lost round: aggregators
send those to close the round), a ``rollback`` undoes an earlier debit named by
``reference_transaction_id``.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, TypeAdapter, model_validator

from schemas.base import Id, InboundModel, SchemaVersion, Timestamp
from schemas.money import NonNegativeAmount, PositiveAmount, Priced
from schemas.players import PlayerId

TransactionId = Id
RoundId = Id
GameId = Id
BuildHash = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _CasinoCall(InboundModel, Priced):
    transaction_id: TransactionId
    round_id: RoundId
    game_id: GameId
    player_id: PlayerId
    timestamp: Timestamp
    # Croupier's own games name the SHA-256 of the certified RNG build that drew the round,
    # for the audit trail; an aggregator's calls leave it out.
    rng_build: BuildHash | None = None
    schema_version: SchemaVersion = 1


class Debit(_CasinoCall):
    """Take a stake from the wallet for a game round."""

    type: Literal["debit"]
    amount: PositiveAmount


class Credit(_CasinoCall):
    """Pay a round's win into the wallet; ``round_closed`` says no more calls follow."""

    type: Literal["credit"]
    amount: NonNegativeAmount
    round_closed: bool = False


class Rollback(_CasinoCall):
    """Undo the debit ``reference_transaction_id``: its amount goes back to the wallet."""

    type: Literal["rollback"]
    reference_transaction_id: TransactionId
    amount: PositiveAmount

    @model_validator(mode="after")
    def _refers_elsewhere(self) -> Self:
        if self.reference_transaction_id == self.transaction_id:
            msg = "a rollback cannot refer to its own transaction_id"
            raise ValueError(msg)
        return self


CasinoCall = Annotated[Debit | Credit | Rollback, Field(discriminator="type")]
CASINO_CALL: TypeAdapter[CasinoCall] = TypeAdapter(CasinoCall)
