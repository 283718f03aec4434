"""How commands print: one JSON document, tables, and progress bars.

Text goes to stdout; a table is drawn by rich (borders, colour) on a terminal and as plain
aligned columns when piped or when NO_COLOR is set, so scripts read the same text as
before. Progress bars go to stderr and only on a terminal. rich is imported only when a
table or a bar is drawn: ``croupier --help`` never pays for it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

Progress = Callable[[int, int], None]  # (done, total)


def emit_json(doc: Any, *, indent: int | None = None) -> None:
    """``doc`` as one JSON document on stdout (secrets already out of it)."""
    print(json.dumps(doc, indent=indent, default=str))


def fancy(stream: Any = None) -> bool:
    """Whether ``stream`` (stdout) is a terminal that may have colour and borders."""
    stream = sys.stdout if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a table: rich's on a terminal wide enough for it, plain columns two spaces
    apart otherwise (piped, NO_COLOR, or a narrow terminal, where rich would cut cells)."""
    every = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in every) for i in range(len(headers))]
    if fancy():
        from rich.console import Console
        from rich.table import Table

        console = Console()
        if sum(widths) + 3 * len(widths) + 1 <= console.width:  # cells, padding, borders
            drawn = Table(*headers, header_style="bold")
            for row in rows:
                drawn.add_row(*row)
            console.print(drawn)
            return
    for row in every:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@contextmanager
def progress(what: str) -> Iterator[Progress | None]:
    """An ``on_progress(done, total)`` drawing a bar on stderr; None when not a terminal."""
    if not sys.stderr.isatty():  # piped or captured: no bar (NO_COLOR: rich's, no colour)
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Bar(
        "[progress.description]{task.description}",
        *columns,
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance
