"""How a player event changes a player's standing.

The player-protection rules (exclusion, limits, sessions, geolocation) grow here; this
module decides registration and keeps the version that makes every update idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.players import PlayerEvent, PlayerState, Registered


@dataclass(frozen=True)
class Rejected:
    """The event cannot apply; ``reason`` is a code from the closed set."""

    reason: str
    error: str


@dataclass(frozen=True)
class Unchanged:
    """The event restates what the state already says (a producer retry)."""


def apply_player_event(
    state: PlayerState | None, event: PlayerEvent, *, partition: int, offset: int
) -> PlayerState | Unchanged | Rejected:
    """The standing after ``event``, which sits at ``partition``/``offset`` of its topic."""
    if isinstance(event, Registered):
        if state is None:
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
    if state is None:
        return Rejected("unknown_player", f"player {event.player_id} is not registered")
    return state.model_copy(
        update={
            "version": state.version + 1,
            "last_event": event.type,
            "updated_at": event.timestamp,
            "source_partition": partition,
            "source_offset": offset,
        }
    )
