"""The pure player rules: registration, unknown players, and the version that counts events."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from croupier.policies import load_policies
from croupier.settings import POLICY_DIR
from rules import players
from rules.players import Rejected, Unchanged
from schemas.players import PlayerState, Registered, SessionStarted

T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
POLICIES = load_policies(POLICY_DIR)


def apply_player_event(state: PlayerState | None, event: Any, **where: int) -> Any:
    return players.apply_player_event(state, event, policies=POLICIES, **where)


def registered(pid: str = "p-1", jurisdiction: str = "UK") -> Registered:
    return Registered(type="registered", player_id=pid, jurisdiction=jurisdiction,
                      currency="EUR", birth_date=date(1990, 5, 1), timestamp=T0)  # fmt: skip


def session(pid: str = "p-1") -> SessionStarted:
    return SessionStarted(type="session_started", player_id=pid, session_id="s", timestamp=T0)


def test_registration_creates_version_one_at_its_position() -> None:
    state = apply_player_event(None, registered(), partition=2, offset=7)
    assert isinstance(state, PlayerState)
    assert (state.version, state.source_partition, state.source_offset) == (1, 2, 7)


def test_same_registration_again_is_unchanged_and_different_is_rejected() -> None:
    state = apply_player_event(None, registered(), partition=0, offset=0)
    assert isinstance(state, PlayerState)
    assert isinstance(apply_player_event(state, registered(), partition=0, offset=1), Unchanged)
    refused = apply_player_event(state, registered(jurisdiction="DK"), partition=0, offset=2)
    assert refused == Rejected(
        "already_registered", "player p-1 is registered with different details"
    )


def test_events_of_an_unregistered_player_are_rejected() -> None:
    refused = apply_player_event(None, session("p-9"), partition=0, offset=0)
    assert isinstance(refused, Rejected) and refused.reason == "unknown_player"


@given(st.lists(st.sampled_from(["registered", "session"]), min_size=1, max_size=40))
def test_version_counts_applied_events(kinds: list[str]) -> None:
    state: PlayerState | None = None
    applied = 0
    for offset, kind in enumerate(kinds):
        event = registered() if kind == "registered" else session()
        result = apply_player_event(state, event, partition=0, offset=offset)
        if isinstance(result, PlayerState):
            state = result
            applied += 1
    assert (state.version if state else 0) == applied
    if state is not None:
        assert state.source_offset <= len(kinds) - 1
