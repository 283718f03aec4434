"""The pure player rules: registration, exclusion, limits, sessions, geolocation, the version."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.policies import load_policies
from config.settings import POLICY_DIR
from rules import players
from rules.players import Rejected, Unchanged
from rules.policy import Policies, parse_policy
from schemas.players import (
    Exclusion,
    GeoCheck,
    Geolocation,
    LimitSet,
    OpenSession,
    PendingLimit,
    Period,
    PlayerState,
    Registered,
    SelfExcluded,
    SessionEnded,
    SessionStarted,
)

T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
POLICIES = load_policies(POLICY_DIR)


def apply_player_event(
    state: PlayerState | None, event: Any, *, partition: int, offset: int
) -> Any:
    # Decided as the event arrives: the server's clock agrees with the producer's.
    return players.apply_player_event(
        state, event, partition=partition, offset=offset, policies=POLICIES, now=event.timestamp
    )


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


# --- helpers for the protection events --------------------------------------------------------

US = timedelta(microseconds=1)
GI = parse_policy(
    """
    jurisdiction = "GI"
    version = 1
    effective_from = 2026-01-01
    regulator = "Gambling Commissioner"
    minimum_age = 18

    [limits]
    periods = ["day", "week"]
    cooling_off_hours = 48

    [sessions]
    required = false
    reality_check_minutes = 30

    [geolocation]
    required = false
    buffer_seconds = 15

    [reporting]
    topic = "reports.GI"
    format = "json"
    """,
    source="GI.toml",
)
WITH_GI = Policies([*POLICIES.values(), GI])


def apply(
    state: PlayerState | None, event: Any, *, offset: int = 1, policies: Policies = WITH_GI
) -> PlayerState | Unchanged | Rejected:
    return players.apply_player_event(
        state, event, partition=0, offset=offset, policies=policies, now=event.timestamp
    )


def applied(state: PlayerState | None, event: Any, *, offset: int = 1) -> PlayerState:
    result = apply(state, event, offset=offset)
    assert isinstance(result, PlayerState), result
    return result


def player(jurisdiction: str = "UK", *, currency: str = "EUR") -> PlayerState:
    event = Registered(
        type="registered",
        player_id="p-1",
        jurisdiction=jurisdiction,
        currency=currency,
        birth_date=date(1990, 5, 1),
        timestamp=T0,
    )
    return applied(None, event, offset=0)


def excluded(until: datetime | None, ts: datetime = T0) -> SelfExcluded:
    return SelfExcluded(type="self_excluded", player_id="p-1", timestamp=ts, until=until)


def limit_set(
    period: Period, amount: str | None, ts: datetime = T0, currency: str = "EUR"
) -> LimitSet:
    return LimitSet(
        type="limit_set",
        player_id="p-1",
        timestamp=ts,
        limit="deposit",
        period=period,
        amount=None if amount is None else Decimal(amount),
        currency=None if amount is None else currency,
    )


def started(sid: str = "s-1", ip: str | None = None, ts: datetime = T0) -> SessionStarted:
    return SessionStarted(
        type="session_started", player_id="p-1", session_id=sid, ip=ip, timestamp=ts
    )


def ended(sid: str = "s-1", ts: datetime = T0) -> SessionEnded:
    return SessionEnded(type="session_ended", player_id="p-1", session_id=sid, timestamp=ts)


def located(
    checked_at: datetime = T0,
    *,
    geolocate_in: int = 600,
    ip: str = "198.51.100.7",
    allowed: bool = True,
    jurisdiction: str = "NJ",
) -> Geolocation:
    return Geolocation(
        type="geolocation",
        player_id="p-1",
        timestamp=checked_at,
        jurisdiction=jurisdiction,
        allowed=allowed,
        checked_at=checked_at,
        geolocate_in=geolocate_in,
        ip=ip,
    )


# --- registration -----------------------------------------------------------------------------


def test_registration_records_the_player_with_no_protection_state_yet() -> None:
    state = player("NJ", currency="USD")
    assert (state.jurisdiction, state.currency, state.birth_date) == ("NJ", "USD", date(1990, 5, 1))
    assert (state.registered_at, state.updated_at, state.last_event) == (T0, T0, "registered")
    assert (state.exclusion, state.limits, state.session, state.geolocation) == (
        None,
        (),
        None,
        None,
    )


def test_registration_in_an_unlicensed_jurisdiction_is_refused() -> None:
    result = apply_player_event(None, registered(jurisdiction="XX"), partition=0, offset=0)
    assert result == Rejected(
        "unlicensed_jurisdiction",
        "Croupier holds no licence policy for XX (licensed: DK, ES, NJ, UK)",
    )


@pytest.mark.parametrize(("jurisdiction", "age"), [("NJ", 21), ("UK", 18), ("ES", 18), ("DK", 18)])
def test_registration_is_refused_the_day_before_the_minimum_age_and_accepted_on_the_birthday(
    jurisdiction: str, age: int
) -> None:
    birthday = datetime(2026 - age, 11, 25, tzinfo=UTC).date()
    event = Registered(
        type="registered",
        player_id="p-1",
        jurisdiction=jurisdiction,
        currency="EUR",
        birth_date=birthday,
        timestamp=datetime(2026, 11, 25, tzinfo=UTC) - US,
    )
    refused = apply(None, event, offset=0)
    assert refused == Rejected("underage", f"player is {age - 1}; {jurisdiction} requires {age}")
    on_the_day = event.model_copy(update={"timestamp": datetime(2026, 11, 25, tzinfo=UTC)})
    assert isinstance(apply(None, on_the_day, offset=0), PlayerState)


def test_someone_born_on_29_february_comes_of_age_on_1_march_in_a_common_year() -> None:
    event = Registered(
        type="registered",
        player_id="p-1",
        jurisdiction="NJ",
        currency="USD",
        birth_date=date(2004, 2, 29),
        timestamp=datetime(2025, 2, 28, 23, 59, tzinfo=UTC),
    )
    refused = apply(None, event, offset=0)
    assert isinstance(refused, Rejected) and refused.reason == "underage"
    march = event.model_copy(update={"timestamp": datetime(2025, 3, 1, tzinfo=UTC)})
    assert isinstance(apply(None, march, offset=0), PlayerState)


@pytest.mark.parametrize(
    "event",
    [
        excluded(None),
        limit_set("day", "10"),
        started(),
        ended(),
        located(),
    ],
    ids=lambda e: e.type,
)
def test_every_event_of_an_unregistered_player_is_refused(event: Any) -> None:
    result = apply(None, event)
    assert result == Rejected("unknown_player", "player p-1 is not registered")


def test_events_of_a_player_whose_jurisdiction_has_lost_its_policy_are_invalid() -> None:
    state = player("GI")
    result = apply(state, started(), policies=POLICIES)
    assert result == Rejected("invalid", "no policy for the player's jurisdiction GI")


# --- self-exclusion ---------------------------------------------------------------------------


def test_a_self_exclusion_starts_when_it_is_applied() -> None:
    until = T0 + timedelta(days=180)
    state = applied(player(), excluded(until, T0 + timedelta(hours=1)))
    assert state.exclusion == Exclusion(since=T0 + timedelta(hours=1), until=until)
    assert applied(player(), excluded(None)).exclusion == Exclusion(since=T0, until=None)


def test_a_later_end_extends_the_exclusion_and_keeps_its_start() -> None:
    state = applied(player(), excluded(T0 + timedelta(days=30)))
    later = T0 + timedelta(days=2)
    state = applied(state, excluded(T0 + timedelta(days=90), later))
    assert state.exclusion == Exclusion(since=T0, until=T0 + timedelta(days=90))


@pytest.mark.parametrize("until", [timedelta(days=30), timedelta(days=10), timedelta(days=30) - US])
def test_an_exclusion_is_never_shortened(until: timedelta) -> None:
    state = applied(player(), excluded(T0 + timedelta(days=30)))
    assert apply(state, excluded(T0 + until, T0 + timedelta(days=1))) == Unchanged()


def test_an_indefinite_exclusion_beats_a_dated_one() -> None:
    state = applied(player(), excluded(T0 + timedelta(days=30)))
    state = applied(state, excluded(None, T0 + timedelta(days=1)))
    assert state.exclusion == Exclusion(since=T0, until=None)
    later = T0 + timedelta(days=2)
    assert apply(state, excluded(T0 + timedelta(days=3650), later)) == Unchanged()
    assert apply(state, excluded(None, later)) == Unchanged()


@pytest.mark.parametrize("until", [timedelta(0), -timedelta(seconds=1)], ids=["now", "past"])
def test_an_exclusion_ending_no_later_than_its_request_is_invalid(until: timedelta) -> None:
    ts = T0 + timedelta(hours=1)
    assert apply(player(), excluded(ts + until, ts)) == Rejected(
        "invalid", "an exclusion must end after it is requested"
    )


def test_after_an_exclusion_ends_a_new_one_starts_afresh() -> None:
    end = T0 + timedelta(days=30)
    state = applied(player(), excluded(end))
    again = applied(state, excluded(end + timedelta(days=1), end))
    assert again.exclusion == Exclusion(since=end, until=end + timedelta(days=1))


@given(st.lists(st.tuples(st.integers(1, 100), st.none() | st.integers(-50, 200)), max_size=20))
def test_an_exclusion_in_force_only_ever_grows(steps: list[tuple[int, int | None]]) -> None:
    state = player()
    clock = T0
    for offset, (gap, days) in enumerate(steps, start=1):
        clock += timedelta(days=gap)
        until = None if days is None else clock + timedelta(days=days)
        before = state.exclusion if players.excluded_at(state, clock) else None
        result = apply(state, excluded(until, clock), offset=offset)
        if days is not None and days <= 0:
            assert isinstance(result, Rejected)
            continue
        if isinstance(result, PlayerState):
            state = result
        after = state.exclusion
        assert after is not None and players.excluded_at(state, clock)
        if before is not None:
            assert after.since == before.since
            assert before.until is None or after.until is None or after.until >= before.until
            if before.until is None:
                assert after.until is None


# --- limits -----------------------------------------------------------------------------------


def test_a_limit_period_the_policy_does_not_offer_is_refused() -> None:
    assert apply(player("GI"), limit_set("month", "100")) == Rejected(
        "invalid", "GI has no month limits (periods: day, week)"
    )
    assert isinstance(apply(player("GI"), limit_set("week", "100")), PlayerState)


def test_a_limit_in_a_currency_other_than_the_wallets_is_refused() -> None:
    assert apply(player(), limit_set("day", "100", currency="GBP")) == Rejected(
        "invalid", "a limit in GBP, but the wallet is in EUR"
    )


def test_a_limit_in_the_wallet_currency_is_kept() -> None:
    state = applied(player(), limit_set("day", "100"))
    kept = state.limit("deposit", "day")
    assert kept is not None and (kept.amount, kept.currency) == (Decimal(100), "EUR")


def test_a_session_limit_needs_no_currency() -> None:
    event = LimitSet(
        type="limit_set", player_id="p-1", timestamp=T0, limit="session", period="day", minutes=120
    )
    state = applied(player(), event)
    kept = state.limit("session", "day")
    assert kept is not None and kept.minutes == 120


def test_a_limit_event_that_changes_nothing_is_unchanged() -> None:
    state = applied(player(), limit_set("day", "100"))
    assert apply(state, limit_set("day", "100"), offset=2) == Unchanged()
    assert apply(player(), limit_set("week", None)) == Unchanged()


@pytest.mark.parametrize(
    ("jurisdiction", "hours"), [("UK", 24), ("NJ", 72), ("ES", 72), ("GI", 48)]
)
def test_an_increase_waits_for_the_jurisdictions_cooling_off(jurisdiction: str, hours: int) -> None:
    state = applied(player(jurisdiction), limit_set("day", "100"))
    state = applied(state, limit_set("day", "500", T0 + timedelta(minutes=1)), offset=2)
    kept = state.limit("deposit", "day")
    assert kept is not None and kept.amount == Decimal(100)
    assert kept.pending == PendingLimit(
        amount=Decimal(500), effective_at=T0 + timedelta(minutes=1, hours=hours)
    )


# --- sessions ---------------------------------------------------------------------------------


def test_a_session_start_opens_the_session() -> None:
    state = applied(player(), started("s-1", "203.0.113.9", T0 + timedelta(minutes=1)))
    assert state.session == OpenSession(
        session_id="s-1", started_at=T0 + timedelta(minutes=1), ip="203.0.113.9"
    )


def test_the_same_session_started_again_is_unchanged() -> None:
    state = applied(player(), started("s-1"))
    assert apply(state, started("s-1", ts=T0 + timedelta(minutes=5)), offset=2) == Unchanged()


def test_a_new_session_replaces_the_open_one() -> None:
    state = applied(player(), started("s-1"))
    state = applied(state, started("s-2", ts=T0 + timedelta(minutes=5)), offset=2)
    assert state.session == OpenSession(session_id="s-2", started_at=T0 + timedelta(minutes=5))


def test_ending_another_session_or_none_at_all_is_unchanged() -> None:
    assert apply(player(), ended("s-1")) == Unchanged()
    state = applied(player(), started("s-1"))
    assert apply(state, ended("s-2"), offset=2) == Unchanged()


def test_ending_the_open_session_closes_it() -> None:
    state = applied(player(), started("s-1"))
    assert applied(state, ended("s-1"), offset=2).session is None


def _nj_located(ip: str = "198.51.100.7") -> PlayerState:
    return applied(player("NJ", currency="USD"), located(ip=ip))


def test_a_session_from_another_ip_invalidates_the_geolocation_check() -> None:
    state = _nj_located()
    ts = T0 + timedelta(minutes=2)
    after = applied(state, started("s-1", "203.0.113.9", ts), offset=2)
    assert after.geolocation is not None and state.geolocation is not None
    assert after.geolocation == state.geolocation.model_copy(update={"invalidated_at": ts})


@pytest.mark.parametrize("ip", ["198.51.100.7", None], ids=["same-ip", "no-ip"])
def test_a_session_from_the_same_or_an_unknown_ip_keeps_the_geolocation_check(
    ip: str | None,
) -> None:
    state = _nj_located()
    after = applied(state, started("s-1", ip, T0 + timedelta(minutes=2)), offset=2)
    assert after.geolocation == state.geolocation
    assert after.geolocation is not None and after.geolocation.invalidated_at is None


def test_an_invalidated_check_keeps_the_moment_it_was_first_invalidated() -> None:
    first = T0 + timedelta(minutes=2)
    state = applied(_nj_located(), started("s-1", "203.0.113.9", first), offset=2)
    state = applied(state, started("s-2", "192.0.2.1", first + timedelta(minutes=1)), offset=3)
    assert state.geolocation is not None and state.geolocation.invalidated_at == first


# --- geolocation ------------------------------------------------------------------------------


@pytest.mark.parametrize(("jurisdiction", "buffer"), [("NJ", 60), ("UK", 0), ("GI", 15)])
def test_a_check_is_valid_until_checked_at_plus_geolocate_in_minus_the_policy_buffer(
    jurisdiction: str, buffer: int
) -> None:
    checked_at = T0 + timedelta(seconds=30)
    state = applied(player(jurisdiction), located(checked_at, geolocate_in=900))
    assert state.geolocation == GeoCheck(
        jurisdiction="NJ",
        allowed=True,
        checked_at=checked_at,
        valid_until=checked_at + timedelta(seconds=900 - buffer),
        ip="198.51.100.7",
    )


def test_an_older_check_never_replaces_a_newer_one() -> None:
    state = _nj_located()
    older = located(T0 - US, ip="203.0.113.9", allowed=False)
    assert apply(state, older, offset=2) == Unchanged()


def test_the_same_check_again_is_unchanged_and_a_newer_one_replaces_it() -> None:
    state = _nj_located()
    assert apply(state, located(), offset=2) == Unchanged()
    newer = applied(state, located(T0 + US, allowed=False, jurisdiction="PA"), offset=2)
    assert newer.geolocation is not None
    assert (newer.geolocation.allowed, newer.geolocation.jurisdiction) == (False, "PA")


def test_a_newer_check_replaces_an_invalidated_one() -> None:
    state = applied(
        _nj_located(), started("s-1", "203.0.113.9", T0 + timedelta(minutes=1)), offset=2
    )
    fresh = applied(state, located(T0 + timedelta(minutes=2), ip="203.0.113.9"), offset=3)
    assert fresh.geolocation is not None and fresh.geolocation.invalidated_at is None
    assert fresh.geolocation.ip == "203.0.113.9"


def test_a_retried_check_does_not_undo_an_invalidation_by_a_later_session() -> None:
    state = _nj_located()
    state = applied(state, started("s-1", "203.0.113.9", T0 + timedelta(minutes=1)), offset=2)
    assert apply(state, located(), offset=3) == Unchanged()


def test_a_late_check_from_before_a_new_ip_session_arrives_already_invalidated() -> None:
    state = _nj_located()
    session_at = T0 + timedelta(minutes=2)
    state = applied(state, started("s-1", "203.0.113.9", session_at), offset=2)
    late = applied(state, located(T0 + timedelta(minutes=1)), offset=3)  # old address
    assert late.geolocation is not None and late.geolocation.invalidated_at == session_at
    fresh = applied(late, located(T0 + timedelta(minutes=3), ip="203.0.113.9"), offset=4)
    assert fresh.geolocation is not None and fresh.geolocation.invalidated_at is None


# --- the version ------------------------------------------------------------------------------


def test_every_applied_event_bumps_the_version_by_one_and_records_where_it_came_from() -> None:
    state = player("NJ", currency="USD")
    events: list[Any] = [
        excluded(T0 + timedelta(days=1), T0 + timedelta(seconds=1)),
        limit_set("week", "50", T0 + timedelta(seconds=2), currency="USD"),
        started("s-1", "198.51.100.7", T0 + timedelta(seconds=3)),
        located(T0 + timedelta(seconds=4)),
        ended("s-1", T0 + timedelta(seconds=5)),
    ]
    for offset, event in enumerate(events, start=10):
        after = players.apply_player_event(
            state, event, partition=3, offset=offset, policies=POLICIES, now=event.timestamp
        )
        assert isinstance(after, PlayerState), after
        assert after.version == state.version + 1
        assert (after.source_partition, after.source_offset) == (3, offset)
        assert (after.last_event, after.updated_at) == (event.type, event.timestamp)
        assert after.registered_at == T0
        state = after
    assert state.version == 6


def protection_event(kind: str, n: int, clock: datetime) -> Any:
    """One event of ``kind`` at ``clock``; ``n`` picks among a few colliding variants."""
    if kind == "exclude":
        return excluded(None if n == 0 else clock + timedelta(days=n), clock)
    if kind == "limit":
        return limit_set("day", str(n * 10), clock, currency="USD")
    if kind == "start":
        return started(f"s-{n}", f"10.0.0.{n}", clock)
    if kind == "end":
        return ended(f"s-{n}", clock)
    if kind == "locate":
        return located(clock - timedelta(minutes=n), ip=f"10.0.0.{n}")
    return registered()


event_kinds = st.sampled_from(["exclude", "limit", "start", "end", "locate", "register"])


@given(st.lists(st.tuples(event_kinds, st.integers(0, 3)), max_size=30))
def test_the_version_counts_exactly_the_events_that_changed_the_standing(
    steps: list[tuple[str, int]],
) -> None:
    state = player("NJ", currency="USD")
    clock = T0
    for offset, (kind, n) in enumerate(steps, start=1):
        clock += timedelta(minutes=1)
        result = apply(state, protection_event(kind, n, clock), offset=offset)
        if isinstance(result, PlayerState):
            assert result.version == state.version + 1
            assert result.source_offset == offset
            state = result
        else:
            assert isinstance(result, Unchanged | Rejected)
    assert state.version <= 1 + len(steps)
