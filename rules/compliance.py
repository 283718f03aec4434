"""The one question every product asks before money moves: may this player do this now?

Bets, payments and (later) casino calls all call ``check``. Today it knows registration
and the wallet's currency; the player-protection rules (self-exclusion, limits, sessions,
geolocation, jurisdiction policy) grow here, so every product gets them at once.
Credits, settlements and rollbacks never ask: money owed to a player is always paid.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from schemas.outbound import ReasonCode
from schemas.players import PlayerState

Action = Literal["bet", "deposit", "withdrawal", "casino_debit"]


@dataclass(frozen=True)
class Blocked:
    reason: ReasonCode
    detail: str


def check(
    standing: PlayerState | None, *, action: Action, currency: str, at: datetime
) -> Blocked | None:
    """``None`` when the player may do ``action`` in ``currency`` at ``at``; else why not."""
    del at  # the time-bound rules (exclusions, limits, sessions) use it
    if standing is None:
        return Blocked(ReasonCode.UNKNOWN_PLAYER, "the player never registered")
    if currency != standing.currency:
        return Blocked(
            ReasonCode.INVALID,
            f"{action} in {currency}, but the player's wallet is in {standing.currency}",
        )
    return None
