"""``croupier simulate``'s plan: deterministic from its seed, with the whole mix in it."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from config.games import load_catalogue
from croupier.sim.plan import (
    CASINO_GAMES,
    DEAD,
    UNCERTIFIED,
    Options,
    Plan,
    make_plan,
)
from schemas.topics import decode_topic

SMALL = Options(seed=3, players=8, matches=2, rate=6, duration=12, spike_factor=5)


def shape(plan: Plan, run_id: str) -> str:
    """The plan as text with the run id taken out."""
    steps = [(s.at, s.topic, s.key, s.kind, s.doc, s.raw and s.raw.decode(), s.expect, s.ref,
              s.repeat_of) for s in plan.all_steps()]  # fmt: skip
    return json.dumps([steps, plan.phases, plan.timeline()], default=str).replace(run_id, "RUN")


def test_same_seed_same_plan_whatever_the_run_id() -> None:
    a, b = make_plan(Options(), "sim7-aaaaaa"), make_plan(Options(), "sim7-bbbbbb")
    assert shape(a, "sim7-aaaaaa") == shape(b, "sim7-bbbbbb")
    other = make_plan(Options(seed=8), "sim7-aaaaaa")
    assert shape(other, "sim7-aaaaaa") != shape(a, "sim7-aaaaaa")


@pytest.mark.parametrize("options", [Options(), SMALL])
def test_every_id_and_key_carries_the_run_id(options: Options) -> None:
    plan = make_plan(options, "run1")
    for s in plan.all_steps():
        assert s.key.startswith("run1-"), s
        if s.ref:
            assert s.ref.startswith("run1-")
        doc = s.doc or {}
        for name in ("player_id", "bet_id", "payment_id", "transaction_id", "round_id",
                     "event_id", "session_id", "producer", "reference_transaction_id"):  # fmt: skip
            if name in doc:
                assert str(doc[name]).startswith("run1-"), (name, doc)
        for leg in doc.get("selections", []):
            assert leg["event_id"].startswith("run1-")


@pytest.mark.parametrize("options", [Options(), SMALL])
def test_the_mix_is_all_there(options: Options) -> None:
    plan = make_plan(options, "r")
    kinds = Counter(s.kind for s in plan.all_steps())
    for kind in ("accumulator", "single", "stale_none", "stale_higher", "unknown_market",
                 "beyond_balance", "retry", "malformed_bad_json", "malformed_unknown_field",
                 "malformed_missing_field", "during_stop", "after_exclusion", "self_excluded",
                 "bet_stop", "odds_change_after_goal", "bet_settlement",
                 "rollback_bet_settlement", "bet_settlement_corrected", "alive", "debit",
                 "credit", "rollback", "debit_uncertified", "withdrawal",
                 "deposit_after_exclusion", "geolocation", "limit_set"):  # fmt: skip
        assert kinds[kind] >= 1, kind
    # Every goal stops its match, and prices come back after the stop.
    goals = sum(len(m.goals) for m in plan.matches)
    assert goals >= 1
    assert kinds["bet_stop"] == goals + options.matches  # and one at full time per match
    assert kinds["odds_change_after_goal"] == goals
    assert kinds["bet_settlement"] == options.matches
    # Every market of every match settles; the rolled-back one is settled again differently.
    rolled = next(m for m in plan.matches if m.event_id == plan.rolled_back)
    assert rolled.corrected is not None and rolled.corrected != rolled.final
    # The four jurisdictions, with their currencies; NJ players are geolocated.
    assert {(p.jurisdiction, p.currency) for p in plan.players} == {
        ("UK", "GBP"), ("DK", "DKK"), ("ES", "EUR"), ("NJ", "USD")}  # fmt: skip
    geo = {s.key for s in plan.setup if s.kind == "geolocation"}
    assert geo == {p.player_id for p in plan.players if p.jurisdiction == "NJ"}


def test_the_proportions_and_the_spike() -> None:
    o = Options()
    plan = make_plan(o, "r")
    bets = [s for s in plan.steps if s.topic == "bets" and s.repeat_of is None]
    kinds = Counter(s.kind for s in bets)
    n = len(bets)
    assert 0.60 < kinds["single"] / n < 0.80
    assert 0.08 < kinds["accumulator"] / n < 0.20
    stale = sum(v for k, v in kinds.items() if k.startswith("stale"))
    assert 0.03 < stale / n < 0.12
    assert 0.005 < sum(v for k, v in kinds.items() if k.startswith("malformed")) / n < 0.03
    retries = [s for s in plan.steps if s.repeat_of is not None]
    assert 0.01 < len(retries) / n < 0.05
    # Accumulators have 2 to 4 legs.
    legs = Counter(len((s.doc or {})["selections"]) for s in bets if s.kind == "accumulator")
    assert set(legs) <= {2, 3, 4} and len(legs) >= 2
    # The kick-off spike: spike_factor times the base rate in its window.
    start, end = plan.spike
    in_spike = [s for s in bets if start <= s.at < end]
    base = [s for s in bets if end <= s.at < plan.full_time]
    spike_rate = len(in_spike) / (end - start)
    base_rate = len(base) / (plan.full_time - end)
    assert spike_rate / base_rate == pytest.approx(o.spike_factor, rel=0.25)
    assert [s.at for s in plan.steps] == sorted(s.at for s in plan.steps)


def test_messages_follow_the_contract() -> None:
    """Every well-formed message decodes with the wire schemas; malformed ones do not."""
    plan = make_plan(SMALL, "r")
    now = datetime.now(UTC).isoformat()
    bodies = {}
    for s in plan.all_steps():
        if s.repeat_of is not None:
            assert s.repeat_of in bodies
            continue
        body = s.body(now)
        if s.ref:
            bodies[s.ref] = body
        decoded = decode_topic(s.topic, body)
        failed = type(decoded).__name__ == "DecodeFailure"
        assert failed == (s.expect == DEAD), (s.kind, body, decoded)


def test_stale_and_retry_cases() -> None:
    plan = make_plan(Options(), "r")
    by_ref = {s.ref: s for s in plan.steps if s.ref}
    for s in plan.steps:
        if s.kind == "stale_none":
            leg = (s.doc or {})["selections"][0]
            m = next(x for x in plan.matches if x.event_id == leg["event_id"])
            book = m.prices_at(s.at)
            if book is not None:  # open: the price the player saw is not the current one
                assert Decimal(leg["odds"]) != book[leg["market_id"]][leg["outcome_id"]]
        if s.repeat_of is not None:
            first = by_ref[s.repeat_of]
            assert first.at < s.at and first.key == s.key
    # The excluded player bets and deposits after the exclusion.
    who, when = plan.excluded
    later = [s for s in plan.steps if s.key == who and s.at > when and s.expect]
    assert {s.topic for s in later} >= {"bets", "payments"}


def test_casino_games_are_certified_where_played() -> None:
    catalogue = load_catalogue()
    today = datetime.now(UTC).date()
    for j, games in CASINO_GAMES.items():
        for game in games:
            assert catalogue.check(game, j, today) is None, (game, j)
        assert catalogue.check(UNCERTIFIED[j], j, today) is not None


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="players"):
        make_plan(Options(players=2), "r")
