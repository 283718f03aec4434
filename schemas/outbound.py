"""Outbound decision topics: what Croupier tells the rest of the world, and why.

Reason codes (``ReasonCode``), the closed set every refusal and dead letter uses:

- ``self_excluded``: the player is self-excluded.
- ``geo_blocked``: the jurisdiction requires geolocation and the player's last check is
  missing, not allowed, outside their jurisdiction, expired or invalidated by a new IP.
- ``odds_changed``: the price moved and the bet's ``odds_change`` policy refuses the move.
- ``market_suspended``: the market is suspended, stopped, settled or its producer is down.
- ``market_unknown``: no price has been seen for the event, market or outcome.
- ``insufficient_funds``: the wallet cannot cover the stake, debit or withdrawal.
- ``loss_limit``: the stake would take the player past a loss limit.
- ``deposit_limit``: the deposit would take the player past a deposit limit.
- ``session_limit``: the player's session time limit is used up.
- ``no_session``: the jurisdiction requires an open session and the player has none.
- ``unknown_player``: the player never registered.
- ``duplicate_conflict``: a business id seen before arrived with different content.
- ``game_not_certified``: the casino game is not certified in the player's jurisdiction.
- ``unknown_game``: the casino game is not in Croupier's game registry.
- ``unknown_round``: a casino credit for a round in which no debit was ever taken.
- ``round_closed``: a casino call on a round that was closed.
- ``transaction_rolled_back``: a casino debit whose id a rollback named first.
- ``rollback_after_credit``: a rollback of a debit whose round has been credited.
- ``invalid``: the message decoded as JSON but breaks the wire contract.
- ``malformed_json``: the message is not UTF-8 JSON (or is empty).
- ``already_registered``: a registration for a player that already exists.
- ``underage``: the player is below the jurisdiction's minimum age.
- ``unlicensed_jurisdiction``: a registration in a jurisdiction Croupier has no policy for.
- ``internal_error``: Croupier failed; the input is kept for a replay.
- ``processing_error``: processing this one message failed again and again at the same
  position; it was set aside (dead-lettered, the error kept for an operator) so the
  partition goes on.
- ``too_large``: the message is larger than the wire contract's per-message limit.
- ``clock_skew``: the producer's timestamp is too far from the server's clock to decide on.
- ``max_stake``: the stake is above the jurisdiction's (or the house's) maximum stake.
- ``max_legs``: the accumulator has more legs than the policy allows.
- ``max_odds``: the combined odds are above the policy's maximum.
- ``max_payout``: the potential payout is above the policy's maximum per bet.
- ``retry_later``: the call names something not seen yet (a credit before its debit, a
  withdrawal's close before its reserve); nothing is stored, and the same id sent again
  is decided on its merits.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, Self

from pydantic import AwareDatetime, ConfigDict, Field, TypeAdapter, model_validator

from schemas.base import Id, Reference, WireModel
from schemas.bets import BetId
from schemas.casino import RoundId, TransactionId
from schemas.money import CombinedOdds, PositiveAmount, Priced, SignedTotal, Total
from schemas.odds import OutcomeResult
from schemas.payments import PaymentId
from schemas.players import PlayerId

SettlementId = Reference  # "<bet_id>/<n>"
SessionId = Id
LedgerReference = Reference  # "settlement:<settlement_id>"


class ReasonCode(StrEnum):
    """Why an input was refused; the closed set is documented in this module's docstring."""

    SELF_EXCLUDED = "self_excluded"
    GEO_BLOCKED = "geo_blocked"
    ODDS_CHANGED = "odds_changed"
    MARKET_SUSPENDED = "market_suspended"
    MARKET_UNKNOWN = "market_unknown"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    LOSS_LIMIT = "loss_limit"
    DEPOSIT_LIMIT = "deposit_limit"
    SESSION_LIMIT = "session_limit"
    NO_SESSION = "no_session"
    UNKNOWN_PLAYER = "unknown_player"
    DUPLICATE_CONFLICT = "duplicate_conflict"
    GAME_NOT_CERTIFIED = "game_not_certified"
    UNKNOWN_GAME = "unknown_game"
    UNKNOWN_ROUND = "unknown_round"
    ROUND_CLOSED = "round_closed"
    TRANSACTION_ROLLED_BACK = "transaction_rolled_back"
    ROLLBACK_AFTER_CREDIT = "rollback_after_credit"
    INVALID = "invalid"
    MALFORMED_JSON = "malformed_json"
    ALREADY_REGISTERED = "already_registered"
    UNDERAGE = "underage"
    UNLICENSED_JURISDICTION = "unlicensed_jurisdiction"
    INTERNAL_ERROR = "internal_error"
    PROCESSING_ERROR = "processing_error"
    TOO_LARGE = "too_large"
    CLOCK_SKEW = "clock_skew"
    MAX_STAKE = "max_stake"
    MAX_LEGS = "max_legs"
    MAX_ODDS = "max_odds"
    MAX_PAYOUT = "max_payout"
    RETRY_LATER = "retry_later"


class _Outbound(WireModel):
    # Croupier always writes every field, defaults included: the published schema says so.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


def _reason_iff_rejected(status: str, reason: object, field: str = "reason") -> None:
    if (status == "rejected") != (reason is not None):
        msg = f"{field} is required when rejected and must be null otherwise"
        raise ValueError(msg)


class BetDecision(_Outbound):
    """A bet accepted at ``odds`` (the total price, legs multiplied) or rejected with a reason."""

    bet_id: BetId
    player_id: PlayerId
    status: Literal["accepted", "rejected"]
    reason: ReasonCode | None = None
    odds: CombinedOdds | None = None
    decided_at: AwareDatetime
    schema_version: Literal[1] = 1

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _reason_iff_rejected(self.status, self.reason)
        if (self.status == "accepted") != (self.odds is not None):
            msg = "odds are required when accepted and must be null otherwise"
            raise ValueError(msg)
        return self


SettlementKind = Literal["settled", "resettled", "voided", "rolled_back"]


class Settlement(_Outbound, Priced):
    """A bet's settlement, resettlement, void or rollback, and the ledger entry behind it.

    ``payout`` is what the bet pays in total after this event (not the change): a
    resettlement states the new total, a rollback returns the bet to open with payout 0,
    and the ledger moves the difference under ``ledger_reference``.
    """

    amount_fields = ("stake", "payout")

    bet_id: BetId
    player_id: PlayerId
    settlement_id: SettlementId
    kind: SettlementKind
    result: OutcomeResult | None
    stake: PositiveAmount
    payout: Total
    ledger_reference: LedgerReference
    settled_at: AwareDatetime
    schema_version: Literal[1] = 1

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problem = None
        if self.kind == "rolled_back" and (self.result is not None or self.payout != 0):
            problem = "a rolled back settlement has no result and pays 0"
        elif self.kind != "rolled_back" and self.result is None:
            problem = f"a {self.kind} bet needs a result"
        elif self.kind == "voided" and self.result != "void":
            problem = "a voided bet has result void"
        elif self.result == "void" and self.payout != self.stake:
            problem = "a void bet pays its stake back"
        elif self.result == "lose" and self.payout != 0:
            problem = "a lost bet pays 0"
        if problem is not None:
            raise ValueError(problem)
        return self


class PaymentDecision(_Outbound):
    """A payment event accepted or rejected with a reason."""

    payment_id: PaymentId
    player_id: PlayerId
    status: Literal["accepted", "rejected"]
    reason: ReasonCode | None = None
    decided_at: AwareDatetime
    schema_version: Literal[1] = 1

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _reason_iff_rejected(self.status, self.reason)
        return self


class CasinoResult(_Outbound, Priced):
    """The answer to an aggregator's call: the wallet balance after it, or why it failed."""

    amount_fields = ("balance",)

    transaction_id: TransactionId
    round_id: RoundId
    player_id: PlayerId
    status: Literal["ok", "rejected"]
    balance: Total
    error: ReasonCode | None = None
    decided_at: AwareDatetime
    schema_version: Literal[1] = 1

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _reason_iff_rejected(self.status, self.error, "error")
        return self


class PlayerNotification(_Outbound, Priced):
    """A reality check is due: how long the session has run and how the player stands.

    ``sequence`` numbers a session's checks from 1 (the n-th interval that has passed), so
    a consumer can drop a repeat; ``net_position`` is winnings minus stakes in the session.
    """

    amount_fields = ("net_position",)

    type: Literal["reality_check_due"] = "reality_check_due"
    player_id: PlayerId
    session_id: SessionId
    sequence: int = Field(ge=1)
    elapsed_seconds: int = Field(ge=0)
    net_position: SignedTotal
    timestamp: AwareDatetime
    schema_version: Literal[1] = 1


BET_DECISION: TypeAdapter[BetDecision] = TypeAdapter(BetDecision)
SETTLEMENT: TypeAdapter[Settlement] = TypeAdapter(Settlement)
PAYMENT_DECISION: TypeAdapter[PaymentDecision] = TypeAdapter(PaymentDecision)
CASINO_RESULT: TypeAdapter[CasinoResult] = TypeAdapter(CasinoResult)
PLAYER_NOTIFICATION: TypeAdapter[PlayerNotification] = TypeAdapter(PlayerNotification)
