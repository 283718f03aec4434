"""Random operation sequences with retries and reorderings: the ledger agrees with a model.

The same sequence is posted one operation per transaction and in random batch splits
(which exercises both the set-based and the exact path); both must give the statuses and
balances of a plain Python model, never a negative balance, and balanced books. Settlements
are rolled back too, whatever the player holds: the shortfall becomes debt, which deposits
and payouts pay down first (casino credits do not).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.settings import Settings
from rules import ledger as L
from sinks.postgres.ledger import Ledger

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)
PLAYERS = ("a", "b", "c")
COUNTER = itertools.count()


@dataclass
class Model:
    """What the ledger should say, computed the obvious way."""

    cash: dict[str, Decimal] = field(default_factory=dict)
    pending: dict[str, Decimal] = field(default_factory=dict)
    owed: dict[str, Decimal] = field(default_factory=dict)
    first: dict[str, str] = field(default_factory=dict)  # key -> status of its first result
    stakes: dict[str, Decimal] = field(default_factory=dict)  # open stakes by key
    settled: set[str] = field(default_factory=set)
    settlements: dict[str, tuple[str, Decimal]] = field(default_factory=dict)  # applied ones
    undone: set[str] = field(default_factory=set)
    order: list[str] = field(default_factory=list)  # what build() has applied so far

    def apply(self, op: L.LedgerOp) -> str:
        if op.key in self.first:
            return self.first[op.key]
        p = op.player_id
        cash, pending = self.cash.get(p, Decimal(0)), self.pending.get(p, Decimal(0))
        owed = self.owed.get(p, Decimal(0))
        status = "applied"
        if op.operation == "deposit":
            paid = min(owed, op.amount)
            owed -= paid
            cash += op.amount - paid
        elif op.operation == "casino_credit":
            cash += op.amount
        elif op.operation in ("stake", "casino_debit"):
            if cash < op.amount:
                status = "rejected"
            else:
                cash -= op.amount
                if op.operation == "stake":
                    pending += op.amount
                    self.stakes[op.key] = op.amount
        elif op.operation == "settle":
            ref = op.reference or ""
            if ref not in self.stakes or ref in self.settled:
                status = "rejected"
            else:
                payout = op.payout or Decimal(0)
                paid = min(owed, payout)
                pending -= self.stakes[ref]
                owed -= paid
                cash += payout - paid
                self.settled.add(ref)
                self.settlements[op.key] = (ref, payout)
        elif op.operation == "unsettle":
            ref = op.reference or ""
            if ref not in self.settlements or ref in self.undone:
                status = "rejected"
            else:
                stake, payout = self.settlements[ref]
                taken = min(cash, payout)
                cash -= taken
                owed += payout - taken
                pending += self.stakes[stake]
                self.settled.discard(stake)
                self.undone.add(ref)
        self.cash[p], self.pending[p], self.owed[p] = cash, pending, owed
        self.first[op.key] = status
        return status


amounts = st.integers(min_value=1, max_value=3000).map(lambda c: Decimal(c).scaleb(-2))


@st.composite
def sequences(draw: st.DrawFn) -> list[tuple[str, str, Decimal, int]]:
    """(kind, player, amount, pick) steps; pick chooses an earlier op to retry or a stake."""
    kinds = st.sampled_from(["deposit", "deposit", "stake", "stake", "casino_debit",
                             "casino_credit", "settle", "settle", "unsettle", "retry"])  # fmt: skip
    step = st.tuples(kinds, st.sampled_from(PLAYERS), amounts, st.integers(0, 10_000))
    return draw(st.lists(step, min_size=1, max_size=40))


def build(steps: list[tuple[str, str, Decimal, int]], tag: str) -> list[L.LedgerOp]:
    ops: list[L.LedgerOp] = []
    stakes: list[L.LedgerOp] = []
    settles: list[L.LedgerOp] = []
    shadow = Model()  # the balances so far, so a rollback can follow spent winnings
    for n, (kind, player, amount, pick) in enumerate(steps):
        for op in ops[len(shadow.order) :]:
            shadow.apply(op)
            shadow.order.append(op.key)
        pid = f"{tag}-{player}"
        if kind == "retry" and ops:
            ops.append(ops[pick % len(ops)])  # a producer's retry or a redelivery
        elif kind == "settle" and stakes:
            # Mostly an open stake (a settlement that applies), sometimes any.
            open_ = [o for o in stakes if o.key in shadow.stakes and o.key not in shadow.settled]
            stake = (
                (open_ or stakes)[pick % len(open_ or stakes)]
                if pick % 4
                else stakes[pick % len(stakes)]
            )
            payout = amount if pick % 3 else Decimal(0)
            ops.append(L.settle(f"{tag}-s{n}", stake.key.removeprefix("bet:"), stake.player_id,
                                "EUR", payout, "win" if payout else "lose", NOW))  # fmt: skip
            settles.append(ops[-1])
        elif kind == "unsettle" and settles:
            live = [o for o in settles if o.key in shadow.settlements
                    and o.key not in shadow.undone]  # fmt: skip
            done = (
                (live or settles)[pick % len(live or settles)]
                if pick % 4
                else settles[pick % len(settles)]
            )
            spendable = shadow.cash.get(done.player_id, Decimal(0))
            if pick % 2 and spendable > 0:  # the player spends everything first
                ops.append(L.casino_debit(f"{tag}-x{n}", done.player_id, spendable, "EUR", NOW))
            ops.append(L.unsettle(f"{tag}-u{n}", done.key.removeprefix("settlement:"),
                                  done.player_id, "EUR", NOW))  # fmt: skip
        elif kind in ("deposit", "stake", "casino_debit", "casino_credit"):
            make = {"deposit": L.deposit, "stake": L.stake, "casino_debit": L.casino_debit,
                    "casino_credit": L.casino_credit}[kind]  # fmt: skip
            # Deposits larger than the rest, so stakes mostly apply and settle.
            op = make(f"{tag}-{n}", pid, amount * 10 if kind == "deposit" else amount, "EUR", NOW)
            ops.append(op)
            if kind == "stake":
                stakes.append(op)
    return ops


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    lg = Ledger.connect(settings.pg_dsn.get_secret_value(), settings.pg_schema)
    yield lg
    lg.close()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=sequences(), cuts=st.lists(st.integers(1, 12), min_size=1, max_size=10))
def test_batched_and_single_posting_agree_with_the_model(
    ledger: Ledger, steps: list[tuple[str, str, Decimal, int]], cuts: list[int]
) -> None:
    example = next(COUNTER)
    results: dict[str, list[str]] = {}
    models: dict[str, Model] = {}
    for path in ("single", "batched"):
        tag = f"{path[0]}{example}"
        ops = build(steps, tag)
        model = Model()
        expected = [model.apply(op) for op in ops]
        if path == "single":
            got = [ledger.post(op) for op in ops]
        else:
            got, start = [], 0
            for size in itertools.cycle(cuts):
                if start >= len(ops):
                    break
                got += ledger.post_batch(ops[start : start + size])
                start += size
        assert [r.status for r in got] == expected
        results[path], models[path] = [r.status for r in got], model
        for player in PLAYERS:
            balances = ledger.balances(f"{tag}-{player}")
            want = (model.cash.get(f"{tag}-{player}", Decimal(0)),
                    model.pending.get(f"{tag}-{player}", Decimal(0)),
                    model.owed.get(f"{tag}-{player}", Decimal(0)))  # fmt: skip
            have = ((balances[0].cash, balances[0].pending, balances[0].debt) if balances
                    else (Decimal(0),) * 3)  # fmt: skip
            assert have == want
            assert all(b.cash >= 0 and b.pending >= 0 and b.debt >= 0 for b in balances)
    assert results["single"] == results["batched"]
    assert ledger.reconcile().ok


@st.composite
def rollbacks(draw: st.DrawFn) -> list[L.LedgerOp]:
    """A win, its winnings spent in part or whole, the win rolled back, then money coming
    back in any order (deposits, casino wins, the bet settled again, rolled back again)."""
    tag = f"r{next(COUNTER)}"
    p = f"{tag}-p"
    deposit = draw(amounts)
    stake = min(draw(amounts), deposit)
    payout = draw(amounts) + stake
    ops = [L.deposit(f"{tag}-d", p, deposit, "EUR", NOW), L.stake(f"{tag}-b", p, stake, "EUR", NOW),
           L.settle(f"{tag}-b/1", f"{tag}-b", p, "EUR", payout, "win", NOW)]  # fmt: skip
    cash = deposit - stake + payout
    spent = draw(st.integers(0, int(cash * 100))) / Decimal(100)
    if spent:
        ops.append(L.casino_debit(f"{tag}-x", p, spent, "EUR", NOW))
    ops.append(L.unsettle(f"{tag}-b/2", f"{tag}-b/1", p, "EUR", NOW))
    later = draw(st.lists(st.tuples(st.sampled_from(["deposit", "casino_credit"]), amounts),
                          max_size=4))  # fmt: skip
    for n, (kind, amount) in enumerate(later):
        make = L.deposit if kind == "deposit" else L.casino_credit
        ops.append(make(f"{tag}-c{n}", p, amount, "EUR", NOW))
    again = draw(amounts) if draw(st.booleans()) else Decimal(0)
    ops.insert(draw(st.integers(len(ops) - len(later), len(ops))),
               L.settle(f"{tag}-b/3", f"{tag}-b", p, "EUR", again, "win", NOW))  # fmt: skip
    if draw(st.booleans()):
        ops.append(L.unsettle(f"{tag}-b/4", f"{tag}-b/3", p, "EUR", NOW))
    return ops


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=rollbacks(), cut=st.integers(1, 6))
def test_rollbacks_run_into_debt_and_money_coming_back_pays_it_first(
    ledger: Ledger, ops: list[L.LedgerOp], cut: int
) -> None:
    model = Model()
    expected = [model.apply(op) for op in ops]
    got: list[L.LedgerResult] = []
    for start in range(0, len(ops), cut):
        got += ledger.post_batch(ops[start : start + cut])
    assert [r.status for r in got] == expected
    assert all(r.status == "applied" for r in got)  # a correction is never refused
    player = ops[0].player_id
    (b,) = ledger.balances(player)
    assert (b.cash, b.pending, b.debt) == (
        model.cash[player],
        model.pending[player],
        model.owed[player],
    )
    assert b.cash >= 0 and b.debt >= 0
    assert ledger.reconcile().ok
