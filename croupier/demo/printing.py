"""What the demo shows and counts: plain tables, headings, and the tally of its checks."""

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
    body = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]
    for line in [list(headers), ["-" * w for w in widths], *body]:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def heading(text: str) -> None:
    print(f"\n{text}")
