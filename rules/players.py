"""How a player event changes a player's standing.

Registration (in a licensed jurisdiction, old enough), self-exclusion, limits, sessions
and geolocation. Every change bumps the version that makes updates idempotent; an event
that restates what the standing already says is ``Unchanged``; one that cannot apply is
``Rejected`` with a reason code. The rules that judge play against the standing are in
``rules/compliance.py``.

The server's clock decides (``rules/clock.py``). An event's ``timestamp`` (and a
geolocation's ``checked_at``) more than the clock tolerance ahead of the server's ``now``
is refused (``clock_skew``). Within it, a producer's time can only make a decision
stricter, never looser: a limit's loosening waits its cooling-off from the later of the
event's time and ``now`` (an increase dated back still waits the full period); a session
starts, and a geolocation check counts from, the earlier of the two (a check dated ahead
does not last longer); a registration's age is taken on the earlier day. A time in the
past is kept: it orders the producer's own messages and is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from rules.clock import DEFAULT_CLOCK_SKEW, ahead
from rules.limits import set_limit
from rules.policy import JurisdictionPolicy, Policies
from schemas.players import (
    Exclusion,
    GeoCheck,
    Geolocation,
    LimitSet,
    OpenSession,
    PlayerEvent,
    PlayerState,
    Registered,
    SelfExcluded,
    SessionEnded,
    SessionStarted,
)


@dataclass(frozen=True)
class Rejected:
    """The event cannot apply; ``reason`` is a code from the closed set."""

    reason: str
    error: str


@dataclass(frozen=True)
class Unchanged:
    """The event restates what the state already says (a producer retry)."""


def age_on(birth: date, day: date) -> int:
    """Completed years of someone born on ``birth``, on ``day``."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def excluded_at(state: PlayerState, at: datetime) -> bool:
    """Whether the player is self-excluded at ``at``.

    An exclusion holds from the moment it is applied, whatever the clock of the system
    that sent it said (``since`` is kept for the record); it ends at ``until``.
    """
    ex = state.exclusion
    return ex is not None and (ex.until is None or at < ex.until)


def apply_player_event(
    state: PlayerState | None,
    event: PlayerEvent,
    *,
    partition: int,
    offset: int,
    policies: Policies,
    now: datetime,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> PlayerState | Unchanged | Rejected:
    """The standing after ``event``, which sits at ``partition``/``offset`` of its topic,
    decided at the server's ``now``."""
    skew = ahead(event.timestamp, now, clock_skew, what="timestamp")
    if skew is None and isinstance(event, Geolocation):
        skew = ahead(event.checked_at, now, clock_skew, what="checked_at")
    if skew is not None:
        return Rejected("clock_skew", skew)
    if isinstance(event, Registered):
        return _register(state, event, partition, offset, policies, now)
    if state is None:
        return Rejected("unknown_player", f"player {event.player_id} is not registered")
    policy = policies.get(state.jurisdiction)
    if policy is None:
        return Rejected("invalid", f"no policy for the player's jurisdiction {state.jurisdiction}")
    change = _change(state, event, policy, now)
    if isinstance(change, Unchanged | Rejected):
        return change
    return state.model_copy(
        update=change
        | {
            "version": state.version + 1,
            "last_event": event.type,
            "updated_at": event.timestamp,
            "source_partition": partition,
            "source_offset": offset,
        }
    )


def _register(
    state: PlayerState | None,
    event: Registered,
    partition: int,
    offset: int,
    policies: Policies,
    now: datetime,
) -> PlayerState | Unchanged | Rejected:
    if state is not None:
        same = (state.jurisdiction, state.currency, state.birth_date) == (
            event.jurisdiction,
            event.currency,
            event.birth_date,
        )
        if same:
            return Unchanged()
        return Rejected(
            "already_registered",
            f"player {event.player_id} is registered with different details",
        )
    policy = policies.get(event.jurisdiction)
    if policy is None:
        return Rejected(
            "unlicensed_jurisdiction",
            f"Croupier holds no licence policy for {event.jurisdiction} "
            f"(licensed: {', '.join(policies.jurisdictions)})",
        )
    age = age_on(event.birth_date, min(event.timestamp, now).date())
    if age < policy.minimum_age:
        return Rejected(
            "underage",
            f"player is {age}; {event.jurisdiction} requires {policy.minimum_age}",
        )
    return PlayerState(
        player_id=event.player_id,
        jurisdiction=event.jurisdiction,
        currency=event.currency,
        birth_date=event.birth_date,
        registered_at=event.timestamp,
        version=1,
        last_event=event.type,
        updated_at=event.timestamp,
        source_partition=partition,
        source_offset=offset,
    )


def _change(
    state: PlayerState, event: PlayerEvent, policy: JurisdictionPolicy, now: datetime
) -> dict[str, Any] | Unchanged | Rejected:
    """The fields ``event`` changes, or why it changes nothing."""
    at = event.timestamp
    earliest, latest = min(at, now), max(at, now)
    match event:
        case SelfExcluded():
            if event.until is not None and event.until <= at:
                return Rejected("invalid", "an exclusion must end after it is requested")
            current = state.exclusion if excluded_at(state, at) else None
            if current is not None and (
                current.until is None or (event.until is not None and event.until <= current.until)
            ):
                return Unchanged()  # an exclusion is never shortened, only extended
            since = current.since if current is not None else at
            return {"exclusion": Exclusion(since=since, until=event.until)}
        case LimitSet():
            if event.period not in policy.limits.periods:
                return Rejected(
                    "invalid",
                    f"{state.jurisdiction} has no {event.period} limits "
                    f"(periods: {', '.join(sorted(policy.limits.periods))})",
                )
            if event.currency is not None and event.currency != state.currency:
                return Rejected(
                    "invalid",
                    f"a limit in {event.currency}, but the wallet is in {state.currency}",
                )
            limits = set_limit(state.limits, event, policy.limits.cooling_off, at=latest)
            return Unchanged() if limits == state.limits else {"limits": limits}
        case SessionStarted():
            if state.session is not None and state.session.session_id == event.session_id:
                return Unchanged()
            change: dict[str, Any] = {
                "session": OpenSession(
                    session_id=event.session_id, started_at=earliest, ip=event.ip
                )
            }
            geo = state.geolocation
            if (
                geo is not None
                and event.ip is not None
                and event.ip != geo.ip
                and geo.invalidated_at is None
            ):
                change["geolocation"] = geo.model_copy(update={"invalidated_at": at})
            return change
        case SessionEnded():
            if state.session is None or state.session.session_id != event.session_id:
                return Unchanged()
            return {"session": None}
        case Geolocation():
            geo = state.geolocation
            if geo is not None and event.checked_at <= geo.checked_at:
                return Unchanged()  # a retry, or an older check: never replaces a newer one
            valid_until = (
                min(event.checked_at, now)
                + timedelta(seconds=event.geolocate_in)
                - policy.geolocation.buffer
            )
            # A check taken before the open session started, from another address than the
            # session's, is already out of date: the address changed after it.
            session = state.session
            stale = (
                session is not None
                and session.ip is not None
                and session.ip != event.ip
                and event.checked_at < session.started_at
            )
            check = GeoCheck(
                jurisdiction=event.jurisdiction,
                allowed=event.allowed,
                checked_at=event.checked_at,
                valid_until=valid_until,
                ip=event.ip,
                invalidated_at=session.started_at if stale and session else None,
            )
            return {"geolocation": check}
    return Unchanged()
