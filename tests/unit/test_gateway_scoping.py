"""The gateway's in-memory halves of key scoping and answer matching: a decision reaches
only the streams of the key holding its bet (and, with ``?player=``, only that player's);
every answer for a transaction reaches each request waiting on it, which keeps its own;
a session token's lifetime and partner are checked before anything is stored; a partner
acts only on its own transactions and rounds. (The PostgreSQL halves,
tickets, seen signatures and tokens, are proved in tests/integration/test_gateway.py.)"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from croupier.gateway.bets import Decisions, _Subscriber
from croupier.gateway.kafka import Waiters
from croupier.gateway.tokens import MAX_TTL, issue

NAMES = st.sampled_from(["web", "shop", "app"])
PLAYERS = st.sampled_from(["p1", "p2", "p3"])


@given(
    bets=st.lists(st.tuples(NAMES, PLAYERS), min_size=1, max_size=20),
    subs=st.lists(st.tuples(NAMES, st.one_of(st.none(), PLAYERS)), min_size=1, max_size=6),
    unticketed=st.integers(min_value=0, max_value=3),
)
def test_a_decision_reaches_only_its_key_s_streams(
    bets: list[tuple[str, str]], subs: list[tuple[str, str | None]], unticketed: int
) -> None:
    async def run() -> None:
        decisions = Decisions()
        streams = [_Subscriber(owner, player) for owner, player in subs]
        decisions.subscribers.update(streams)
        for i, (owner, _player) in enumerate(bets):
            decisions.posted(f"b-{i}", owner)
        for i, (_, player) in enumerate(bets):
            decisions.decided({"bet_id": f"b-{i}", "player_id": player})
        for j in range(unticketed):  # produced straight to Kafka: nobody's ticket
            decisions.decided({"bet_id": f"x-{j}", "player_id": "p1"})
        for sub in streams:
            got = []
            while not sub.queue.empty():
                raw = sub.queue.get_nowait()
                assert raw is not None
                got.append(orjson.loads(raw)["bet_id"])
            want = [
                f"b-{i}"
                for i, (owner, player) in enumerate(bets)
                if owner == sub.owner and sub.player in (None, player)
            ]
            assert got == want

    asyncio.run(run())


def test_every_answer_reaches_each_waiter_until_it_forgets() -> None:
    async def run() -> None:
        waiters = Waiters()
        first, second = waiters.expect("tx-1"), waiters.expect("tx-1")
        other = waiters.expect("tx-2")
        # Two answers in one batch (a late one, then the one meant for the retry): both
        # reach both waiters, in order; none is lost to whoever took the first.
        waiters.answer("tx-1", b"late")
        waiters.answer("tx-1", b"mine")
        for q in (first, second):
            assert [q.get_nowait(), q.get_nowait()] == [b"late", b"mine"]
        assert other.empty() and len(waiters) == 2
        waiters.forget("tx-1", first)
        waiters.answer("tx-1", b"again")
        assert first.empty() and second.get_nowait() == b"again"
        waiters.forget("tx-1", second)
        waiters.forget("tx-2", other)
        assert len(waiters) == 0
        waiters.answer("tx-1", b"nobody")  # no waiter: dropped, never an error

    asyncio.run(run())


@pytest.mark.parametrize("ttl", [0.0, -1.0, MAX_TTL + 1.0, float("nan"), float("inf")])
def test_a_token_s_lifetime_is_bounded_before_anything_is_stored(ttl: float) -> None:
    with pytest.raises(ValueError, match="seconds"):
        issue("postgresql://nobody@127.0.0.1:1/none", "nowhere", "p1", ttl, partner="hub")


@pytest.mark.parametrize("partner", ["", "a/b", "x" * 65, "-lead", "sp ace"])
def test_a_token_is_issued_for_a_partner_named_as_keys_are(partner: str) -> None:
    with pytest.raises(ValueError, match="partner"):
        issue("postgresql://nobody@127.0.0.1:1/none", "nowhere", "p1", 60, partner=partner)


def test_revoking_names_a_token_or_a_player() -> None:
    from croupier.gateway.tokens import revoke

    for both_or_none in ({}, {"token": "cgs_x", "player": "p1"}):
        with pytest.raises(ValueError, match="one of the two"):
            revoke("postgresql://nobody@127.0.0.1:1/none", "nowhere", **both_or_none)


PARTNER = st.sampled_from(["hub", "pragma", "evo"])
HOLDER = st.one_of(st.none(), PARTNER)


@given(partner=PARTNER, holder=PARTNER, round_holder=HOLDER, reference_holder=HOLDER)
def test_a_partner_acts_only_on_its_own_transactions_and_rounds(
    partner: str, holder: str, round_holder: str | None, reference_holder: str | None
) -> None:
    from croupier.gateway.scoping import DUPLICATE, NOT_FOUND, Claimed, refusal

    got = refusal(partner, Claimed(holder, round_holder, reference_holder))
    others = {holder, round_holder, reference_holder} - {None, partner}
    # Allowed exactly when nothing the call touches is another partner's.
    assert (got is None) == (not others)
    if holder != partner:
        assert got == DUPLICATE  # the id is taken: the call's own id comes first
    elif others:
        assert got == NOT_FOUND  # its round or its debit: not there, for this partner


@given(
    token=st.one_of(
        st.none(),
        st.just(""),
        st.text(min_size=257, max_size=600),
        st.text(min_size=1, max_size=256).filter(lambda t: not t.isascii()),
    )
)
def test_a_hostile_token_is_invalid_before_any_lookup(token: str | None) -> None:
    from croupier.gateway.tokens import INVALID_TOKEN, refusal

    # No store at all: a token refused here never reaches PostgreSQL.
    assert asyncio.run(refusal(None, "p1", token, "hub")) == INVALID_TOKEN  # type: ignore[arg-type]
