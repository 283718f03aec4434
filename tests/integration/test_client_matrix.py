"""Every analyst's client against the embedded ClickHouse front (issue 18): the matrix.

One engine (``python -m sinks.clickhouse.server``) holds data shaped like a ``make demo``
run (``tests/clients/demo_data.py``). Each client connects as the read-only ``analyst``,
with compression on and off, and must:

- run the README's analyst queries with the demo's ids bound as parameters, and get the
  rows clickhouse-connect reads, with ClickHouse's column types and the client's own typed
  values (decimals exact, times in UTC);
- read the metadata its tool reads: Grafana's data source (``SHOW DATABASES``, ``SHOW
  TABLES``, ``DESC TABLE``, ``system.columns``, ``version()``), the system tables behind
  them, and JDBC's ``getTables``/``getColumns`` as DBeaver calls them;
- make a temporary table in one session and read it back, while another session does not
  see it and can make its own of the same name.

The clients: clickhouse-connect (notebooks, Superset; here in the test), clickhouse-go v2
over HTTP (Grafana's data source; ``tests/clients/go``), the ClickHouse JDBC driver 0.11
with its defaults (DBeaver, DataGrip; ``tests/clients/java``), and @clickhouse/client
(``tests/clients/node``). ``tests/clients/build.py`` builds them once into ``.cache/clients``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from tests.clients import build, demo_data
from tests.integration.clickhouse_server import ANALYST, EngineProcess, serving

pytestmark = pytest.mark.integration

# The views the README documents, which every tool's table list must show.
VIEWS = {"ggr_daily", "ggr_by_market", "market_liability", "odds_history", "player_history",
         "payment_totals", "ledger_entries", "settlements"}  # fmt: skip
TABLES = {"audit_log", "bets", "ledger_transactions", "payments", "odds_changes", "players"}

# How each client types what it reads: ClickHouse type (its family) -> the client's type.
NATIVE: dict[str, dict[str, set[str]]] = {
    "clickhouse-connect": {"Decimal": {"Decimal"}, "DateTime64": {"datetime"},
                           "Date": {"date"}, "UInt64": {"int"}, "String": {"str"}},
    "clickhouse-go": {"Decimal": {"decimal.Decimal", "*decimal.Decimal"},
                      "DateTime64": {"time.Time"}, "Date": {"time.Time"},
                      "UInt64": {"uint64"}, "String": {"string"}},
    "clickhouse-jdbc": {"Decimal": {"java.math.BigDecimal"},
                        "DateTime64": {"java.sql.Timestamp", "java.time.ZonedDateTime",
                                       "java.time.OffsetDateTime", "java.time.LocalDateTime"},
                        "Date": {"java.sql.Date", "java.time.LocalDate"},
                        "UInt64": {"java.math.BigInteger", "java.lang.Long"},
                        "String": {"java.lang.String"}},
    # JSON: money as strings (output_format_json_quote_decimals), so it stays exact.
    "@clickhouse/client": {"Decimal": {"string"}, "DateTime64": {"string"}, "Date": {"string"},
                           "UInt64": {"number", "string"}, "String": {"string"}},
}  # fmt: skip

CELLS = [
    ("clickhouse-connect", "off"), ("clickhouse-connect", "lz4"),
    ("clickhouse-connect", "zstd"), ("clickhouse-connect", "gzip"),
    ("clickhouse-go", "none"), ("clickhouse-go", "lz4"), ("clickhouse-go", "zstd"),
    ("clickhouse-go", "gzip"),
    ("clickhouse-jdbc", "default"), ("clickhouse-jdbc", "off"),
    ("@clickhouse/client", "off"), ("@clickhouse/client", "on"),
]  # fmt: skip


# -- the server and what it holds ----------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    with serving(tmp_path_factory.mktemp("clickhouse-clients")) as process:
        demo_data.load(process.url)
        yield process


@pytest.fixture(scope="module")
def programs() -> dict[str, build.Program]:
    """The three client programs, built side by side (downloads overlap), or the reason."""
    makers: dict[str, Callable[[], build.Program]] = {
        "clickhouse-go": build.go, "clickhouse-jdbc": build.java, "@clickhouse/client": build.node
    }  # fmt: skip
    with ThreadPoolExecutor(len(makers)) as pool:
        futures = {name: pool.submit(make) for name, make in makers.items()}
    built, failed = {}, []
    for name, future in futures.items():
        try:
            built[name] = future.result()
        except build.BuildError as exc:
            failed.append(f"{name}: {exc}")
    if failed:
        pytest.fail("cannot build the client programs:\n" + "\n".join(failed))
    return built


@pytest.fixture(scope="module")
def expected(engine: EngineProcess) -> dict[str, Any]:
    """Each query's column types and rows, as clickhouse-connect reads them uncompressed."""
    ch = connect(engine, "off")
    try:
        out = {}
        for q in demo_data.QUERIES:
            r = ch.query(q["sql"], parameters=q["params"])
            out[q["name"]] = {"types": [t.name for t in r.column_types], "rows": r.result_rows}
        return out
    finally:
        ch.close()


# -- clickhouse-connect, in the test itself ------------------------------------------------


def connect(engine: EngineProcess, compression: str, **kw: Any) -> Any:
    return clickhouse_connect.get_client(
        host="127.0.0.1", port=engine.port, username=ANALYST[0], password=ANALYST[1],
        database=demo_data.DATABASE, compress=False if compression == "off" else compression,
        tz_mode="aware", **kw,
    )  # fmt: skip


def _table(r: Any) -> dict[str, Any]:
    natives = ["none"] * len(r.column_names)
    for row in r.result_rows:
        for i, v in enumerate(row):
            if v is not None:
                natives[i] = type(v).__name__
    pairs = enumerate(zip(r.column_names, r.column_types, strict=True))
    columns = [{"name": n, "type": t.name, "native": natives[i]} for i, (n, t) in pairs]
    return {"columns": columns, "rows": [list(row) for row in r.result_rows]}


def run_python(engine: EngineProcess, compression: str) -> dict[str, Any]:
    """What the other clients print, done with clickhouse-connect (a session per client)."""
    errors: dict[str, str] = {}
    out: dict[str, Any] = {"client": "clickhouse-connect", "compression": compression,
                           "queries": {}, "metadata": {}, "temp": {}}  # fmt: skip
    ch = connect(engine, compression)
    try:
        for q in demo_data.QUERIES:
            try:
                out["queries"][q["name"]] = _table(ch.query(q["sql"], parameters=q["params"]))
            except Exception as exc:
                errors[f"query {q['name']}"] = str(exc)
        for q in demo_data.METADATA:
            try:
                out["metadata"][q["name"]] = _table(ch.query(q["sql"]))
            except Exception as exc:
                errors[f"metadata {q['name']}"] = str(exc)
    finally:
        ch.close()
    t, temp = demo_data.TEMP_TABLE, out["temp"]
    a = connect(engine, compression, session_id=f"py-{uuid.uuid4().hex}")
    b = connect(engine, compression, session_id=f"py-{uuid.uuid4().hex}")
    try:
        for name, sql in (("a create", f"CREATE TEMPORARY TABLE {t} (n UInt32) ENGINE = Memory"),
                          ("a insert", f"INSERT INTO {t} VALUES (1), (2), (3)")):  # fmt: skip
            try:
                a.command(sql)
            except Exception as exc:
                errors[f"temp {name}"] = str(exc)
        try:
            temp["own"] = [list(r) for r in a.query(f"SELECT count(), sum(n) FROM {t}").result_rows]
        except Exception as exc:
            errors["temp a select"] = str(exc)
        try:
            temp["other_rows"] = [list(r) for r in b.query(f"SELECT count() FROM {t}").result_rows]
        except Exception as exc:
            temp["other_error"] = str(exc)
        try:
            b.command(f"CREATE TEMPORARY TABLE {t} (n UInt32) ENGINE = Memory")
            temp["other_own"] = [list(r) for r in b.query(f"SELECT count() FROM {t}").result_rows]
        except Exception as exc:
            errors["temp b"] = str(exc)
    finally:
        a.close()
        b.close()
    out["errors"] = errors
    return out


# -- the other clients, as programs --------------------------------------------------------


def run_program(program: build.Program, client: str, engine: EngineProcess,
                compression: str) -> dict[str, Any]:  # fmt: skip
    base, (user, password) = f"127.0.0.1:{engine.port}", ANALYST
    if client == "clickhouse-go":
        args = ["-url", f"http://{base}", "-user", user, "-password", password,
                "-compression", compression]  # fmt: skip
    elif client == "clickhouse-jdbc":
        args = ["--url", f"http://{base}", "--user", user, "--password", password]
        if compression == "off":
            args += ["--compress", "false"]
    else:
        args = ["--url", f"http://{base}", "--user", user, "--password", password,
                "--compression", compression]  # fmt: skip
    done = subprocess.run(
        [*program.argv, *args], input=json.dumps(demo_data.spec()), env=program.env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, (
        f"{client} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- what a result must be -----------------------------------------------------------------


def family(ch_type: str) -> str:
    """``Nullable(Decimal(38, 6))`` -> ``Decimal``; ``LowCardinality(String)`` -> ``String``."""
    inner = re.sub(r"^(Nullable|LowCardinality)\((.*)\)$", r"\2", ch_type)
    inner = re.sub(r"^(Nullable|LowCardinality)\((.*)\)$", r"\2", inner)
    return re.split(r"[(\s]", inner, maxsplit=1)[0]


def typed(ch_type: str, value: Any) -> Any:
    """A value as the client gave it, read back by its ClickHouse type, for comparison."""
    if value is None:
        return None
    kind = family(ch_type)
    if kind == "Decimal":
        return Decimal(str(value))
    if kind in ("DateTime64", "DateTime"):
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC)
        text = str(value).replace(" ", "T")
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    if kind == "Date":
        if isinstance(value, dt.date):
            return value if not isinstance(value, dt.datetime) else value.date()
        return dt.date.fromisoformat(str(value)[:10])
    if kind.startswith(("UInt", "Int")):
        return int(value)
    return value


def rows_of(types: list[str], rows: list[list[Any]]) -> list[tuple[Any, ...]]:
    """Rows typed and sorted (the README's ORDER BY leaves ties in any order)."""
    out = [tuple(typed(t, v) for t, v in zip(types, row, strict=True)) for row in rows]
    return sorted(out, key=repr)


def no_space(text: str) -> str:
    return re.sub(r"\s+", "", text)


def first_column(result: dict[str, Any]) -> list[Any]:
    return [row[0] for row in result["rows"]]


def errors_of(result: dict[str, Any], *prefixes: str) -> dict[str, str]:
    return {k: v for k, v in result["errors"].items() if k.startswith(prefixes)}


@pytest.fixture(scope="module")
def results(
    engine: EngineProcess, programs: dict[str, build.Program]
) -> Callable[[str, str], dict[str, Any]]:
    """One run of each client per compression, shared by the three checks of its cell."""
    done: dict[tuple[str, str], dict[str, Any]] = {}

    def result(client: str, compression: str) -> dict[str, Any]:
        if (client, compression) not in done:
            if client == "clickhouse-connect":
                done[client, compression] = run_python(engine, compression)
            else:
                done[client, compression] = run_program(
                    programs[client], client, engine, compression
                )
        return done[client, compression]

    return result


CELL = pytest.mark.parametrize(("client", "compression"), CELLS, ids=[f"{c}-{z}" for c, z in CELLS])


@CELL
def test_the_readme_queries_return_typed_rows(
    client: str,
    compression: str,
    results: Callable[[str, str], dict[str, Any]],
    expected: dict[str, Any],
) -> None:
    """The same rows as clickhouse-connect, ClickHouse's types, the client's typed values."""
    result = results(client, compression)
    failed = errors_of(result, "ping", "connect", "query")
    assert failed == {}, json.dumps(failed, indent=1)[:6000]
    natives = NATIVE[client]
    for name, want in expected.items():
        got = result["queries"][name]
        types = [c["type"] for c in got["columns"]]
        assert [no_space(t) for t in types] == [no_space(t) for t in want["types"]], name
        assert got["rows"], f"{name}: no rows"
        assert rows_of(types, got["rows"]) == rows_of(want["types"], want["rows"]), name
        for c in got["columns"]:
            allowed = natives.get(family(c["type"]))
            if allowed is not None and c["native"] not in ("none", "null", "NoneType"):
                assert c["native"] in allowed, (name, c)


@CELL
def test_the_metadata_tools_browse_is_there(
    client: str,
    compression: str,
    results: Callable[[str, str], dict[str, Any]],
    expected: dict[str, Any],
) -> None:
    """Grafana's data source queries (version, databases, tables, columns) and the system
    tables behind them; for JDBC also getSchemas/getTables/getColumns as DBeaver calls them."""
    result = results(client, compression)
    failed = errors_of(result, "ping", "connect", "metadata", "jdbc")
    assert failed == {}, json.dumps(failed, indent=1)[:6000]
    md = result["metadata"]
    assert re.match(r"\d+\.\d+", str(first_column(md["version"])[0])), md["version"]
    assert demo_data.DATABASE in first_column(md["databases"])
    assert demo_data.DATABASE in first_column(md["system_databases"])
    assert set(first_column(md["tables"])) >= VIEWS | TABLES
    assert set(first_column(md["system_tables"])) >= VIEWS | TABLES
    engines = {row[0]: row[1] for row in md["system_tables"]["rows"]}
    assert engines["ggr_daily"] == "View" and engines["bets"] == "ReplacingMergeTree"
    ggr_daily = expected["ggr_daily"]["types"]
    described = [(row[0], no_space(row[1])) for row in md["describe"]["rows"]]
    assert [n for n, _ in described][: len(ggr_daily)] == [
        "day", "product", "jurisdiction", "currency", "handle", "ggr", "hold"
    ]  # fmt: skip
    assert [t for _, t in described][: len(ggr_daily)] == [no_space(t) for t in ggr_daily]
    columns = [(row[0], no_space(row[1]), row[2]) for row in md["system_columns"]["rows"]]
    assert columns == [(n, t, "ggr_daily") for n, t in described]
    if client == "clickhouse-jdbc":
        jdbc = result["jdbc"]
        assert demo_data.DATABASE in jdbc["schemas"]
        kinds = dict(jdbc["tables"])
        assert set(kinds) >= VIEWS | TABLES
        assert kinds["ggr_daily"] == "VIEW" and kinds["bets"] == "TABLE"
        assert [c[0] for c in jdbc["columns"]] == [n for n, _ in described]
        assert no_space(jdbc["columns"][4][1]) == "Decimal(38,6)"
        assert jdbc["columns"][4][2] == 3  # java.sql.Types.DECIMAL


@CELL
def test_a_sessions_temporary_table_is_its_own(
    client: str, compression: str, results: Callable[[str, str], dict[str, Any]]
) -> None:
    """One session makes a temporary table and reads it back; another session does not
    see it and makes its own of the same name."""
    result = results(client, compression)
    failed = errors_of(result, "ping", "connect", "temp")
    assert failed == {}, json.dumps(failed, indent=1)[:6000]
    temp = result["temp"]
    assert [[int(v) for v in row] for row in temp["own"]] == [[3, 6]], temp
    assert "other_rows" not in temp, f"another session sees the temporary table: {temp}"
    assert "UNKNOWN_TABLE" in temp["other_error"] or "Code: 60" in temp["other_error"], temp
    assert [[int(v) for v in row] for row in temp["other_own"]] == [[0]], temp


def test_the_client_programs_are_pinned() -> None:
    """Builds come from locked versions: go.sum, package-lock.json, a fixed driver version."""
    here = Path(build.HERE)
    go_mod = (here / "go" / "go.mod").read_text()
    assert re.search(r"github.com/ClickHouse/clickhouse-go/v2 v2\.\d+\.\d+", go_mod)
    assert "github.com/ClickHouse/clickhouse-go/v2" in (here / "go" / "go.sum").read_text()
    lock = json.loads((here / "node" / "package-lock.json").read_text())
    assert re.fullmatch(
        r"\d+\.\d+\.\d+", lock["packages"]["node_modules/@clickhouse/client"]["version"]
    )
    pom = (here / "java" / "pom.xml").read_text()
    assert re.search(
        r"<artifactId>clickhouse-jdbc</artifactId>\s*<version>0\.11\.\d+</version>", pom
    )


@pytest.mark.parametrize("options", ["", "?compress=false"], ids=["default", "uncompressed"])
def test_superset_reads_through_its_sqlalchemy_uri(
    options: str, engine: EngineProcess, expected: dict[str, Any]
) -> None:
    """Superset's connection: the ``clickhousedb://`` URI of docs/analysts.md, its inspector
    (schemas, tables, columns) and SQL Lab's statements as the DB-API cursor runs them."""
    from sqlalchemy import create_engine, inspect

    db = demo_data.DATABASE
    uri = f"clickhousedb://{ANALYST[0]}:{ANALYST[1]}@127.0.0.1:{engine.port}/{db}{options}"
    superset = create_engine(uri)
    try:
        inspector = inspect(superset)
        assert db in inspector.get_schema_names()
        assert set(inspector.get_table_names(schema=db)) >= TABLES | VIEWS
        assert set(inspector.get_view_names(schema=db)) == VIEWS
        columns = inspector.get_columns("ggr_daily", schema=db)
        assert [c["name"] for c in columns][:5] == ["day", "product", "jurisdiction",
                                                    "currency", "handle"]  # fmt: skip
        with superset.connect() as conn:
            for q in demo_data.QUERIES:
                rows = [list(r) for r in conn.exec_driver_sql(q["sql"], q["params"]).fetchall()]
                want = expected[q["name"]]
                assert rows_of(want["types"], rows) == rows_of(want["types"], want["rows"]), q
    finally:
        superset.dispose()
