"""Inbound ``payments`` topic: confirmed deposits, withdrawal requests and their outcome."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from schemas.base import Id, InboundModel, SchemaVersion, Text, Timestamp
from schemas.money import PositiveAmount, Priced
from schemas.players import PlayerId

PaymentId = Id


class _PaymentEvent(InboundModel):
    payment_id: PaymentId
    player_id: PlayerId
    timestamp: Timestamp
    schema_version: SchemaVersion = 1


class Deposit(_PaymentEvent, Priced):
    """A payment the provider has confirmed: credit the wallet unless a limit forbids it."""

    type: Literal["deposit"]
    amount: PositiveAmount


class Withdrawal(_PaymentEvent, Priced):
    """A player asks to withdraw: the amount is reserved until the payout completes or fails."""

    type: Literal["withdrawal"]
    amount: PositiveAmount


class WithdrawalCompleted(_PaymentEvent):
    """The provider paid a withdrawal out: the reserve becomes a debit."""

    type: Literal["withdrawal_completed"]


class WithdrawalFailed(_PaymentEvent):
    """The provider could not pay a withdrawal out: the reserve is released."""

    type: Literal["withdrawal_failed"]
    reason: Text | None = None


PaymentEvent = Annotated[
    Deposit | Withdrawal | WithdrawalCompleted | WithdrawalFailed,
    Field(discriminator="type"),
]
PAYMENT_EVENT: TypeAdapter[PaymentEvent] = TypeAdapter(PaymentEvent)
