"""How commands print: one JSON document, tables, and progress bars.

Text goes to stdout; a table is drawn by rich (borders, verdicts in colour: a failed check
red, a passed one green) on a terminal and as plain aligned columns when piped or when
NO_COLOR is set, so scripts read the same text as before. Progress bars go to stderr and
only on a terminal. rich is imported only when a table or a bar is drawn: ``croupier --help``
never pays for it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console

Progress = Callable[[int, int], None]  # (done, total)


def emit_json(doc: Any, *, indent: int | None = None) -> None:
    """``doc`` as one JSON document on stdout (secrets already out of it)."""
    print(json.dumps(doc, indent=indent, default=str))


def fancy(stream: Any = None) -> bool:
    """Whether ``stream`` (stdout) is a terminal that may have colour and borders: NO_COLOR
    says no, FORCE_COLOR (https://force-color.org, which rich honours too) yes."""
    stream = sys.stdout if stream is None else stream
    if os.environ.get("NO_COLOR"):
        return False
    return bool(os.environ.get("FORCE_COLOR")) or bool(getattr(stream, "isatty", lambda: False)())


# A verdict word and its colour on a terminal; piped, the word alone carries the meaning.
VERDICTS = {
    "PASS": "green", "ok": "green", "up": "green", "holds": "green",
    "FAIL": "bold red", "DIFFERS": "bold red", "BREACHED": "bold red", "DOWN": "bold red",
    "NOT": "bold red", "SUSPENDED": "bold red", "SKIP": "yellow",
    "running": "green", "stopped": "bold red", "refused": "bold red", "unanswered": "yellow",
    "created": "green", "exists": "green", "mismatch": "bold red",
}  # fmt: skip


def terminal(console: Console | None = None, file: TextIO | None = None) -> Console | None:
    """The rich console to draw on: ``console`` when given (tests force a terminal), else
    one on ``file`` (stdout) when it is a terminal without NO_COLOR, else None (plain)."""
    if console is not None or not fancy(file):
        return console
    from rich.console import Console

    return Console(file=file)


def verdict_style(cell: str) -> str | None:
    """The colour of a cell by its verdict words, the worst winning (``DOWN (refused)`` and
    ``up, NOT READY`` are red, ``up`` green); None when it has none."""
    styles = [VERDICTS[w] for w in cell.replace(",", " ").split() if w in VERDICTS]
    return next((s for s in styles if "red" in s), styles[0] if styles else None)


def plain_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Sequence[int] = (),
    rule: bool = False,
    indent: str = "",
    header: bool = True,
) -> str:
    """Plain columns two spaces apart (``right``: the columns aligned right), with a dashed
    rule under the headers when ``rule`` (no headers line unless ``header``), each line
    after ``indent``: the text scripts and tests read when piped."""
    every = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in every) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        cells = (
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return (indent + "  ".join(cells)).rstrip()

    out = [line(every[0])] if header else []
    if rule and header:
        out.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join([*out, *(line(r) for r in every[1:])])


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Sequence[int] = (),
    rule: bool = False,
    verdicts: int | None = None,
    title: str | None = None,
    indent: str = "",
    header: bool = True,
    file: TextIO | None = None,
    console: Console | None = None,
) -> None:
    """Print a table on ``file`` (stdout): rich's on a terminal wide enough for it (the
    ``verdicts`` column coloured), else ``plain_table`` (piped, NO_COLOR, or a narrow
    terminal, where rich would cut cells), under ``title`` when given."""
    drawn = terminal(console, file)
    if drawn is not None:
        from rich.table import Table
        from rich.text import Text

        every = [list(headers), *[list(r) for r in rows]]
        widths = [max(len(r[i]) for r in every) for i in range(len(headers))]
        if sum(widths) + 3 * len(widths) + 1 <= drawn.width:  # cells, padding, borders
            heading = None if title is None else Text(title)  # text, never rich markup
            grid = Table(
                title=heading, title_justify="left", header_style="bold", show_header=header
            )
            for i, name in enumerate(headers):
                grid.add_column(Text(name), justify="right" if i in right else "left")
            for row in rows:
                cells = [
                    Text(c, style=verdict_style(c) or "") if i == verdicts else Text(c)
                    for i, c in enumerate(row)
                ]
                grid.add_row(*cells)
            drawn.print(grid)
            return
    if title is not None:
        print(title, file=file)
    text = plain_table(headers, rows, right=right, rule=rule, indent=indent, header=header)
    print(text, file=file)


def say(text: str, style: str | None = None, *, console: Console | None = None) -> None:
    """Print one line, in ``style`` (else its verdict words' colour) on a terminal."""
    drawn = terminal(console)
    if drawn is None:
        print(text)
        return
    from rich.text import Text

    drawn.print(Text(text, style=style or verdict_style(text) or ""))


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
