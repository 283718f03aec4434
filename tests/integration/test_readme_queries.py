"""The analysts' example queries run on the demo's data and return rows.

The README's analytics section and ``docs/analysts.md`` show queries an analyst types
after ``make demo``. Each ```sql block is taken from the documents as written and run as
the read-only ``analyst`` against an engine holding data shaped like a demo run
(``tests/clients/demo_data.py``: the demo's ids, ``demo-<run>-uk``, ``demo-<run>-m1``...);
every one must return rows. The notebook snippet of ``docs/analysts.md`` runs too.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from tests.clients import demo_data
from tests.integration.clickhouse_server import ANALYST, EngineProcess, serving

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ANALYSTS = ROOT / "docs" / "analysts.md"


readme_queries = demo_data.readme_sql


def docs_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", ANALYSTS.read_text(), flags=re.S)


def grafana(sql: str) -> str:
    """Grafana's time macro as its data source expands it, over all of time."""
    return re.sub(
        r"\$__timeFilter\((\w+)\)",
        r"\1 >= toDateTime(0) AND \1 <= toDateTime('2100-01-01 00:00:00')",
        sql,
    )


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    with serving(tmp_path_factory.mktemp("clickhouse-readme")) as process:
        demo_data.load(process.url)
        yield process


@pytest.fixture
def analyst(engine: EngineProcess) -> Iterator[Any]:
    ch = clickhouse_connect.get_client(
        host="127.0.0.1", port=engine.port, username=ANALYST[0], password=ANALYST[1],
        database=demo_data.DATABASE,
    )  # fmt: skip
    yield ch
    ch.close()


def test_the_readme_uses_the_demos_ids() -> None:
    """No query names an id the demo never makes (it used to say ``p-1`` and ``m-1``)."""
    queries = readme_queries()
    assert len(queries) >= 6
    literals = [s for q in queries for s in re.findall(r"'([^']*)'", q)]
    ids = [s for s in literals if re.search(r"\d", s) or s.startswith("demo-")]
    assert ids, "the examples show no id at all"
    assert all(re.fullmatch(r"demo-(%|[0-9a-f]{6})-(m[12]|uk|dk|es|nj)", s) for s in ids), ids


@pytest.mark.parametrize("n", range(len(readme_queries())))
def test_each_readme_query_returns_rows_on_demo_data(n: int, analyst: Any) -> None:
    sql = readme_queries()[n]
    rows = analyst.query(sql).result_rows
    assert rows, f"no rows from:\n{sql}"


def test_the_docs_queries_return_rows(analyst: Any) -> None:
    blocks = docs_blocks("sql")
    assert blocks
    for sql in blocks:
        assert analyst.query(grafana(sql)).result_rows, sql


def test_the_notebook_snippet_runs(engine: EngineProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """The notebook cell as written, with the analyst's URL as ``.stack/env`` gives it
    (``query_df`` needs pandas, which chdb brings)."""
    (snippet,) = docs_blocks("python")
    monkeypatch.setenv("CROUPIER_CLICKHOUSE_ANALYST_URL", engine.analyst_url)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, str(ANALYSTS), "exec"), {})
    printed = out.getvalue()
    assert "sportsbook" in printed and "UK" in printed, printed
