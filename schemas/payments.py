"""Inbound ``payments`` topic: confirmed deposits, withdrawal requests and their outcome."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, TypeAdapter

from schemas.base import WireModel
from schemas.money import PositiveAmount, Priced
from schemas.players import PlayerId

PaymentId = Annotated[str, Field(min_length=1, max_length=128)]


class _PaymentEvent(WireModel):
    payment_id: PaymentId
    player_id: PlayerId
    timestamp: AwareDatetime
    schema_version: Literal[1] = 1


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
    reason: str | None = Field(default=None, max_length=1000)


PaymentEvent = Annotated[
    Deposit | Withdrawal | WithdrawalCompleted | WithdrawalFailed,
    Field(discriminator="type"),
]
PAYMENT_EVENT: TypeAdapter[PaymentEvent] = TypeAdapter(PaymentEvent)
