"""The session watcher's and the players flow's pure parts: checks due, sessions to end."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from config.policies import load_policies
from config.settings import POLICY_DIR
from rules.limits import Usage
from schemas.players import OpenSession, PlayerLimit, PlayerState, SessionEnded, SessionStarted
from sinks.postgres.protection import OpenSessionRow
from streams.players import session_changes
from streams.protection import plan_sessions, session_end_event

POLICIES = load_policies(POLICY_DIR)
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def standing(jurisdiction: str = "UK", currency: str = "EUR", **extra: object) -> PlayerState:
    return PlayerState.model_validate({
        "player_id": "p-1", "jurisdiction": jurisdiction, "currency": currency,
        "birth_date": date(1990, 5, 1), "registered_at": NOW - 10 * HOUR, "version": 2,
        "last_event": "session_started", "updated_at": NOW - 10 * HOUR,
        "source_partition": 0, "source_offset": 1, **extra,
    })  # fmt: skip


def row(
    started: datetime,
    last: int = 0,
    *,
    jurisdiction: str = "UK",
    currency: str = "EUR",
    limits: tuple[PlayerLimit, ...] = (),
) -> OpenSessionRow:
    player = standing(jurisdiction, currency, limits=limits)
    return OpenSessionRow("p-1", "s-1", started, player, last)


def test_a_check_falls_due_at_each_interval_and_only_once() -> None:
    just_before = row(NOW - HOUR + timedelta(microseconds=1))
    assert plan_sessions([just_before], {}, {}, POLICIES, NOW) == ([], [])
    checks, _ = plan_sessions([row(NOW - HOUR)], {}, {"p-1": Decimal("12.5")}, POLICIES, NOW)
    assert [(c.sequence, c.elapsed_seconds, c.net_position) for c in checks] == [
        (1, 3600, Decimal("-12.50"))
    ]
    doc = json.loads(checks[0].message)
    assert (doc["type"], doc["sequence"], doc["net_position"], doc["currency"]) == (
        "reality_check_due", 1, "-12.50", "EUR",
    )  # fmt: skip
    # Already sent: nothing again; three intervals later after an outage: the latest only.
    assert plan_sessions([row(NOW - HOUR, last=1)], {}, {}, POLICIES, NOW)[0] == []
    late = plan_sessions([row(NOW - 3 * HOUR - timedelta(minutes=5), last=1)], {}, {},
                         POLICIES, NOW)[0]  # fmt: skip
    assert [c.sequence for c in late] == [3]


def test_net_position_is_in_the_currencys_minor_units_and_winnings_are_positive() -> None:
    checks, _ = plan_sessions([row(NOW - HOUR, jurisdiction="DK", currency="DKK")], {},
                              {"p-1": Decimal("-40")}, POLICIES, NOW)  # fmt: skip
    assert checks[0].net_position == Decimal("40.00") and checks[0].currency == "DKK"


def test_a_session_over_its_time_limit_is_to_be_ended() -> None:
    limit = PlayerLimit(kind="session", period="day", minutes=30, set_at=NOW - 5 * HOUR)
    over = row(NOW - timedelta(minutes=31), limits=(limit,))
    usage = {"p-1": Usage(sessions=[(NOW - timedelta(minutes=31), None)])}
    assert plan_sessions([over], usage, {}, POLICIES, NOW)[1] == [over]
    under = {"p-1": Usage(sessions=[(NOW - timedelta(minutes=29), None)])}
    assert plan_sessions([over], under, {}, POLICIES, NOW)[1] == []
    event = json.loads(session_end_event(over, NOW))
    assert (event["type"], event["session_id"], event["reason"]) == (
        "session_ended", "s-1", "session_limit",
    )  # fmt: skip
    assert SessionEnded.model_validate(event).reason == "session_limit"


def test_session_changes_open_close_and_replace() -> None:
    before = standing()
    opened = before.model_copy(update={"session": OpenSession(session_id="a", started_at=NOW)})
    start = SessionStarted(type="session_started", player_id="p-1", session_id="a", timestamp=NOW)
    assert [(c.session_id, c.end_reason) for c in session_changes(before, opened, start, NOW)] == [
        ("a", None)
    ]
    later = NOW + HOUR
    replaced = opened.model_copy(update={"session": OpenSession(session_id="b", started_at=later)})
    start_b = SessionStarted(type="session_started", player_id="p-1", session_id="b",
                             timestamp=later)  # fmt: skip
    changes = session_changes(opened, replaced, start_b, NOW)
    assert [(c.session_id, c.end_reason, c.at) for c in changes] == [
        ("a", "replaced", later), ("b", None, later),
    ]  # fmt: skip
    end = SessionEnded(type="session_ended", player_id="p-1", session_id="b", timestamp=later,
                       reason="session_limit")  # fmt: skip
    closed = replaced.model_copy(update={"session": None})
    assert [(c.session_id, c.end_reason) for c in session_changes(replaced, closed, end, NOW)] == [
        ("b", "session_limit")
    ]
    # An end dated before the server applies it counts until the server's time.
    back_dated = end.model_copy(update={"timestamp": later - 3 * HOUR})
    [ended] = session_changes(replaced, closed, back_dated, later)
    assert ended.at == later
