"""Random operation sequences with retries and reorderings: the ledger agrees with a model.

The same sequence is posted one operation per transaction and in random batch splits
(which exercises both the set-based and the exact path); both must give the statuses and
balances of a plain Python model, never a negative balance, and balanced books.
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

from croupier.settings import Settings
from sinks.postgres import ledger as L

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)
PLAYERS = ("a", "b", "c")
COUNTER = itertools.count()


@dataclass
class Model:
    """What the ledger should say, computed the obvious way."""

    cash: dict[str, Decimal] = field(default_factory=dict)
    pending: dict[str, Decimal] = field(default_factory=dict)
    first: dict[str, str] = field(default_factory=dict)  # key -> status of its first result
    stakes: dict[str, Decimal] = field(default_factory=dict)  # open stakes by key
    settled: set[str] = field(default_factory=set)

    def apply(self, op: L.LedgerOp) -> str:
        if op.key in self.first:
            return self.first[op.key]
        p = op.player_id
        cash, pending = self.cash.get(p, Decimal(0)), self.pending.get(p, Decimal(0))
        status = "applied"
        if op.operation in ("deposit", "casino_credit"):
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
                pending -= self.stakes[ref]
                cash += op.payout or Decimal(0)
                self.settled.add(ref)
        self.cash[p], self.pending[p] = cash, pending
        self.first[op.key] = status
        return status


amounts = st.integers(min_value=1, max_value=3000).map(lambda c: Decimal(c).scaleb(-2))


@st.composite
def sequences(draw: st.DrawFn) -> list[tuple[str, str, Decimal, int]]:
    """(kind, player, amount, pick) steps; pick chooses an earlier op to retry or a stake."""
    kinds = st.sampled_from(["deposit", "stake", "stake", "casino_debit", "casino_credit",
                             "settle", "retry"])  # fmt: skip
    step = st.tuples(kinds, st.sampled_from(PLAYERS), amounts, st.integers(0, 10_000))
    return draw(st.lists(step, min_size=1, max_size=40))


def build(steps: list[tuple[str, str, Decimal, int]], tag: str) -> list[L.LedgerOp]:
    ops: list[L.LedgerOp] = []
    stakes: list[L.LedgerOp] = []
    for n, (kind, player, amount, pick) in enumerate(steps):
        pid = f"{tag}-{player}"
        if kind == "retry" and ops:
            ops.append(ops[pick % len(ops)])  # a producer's retry or a redelivery
        elif kind == "settle" and stakes:
            stake = stakes[pick % len(stakes)]
            payout = amount if pick % 3 else Decimal(0)
            ops.append(L.settle(f"{tag}-s{n}", stake.key.removeprefix("bet:"), stake.player_id,
                                "EUR", payout, "win" if payout else "lose", NOW))  # fmt: skip
        elif kind in ("deposit", "stake", "casino_debit", "casino_credit"):
            make = {"deposit": L.deposit, "stake": L.stake, "casino_debit": L.casino_debit,
                    "casino_credit": L.casino_credit}[kind]  # fmt: skip
            op = make(f"{tag}-{n}", pid, amount, "EUR", NOW)
            ops.append(op)
            if kind == "stake":
                stakes.append(op)
    return ops


@pytest.fixture
def ledger(settings: Settings) -> Iterator[L.Ledger]:
    lg = L.Ledger.connect(settings.pg_dsn.get_secret_value(), settings.pg_schema)
    yield lg
    lg.close()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=sequences(), cuts=st.lists(st.integers(1, 12), min_size=1, max_size=10))
def test_batched_and_single_posting_agree_with_the_model(
    ledger: L.Ledger, steps: list[tuple[str, str, Decimal, int]], cuts: list[int]
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
                    model.pending.get(f"{tag}-{player}", Decimal(0)))  # fmt: skip
            have = (balances[0].cash, balances[0].pending) if balances else (Decimal(0),) * 2
            assert have == want
            assert all(b.cash >= 0 and b.pending >= 0 for b in balances)
    assert results["single"] == results["batched"]
    assert ledger.reconcile().ok
