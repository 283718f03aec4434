"""The server's clock decides: producer times too far from it are refused (``clock_skew``),
and within the tolerance a producer's time only ever makes a decision stricter."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from config.policies import DEFAULT_POLICY_DIR, load_policies
from config.settings import Settings
from rules import players
from rules.clock import DEFAULT_CLOCK_SKEW, ahead, skewed
from rules.limits import in_force
from rules.odds import EventBook, Market, ProducerHealth, apply_alive, feed_clock_problem
from rules.players import Rejected
from rules.sportsbook import Priced, Refused, decide_bet
from schemas.bets import BetRequest
from schemas.odds import ODDS_MESSAGE
from schemas.outbound import ReasonCode
from schemas.players import PLAYER_EVENT, PlayerState

NOW = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
POLICIES = load_policies(DEFAULT_POLICY_DIR)
BOOKS = {"m-1": EventBook("m-1", None, {"1x2": Market("active", {"home": Decimal("2.10")},
                                                            NOW, 1)})}  # fmt: skip


def test_the_tolerance_is_a_documented_setting_of_five_minutes_by_default() -> None:
    assert timedelta(minutes=5) == DEFAULT_CLOCK_SKEW
    assert Settings().clock_skew == DEFAULT_CLOCK_SKEW
    assert Settings(CROUPIER_CLOCK_SKEW_SECONDS=30).clock_skew == timedelta(seconds=30)
    with pytest.raises(ValueError, match="greater than 0"):
        Settings(CROUPIER_CLOCK_SKEW_SECONDS=0)


def test_ahead_and_skewed() -> None:
    assert ahead(NOW + 5 * MINUTE, NOW, DEFAULT_CLOCK_SKEW, what="t") is None
    assert "ahead of the server's clock" in str(
        ahead(NOW + 6 * MINUTE, NOW, DEFAULT_CLOCK_SKEW, what="t")
    )
    assert ahead(NOW - timedelta(days=400), NOW, DEFAULT_CLOCK_SKEW, what="t") is None
    assert skewed(NOW - 5 * MINUTE, NOW, DEFAULT_CLOCK_SKEW, what="t") is None
    assert "behind the server's clock" in str(
        skewed(NOW - 6 * MINUTE, NOW, DEFAULT_CLOCK_SKEW, what="t")
    )


# -- bets ------------------------------------------------------------------------------------


def bet(placed_at: datetime) -> BetRequest:
    return BetRequest.model_validate_json(json.dumps({
        "bet_id": "b-1", "player_id": "p-1", "placed_at": placed_at.isoformat(),
        "stake": "10.00", "currency": "EUR", "odds_change": "none",
        "selections": [{"event_id": "m-1", "market_id": "1x2", "outcome_id": "home",
                        "odds": "2.10"}],
    }))  # fmt: skip


@pytest.mark.parametrize("offset", [-6 * MINUTE, 6 * MINUTE, timedelta(days=-400)])
def test_a_bet_placed_too_far_from_the_servers_clock_is_refused(offset: timedelta) -> None:
    verdict = decide_bet(bet(NOW + offset), BOOKS, {}, NOW, timedelta(seconds=20))
    assert isinstance(verdict, Refused) and verdict.reason == ReasonCode.CLOCK_SKEW


@pytest.mark.parametrize("offset", [-5 * MINUTE, timedelta(0), 5 * MINUTE])
def test_a_bet_within_the_tolerance_is_priced(offset: timedelta) -> None:
    verdict = decide_bet(bet(NOW + offset), BOOKS, {}, NOW, timedelta(seconds=20))
    assert verdict == Priced((Decimal("2.10"),), Decimal("2.10"))


def test_the_tolerance_is_the_callers() -> None:
    late = bet(NOW - 2 * MINUTE)
    tight = decide_bet(late, BOOKS, {}, NOW, timedelta(seconds=20), clock_skew=MINUTE)
    assert isinstance(tight, Refused) and tight.reason == ReasonCode.CLOCK_SKEW


# -- the feed --------------------------------------------------------------------------------


def feed(kind: str, at: datetime, **fields: Any) -> Any:
    doc = {"type": kind, "timestamp": at.isoformat(), **fields}
    return ODDS_MESSAGE.validate_json(json.dumps(doc))


def test_a_feed_message_stamped_in_year_9999_is_refused() -> None:
    far = datetime(9999, 1, 1, tzinfo=UTC)
    for msg in (
        feed("alive", far, producer="live"),
        feed(
            "odds_change",
            far,
            event_id="m-1",
            markets=[
                {
                    "market_id": "1x2",
                    "status": "active",
                    "outcomes": [{"outcome_id": "home", "odds": "2.10"}],
                }
            ],
        ),
        feed("bet_stop", far, event_id="m-1"),
        feed("bet_cancel", far, event_id="m-1"),
    ):
        problem = feed_clock_problem(msg, NOW, DEFAULT_CLOCK_SKEW)
        assert problem is not None and "ahead of the server's clock" in problem
    # Why: applied, that heartbeat would keep the producer up for ever.
    health = apply_alive(None, feed("alive", far, producer="live"), timedelta(seconds=20))
    assert isinstance(health, ProducerHealth)
    assert health.is_up(NOW + timedelta(days=365 * 100), timedelta(seconds=20))


def test_feed_messages_on_time_or_late_are_let_through() -> None:
    for at in (NOW + 5 * MINUTE, NOW, NOW - timedelta(days=2)):
        assert (
            feed_clock_problem(feed("alive", at, producer="live"), NOW, DEFAULT_CLOCK_SKEW) is None
        )


# -- players ---------------------------------------------------------------------------------


def event(kind: str, at: datetime, **fields: Any) -> Any:
    doc = {"type": kind, "player_id": "p-1", "timestamp": at.isoformat(), **fields}
    return PLAYER_EVENT.validate_json(json.dumps(doc))


def registered(birth: date = date(1990, 5, 1), jurisdiction: str = "UK") -> PlayerState:
    state = players.apply_player_event(
        None, event("registered", NOW - timedelta(days=30), jurisdiction=jurisdiction,
                    currency="EUR", birth_date=birth.isoformat()),
        partition=0, offset=0, policies=POLICIES, now=NOW - timedelta(days=30),
    )  # fmt: skip
    assert isinstance(state, PlayerState)
    return state


def apply(state: PlayerState | None, msg: Any, now: datetime = NOW) -> Any:
    return players.apply_player_event(state, msg, partition=0, offset=1, policies=POLICIES,
                                      now=now)  # fmt: skip


@pytest.mark.parametrize(
    "msg",
    [
        event("session_started", NOW + 6 * MINUTE, session_id="s-1"),
        event(
            "limit_set",
            NOW + timedelta(days=1),
            limit="deposit",
            period="day",
            amount="10.00",
            currency="EUR",
        ),
        event("self_excluded", datetime(9999, 1, 1, tzinfo=UTC), until=None),
        event(
            "geolocation",
            NOW,
            jurisdiction="UK",
            allowed=True,
            checked_at=datetime(9999, 1, 1, tzinfo=UTC).isoformat(),
            geolocate_in=3600,
            ip="203.0.113.7",
        ),
    ],
)
def test_a_player_event_stamped_ahead_of_the_tolerance_is_refused(msg: Any) -> None:
    result = apply(registered(), msg)
    assert isinstance(result, Rejected) and result.reason == "clock_skew", result


def test_a_registration_dated_ahead_is_refused_and_age_is_taken_on_the_servers_day() -> None:
    turns_18_on_the_25th = date(2008, 11, 25).isoformat()
    days_ahead = event("registered", NOW + timedelta(days=2), jurisdiction="UK",
                       currency="EUR", birth_date=turns_18_on_the_25th)  # fmt: skip
    refused = apply(None, days_ahead)
    assert isinstance(refused, Rejected) and refused.reason == "clock_skew"
    # Four minutes ahead is within the tolerance, but it is already the 25th only on the
    # producer's clock: on the server's it is the 24th, and the player is 17.
    server = NOW.replace(hour=23, minute=58)
    minutes_ahead = event("registered", server + 4 * MINUTE, jurisdiction="UK",
                          currency="EUR", birth_date=turns_18_on_the_25th)  # fmt: skip
    under = apply(None, minutes_ahead, now=server)
    assert isinstance(under, Rejected) and under.reason == "underage"
    assert isinstance(apply(None, minutes_ahead, now=server + 4 * MINUTE), PlayerState)


def test_a_loosening_dated_back_still_waits_its_cooling_off_from_the_servers_clock() -> None:
    day = {"limit": "deposit", "period": "day", "currency": "EUR"}
    state = apply(registered(), event("limit_set", NOW - MINUTE, amount="10.00", **day))
    assert isinstance(state, PlayerState)
    raised = apply(state, event("limit_set", NOW - timedelta(days=30), amount="500.00", **day))
    assert isinstance(raised, PlayerState)
    (limit,) = raised.limits
    assert limit.pending is not None
    assert limit.pending.effective_at == NOW + timedelta(hours=24)  # UK: 24 hours from now
    assert in_force(limit, NOW + timedelta(hours=23)) == Decimal("10.00")
    assert in_force(limit, NOW + timedelta(hours=24)) == Decimal("500.00")


def test_a_session_or_check_dated_slightly_ahead_counts_from_the_servers_clock() -> None:
    started = apply(registered(), event("session_started", NOW + 4 * MINUTE, session_id="s-1"))
    assert isinstance(started, PlayerState) and started.session is not None
    assert started.session.started_at == NOW
    located = apply(started, event("geolocation", NOW, jurisdiction="UK", allowed=True,
                                   checked_at=(NOW + 4 * MINUTE).isoformat(),
                                   geolocate_in=600, ip="203.0.113.7"))  # fmt: skip
    assert isinstance(located, PlayerState) and located.geolocation is not None
    assert located.geolocation.valid_until == NOW + timedelta(seconds=600)
    # A time in the past is kept: it orders the producer's messages and only ever shortens.
    back = apply(registered(), event("session_started", NOW - timedelta(hours=1), session_id="s"))
    assert isinstance(back, PlayerState) and back.session is not None
    assert back.session.started_at == NOW - timedelta(hours=1)


def test_a_producer_whose_clock_runs_ahead_is_not_kept_up_after_it_falls_silent() -> None:
    timeout = timedelta(seconds=20)
    ahead_4_min = feed("alive", NOW + 4 * MINUTE, producer="live")
    assert feed_clock_problem(ahead_4_min, NOW, DEFAULT_CLOCK_SKEW) is None  # within it
    health = apply_alive(None, ahead_4_min, timeout, NOW)
    assert health is not None and health.seen_at == NOW
    assert health.is_up(NOW + timeout, timeout)
    assert not health.is_up(NOW + timeout + timedelta(seconds=1), timeout)  # not 4 min more
    restored = ProducerHealth.from_json(json.loads(json.dumps(health.to_json())))
    assert restored == health
