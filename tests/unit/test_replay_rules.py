"""The pure replay: a bet's settlement and history folded from recorded feed messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from rules.replay import (
    Anchor,
    Difference,
    LegSpec,
    SettlementMessage,
    diff_rows,
    replay_bet,
    schedule,
)
from rules.sportsbook import Outcome
from schemas.odds import ODDS_MESSAGE

D = Decimal
T0 = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def msg(
    kind: str, minutes: int, event: str = "m-1", **fields: Any
) -> tuple[str, SettlementMessage]:
    parsed = ODDS_MESSAGE.validate_python(
        {"type": kind, "event_id": event, "timestamp": at(minutes), **fields}
    )
    assert not isinstance(parsed, str)
    return event, parsed  # type: ignore[return-value]  # the four settlement kinds only


def settle(minutes: int, results: dict[str, str | tuple[str, str]], *, event: str = "m-1",
           market: str = "1x2") -> tuple[str, SettlementMessage]:  # fmt: skip
    outcomes = []
    for outcome, result in results.items():
        if isinstance(result, tuple):
            outcomes.append({"outcome_id": outcome, "result": result[0],
                             "dead_heat_factor": result[1]})  # fmt: skip
        else:
            outcomes.append({"outcome_id": outcome, "result": result})
    return msg("bet_settlement", minutes, event,
               markets=[{"market_id": market, "outcomes": outcomes}])  # fmt: skip


def leg(odds: str, outcome: str = "home", *, event: str = "m-1", market: str = "1x2",
        placed: int = 0) -> LegSpec:  # fmt: skip
    return LegSpec(event, market, outcome, D(odds), at(placed))


def history(replay: Any) -> list[tuple[str, str, str | None, Decimal]]:
    return [(s.settlement_id, s.kind, s.result, s.payout) for s in replay.history]


@pytest.mark.parametrize(
    ("result", "want"),
    [
        ("win", Outcome("win", D("21.00"))),
        ("lose", Outcome("lose", D(0))),
        ("void", Outcome("void", D("10.00"))),
        ("half_win", Outcome("half_win", D("15.50"))),  # 10 x (2.10 + 1) / 2
        ("half_lose", Outcome("half_lose", D("5.00"))),
        (("win", "0.5"), Outcome("win", D("10.50"))),  # dead heat: half the win
    ],
)
def test_every_result_kind_of_a_single(result: str | tuple[str, str], want: Outcome) -> None:
    replay = replay_bet("b-1", D("10.00"), "EUR", [leg("2.10")], [settle(60, {"home": result})])
    assert replay.outcome == want
    kind = "voided" if want.result == "void" else "settled"
    assert history(replay) == [("b-1/1", kind, want.result, want.payout)]


def test_a_dead_heat_factor_only_scales_the_winning_leg_it_was_sent_for() -> None:
    replay = replay_bet("b-1", D("10.00"), "EUR", [leg("5.00", "runner-3", market="win")],
                        [settle(60, {"runner-3": ("win", "0.25")}, market="win")])  # fmt: skip
    assert replay.outcome == Outcome("win", D("12.50"))
    assert replay.legs[0].dead_heat_factor == D("0.25")


def test_an_accumulator_waits_for_every_leg_and_a_void_leg_drops_out() -> None:
    legs = [leg("2.00"), leg("3.00", "over", event="m-2", market="ou")]
    first = [settle(60, {"home": "win"})]
    assert replay_bet("b-1", D("10.00"), "EUR", legs, first).outcome is None
    both = [*first, settle(61, {"over": "void"}, event="m-2", market="ou")]
    replay = replay_bet("b-1", D("10.00"), "EUR", legs, both)
    assert replay.outcome == Outcome("win", D("20.00"))
    assert history(replay) == [("b-1/1", "settled", "win", D("20.00"))]


def test_an_accumulator_with_a_losing_leg_loses_and_half_results_combine() -> None:
    legs = [leg("2.00"), leg("1.90", "over", event="m-2", market="ou")]
    lose = [settle(60, {"home": "lose"}), settle(61, {"over": "win"}, event="m-2", market="ou")]
    assert replay_bet("b-1", D("10.00"), "EUR", legs, lose).outcome == Outcome("lose", D(0))
    half = [settle(60, {"home": "win"}),
            settle(61, {"over": "half_lose"}, event="m-2", market="ou")]  # fmt: skip
    assert replay_bet("b-1", D("10.00"), "EUR", legs, half).outcome == Outcome(
        "half_lose", D("10.00")
    )


def test_rollback_then_resettle_numbers_each_version() -> None:
    messages = [
        settle(60, {"home": "win", "draw": "lose"}),
        msg("rollback_bet_settlement", 70),
        settle(71, {"home": "lose", "draw": "win"}),
    ]
    replay = replay_bet("b-1", D("10.00"), "EUR", [leg("2.10")], messages)
    assert replay.outcome == Outcome("lose", D(0))
    assert history(replay) == [
        ("b-1/1", "settled", "win", D("21.00")),
        ("b-1/2", "rolled_back", None, D(0)),
        ("b-1/3", "resettled", "lose", D(0)),
    ]
    assert [s.cause for s in replay.history] == [0, 1, 2]
    assert replay.in_force is not None and replay.in_force.settlement_id == "b-1/3"


def test_a_corrected_settlement_without_a_rollback_resettles_in_two_steps() -> None:
    messages = [settle(60, {"home": "win"}), settle(65, {"home": "lose"})]
    assert history(replay_bet("b-1", D("10.00"), "EUR", [leg("2.10")], messages)) == [
        ("b-1/1", "settled", "win", D("21.00")),
        ("b-1/2", "rolled_back", None, D(0)),
        ("b-1/3", "resettled", "lose", D(0)),
    ]


def test_cancel_voids_and_rollback_of_cancel_restores_the_result() -> None:
    messages = [
        settle(60, {"home": "win"}),
        msg("bet_cancel", 61),
        msg("rollback_bet_cancel", 62),
    ]
    replay = replay_bet("b-1", D("10.00"), "EUR", [leg("2.10")], messages)
    assert history(replay) == [
        ("b-1/1", "settled", "win", D("21.00")),
        ("b-1/2", "rolled_back", None, D(0)),
        ("b-1/3", "voided", "void", D("10.00")),
        ("b-1/4", "rolled_back", None, D(0)),
        ("b-1/5", "resettled", "win", D("21.00")),
    ]
    assert replay.outcome == Outcome("win", D("21.00"))


def test_a_windowed_cancel_voids_only_legs_placed_inside_it() -> None:
    cancel = msg("bet_cancel", 90, start_time=at(10).isoformat(), end_time=at(20).isoformat())
    inside = replay_bet("b-1", D("10.00"), "EUR", [leg("2.10", placed=10)], [cancel])
    outside = replay_bet("b-2", D("10.00"), "EUR", [leg("2.10", placed=20)], [cancel])
    assert inside.outcome == Outcome("void", D("10.00"))
    assert outside.outcome is None and outside.history == ()
    # A whole-market rollback_bet_cancel does not undo a windowed cancel: the market itself
    # was never cancelled (as in the sink); a windowed rollback does.
    whole = msg("rollback_bet_cancel", 91)
    assert replay_bet("b-1", D("10.00"), "EUR", [leg("2.10", placed=10)],
                      [cancel, whole]).outcome == Outcome("void", D("10.00"))  # fmt: skip
    window = msg("rollback_bet_cancel", 91, start_time=at(0).isoformat())
    assert replay_bet("b-1", D("10.00"), "EUR", [leg("2.10", placed=10)],
                      [cancel, window]).outcome is None  # fmt: skip


def test_a_cancel_of_other_markets_or_events_leaves_the_leg_alone() -> None:
    messages = [msg("bet_cancel", 60, market_ids=["ou"]), msg("bet_cancel", 61, event="m-2")]
    assert replay_bet("b-1", D("10.00"), "EUR", [leg("2.10")], messages).history == ()


def test_older_and_repeated_messages_change_nothing() -> None:
    messages = [
        settle(60, {"home": "win"}),
        settle(50, {"home": "lose"}),  # older than what the market reflects
        msg("rollback_bet_settlement", 70),
        msg("rollback_bet_settlement", 70),  # a repeat (same time, same type)
        settle(65, {"home": "lose"}),  # older than the rollback: ignored, the bet stays open
    ]
    replay = replay_bet("b-1", D("10.00"), "EUR", [leg("2.10")], messages)
    assert replay.outcome is None
    assert history(replay) == [
        ("b-1/1", "settled", "win", D("21.00")),
        ("b-1/2", "rolled_back", None, D(0)),
    ]


def test_a_no_op_message_does_not_move_the_markets_clock() -> None:
    # A rollback of an unsettled market changes nothing, so a settlement older than it
    # still applies (as in the sink, which records no state for a no-op).
    messages = [msg("rollback_bet_settlement", 70), settle(60, {"home": "win"})]
    assert replay_bet("b-1", D("10.00"), "EUR", [leg("2.10")], messages).outcome == Outcome(
        "win", D("21.00")
    )


def test_messages_before_the_placement_shape_the_market_but_post_nothing() -> None:
    messages = [settle(30, {"home": "win"}), msg("rollback_bet_settlement", 31),
                settle(60, {"home": "lose"})]  # fmt: skip
    replay = replay_bet("b-1", D("10.00"), "EUR", [leg("2.10")], messages, placed_after=2)
    assert history(replay) == [("b-1/1", "settled", "lose", D(0))]
    assert [s.cause for s in replay.history] == [2]
    unsettled = replay_bet("b-1", D("10.00"), "EUR", [leg("2.10")], messages[:2], placed_after=2)
    assert unsettled.history == () and unsettled.outcome is None


def test_schedule_follows_ledger_transactions_and_places_the_rest_by_time() -> None:
    steps = {
        "stake-b1": Anchor(10, at(1)),
        "deposit": Anchor(5, at(0)),
        "settle-m1": Anchor(20, at(5)),
        "cancel-m2 (posted nothing)": Anchor(None, at(3), 1),
        "rejected bet (posted nothing)": Anchor(None, at(0), 2),
        "late stake": Anchor(15, at(6)),  # started later than settle-m1 but posted first
    }
    # A step that posted nothing goes after every posting step that had started by then.
    assert schedule(list(steps), steps.__getitem__) == [
        "deposit",
        "rejected bet (posted nothing)",
        "stake-b1",
        "cancel-m2 (posted nothing)",
        "late stake",
        "settle-m1",
    ]


def test_diff_rows_reports_missing_rows_and_fields_and_compares_decimals_by_value() -> None:
    live: dict[str, dict[str, object]] = {
        "b-1": {"payout": D("21.00"), "result": "win"},
        "b-2": {"payout": None},
    }
    again: dict[str, dict[str, object]] = {
        "b-1": {"payout": D("21.0"), "result": "lose"},
        "b-3": {"payout": None},
    }
    assert diff_rows("bet", live, again) == [
        Difference("bet b-1", "result", "win", "lose"),
        Difference("bet b-2", "row", "present", "missing"),
        Difference("bet b-3", "row", "missing", "present"),
    ]
