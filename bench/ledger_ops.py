"""What building ledger operations costs in Python, before any database (no I/O).

    .venv/bin/python bench/ledger_ops.py [--repeat 7] [--number 20000]

Prints the best of ``--repeat`` timeit rounds, in microseconds per operation: building a
stake (validation included), building it and its wire form (the request hash included),
and a batch of 500 stakes built, wired and encoded as ``ledger_post`` receives them.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rules import ledger as L  # noqa: E402

NOW = datetime(2026, 12, 6, 19, 0, tzinfo=UTC)
STAKE = Decimal("2.50")
BATCH = 500


def build() -> L.LedgerOp:
    return L.stake("b-123456", "p-42", STAKE, "EUR", NOW)


def build_and_wire() -> dict[str, object]:
    return L.stake("b-123456", "p-42", STAKE, "EUR", NOW).wire()


def batch() -> str:
    ops = [L.stake(f"b-{i}", f"p-{i % 100}", STAKE, "EUR", NOW) for i in range(BATCH)]
    return json.dumps([op.wire() for op in ops])


def best(fn: object, number: int, repeat: int) -> float:
    """The best round's time per call, in microseconds."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6  # type: ignore[arg-type]  # timeit takes any callable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    print(f"stake built:          {best(build, args.number, args.repeat):7.2f} µs/op")
    print(f"stake built + wire(): {best(build_and_wire, args.number, args.repeat):7.2f} µs/op")
    per_batch = best(batch, max(1, args.number // BATCH), args.repeat)
    print(f"batch of {BATCH} stakes:  {per_batch / 1000:7.2f} ms ({per_batch / BATCH:.2f} µs/op)")


if __name__ == "__main__":
    main()
