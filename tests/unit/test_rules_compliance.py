"""``compliance.check``: may this player do this now, and which reason a refusal carries."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.policies import load_policies
from config.settings import POLICY_DIR
from rules.compliance import Action, Blocked, check
from rules.limits import Usage
from rules.policy import GeolocationPolicy, LimitPolicy, Policies, SessionPolicy
from schemas.outbound import ReasonCode
from schemas.players import (
    Exclusion,
    GeoCheck,
    LimitKind,
    OpenSession,
    Period,
    PlayerLimit,
    PlayerState,
)

SHIPPED = load_policies(POLICY_DIR)
# A licence that needs no open session (none of the shipped ones is like that).
LAX = SHIPPED["UK"].model_copy(
    update={
        "jurisdiction": "GI",
        "limits": LimitPolicy(periods=frozenset({"day"}), cooling_off_hours=24),
        "sessions": SessionPolicy(required=False, reality_check_minutes=60),
        "geolocation": GeolocationPolicy(required=False, buffer_seconds=0),
    }
)
POLICIES = Policies([*SHIPPED.values(), LAX])
T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
CURRENCY = {"UK": "GBP", "NJ": "USD", "ES": "EUR", "DK": "DKK", "GI": "GBP", "XX": "EUR"}
PLAY: tuple[Action, ...] = ("bet", "casino_debit")
GATED: tuple[Action, ...] = ("bet", "deposit", "casino_debit")


def geo(jurisdiction: str = "NJ", **fields: Any) -> GeoCheck:
    values: dict[str, Any] = {
        "jurisdiction": jurisdiction,
        "allowed": True,
        "checked_at": T0 - timedelta(minutes=5),
        "valid_until": T0 + timedelta(minutes=5),
        "ip": "198.51.100.7",
    }
    return GeoCheck(**(values | fields))


def standing(jurisdiction: str = "UK", **fields: Any) -> PlayerState:
    """A player in good standing: an open session and, in NJ, a valid geolocation check."""
    values: dict[str, Any] = {
        "player_id": "p-1",
        "jurisdiction": jurisdiction,
        "currency": CURRENCY[jurisdiction],
        "birth_date": date(1990, 5, 1),
        "registered_at": T0 - timedelta(days=100),
        "version": 5,
        "last_event": "session_started",
        "updated_at": T0 - timedelta(hours=1),
        "source_partition": 0,
        "source_offset": 4,
        "session": OpenSession(session_id="s-1", started_at=T0 - timedelta(minutes=30)),
        "geolocation": geo(jurisdiction) if jurisdiction == "NJ" else None,
    }
    return PlayerState(**(values | fields))


def limit(kind: LimitKind, period: Period, value: int) -> PlayerLimit:
    """A limit in force since long ago: minutes for a session limit, else GBP."""
    set_at = T0 - timedelta(days=60)
    if kind == "session":
        return PlayerLimit(kind=kind, period=period, minutes=value, set_at=set_at)
    return PlayerLimit(
        kind=kind, period=period, amount=Decimal(value), currency="GBP", set_at=set_at
    )


def ask(
    state: PlayerState | None,
    action: Action = "bet",
    *,
    amount: str = "10",
    at: datetime = T0,
    currency: str | None = None,
    usage: Usage | None = None,
) -> Blocked | None:
    if currency is None:
        currency = state.currency if state is not None else "GBP"
    return check(
        state,
        action=action,
        currency=currency,
        at=at,
        policies=POLICIES,
        amount=Decimal(amount),
        usage=usage,
    )


def reason(result: Blocked | None) -> ReasonCode | None:
    return None if result is None else result.reason


EXCLUDED = Exclusion(since=T0 - timedelta(days=1))
OVER_SESSION = Usage(sessions=[(T0 - timedelta(hours=2), T0 - timedelta(minutes=30))])
OVER_LOSS = Usage(loss=[(T0 - timedelta(hours=1), Decimal("95"))])
OVER_DEPOSIT = Usage(deposits=[(T0 - timedelta(hours=1), Decimal("95"))])


# --- who and in which currency ----------------------------------------------------------------


@pytest.mark.parametrize("action", [*GATED, "withdrawal"])
def test_an_unknown_player_is_refused_every_action(action: Action) -> None:
    result = ask(None, action)
    assert result == Blocked(ReasonCode.UNKNOWN_PLAYER, "the player never registered")


@pytest.mark.parametrize("action", [*GATED, "withdrawal"])
def test_a_currency_other_than_the_wallets_is_invalid(action: Action) -> None:
    result = ask(standing("UK"), action, currency="EUR")
    assert reason(result) == ReasonCode.INVALID
    assert result is not None and "wallet is in GBP" in result.detail


def test_a_currency_mismatch_is_reported_before_a_self_exclusion() -> None:
    assert reason(ask(standing(exclusion=EXCLUDED), currency="USD")) == ReasonCode.INVALID


def test_a_jurisdiction_without_a_policy_is_invalid_even_for_a_withdrawal() -> None:
    result = ask(standing("XX"), "withdrawal")
    assert result == Blocked(ReasonCode.INVALID, "no policy for XX")


@pytest.mark.parametrize("jurisdiction", ["UK", "NJ", "ES", "DK", "GI"])
@pytest.mark.parametrize("action", [*GATED, "withdrawal"])
def test_a_player_in_good_standing_may_do_anything(action: Action, jurisdiction: str) -> None:
    assert ask(standing(jurisdiction), action) is None


# --- self-exclusion ---------------------------------------------------------------------------


@pytest.mark.parametrize("action", GATED)
def test_a_self_excluded_player_may_not_bet_deposit_or_play(action: Action) -> None:
    result = ask(standing(exclusion=EXCLUDED), action)
    assert result == Blocked(ReasonCode.SELF_EXCLUDED, "self-excluded indefinitely")


def test_a_self_excluded_player_may_still_withdraw() -> None:
    assert ask(standing(exclusion=EXCLUDED), "withdrawal", amount="500") is None


def test_a_self_excluded_player_may_withdraw_even_without_session_or_geolocation() -> None:
    state = standing("NJ", exclusion=EXCLUDED, session=None, geolocation=None)
    assert ask(state, "withdrawal") is None


def test_a_dated_exclusion_holds_until_its_end_and_no_longer() -> None:
    until = T0 + timedelta(days=30)
    state = standing(exclusion=Exclusion(since=T0 - timedelta(days=1), until=until))
    result = ask(state, at=until - US)
    assert result == Blocked(ReasonCode.SELF_EXCLUDED, f"self-excluded until {until.isoformat()}")
    assert ask(state, at=until) is None


def test_an_exclusion_holds_from_when_it_was_applied_whatever_its_since_says() -> None:
    state = standing(exclusion=Exclusion(since=T0 + timedelta(hours=1)))
    assert reason(ask(state)) == ReasonCode.SELF_EXCLUDED


@pytest.mark.parametrize(
    ("action", "usage", "fields"),
    [
        ("deposit", OVER_DEPOSIT, {}),
        ("bet", OVER_SESSION, {}),
        ("bet", Usage(), {"session": None}),
        ("bet", OVER_LOSS, {}),
        ("casino_debit", Usage(), {"geolocation": None}),
    ],
)
def test_self_exclusion_comes_before_every_limit_session_and_geolocation_reason(
    action: Action, usage: Usage, fields: dict[str, Any]
) -> None:
    limits = (limit("deposit", "day", 100), limit("loss", "day", 100), limit("session", "day", 60))
    state = standing("NJ", exclusion=EXCLUDED, limits=limits, currency="GBP", **fields)
    assert reason(ask(state, action, usage=usage)) == ReasonCode.SELF_EXCLUDED


# --- deposits ---------------------------------------------------------------------------------


def test_a_deposit_reaching_the_limit_exactly_is_allowed_and_one_penny_more_is_not() -> None:
    state = standing(limits=(limit("deposit", "day", 100),))
    assert ask(state, "deposit", amount="5.00", usage=OVER_DEPOSIT) is None
    result = ask(state, "deposit", amount="5.01", usage=OVER_DEPOSIT)
    assert result == Blocked(ReasonCode.DEPOSIT_LIMIT, "deposit 100.01 of 100 GBP per day")


def test_a_deposit_needs_no_session_no_geolocation_and_ignores_loss_and_session_limits() -> None:
    limits = (limit("loss", "day", 1), limit("session", "day", 1))
    state = standing("NJ", session=None, geolocation=None, limits=limits, currency="GBP")
    usage = Usage(loss=OVER_LOSS.loss, sessions=OVER_SESSION.sessions)
    assert ask(state, "deposit", amount="1000", usage=usage) is None


def test_a_deposit_limit_does_not_limit_bets() -> None:
    state = standing(limits=(limit("deposit", "day", 1),))
    assert ask(state, "bet", amount="500", usage=OVER_DEPOSIT) is None


def test_without_usage_a_player_with_no_limits_is_judged_on_no_activity() -> None:
    assert ask(standing(), "deposit", amount="1000000", usage=None) is None
    assert ask(standing(), "bet", amount="1000000", usage=None) is None


# --- sessions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("action", PLAY)
def test_used_up_session_time_refuses_play(action: Action) -> None:
    state = standing(limits=(limit("session", "day", 90),))
    result = ask(state, action, usage=OVER_SESSION)
    assert result == Blocked(
        ReasonCode.SESSION_LIMIT, "session time 90.0 of 90 minutes per day used up"
    )


def test_session_time_just_short_of_the_limit_allows_play() -> None:
    state = standing(limits=(limit("session", "day", 90),))
    usage = Usage(sessions=[(T0 - timedelta(minutes=90) + US, None)])
    assert ask(state, usage=usage) is None


def test_a_session_limit_is_reported_before_a_missing_session() -> None:
    state = standing(session=None, limits=(limit("session", "day", 90),))
    assert reason(ask(state, usage=OVER_SESSION)) == ReasonCode.SESSION_LIMIT
    assert reason(ask(state, usage=Usage())) == ReasonCode.NO_SESSION


@pytest.mark.parametrize("jurisdiction", ["UK", "NJ", "ES", "DK"])
@pytest.mark.parametrize("action", PLAY)
def test_play_without_an_open_session_is_refused_where_the_policy_requires_one(
    action: Action, jurisdiction: str
) -> None:
    result = ask(standing(jurisdiction, session=None), action)
    assert result == Blocked(ReasonCode.NO_SESSION, f"{jurisdiction} requires an open session")


@pytest.mark.parametrize("action", PLAY)
def test_play_without_a_session_is_allowed_where_the_policy_does_not_require_one(
    action: Action,
) -> None:
    assert ask(standing("GI", session=None), action) is None


# --- geolocation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check_on_record", "detail"),
    [
        (None, "no geolocation check on record"),
        (geo(allowed=False), "the last geolocation check did not allow play"),
        (geo("PA"), "located in PA, licensed in NJ"),
        (
            geo(invalidated_at=T0 - timedelta(minutes=1)),
            f"the check of {(T0 - timedelta(minutes=5)).isoformat()} was invalidated by a new "
            "IP address",
        ),
        (
            geo(valid_until=T0 - US),
            f"the geolocation check expired at {(T0 - US).isoformat()}",
        ),
    ],
    ids=["none", "not-allowed", "elsewhere", "invalidated", "expired"],
)
@pytest.mark.parametrize("action", PLAY)
def test_nj_refuses_play_without_a_valid_allowed_check_inside_nj(
    action: Action, check_on_record: GeoCheck | None, detail: str
) -> None:
    result = ask(standing("NJ", geolocation=check_on_record), action)
    assert result == Blocked(ReasonCode.GEO_BLOCKED, detail)


def test_a_geolocation_check_is_valid_up_to_and_including_its_valid_until() -> None:
    valid_until = T0 + timedelta(minutes=9)
    state = standing("NJ", geolocation=geo(valid_until=valid_until))
    assert ask(state, at=valid_until) is None
    assert reason(ask(state, at=valid_until + US)) == ReasonCode.GEO_BLOCKED


def test_a_deposit_in_nj_needs_no_geolocation_check() -> None:
    assert ask(standing("NJ", geolocation=geo(allowed=False)), "deposit") is None


@pytest.mark.parametrize("jurisdiction", ["UK", "ES", "DK"])
def test_jurisdictions_without_geolocation_ignore_a_missing_or_bad_check(
    jurisdiction: str,
) -> None:
    assert ask(standing(jurisdiction, geolocation=None)) is None
    bad = geo("NJ", allowed=False, invalidated_at=T0 - timedelta(hours=1), valid_until=T0 - US)
    assert ask(standing(jurisdiction, geolocation=bad)) is None


def test_a_missing_session_is_reported_before_a_geolocation_problem() -> None:
    assert reason(ask(standing("NJ", session=None, geolocation=None))) == ReasonCode.NO_SESSION


def test_a_session_limit_is_reported_before_a_geolocation_problem() -> None:
    state = standing("NJ", geolocation=None, limits=(limit("session", "week", 90),))
    assert reason(ask(state, usage=OVER_SESSION)) == ReasonCode.SESSION_LIMIT


# --- loss -------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", PLAY)
def test_a_stake_reaching_the_loss_limit_exactly_is_allowed_and_one_penny_more_is_not(
    action: Action,
) -> None:
    state = standing(limits=(limit("loss", "day", 100),))
    assert ask(state, action, amount="5", usage=OVER_LOSS) is None
    result = ask(state, action, amount="5.01", usage=OVER_LOSS)
    assert result == Blocked(ReasonCode.LOSS_LIMIT, "loss 100.01 of 100 GBP per day")


def test_winnings_paid_in_the_window_make_room_under_the_loss_limit() -> None:
    state = standing(limits=(limit("loss", "day", 100),))
    usage = Usage(loss=[*OVER_LOSS.loss, (T0 - timedelta(minutes=10), Decimal("-50"))])
    assert ask(state, amount="55", usage=usage) is None
    assert reason(ask(state, amount="55.01", usage=usage)) == ReasonCode.LOSS_LIMIT


def test_a_geolocation_problem_is_reported_before_a_loss_limit() -> None:
    limits = (limit("loss", "day", 100),)
    state = standing("NJ", geolocation=geo(allowed=False), limits=limits, currency="GBP")
    assert reason(ask(state, amount="500", usage=OVER_LOSS)) == ReasonCode.GEO_BLOCKED


def test_a_withdrawal_is_never_limited() -> None:
    limits = (limit("loss", "day", 0), limit("deposit", "day", 0), limit("session", "day", 1))
    state = standing("NJ", session=None, geolocation=None, limits=limits, currency="GBP")
    usage = Usage(
        loss=OVER_LOSS.loss, deposits=OVER_DEPOSIT.deposits, sessions=OVER_SESSION.sessions
    )
    assert ask(state, "withdrawal", amount="1000", usage=usage) is None


# --- the order of reasons, as a property ------------------------------------------------------


ORDER = [
    ReasonCode.SELF_EXCLUDED,
    ReasonCode.DEPOSIT_LIMIT,
    ReasonCode.SESSION_LIMIT,
    ReasonCode.NO_SESSION,
    ReasonCode.GEO_BLOCKED,
    ReasonCode.LOSS_LIMIT,
]
APPLIES_TO: dict[ReasonCode, tuple[Action, ...]] = {
    ReasonCode.SELF_EXCLUDED: GATED,
    ReasonCode.DEPOSIT_LIMIT: ("deposit",),
    ReasonCode.SESSION_LIMIT: PLAY,
    ReasonCode.NO_SESSION: PLAY,
    ReasonCode.GEO_BLOCKED: PLAY,
    ReasonCode.LOSS_LIMIT: PLAY,
}


@given(
    st.sampled_from(["bet", "deposit", "withdrawal", "casino_debit"]),
    st.sets(st.sampled_from(ORDER)),
)
def test_a_refusal_carries_the_first_applicable_reason_in_the_documented_order(
    action: Action, problems: set[ReasonCode]
) -> None:
    limits = (limit("deposit", "day", 100), limit("loss", "day", 100), limit("session", "day", 60))
    state = standing(
        "NJ",
        currency="GBP",
        limits=limits,
        exclusion=EXCLUDED if ReasonCode.SELF_EXCLUDED in problems else None,
        session=None if ReasonCode.NO_SESSION in problems else standing().session,
        geolocation=geo(allowed=False) if ReasonCode.GEO_BLOCKED in problems else geo(),
    )
    usage = Usage(
        deposits=OVER_DEPOSIT.deposits if ReasonCode.DEPOSIT_LIMIT in problems else [],
        loss=OVER_LOSS.loss if ReasonCode.LOSS_LIMIT in problems else [],
        sessions=OVER_SESSION.sessions if ReasonCode.SESSION_LIMIT in problems else [],
    )
    expected = next((r for r in ORDER if r in problems and action in APPLIES_TO[r]), None)
    assert reason(ask(state, action, amount="10", usage=usage)) == expected
