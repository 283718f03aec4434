"""What the demo shows and counts: tables, headings, and the tally of its checks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass
class Checks:
    """Every expectation the demo checks, and the ones that failed."""

    failures: list[str] = field(default_factory=list)
    passed: int = 0

    def expect(self, ok: bool, what: str) -> str:
        if ok:
            self.passed += 1
            return "ok"
        self.failures.append(what)
        return "FAIL"


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A table of what the demo did: rich on a terminal (its ``check`` column green ok, red
    FAIL), indented plain columns under a dashed rule when piped."""
    from croupier.commands.output import table

    body = [["" if v is None else str(v) for v in row] for row in rows]
    check = list(headers).index("check") if "check" in headers else None
    table(headers, body, rule=True, indent="  ", verdicts=check)


def heading(text: str) -> None:
    print(f"\n{text}")
