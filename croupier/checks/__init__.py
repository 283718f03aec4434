"""The invariants ``croupier check`` proves, as pure comparisons (no I/O here).

A check gathers facts (topic scans in ``checks/kafka.py``, set-based SQL and ClickHouse
queries in ``checks/invariants.py``) and hands them to these functions, which say what
is a breach. Each invariant is one ``Row``: what it checked, how many breaches, and the
first few of them with the ids and positions an operator needs to act.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sinks.chain import Problem, Verification
    from sinks.postgres.ledger import Reconciliation
    from sinks.postgres.rebuild import Wallet

EXAMPLES = 5  # breaches shown per row


@dataclass
class Row:
    """One invariant's verdict."""

    name: str
    checked: int = 0
    breaches: int = 0
    examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return self.skipped or self.breaches == 0

    def breach(self, what: str, count: int = 1) -> None:
        self.breaches += count
        if len(self.examples) < EXAMPLES:
            self.examples.append(what)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "checked": self.checked, "breaches": self.breaches,
                "ok": self.ok, "skipped": self.skipped, "examples": self.examples,
                "notes": self.notes}  # fmt: skip


Position = tuple[int, int]  # (partition, offset)


@dataclass
class Outcomes:
    """How the inputs of one topic ended, position by position."""

    topic: str
    inputs: int = 0
    decided: int = 0
    pending: list[Position] = field(default_factory=list)  # beyond the flow's progress
    missing: list[Position] = field(default_factory=list)  # behind it, with no outcome
    several: list[tuple[Position, int]] = field(default_factory=list)


def classify_outcomes(
    topic: str,
    inputs: Iterable[Position],
    outcomes: Mapping[Position, int],
    progress: Mapping[int, int],
) -> Outcomes:
    """Each input position against the outcomes recorded for it (how many) and the
    partition's progress (the next offset the flow has not finished): exactly one is
    right; none behind the progress is a lost input; none beyond it is still pending."""
    out = Outcomes(topic)
    for pos in inputs:
        out.inputs += 1
        n = outcomes.get(pos, 0)
        if n == 1:
            out.decided += 1
        elif n > 1:
            out.several.append((pos, n))
        elif pos[1] >= progress.get(pos[0], 0):
            out.pending.append(pos)
        else:
            out.missing.append(pos)
    return out


@dataclass
class Decisions:
    """What ``bet-decisions`` holds per bet id: the distinct values and how many copies."""

    values: dict[str, dict[bytes, int]] = field(default_factory=dict)

    def add(self, bet_id: str, value: bytes) -> None:
        copies = self.values.setdefault(bet_id, {})
        copies[value] = copies.get(value, 0) + 1

    @property
    def messages(self) -> int:
        return sum(sum(v.values()) for v in self.values.values())

    def republished(self) -> int:
        """Identical copies beyond the first (a replay after a crash, byte for byte)."""
        return sum(n - 1 for v in self.values.values() for n in v.values())

    def conflicting(self) -> dict[str, list[bytes]]:
        """Bet ids published with two or more different decisions."""
        return {b: sorted(v) for b, v in self.values.items() if len(v) > 1}


def compare_decisions(
    published: Decisions, stored: Mapping[str, str], digest: Any
) -> tuple[dict[str, list[bytes]], list[str], list[str]]:
    """Published decisions against the stored ones (``stored``: bet id -> digest of the
    decision JSON, ``digest``: bytes -> that digest). Returns the bets decided twice on
    the topic, the published ones that differ from (or lack) a stored decision, and the
    stored ones never published."""
    twice = published.conflicting()
    unstored: list[str] = []
    for bet_id, values in published.values.items():
        if bet_id in twice:
            continue
        want = stored.get(bet_id)
        if want is None or digest(next(iter(values))) != want:
            unstored.append(bet_id)
    unpublished = [b for b in stored if b not in published.values]
    return twice, sorted(unstored), sorted(unpublished)


Aggregate = dict[tuple[str, ...], tuple[int, Decimal, Decimal]]


def diff_aggregates(ledger: Aggregate, analytics: Aggregate) -> list[str]:
    """Group by group, what the ledger and ClickHouse count and sum differently."""
    zero = (0, Decimal(0), Decimal(0))
    out = []
    for group in sorted(set(ledger) | set(analytics)):
        have, want = analytics.get(group, zero), ledger.get(group, zero)
        if have[0] != want[0] or have[1] != want[1] or have[2] != want[2]:
            out.append(
                f"{'/'.join(group)}: ledger {want[0]} rows, {want[1]}, {want[2]}; "
                f"ClickHouse {have[0]} rows, {have[1]}, {have[2]}"
            )
    return out


def diff_keys(ledger: set[str], analytics: set[str]) -> tuple[list[str], list[str]]:
    """Keys the ledger holds and ClickHouse lacks, and the other way round (sorted)."""
    return sorted(ledger - analytics), sorted(analytics - ledger)


def books_balance(rec: Reconciliation) -> Row:
    """Row 5's verdict on ``Ledger.reconcile()``: entries balance per currency, and every
    stored balance equals its entries."""
    row = Row("the books balance per currency")
    row.checked = sum(c.entries for c in rec.currencies)
    for c in rec.currencies:
        if not c.balanced:
            row.breach(f"{c.currency}: debits {c.debits}, credits {c.credits}")
    for txn, currency, total in rec.unbalanced_transactions:
        row.breach(f"ledger transaction {txn} does not balance in {currency}: {total}")
    for owner, kind, currency, stored, derived in rec.balance_drift:
        row.breach(f"{owner} {kind} {currency}: stored {stored}, entries say {derived}")
    return row


def audit_trail(
    verified: Verification, wallets: Sequence[Wallet], signed: Sequence[Problem] = ()
) -> Row:
    """Row 7's verdict: every chain verifies (``verified``), every checkpoint does
    (``signed``: the problems found), and each wallet rebuilt from the trail alone agrees
    with the ledger."""
    row = Row("the audit trail verifies and rebuilds every wallet")
    for p in [*(verified.problems or []), *signed]:
        row.breach(f"chain {p.chain} record {p.seq}: {p.what}")
    for w in wallets:
        if not w.ok:
            row.breach(f"wallet {w.player_id}: " + "; ".join(w.differences[:3]))
    return row


def run_prefix(run: str | None) -> str | None:
    """The prefix every id and key of a simulator run starts with."""
    return None if run is None else f"{run}-"


def like_prefix(prefix: str | None) -> str:
    """A LIKE pattern matching ``prefix`` literally (everything when None)."""
    if prefix is None:
        return "%"
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


TABLE_HEAD = ("invariant", "checked", "breaches", "result")
TABLE_RIGHT = (1, 2)  # the counts


def table_body(rows: list[Row]) -> list[tuple[str, ...]]:
    """One line of ``TABLE_HEAD`` per row; the result is PASS, FAIL or SKIP."""
    return [(r.name, str(r.checked), str(r.breaches),
             "SKIP" if r.skipped else ("PASS" if r.ok else "FAIL")) for r in rows]  # fmt: skip


def details(rows: list[Row]) -> list[str]:
    """Each failing or annotated row's first breaches and notes, after the table."""
    out: list[str] = []
    for r in rows:
        if r.examples or r.notes:
            out.append("")
            out.append(f"{r.name}:")
            out += [f"  BREACH {e}" for e in r.examples]
            if r.breaches > len(r.examples):
                out.append(f"  ... and {r.breaches - len(r.examples)} more")
            out += [f"  note: {n}" for n in r.notes]
    return out


def table(rows: list[Row]) -> str:
    """The rows as a plain text table, then each failing row's first breaches."""
    from croupier.commands.output import plain_table

    grid = plain_table(TABLE_HEAD, table_body(rows), right=TABLE_RIGHT, rule=True)
    return "\n".join([grid, *details(rows)])
