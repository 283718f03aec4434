"""The one question every product asks before money moves: may this player do this now?

Bets, deposits, withdrawal requests and casino debits all call ``check`` with the
player's standing, the jurisdiction's policy and the player's recent activity (``Usage``,
read from the ledger and the sessions table inside the same database transaction that
then moves the money; see ``sinks/postgres/protection.py``).
Credits, settlements, rollbacks and a provider's withdrawal result never ask: money owed
to a player is always paid. A self-excluded player may still withdraw their balance.

The order of the checks decides which reason a refusal carries:

1. ``unknown_player``; ``invalid`` for a currency other than the wallet's, or a
   jurisdiction with no policy;
2. ``self_excluded`` (every action but a withdrawal);
3. deposits: ``deposit_limit``;
4. bets and casino debits: ``session_limit`` (session time used up in any period),
   ``no_session`` (the policy requires an open session), ``geo_blocked`` (the policy
   requires a valid, allowed check inside the player's jurisdiction, not invalidated by
   a new IP), then ``loss_limit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from rules.limits import Usage, money_breach, session_breach
from rules.players import excluded_at
from rules.policy import JurisdictionPolicy, Policies
from schemas.outbound import ReasonCode
from schemas.players import PlayerState

Action = Literal["bet", "deposit", "withdrawal", "casino_debit"]


@dataclass(frozen=True)
class Blocked:
    reason: ReasonCode
    detail: str


def _geo_problem(standing: PlayerState, policy: JurisdictionPolicy, at: datetime) -> str | None:
    geo = standing.geolocation
    if geo is None:
        return "no geolocation check on record"
    if geo.invalidated_at is not None:
        return f"the check of {geo.checked_at.isoformat()} was invalidated by a new IP address"
    if not geo.allowed:
        return "the last geolocation check did not allow play"
    if geo.jurisdiction != standing.jurisdiction:
        return f"located in {geo.jurisdiction}, licensed in {standing.jurisdiction}"
    if at > geo.valid_until:
        return f"the geolocation check expired at {geo.valid_until.isoformat()}"
    return None


def check(
    standing: PlayerState | None,
    *,
    action: Action,
    currency: str,
    at: datetime,
    policies: Policies,
    amount: Decimal = Decimal(0),
    usage: Usage | None = None,
) -> Blocked | None:
    """``None`` when the player may do ``action`` for ``amount`` in ``currency`` at ``at``.

    ``usage`` is the player's activity for the limit windows; it may be left out only
    when the player has no limit of the action's kind.
    """
    if standing is None:
        return Blocked(ReasonCode.UNKNOWN_PLAYER, "the player never registered")
    if currency != standing.currency:
        return Blocked(
            ReasonCode.INVALID,
            f"{action} in {currency}, but the player's wallet is in {standing.currency}",
        )
    policy = policies.get(standing.jurisdiction)
    if policy is None:
        return Blocked(ReasonCode.INVALID, f"no policy for {standing.jurisdiction}")
    if action == "withdrawal":
        return None
    if excluded_at(standing, at):
        until = standing.exclusion.until if standing.exclusion else None
        return Blocked(
            ReasonCode.SELF_EXCLUDED,
            "self-excluded " + (f"until {until.isoformat()}" if until else "indefinitely"),
        )
    used = usage or Usage()
    if action == "deposit":
        breach = money_breach(standing.limits, "deposit", used.deposits, amount, at)
        if breach is not None:
            return Blocked(ReasonCode.DEPOSIT_LIMIT, breach.describe(currency))
        return None
    breach = session_breach(standing.limits, used.sessions, at)
    if breach is not None:
        return Blocked(ReasonCode.SESSION_LIMIT, breach.describe(currency))
    if policy.sessions.required and standing.session is None:
        return Blocked(ReasonCode.NO_SESSION, f"{standing.jurisdiction} requires an open session")
    if policy.geolocation.required:
        problem = _geo_problem(standing, policy, at)
        if problem is not None:
            return Blocked(ReasonCode.GEO_BLOCKED, problem)
    breach = money_breach(standing.limits, "loss", used.loss, amount, at)
    if breach is not None:
        return Blocked(ReasonCode.LOSS_LIMIT, breach.describe(currency))
    return None
