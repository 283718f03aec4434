"""The pure limit rules: rolling windows, running totals, setting limits, and breaches."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.policies import load_policies
from config.settings import POLICY_DIR
from rules.limits import (
    Breach,
    Value,
    earliest_start,
    has_limits,
    in_force,
    matured,
    money_breach,
    money_total,
    month_before,
    session_breach,
    session_seconds,
    set_limit,
    window_start,
)
from schemas.players import LimitKind, LimitSet, PendingLimit, Period, PlayerLimit

POLICIES = load_policies(POLICY_DIR)
UK_COOLING_OFF = POLICIES["UK"].limits.cooling_off  # 24 h
NJ_COOLING_OFF = POLICIES["NJ"].limits.cooling_off  # 72 h
T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
PERIODS: tuple[Period, ...] = ("day", "week", "month")

# Moments from 1970 to 2400: leap years, the 2100 non-leap and the 2000/2400 leap centuries.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SPAN_US = int((datetime(2400, 12, 31, tzinfo=UTC) - EPOCH) / US)
moments = st.integers(0, _SPAN_US).map(lambda us: EPOCH + timedelta(microseconds=us))
cents = st.integers(-100_000, 100_000).map(lambda c: Decimal(c).scaleb(-2))


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def limit_set(
    kind: LimitKind, period: Period, value: int | Decimal | None, ts: datetime = T0
) -> LimitSet:
    """A ``limit_set`` event: an amount in EUR, minutes for a session limit, None removes."""
    if kind == "session":
        assert not isinstance(value, Decimal)
        fields: dict[str, object] = {"minutes": value}
    else:
        amount = None if value is None else Decimal(value)
        fields = {"amount": amount, "currency": None if amount is None else "EUR"}
    return LimitSet.model_validate(
        {"type": "limit_set", "player_id": "p-1", "timestamp": ts, "limit": kind,
         "period": period, **fields}
    )  # fmt: skip


def money_limit(
    period: Period,
    amount: str | None,
    *,
    kind: LimitKind = "deposit",
    pending: PendingLimit | None = None,
) -> PlayerLimit:
    return PlayerLimit(
        kind=kind,
        period=period,
        amount=None if amount is None else Decimal(amount),
        currency="EUR",
        set_at=T0 - timedelta(days=60),
        pending=pending,
    )


def session_limit(period: Period, minutes: int | None) -> PlayerLimit:
    return PlayerLimit(
        kind="session", period=period, minutes=minutes, set_at=T0 - timedelta(days=60)
    )


def only(limits: Sequence[PlayerLimit]) -> PlayerLimit:
    assert len(limits) == 1, limits
    return limits[0]


# --- windows ----------------------------------------------------------------------------------


def test_a_day_window_starts_24_hours_before() -> None:
    assert window_start("day", T0) == at(2026, 11, 23, 17, 0)


def test_a_week_window_starts_7_days_before() -> None:
    assert window_start("week", T0) == at(2026, 11, 17, 17, 0)


def test_a_day_window_across_a_month_and_year_end_is_still_24_hours() -> None:
    assert window_start("day", at(2027, 1, 1, 0, 30)) == at(2026, 12, 31, 0, 30)
    assert window_start("week", at(2027, 1, 3, 0, 30)) == at(2026, 12, 27, 0, 30)


def test_a_month_window_starts_at_the_same_wall_time_one_calendar_month_before() -> None:
    moment = at(2026, 5, 15, 13, 45, 12, 345678)
    assert window_start("month", moment) == at(2026, 4, 15, 13, 45, 12, 345678)
    assert month_before(moment) == window_start("month", moment)


@pytest.mark.parametrize(
    ("moment", "start"),
    [
        (at(2023, 3, 31, 9, 30), at(2023, 2, 28, 9, 30)),  # clamped, common year
        (at(2024, 3, 31, 9, 30), at(2024, 2, 29, 9, 30)),  # clamped, leap year
        (at(2024, 3, 30, 9, 30), at(2024, 2, 29, 9, 30)),
        (at(2024, 3, 29, 9, 30), at(2024, 2, 29, 9, 30)),
        (at(2024, 3, 28, 9, 30), at(2024, 2, 28, 9, 30)),
        (at(2100, 3, 29), at(2100, 2, 28)),  # 2100 is not a leap year
        (at(2000, 3, 31), at(2000, 2, 29)),  # 2000 is
        (at(2026, 5, 31, 23, 59, 59, 999999), at(2026, 4, 30, 23, 59, 59, 999999)),
        (at(2026, 7, 31), at(2026, 6, 30)),
        (at(2026, 8, 31), at(2026, 7, 31)),  # July has 31 days: no clamp
        (at(2024, 2, 29, 12), at(2024, 1, 29, 12)),
        (at(2026, 1, 15, 8), at(2025, 12, 15, 8)),  # January looks back into December
        (at(2026, 1, 31, 8), at(2025, 12, 31, 8)),
        (at(2026, 1, 1, 0, 0), at(2025, 12, 1, 0, 0)),
    ],
)
def test_month_before_clamps_to_the_last_day_of_a_shorter_month(
    moment: datetime, start: datetime
) -> None:
    assert month_before(moment) == start
    assert window_start("month", moment) == start


def test_month_before_keeps_the_timezone() -> None:
    assert month_before(T0).tzinfo is UTC


@given(moments)
def test_a_month_window_is_between_28_and_31_days(moment: datetime) -> None:
    length = moment - window_start("month", moment)
    assert timedelta(days=28) <= length <= timedelta(days=31)


@given(moments)
def test_month_before_is_the_previous_calendar_month_at_the_same_time(moment: datetime) -> None:
    start = month_before(moment)
    assert (start.year * 12 + start.month) == (moment.year * 12 + moment.month) - 1
    assert start.time() == moment.time()
    assert start.day <= moment.day
    # Clamping only ever happens at the end of the shorter month.
    if start.day != moment.day:
        assert (start + timedelta(days=1)).month == moment.month


@given(moments)
def test_windows_are_nested_and_earliest_start_is_the_longest(moment: datetime) -> None:
    day, week, month = (window_start(p, moment) for p in PERIODS)
    assert moment > day > week >= month
    assert earliest_start(moment) == min(day, week, month) == month


# --- money totals -----------------------------------------------------------------------------


def test_a_money_window_is_half_open_excluding_its_start_and_including_its_end() -> None:
    since, end = T0 - timedelta(hours=24), T0
    records = [
        (since - US, Decimal("1")),
        (since, Decimal("10")),  # exactly one period old: no longer counts
        (since + US, Decimal("100")),
        (end, Decimal("1000")),  # the moment of the decision counts
        (end + US, Decimal("10000")),
    ]
    assert money_total(records, since, end) == Decimal("1100")


def test_an_empty_money_window_totals_zero() -> None:
    records = [(T0, Decimal("5"))]
    assert money_total(records, T0, T0) == Decimal(0)
    assert money_total([], T0 - timedelta(days=1), T0) == Decimal(0)


def test_money_totals_are_exact_decimals_with_signed_records() -> None:
    records = [
        (T0 - timedelta(minutes=1), Decimal("0.10")),
        (T0 - timedelta(minutes=2), Decimal("0.20")),
        (T0 - timedelta(minutes=3), Decimal("-0.05")),
    ]
    total = money_total(records, T0 - timedelta(hours=1), T0)
    assert total == Decimal("0.25")
    assert isinstance(total, Decimal)


records_strategy = st.lists(st.tuples(moments, cents), max_size=30)


@given(records_strategy, st.lists(moments, min_size=3, max_size=3))
def test_money_totals_add_up_across_a_period_boundary(
    records: list[tuple[datetime, Decimal]], points: list[datetime]
) -> None:
    a, b, c = sorted(points)
    assert money_total(records, a, c) == money_total(records, a, b) + money_total(records, b, c)


@given(
    st.lists(st.tuples(st.integers(0, 1000), cents), max_size=40),
    st.lists(st.integers(0, 1000), min_size=2, max_size=12),
)
def test_money_totals_count_every_record_exactly_once_over_adjacent_windows(
    raw: list[tuple[int, Decimal]], cuts: list[int]
) -> None:
    # Small integer times make records land on the cut points themselves.
    records = [(T0 + timedelta(seconds=s), amount) for s, amount in raw]
    bounds = [T0 + timedelta(seconds=s) for s in sorted(set(cuts))]
    pieces = [money_total(records, lo, hi) for lo, hi in pairwise(bounds)]
    expected = sum((a for t, a in records if bounds[0] < t <= bounds[-1]), Decimal(0))
    assert sum(pieces, Decimal(0)) == expected == money_total(records, bounds[0], bounds[-1])
    for t, _ in records:
        owners = sum(lo < t <= hi for lo, hi in pairwise(bounds))
        assert owners == (1 if bounds[0] < t <= bounds[-1] else 0)


# --- session time -----------------------------------------------------------------------------


def test_a_session_inside_the_window_counts_in_full() -> None:
    sessions = [(T0 - timedelta(hours=3), T0 - timedelta(hours=1))]
    assert session_seconds(sessions, T0 - timedelta(hours=24), T0) == 7200.0


def test_a_session_straddling_the_window_start_counts_only_its_part_inside() -> None:
    since = T0 - timedelta(hours=24)
    sessions = [(since - timedelta(minutes=30), since + timedelta(minutes=10))]
    assert session_seconds(sessions, since, T0) == 600.0


def test_a_session_running_past_the_decision_counts_until_the_decision() -> None:
    sessions = [(T0 - timedelta(minutes=5), T0 + timedelta(hours=2))]
    assert session_seconds(sessions, T0 - timedelta(hours=24), T0) == 300.0


def test_an_open_session_runs_until_the_decision() -> None:
    sessions: list[tuple[datetime, datetime | None]] = [(T0 - timedelta(minutes=45), None)]
    assert session_seconds(sessions, T0 - timedelta(hours=24), T0) == 2700.0
    # An open session that began before the window counts from the window's start.
    assert session_seconds(sessions, T0 - timedelta(minutes=15), T0) == 900.0


def test_sessions_outside_the_window_or_touching_its_edges_count_nothing() -> None:
    since = T0 - timedelta(hours=24)
    sessions: list[tuple[datetime, datetime | None]] = [
        (since - timedelta(hours=2), since - timedelta(hours=1)),  # before
        (since - timedelta(hours=1), since),  # ends exactly at the start
        (T0, None),  # opens exactly at the decision
        (T0 + timedelta(minutes=1), T0 + timedelta(minutes=9)),  # after
    ]
    assert session_seconds(sessions, since, T0) == 0.0


def test_session_seconds_sum_several_sessions_with_microsecond_precision() -> None:
    sessions: list[tuple[datetime, datetime | None]] = [
        (T0 - timedelta(hours=5), T0 - timedelta(hours=4, minutes=30)),
        (T0 - timedelta(hours=2), T0 - timedelta(hours=2) + timedelta(seconds=1, microseconds=500)),
        (T0 - timedelta(minutes=1), None),
    ]
    assert session_seconds(sessions, T0 - timedelta(days=1), T0) == pytest.approx(
        1800 + 1.0005 + 60, abs=1e-9
    )


def _sessions(raw: list[tuple[int, int | None]]) -> list[tuple[datetime, datetime | None]]:
    return [
        (T0 + timedelta(seconds=s), None if d is None else T0 + timedelta(seconds=s + d))
        for s, d in raw
    ]


session_strategy = st.lists(
    st.tuples(st.integers(0, 10_000), st.none() | st.integers(0, 5_000)), max_size=15
)


@given(session_strategy, st.lists(st.integers(0, 16_000), min_size=3, max_size=3))
def test_session_seconds_add_up_across_a_split_point(
    raw: list[tuple[int, int | None]], points: list[int]
) -> None:
    sessions = _sessions(raw)
    a, b, c = (T0 + timedelta(seconds=s) for s in sorted(points))
    # Whole seconds: every float here is an exact integer, so equality is exact.
    whole = session_seconds(sessions, a, c)
    assert whole == session_seconds(sessions, a, b) + session_seconds(sessions, b, c)
    assert whole >= 0


@given(
    st.lists(st.tuples(st.integers(0, 3_000), st.integers(0, 3_000)), max_size=12),
    st.booleans(),
    st.integers(0, 60_000),
    st.integers(0, 60_000),
)
def test_session_seconds_of_disjoint_sessions_never_exceed_the_window(
    steps: list[tuple[int, int]], last_open: bool, lo: int, hi: int
) -> None:
    # Gaps and durations laid end to end: sessions that never overlap.
    sessions: list[tuple[datetime, datetime | None]] = []
    clock = T0
    for gap, duration in steps:
        start = clock + timedelta(seconds=gap)
        clock = start + timedelta(seconds=duration)
        sessions.append((start, clock))
    if last_open and sessions:
        sessions[-1] = (sessions[-1][0], None)
    since, end = T0 + timedelta(seconds=min(lo, hi)), T0 + timedelta(seconds=max(lo, hi))
    used = session_seconds(sessions, since, end)
    assert 0 <= used <= (end - since).total_seconds()
    reference = sum(
        max(0.0, (min(e or end, end) - max(s, since)).total_seconds()) for s, e in sessions
    )
    assert used == reference


# --- setting limits ---------------------------------------------------------------------------


def test_a_first_limit_applies_at_once() -> None:
    limit = only(set_limit((), limit_set("deposit", "day", 100), UK_COOLING_OFF))
    assert (limit.kind, limit.period, limit.amount, limit.currency) == (
        "deposit",
        "day",
        Decimal(100),
        "EUR",
    )
    assert limit.set_at == T0
    assert limit.pending is None
    assert in_force(limit, T0) == Decimal(100)


def test_a_first_session_limit_is_in_minutes_and_has_no_currency() -> None:
    limit = only(set_limit((), limit_set("session", "day", 90), UK_COOLING_OFF))
    assert (limit.minutes, limit.amount, limit.currency) == (90, None, None)
    assert in_force(limit, T0) == 90


def test_a_decrease_applies_at_once() -> None:
    limits = set_limit((), limit_set("deposit", "day", 100, T0), UK_COOLING_OFF)
    later = T0 + timedelta(minutes=5)
    limit = only(set_limit(limits, limit_set("deposit", "day", 40, later), UK_COOLING_OFF))
    assert limit.pending is None
    assert limit.set_at == later
    assert in_force(limit, later) == Decimal(40)


@pytest.mark.parametrize("value", [120, None], ids=["increase", "removal"])
@pytest.mark.parametrize("cooling_off", [UK_COOLING_OFF, NJ_COOLING_OFF], ids=["UK", "NJ"])
def test_a_loosening_waits_out_the_cooling_off_and_the_old_value_holds_until_then(
    value: int | None, cooling_off: timedelta
) -> None:
    limits = set_limit((), limit_set("deposit", "week", 100, T0), cooling_off)
    asked = T0 + timedelta(hours=1)
    limit = only(set_limit(limits, limit_set("deposit", "week", value, asked), cooling_off))
    effective = asked + cooling_off
    expected = None if value is None else Decimal(value)
    assert limit.pending == PendingLimit(amount=expected, effective_at=effective)
    assert limit.amount == Decimal(100)
    assert in_force(limit, asked) == Decimal(100)
    assert in_force(limit, effective - US) == Decimal(100)
    assert in_force(limit, effective) == expected
    assert in_force(limit, effective + timedelta(days=400)) == expected


def test_matured_folds_the_pending_value_in_from_its_effective_moment() -> None:
    effective = T0 + UK_COOLING_OFF
    limit = money_limit(
        "day", "50", pending=PendingLimit(amount=Decimal(80), effective_at=effective)
    )
    assert matured(limit, effective - US) is limit
    folded = matured(limit, effective)
    assert (folded.amount, folded.pending, folded.set_at) == (Decimal(80), None, effective)
    assert (folded.kind, folded.period, folded.currency) == ("deposit", "day", "EUR")


def test_matured_without_a_pending_change_is_the_limit_itself() -> None:
    limit = money_limit("day", "50")
    assert matured(limit, T0 + timedelta(days=999)) is limit


def test_a_decrease_cancels_a_pending_increase() -> None:
    limits = set_limit((), limit_set("loss", "month", 100, T0), UK_COOLING_OFF)
    limits = set_limit(limits, limit_set("loss", "month", 500, T0 + US), UK_COOLING_OFF)
    limit = only(set_limit(limits, limit_set("loss", "month", 70, T0 + 2 * US), UK_COOLING_OFF))
    assert limit.pending is None
    assert in_force(limit, T0 + timedelta(days=30)) == Decimal(70)


def test_setting_the_value_in_force_again_cancels_a_pending_loosening() -> None:
    limits = set_limit((), limit_set("deposit", "day", 100, T0), UK_COOLING_OFF)
    limits = set_limit(limits, limit_set("deposit", "day", None, T0 + US), UK_COOLING_OFF)
    assert only(limits).pending is not None
    limit = only(set_limit(limits, limit_set("deposit", "day", 100, T0 + 2 * US), UK_COOLING_OFF))
    assert limit.pending is None
    assert in_force(limit, T0 + 2 * UK_COOLING_OFF) == Decimal(100)


def test_a_second_loosening_replaces_the_pending_one_and_restarts_the_cooling_off() -> None:
    limits = set_limit((), limit_set("deposit", "day", 100, T0), UK_COOLING_OFF)
    limits = set_limit(limits, limit_set("deposit", "day", 300, T0), UK_COOLING_OFF)
    asked = T0 + timedelta(hours=10)
    limit = only(set_limit(limits, limit_set("deposit", "day", 200, asked), UK_COOLING_OFF))
    assert limit.pending == PendingLimit(amount=Decimal(200), effective_at=asked + UK_COOLING_OFF)
    assert in_force(limit, T0 + UK_COOLING_OFF) == Decimal(100)


def test_a_session_limit_increase_pends_in_minutes() -> None:
    limits = set_limit((), limit_set("session", "day", 60, T0), UK_COOLING_OFF)
    limit = only(set_limit(limits, limit_set("session", "day", 120, T0 + US), UK_COOLING_OFF))
    assert limit.pending == PendingLimit(minutes=120, effective_at=T0 + US + UK_COOLING_OFF)
    assert in_force(limit, T0 + UK_COOLING_OFF) == 60
    assert in_force(limit, T0 + US + UK_COOLING_OFF) == 120


def test_removing_a_limit_that_does_not_exist_changes_nothing() -> None:
    assert set_limit((), limit_set("deposit", "day", None), UK_COOLING_OFF) == ()
    others = (money_limit("week", "10"), session_limit("day", 30))
    assert set_limit(others, limit_set("deposit", "day", None), UK_COOLING_OFF) == others


def test_setting_one_limit_leaves_other_kinds_and_periods_untouched() -> None:
    others = (
        money_limit("day", "10", kind="loss"),
        money_limit("week", "20"),
        money_limit("month", "30"),
        session_limit("day", 45),
    )
    limits = set_limit(others, limit_set("deposit", "day", 5), UK_COOLING_OFF)
    assert len(limits) == 5
    assert [item for item in limits if (item.kind, item.period) != ("deposit", "day")] == [
        others[1], others[2], others[0], others[3],
    ]  # fmt: skip


def test_limits_are_kept_sorted_by_kind_then_period_length() -> None:
    limits: tuple[PlayerLimit, ...] = ()
    pairs: list[tuple[LimitKind, Period]] = [
        ("session", "month"), ("loss", "week"), ("deposit", "month"),
        ("deposit", "day"), ("loss", "day"), ("deposit", "week"),
    ]  # fmt: skip
    for kind, period in pairs:
        value = 60 if kind == "session" else 10
        limits = set_limit(limits, limit_set(kind, period, value), UK_COOLING_OFF)
    assert [(item.kind, item.period) for item in limits] == [
        ("deposit", "day"), ("deposit", "week"), ("deposit", "month"),
        ("loss", "day"), ("loss", "week"), ("session", "month"),
    ]  # fmt: skip


def test_a_matured_change_is_folded_in_by_any_later_limit_event() -> None:
    pending = PendingLimit(amount=Decimal(500), effective_at=T0 - US)
    others = (money_limit("week", "100", pending=pending),)
    limits = set_limit(others, limit_set("loss", "day", 20), UK_COOLING_OFF)
    week = next(item for item in limits if item.period == "week")
    assert (week.amount, week.pending, week.set_at) == (Decimal(500), None, T0 - US)


def test_a_pending_change_not_yet_due_survives_a_later_limit_event() -> None:
    pending = PendingLimit(amount=Decimal(500), effective_at=T0 + US)
    others = (money_limit("week", "100", pending=pending),)
    limits = set_limit(others, limit_set("loss", "day", 20), UK_COOLING_OFF)
    assert others[0] in limits


def test_after_a_removal_matures_a_new_limit_applies_at_once() -> None:
    limits = set_limit((), limit_set("deposit", "day", 100, T0), UK_COOLING_OFF)
    limits = set_limit(limits, limit_set("deposit", "day", None, T0), UK_COOLING_OFF)
    later = T0 + UK_COOLING_OFF + timedelta(hours=1)
    assert in_force(only(limits), later) is None
    limit = only(set_limit(limits, limit_set("deposit", "day", 1000, later), UK_COOLING_OFF))
    assert limit.pending is None
    assert in_force(limit, later) == Decimal(1000)


def test_the_same_limit_event_twice_gives_the_same_limits() -> None:
    limits = set_limit((), limit_set("deposit", "day", 100, T0), UK_COOLING_OFF)
    raise_it = limit_set("deposit", "day", 200, T0 + timedelta(hours=1))
    once = set_limit(limits, raise_it, UK_COOLING_OFF)
    assert set_limit(once, raise_it, UK_COOLING_OFF) == once


# --- property: the value in force against a reference model -----------------------------------


def _loose(value: Value) -> float | Decimal | int:
    return math.inf if value is None else value


def reference_in_force(
    events: Sequence[tuple[datetime, int | None]], cooling_off: timedelta, moment: datetime
) -> int | None:
    """RTS 12 as prose: tighter at once, looser after the cooling-off unless superseded."""
    exists, value = False, None
    pending: tuple[int | None, datetime] | None = None
    for ts, asked in events:
        if ts > moment:
            break
        if pending is not None and ts >= pending[1]:
            value, pending = pending[0], None
        if not exists:
            exists, value = asked is not None, asked
        elif _loose(asked) > _loose(value):
            pending = (asked, ts + cooling_off)
        else:
            value, pending = asked, None
    if pending is not None and moment >= pending[1]:
        value = pending[0]
    return value


@given(
    st.sampled_from(["deposit", "session"]),
    st.sampled_from([UK_COOLING_OFF, NJ_COOLING_OFF]),
    st.lists(st.tuples(st.integers(1, 200_000), st.none() | st.integers(1, 6)), max_size=25),
    st.lists(st.integers(0, 6_000_000), max_size=10),
)
def test_the_value_in_force_always_matches_a_reference_model(
    kind: LimitKind,
    cooling_off: timedelta,
    steps: list[tuple[int, int | None]],
    probes: list[int],
) -> None:
    # Values 1..6 (times ten) collide often: equal, tighter and looser requests all occur.
    events: list[tuple[datetime, int | None]] = []
    states: list[tuple[datetime, tuple[PlayerLimit, ...]]] = []
    limits: tuple[PlayerLimit, ...] = ()
    clock = T0
    for gap, value in steps:
        clock += timedelta(seconds=gap)
        asked = None if value is None else value * 10
        events.append((clock, asked))
        limits = set_limit(limits, limit_set(kind, "week", asked, clock), cooling_off)
        states.append((clock, limits))
        assert len(limits) <= 1
        for item in limits:
            if item.pending is not None:  # a pending change only ever loosens
                assert _loose(in_force(item, clock)) < _loose(
                    item.pending.minutes if kind == "session" else item.pending.amount
                )
    moments = {T0 + timedelta(seconds=s) for s in probes}
    for ts, _ in events:
        moments |= {ts, ts - US, ts + cooling_off - US, ts + cooling_off}
    for moment in sorted(moments):
        current = [limits for ts, limits in states if ts <= moment]
        actual = in_force(current[-1][0], moment) if current and current[-1] else None
        expected = reference_in_force(events, cooling_off, moment)
        assert _loose(actual) <= _loose(expected), f"looser than allowed at {moment}"
        assert actual == expected, moment


# --- breaches ---------------------------------------------------------------------------------


def deposits(*items: tuple[timedelta, str]) -> list[tuple[datetime, Decimal]]:
    """Records ``ago`` before T0."""
    return [(T0 - ago, Decimal(amount)) for ago, amount in items]


def test_reaching_a_money_limit_exactly_is_allowed_and_one_cent_more_is_not() -> None:
    limits = [money_limit("day", "100.00")]
    records = deposits((timedelta(hours=2), "60.00"))
    assert money_breach(limits, "deposit", records, Decimal("40.00"), T0) is None
    assert money_breach(limits, "deposit", records, Decimal("40.01"), T0) == Breach(
        "deposit", "day", Decimal("100.01"), Decimal("100.00")
    )


def test_a_record_exactly_one_period_old_no_longer_uses_up_the_limit() -> None:
    limits = [money_limit("day", "100")]
    assert (
        money_breach(limits, "deposit", deposits((timedelta(hours=24), "100")), Decimal(100), T0)
        is None
    )
    breach = money_breach(
        limits, "deposit", deposits((timedelta(hours=24) - US, "0.01")), Decimal(100), T0
    )
    assert breach is not None and breach.used == Decimal("100.01")


def test_the_lowest_of_several_limits_applies() -> None:
    limits = [money_limit("day", "100"), money_limit("week", "50"), money_limit("month", "500")]
    assert money_breach(limits, "deposit", [], Decimal(50), T0) is None
    breach = money_breach(limits, "deposit", [], Decimal("50.01"), T0)
    assert breach is not None and (breach.period, breach.limit) == ("week", Decimal(50))


def test_a_longer_period_counts_older_records_a_shorter_one_does_not() -> None:
    limits = [money_limit("day", "100"), money_limit("week", "150")]
    records = deposits((timedelta(days=3), "120"))
    assert money_breach(limits, "deposit", records, Decimal(30), T0) is None
    breach = money_breach(limits, "deposit", records, Decimal(31), T0)
    assert breach == Breach("deposit", "week", Decimal(151), Decimal(150))


def test_a_money_breach_ignores_limits_of_other_kinds_and_removed_limits() -> None:
    limits = [
        money_limit("day", "1", kind="loss"),
        money_limit("week", None),  # removed: no limit
        session_limit("day", 1),
    ]
    assert money_breach(limits, "deposit", [], Decimal(10_000), T0) is None


def test_a_zero_limit_allows_nothing_but_a_zero_amount() -> None:
    limits = [money_limit("month", "0")]
    assert money_breach(limits, "deposit", [], Decimal(0), T0) is None
    assert money_breach(limits, "deposit", [], Decimal("0.01"), T0) is not None


def test_a_pending_increase_allows_more_only_from_its_effective_moment() -> None:
    effective = T0 + timedelta(hours=1)
    limits = [
        money_limit("day", "10", pending=PendingLimit(amount=Decimal(50), effective_at=effective))
    ]
    assert money_breach(limits, "deposit", [], Decimal(50), effective - US) is not None
    assert money_breach(limits, "deposit", [], Decimal(50), effective) is None


def test_loss_is_stakes_minus_payouts_in_the_window() -> None:
    limits = [money_limit("day", "100", kind="loss")]
    loss = deposits((timedelta(hours=5), "150"), (timedelta(hours=4), "-80"))
    assert money_breach(limits, "loss", loss, Decimal(30), T0) is None
    assert money_breach(limits, "loss", loss, Decimal(31), T0) == Breach(
        "loss", "day", Decimal(101), Decimal(100)
    )


limit_amounts = st.none() | st.integers(0, 50_000).map(lambda c: Decimal(c).scaleb(-2))


@given(
    st.lists(st.tuples(st.integers(0, 40 * 86_400), cents), max_size=25),
    st.tuples(limit_amounts, limit_amounts, limit_amounts),
    st.integers(0, 100_000).map(lambda c: Decimal(c).scaleb(-2)),
)
def test_a_money_breach_happens_exactly_when_some_cap_would_be_exceeded(
    raw: list[tuple[int, Decimal]],
    caps: tuple[Decimal | None, Decimal | None, Decimal | None],
    amount: Decimal,
) -> None:
    records = [(T0 - timedelta(seconds=s), a) for s, a in raw]
    limits = [
        money_limit(p, None if c is None else str(c), kind="loss")
        for p, c in zip(PERIODS, caps, strict=True)
    ]
    starts = {
        "day": T0 - timedelta(days=1),
        "week": T0 - timedelta(days=7),
        "month": at(2026, 10, 24, 17, 0),
    }
    fits = all(
        sum((a for t, a in records if starts[p] < t <= T0), Decimal(0)) + amount <= cap
        for p, cap in zip(PERIODS, caps, strict=True)
        if cap is not None
    )
    breach = money_breach(limits, "loss", records, amount, T0)
    assert (breach is None) == fits
    if breach is not None:
        assert breach.used > breach.limit


def test_session_time_one_second_short_of_the_limit_is_allowed_and_at_it_is_used_up() -> None:
    limits = [session_limit("day", 60)]
    short = [(T0 - timedelta(minutes=60) + timedelta(seconds=1), T0)]
    assert session_breach(limits, short, T0) is None
    full: list[tuple[datetime, datetime | None]] = [(T0 - timedelta(minutes=60), None)]
    assert session_breach(limits, full, T0) == Breach("session", "day", 3600.0, 60)


def test_the_lowest_session_limit_applies() -> None:
    limits = [session_limit("day", 600), session_limit("week", 30)]
    sessions = [(T0 - timedelta(days=3), T0 - timedelta(days=3) + timedelta(minutes=30))]
    breach = session_breach(limits, sessions, T0)
    assert breach is not None and (breach.period, breach.limit) == ("week", 30)


def test_a_session_breach_ignores_money_limits_and_removed_session_limits() -> None:
    limits = [money_limit("day", "0"), session_limit("week", None)]
    sessions: list[tuple[datetime, datetime | None]] = [(T0 - timedelta(days=2), None)]
    assert session_breach(limits, sessions, T0) is None


def test_a_breach_describes_itself() -> None:
    money = Breach("deposit", "week", Decimal("151.00"), Decimal(150))
    assert money.describe("EUR") == "deposit 151.00 of 150 EUR per week"
    time = Breach("session", "day", 3690.0, 60)
    assert time.describe("EUR") == "session time 61.5 of 60 minutes per day used up"


def test_has_limits_only_counts_limits_in_force_of_the_wanted_kinds() -> None:
    pending_removal = PendingLimit(amount=None, effective_at=T0)
    limits = [money_limit("day", "10", pending=pending_removal), session_limit("day", 30)]
    assert has_limits(limits, ["deposit"], T0 - US)
    assert not has_limits(limits, ["deposit"], T0)
    assert not has_limits(limits, ["loss"], T0)
    assert has_limits(limits, ["loss", "session"], T0)
