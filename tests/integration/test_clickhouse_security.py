"""The ClickHouse front refuses what issue 17 saw it do: the real server over the real engine.

One server process for the module, with small limits so each can be reached quickly:
analysts' statements stop after 3 s, the writer's after 8 s, bodies stop at 1 MiB, a
decompressed body at 8 MiB, a result at 4 MiB, and 6 connections at once.
"""

from __future__ import annotations

import gzip
import http.client
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from croupier import sql
from croupier.stack.clickhouse import answers, ping
from sinks.clickhouse.client import connect
from sinks.clickhouse.guard import Limits
from tests.integration.clickhouse_server import (
    ANALYST,
    DIRECT,
    VIEWER,
    WRITER,
    EngineProcess,
    basic,
    free_port,
)

pytestmark = pytest.mark.integration

READONLY_SECONDS = 3
WRITER_SECONDS = 8
MAX_CONNECTIONS = 6


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    home = tmp_path_factory.mktemp("clickhouse-security")
    process = EngineProcess(
        home / "data", free_port(), home / "server.log",
        "--readonly-max-execution-time", str(READONLY_SECONDS),
        "--writer-max-execution-time", str(WRITER_SECONDS),
        "--max-body-bytes", str(1 << 20),
        "--max-decompressed-bytes", str(8 << 20),
        "--max-result-bytes", str(4 << 20),
        "--max-connections", str(MAX_CONNECTIONS),
    )  # fmt: skip
    process.start()
    ch = connect(process.url)
    ch.command("CREATE TABLE IF NOT EXISTS bets (id UInt64, stake Decimal(18, 2)) "
               "ENGINE = MergeTree PARTITION BY intDiv(id, 1000) ORDER BY id")  # fmt: skip
    ch.command("INSERT INTO bets VALUES (1, 10.50), (2, 3.00)")
    ch.command("CREATE VIEW IF NOT EXISTS stakes AS SELECT sum(stake) AS total FROM bets")
    ch.close()
    yield process
    if process.proc is not None:
        process.stop()


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file that stands for the audit signing key: nobody may read it through SQL."""
    path = tmp_path_factory.mktemp("secret") / "key.pem"
    path.write_text("SECRET-MARKER-7f3a\n")
    return path


def post(
    engine: EngineProcess,
    body: bytes | str,
    *,
    user: tuple[str, str] | None = WRITER,
    query: str = "",
    headers: dict[str, str] | None = None,
    method: str = "POST",
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP exchange: the status, the headers and the body, errors included."""
    data = body.encode() if isinstance(body, str) else body
    all_headers = dict(headers or {})
    if user is not None:
        all_headers.setdefault("Authorization", basic(user))
    request = urllib.request.Request(
        f"{engine.base}/{'?' + query if query else ''}",
        data=data if method == "POST" else None,
        headers=all_headers,
        method=method,
    )
    try:
        with DIRECT.open(request, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def code(headers: dict[str, str]) -> int:
    return int(headers.get("X-ClickHouse-Exception-Code", "0"))


# -- who is asking ---------------------------------------------------------------------


def test_anonymous_and_wrong_passwords_are_refused_every_way(engine: EngineProcess) -> None:
    q = "query=SELECT%201"
    cases: list[tuple[dict[str, str], str]] = [
        ({}, q),  # anonymous: ClickHouse's "default", which has a password here
        ({"Authorization": basic((WRITER[0], "wrong"))}, q),
        ({"Authorization": basic(("nobody", "x"))}, q),
        ({"X-ClickHouse-User": ANALYST[0], "X-ClickHouse-Key": "wrong"}, q),
        ({}, f"{q}&user={ANALYST[0]}&password=wrong"),
        ({"Authorization": "Bearer abc"}, q),
        # two ways at once, even both right: ClickHouse refuses the ambiguity
        ({"Authorization": basic(WRITER)}, f"{q}&user={ANALYST[0]}&password={ANALYST[1]}"),
    ]
    for headers, query in cases:
        status, reply, body = post(engine, b"", user=None, query=query, headers=headers)
        # As ClickHouse: 401 (and a Basic challenge) when none were sent, else 403
        expected = 401 if not headers and query == q else 403
        assert (status, code(reply)) == (expected, 516), (headers, query, body)
        assert ("WWW-Authenticate" in reply) == (expected == 401)
        assert b"AUTHENTICATION_FAILED" in body
        assert body != b"1\n"


def test_right_passwords_are_taken_every_way(engine: EngineProcess) -> None:
    q = "query=SELECT%201"
    for headers, query in [
        ({"Authorization": basic(ANALYST)}, q),
        ({"X-ClickHouse-User": ANALYST[0], "X-ClickHouse-Key": ANALYST[1]}, q),
        ({}, f"{q}&user={ANALYST[0]}&password={ANALYST[1]}"),
    ]:
        assert post(engine, b"", user=None, query=query, headers=headers)[::2] == (200, b"1\n")


# -- what the analyst may do -------------------------------------------------------------


def test_analyst_reads_the_views(engine: EngineProcess) -> None:
    ch = connect(engine.analyst_url)  # clickhouse-connect, as analysts' tools use it
    try:
        assert ch.query("SELECT toString(total) FROM stakes") == [("13.5",)]
    finally:
        ch.close()
    status, _, body = post(engine, "SELECT toString(total) FROM stakes", user=ANALYST)
    assert (status, body) == (200, b"13.5\n")


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO bets VALUES (3, 1.00)",
        "INSERT INTO bets SELECT 4, 1",
        "CREATE TABLE mine (a UInt8) ENGINE = Memory",
        "DROP TABLE bets",
        "ALTER TABLE bets DELETE WHERE 1",
        "TRUNCATE TABLE bets",
        "RENAME TABLE bets TO gone",
        "OPTIMIZE TABLE bets FINAL",
        "KILL QUERY WHERE 1",
    ],
)
def test_analyst_cannot_write(engine: EngineProcess, statement: str) -> None:
    status, reply, body = post(engine, statement, user=ANALYST)
    # ClickHouse's statuses: READONLY is 500, ACCESS_DENIED 403; KILL QUERY other than by
    # query_id is not implemented (501).
    assert (status, code(reply)) in ((500, 164), (403, 497), (501, 48)), body
    assert post(engine, "SELECT count() FROM bets", user=ANALYST)[2] == b"2\n"


def test_analyst_cannot_lift_its_limits(engine: EngineProcess) -> None:
    # readonly=2: settings within the caps (clickhouse-connect sends some on every query)
    assert post(engine, "SELECT 1", user=ANALYST, query="max_execution_time=1")[::2] == (
        200,
        b"1\n",
    )
    for query in ("max_execution_time=-1", "max_memory_usage=lots",
                  "input_format_values_interpret_expressions=1", "dialect=prql"):  # fmt: skip
        status, reply, body = post(engine, "SELECT 1", user=ANALYST, query=query)
        assert (status, code(reply)) == (500, 452), (query, body)
    # A tool's own timeout above the cap, or 0 (none), runs at the cap: Grafana connects.
    cap = str(READONLY_SECONDS).encode()
    for query in ("max_execution_time=1000", "max_execution_time=0"):
        got = post(engine, "SELECT getSetting('max_execution_time')", user=ANALYST, query=query)
        assert got[::2] == (200, cap + b"\n"), (query, got)
    got = post(engine, "SELECT getSetting('max_memory_usage')", user=ANALYST,
               query="max_memory_usage=0")  # fmt: skip
    assert got[::2] == (200, str(Limits().readonly_max_memory_usage).encode() + b"\n")
    status, reply, _ = post(engine, "SELECT 1 SETTINGS max_execution_time = 1000", user=ANALYST)
    assert (status, code(reply)) == (500, 164)
    # asking for readonly=0 does not lower the user's level
    assert code(post(engine, "DROP TABLE bets", user=ANALYST, query="readonly=0")[1]) == 164


def test_readonly_1_changes_no_setting(engine: EngineProcess) -> None:
    assert post(engine, "SELECT count() FROM bets", user=VIEWER)[::2] == (200, b"2\n")
    status, reply, body = post(engine, "SELECT 1", user=VIEWER, query="max_threads=1")
    assert (status, code(reply)) == (500, 164), body
    assert b"Cannot modify 'max_threads' setting in readonly mode" in body
    status, reply, _ = post(engine, "INSERT INTO bets VALUES (5, 5)", user=VIEWER)
    assert (status, code(reply)) == (500, 164)


def test_get_is_read_only_even_for_the_writer(engine: EngineProcess) -> None:
    for statement in ("DROP TABLE bets", "INSERT INTO bets VALUES (9, 9)"):
        query = "query=" + urllib.parse.quote(statement)
        status, reply, body = post(engine, b"", query=query, method="GET")
        assert (status, code(reply)) == (500, 164), body
        assert b"method GET implies readonly" in body
    assert (
        post(engine, b"", query="query=SELECT%20count()%20FROM%20bets", method="GET")[2] == b"2\n"
    )


# -- nobody reaches the host ------------------------------------------------------------


@pytest.mark.parametrize("who", [WRITER, ANALYST], ids=["writer", "analyst"])
@pytest.mark.parametrize(
    "template",
    [
        "SELECT * FROM file('{path}', 'LineAsString')",
        "SELECT file('{path}')",
        "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
        "SELECT * FROM postgresql('127.0.0.1:5432', 'croupier', 'ledger', 'u', 'p')",
        "SELECT * FROM mysql('127.0.0.1:3306', 'd', 't', 'u', 'p')",
        "SELECT * FROM s3('http://127.0.0.1:1/b/k', 'CSV')",
        "SELECT * FROM remote('127.0.0.1', system.one)",
        "SELECT * FROM executable('cat {path}', 'LineAsString', 'x String')",
        "DESCRIBE TABLE file('{path}')",
        "CREATE TABLE leak (l String) ENGINE = File(LineAsString, '{path}')",
        "INSERT INTO FUNCTION file('{path}.out', 'CSV') SELECT 1",
        "ATTACH TABLE leak2 FROM '{path}' (l String) ENGINE = File(LineAsString)",
        "SYSTEM RELOAD CONFIG",
        "INSERT INTO bets FROM INFILE '{path}' FORMAT CSV",
        "BACKUP TABLE bets TO File('{path}.bak')",
    ],
)
def test_nobody_reads_files_or_reaches_other_hosts(
    engine: EngineProcess, secret: Path, who: tuple[str, str], template: str
) -> None:
    status, reply, body = post(engine, template.format(path=secret), user=who)
    assert status in (403, 500), body  # 500: FROM INFILE, as ClickHouse answers it
    assert b"SECRET-MARKER" not in body
    assert code(reply) in (7, 164, 497)
    assert not Path(f"{secret}.out").exists()


@pytest.mark.parametrize("who", [WRITER, ANALYST], ids=["writer", "analyst"])
def test_nobody_writes_into_outfile(engine: EngineProcess, tmp_path: Path, who: Any) -> None:
    target = tmp_path / "out.csv"
    status, reply, body = post(engine, f"SELECT * FROM bets INTO OUTFILE '{target}'", user=who)
    assert (status, code(reply)) == (500, 564), body
    assert not target.exists()


def test_tables_keep_their_data_here(engine: EngineProcess) -> None:
    status, _, body = post(engine, "SELECT 1 SETTINGS max_threads = 1 FORMAT TSV")
    assert (status, body) == (200, b"1\n")  # a SELECT's own settings are the writer's to set
    status, _, body = post(engine, "SELECT 1 FORMAT TSV SETTINGS max_threads = 1")
    assert (status, body) == (200, b"1\n")
    status, _, body = post(engine, "CREATE TABLE IF NOT EXISTS kept (d Date) ENGINE = "
                           "ReplacingMergeTree PARTITION BY toYYYYMM(d) ORDER BY d")  # fmt: skip
    assert status == 200, body
    for statement, query in [
        ("CREATE TABLE away (d Date) ENGINE = URL('http://127.0.0.1:1/', CSV)", ""),
        ("CREATE TABLE away (d Date) ORDER BY d", "default_table_engine=File"),
        ("CREATE DATABASE away ENGINE = PostgreSQL('127.0.0.1:5432', 'd', 'u', 'p')", ""),
        ("CREATE DATABASE away ENGINE = SQLite('/etc/passwd')", ""),
        (
            "CREATE TABLE away (a Int8) ENGINE = MergeTree ORDER BY a "
            "SETTINGS disk = disk(type = web, endpoint = 'http://127.0.0.1:1/')",
            "",
        ),
        ("ALTER TABLE kept MODIFY SETTING disk = disk(type = local, path = '/tmp/away/')", ""),
    ]:
        status, reply, body = post(engine, statement, query=query)
        assert (status, code(reply)) in ((403, 497), (500, 452)), (statement, body)


def test_values_cannot_smuggle_an_expression(engine: EngineProcess, secret: Path) -> None:
    ch = connect(engine.url)
    try:
        ch.command("CREATE TABLE IF NOT EXISTS notes (n String) ENGINE = Memory")
    finally:
        ch.close()
    status, _, body = post(engine, f"INSERT INTO notes VALUES (file('{secret}'))")
    assert status != 200, body
    status, _, body = post(
        engine, f"INSERT INTO notes SETTINGS input_format_values_interpret_expressions = 1 "
        f"VALUES (file('{secret}'))"
    )  # fmt: skip
    assert status != 200, body
    status, _, body = post(
        engine, f"INSERT INTO notes VALUES (file('{secret}'))",
        query="input_format_values_interpret_expressions=1",
    )  # fmt: skip
    assert status != 200, body
    assert b"SECRET" not in post(engine, "SELECT * FROM notes")[2]


_DENIED = ["file", "url", "postgresql", "mysql", "s3", "remote", "executable", "hdfs"]


def _spell(name: str) -> st.SearchStrategy[str]:
    """``name`` as SQL may spell it: any case, bare, in backquotes or double quotes."""
    cased = st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda ups: "".join(c.upper() if up else c for c, up in zip(name, ups, strict=True))
    )
    return st.tuples(cased, st.sampled_from(["{}", "`{}`", '"{}"'])).map(
        lambda t: t[1].format(t[0])
    )


_GAP = st.sampled_from([" ", "\n", "\t", " /* ; DROP */ ", " -- x\n", "  "])


@st.composite
def hostile(draw: st.DrawFn, path: str) -> str:
    """A statement that reaches a file or host somewhere inside, however it is dressed."""
    call = f"{draw(_spell(draw(st.sampled_from(_DENIED))))}{draw(_GAP)}('{path}')"
    shape = draw(st.sampled_from([
        "SELECT *{g}FROM{g}{c}",
        "SELECT{g}{c}",
        "SELECT * FROM (SELECT * FROM{g}{c})",
        "WITH x AS (SELECT * FROM {c}) SELECT * FROM x",
        "SELECT arrayMap(a ->{g}{c}, [1])",
        "SELECT 1 UNION ALL SELECT * FROM{g}{c}",
        "SELECT * FROM view(SELECT * FROM {c})",
        "SELECT * FROM numbers(1) WHERE number IN (SELECT * FROM {c})",
        "SELECT * FROM bets AS b JOIN {c} AS f ON 1",
        "INSERT INTO FUNCTION {c} SELECT 1",
        "CREATE VIEW v{g}AS SELECT * FROM {c}",
        "select/**/*/**/from{g}{c}",
    ]))  # fmt: skip
    gap = draw(_GAP)
    return draw(st.sampled_from(["{}", "{};", "  {}  ", "/* lead */{}"])).format(
        shape.format(g=gap, c=call)
    )


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_sql_never_reaches_the_host(
    engine: EngineProcess, secret: Path, data: st.DataObject
) -> None:
    statement = data.draw(hostile(str(secret)))
    status, _, body = post(engine, statement)
    assert status != 200, statement
    assert b"SECRET-MARKER" not in body


_WRITES = [
    "INSERT INTO bets VALUES (77, 1)",
    "INSERT INTO bets SELECT 77, 1",
    "ALTER TABLE bets DELETE WHERE 1",
    "ALTER TABLE bets UPDATE stake = 0 WHERE 1",
    "TRUNCATE TABLE bets",
    "DROP TABLE bets",
    "CREATE TABLE t77 ENGINE = Memory AS SELECT 1",
    "RENAME TABLE bets TO b77",
    "DELETE FROM bets WHERE 1",
    "OPTIMIZE TABLE bets",
    "DETACH TABLE bets",
]


@st.composite
def dressed_write(draw: st.DrawFn) -> str:
    """A write an analyst might try, in any case, with comments and blanks about."""
    words = draw(st.sampled_from(_WRITES)).split(" ")
    cased = [w.upper() if draw(st.booleans()) else w.lower() if w.isalpha() else w for w in words]
    text = "".join(w + draw(_GAP) for w in cased)
    return draw(st.sampled_from(["{}", "{};", "/* x */ {}", "(\n{})", "WITH 1 AS x {}"])).format(
        text
    )


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_analyst_writes_never_land_however_dressed(
    engine: EngineProcess, data: st.DataObject
) -> None:
    statement = data.draw(dressed_write())
    status, reply, body = post(engine, statement, user=ANALYST)
    assert code(reply) in (62, 164, 497), (statement, body)
    status, _, body = post(engine, "SELECT count(), sum(id) FROM bets", user=ANALYST)
    assert (status, body) == (200, b"2\t3\n"), statement


# -- one statement at a time --------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    ["SELECT 1; DROP TABLE bets", "SELECT 1;DROP TABLE bets;", "SELECT ';'; DROP TABLE bets"],
)
def test_multi_statements_are_refused(engine: EngineProcess, statement: str) -> None:
    status, reply, body = post(engine, statement)
    assert (status, code(reply)) == (400, 62), body
    assert b"Multi-statements are not allowed" in body
    assert post(engine, "SELECT count() FROM bets")[2] == b"2\n"


def test_croupier_sql_refuses_a_second_statement(engine: EngineProcess) -> None:
    with pytest.raises(sql.SqlError, match="Multi-statements are not allowed"):
        sql.run(engine.url, "default", "SELECT 1; DROP TABLE bets")
    assert post(engine, "SELECT count() FROM bets")[2] == b"2\n"


# -- where requests come from -------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "attacker.example"},  # a DNS-rebound name
        {"Host": "attacker.example:8123"},
        {"Origin": "http://attacker.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_browsers_and_rebound_names_are_refused(
    engine: EngineProcess, headers: dict[str, str]
) -> None:
    status, reply, _ = post(engine, "SELECT 1", headers=headers)
    assert (status, code(reply)) == (403, 497)


def test_loopback_names_are_taken(engine: EngineProcess) -> None:
    for host in ("localhost", f"localhost:{engine.port}", f"127.0.0.1:{engine.port}"):
        assert post(engine, "SELECT 1", headers={"Host": host})[::2] == (200, b"1\n")


# -- what is echoed -------------------------------------------------------------------------


def test_query_id_cannot_inject_headers(engine: EngineProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=10)
    try:
        conn.request(
            "POST", "/?query_id=a%0d%0aX-Injected:%201", body=b"SELECT 1",
            headers={"Authorization": basic(WRITER)},
        )  # fmt: skip
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 400
        assert resp.getheader("X-Injected") is None
        assert resp.getheader("X-ClickHouse-Exception-Code") == "36"
    finally:
        conn.close()
    status, reply, _ = post(engine, "SELECT 1", query="query_id=mine-1")
    assert (status, reply["X-ClickHouse-Query-Id"]) == (200, "mine-1")


def test_native_compression_it_cannot_do_is_refused_with_clickhouse_code(
    engine: EngineProcess,
) -> None:
    # compress=1 itself works (tests/integration/test_clickhouse_protocol.py); codecs that
    # are not network codecs do not.
    query = "compress=1&network_compression_method=T64"
    status, reply, _ = post(engine, "SELECT 1", query=query)
    assert (status, code(reply)) == (501, 48)


# -- limits ---------------------------------------------------------------------------------


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_gzip_bomb_is_refused_with_bounded_memory(engine: EngineProcess) -> None:
    assert engine.proc is not None
    bomb = gzip.compress(b"\0" * (1 << 30), compresslevel=9)  # 1 GiB in about 1 MiB
    assert len(bomb) < 1 << 20
    before = _peak_rss_kib(engine.proc.pid)
    status, reply, body = post(
        engine, bomb, query="query=INSERT%20INTO%20bets%20FORMAT%20RowBinary",
        headers={"Content-Encoding": "gzip"},
    )  # fmt: skip
    assert (status, code(reply)) == (413, 290), body
    grown_mib = (_peak_rss_kib(engine.proc.pid) - before) / 1024
    print(f"peak RSS grew {grown_mib:.0f} MiB for a {len(bomb)} byte gzip of 1 GiB")
    assert grown_mib < 64  # the cap is 8 MiB decompressed
    assert post(engine, "SELECT 1")[2] == b"1\n"


def test_body_over_the_limit_is_refused_before_it_is_read(engine: EngineProcess) -> None:
    # Only the head is sent: the answer comes without waiting for 2 MiB that never come.
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: {basic(WRITER)}\r\nContent-Length: {2 << 20}\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"X-ClickHouse-Exception-Code: 290" in answer


def test_result_over_the_limit_is_refused(engine: EngineProcess) -> None:
    status, reply, body = post(engine, "SELECT repeat('x', 1000) FROM numbers(100000)")
    assert status == 500
    assert code(reply) == 396, body
    assert len(body) < 10_000


def test_connections_are_bounded(engine: EngineProcess) -> None:
    idle = [socket.create_connection(("127.0.0.1", engine.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)
        status, reply, body = post(engine, "SELECT 1")
        assert (status, code(reply)) == (503, 202), body
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while post(engine, "SELECT 1")[0] != 200:
        assert time.monotonic() < deadline, "connections were not given back"
        time.sleep(0.1)


# -- nothing holds the engine for long ----------------------------------------------------


def test_long_analyst_query_is_cut_and_the_sinks_insert_goes_through(
    engine: EngineProcess,
) -> None:
    result: dict[str, Any] = {}

    def analyst() -> None:
        started = time.monotonic()
        result["analyst"] = post(engine, "SELECT count() FROM system.numbers", user=ANALYST)
        result["analyst_s"] = time.monotonic() - started

    writer = connect(engine.url)  # connected first: connecting asks the engine too
    thread = threading.Thread(target=analyst)
    thread.start()
    time.sleep(0.5)  # the analyst's statement holds the engine
    started = time.monotonic()
    try:  # the analytics sink's way in: insert_raw over the writer's URL
        writer.insert_raw("bets", ["id", "stake"], b"100\t1.00\n", "TabSeparated")
        insert_s = time.monotonic() - started
        assert writer.query("SELECT count() FROM bets WHERE id = 100") == [(1,)]
    finally:
        writer.command("ALTER TABLE bets DELETE WHERE id = 100 SETTINGS mutations_sync = 1")
        writer.close()
    thread.join(30)
    status, reply, body = result["analyst"]
    assert (status, code(reply)) == (408, 159), body  # TIMEOUT_EXCEEDED, as ClickHouse
    print(f"analyst cut after {result['analyst_s']:.1f} s; the insert took {insert_s:.1f} s")
    assert result["analyst_s"] < READONLY_SECONDS + 2
    assert insert_s < READONLY_SECONDS + 2


@pytest.mark.parametrize("who", [WRITER, ANALYST], ids=["writer", "analyst"])
def test_query_of_a_client_that_went_away_does_not_wedge_the_server(
    engine: EngineProcess, who: tuple[str, str]
) -> None:
    _abandon(engine, who, b"SELECT count() FROM system.numbers")  # a client's timeout
    limit = READONLY_SECONDS if who == ANALYST else WRITER_SECONDS
    started = time.monotonic()
    status, _, answer = post(engine, "SELECT 42", timeout=limit + 10)
    waited = time.monotonic() - started
    print(f"the next statement waited {waited:.1f} s behind the abandoned one")
    assert (status, answer) == (200, b"42\n")
    # Cancelled when its client went away, as ClickHouse does: not held to its time limit.
    assert waited < min(limit, 2.5), waited
    assert ping(engine.base)
    assert answers(engine.url)


def _abandon(engine: EngineProcess, who: tuple[str, str], statement: bytes) -> None:
    """Send ``statement`` and go away without waiting for the answer."""
    sock = socket.create_connection(("127.0.0.1", engine.port))
    sock.sendall(
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: {basic(who)}\r\nContent-Length: {len(statement)}\r\n\r\n".encode()
        + statement
    )
    time.sleep(0.3)
    sock.close()


def test_abandoned_queries_waiting_their_turn_never_run(engine: EngineProcess) -> None:
    heavy = b"SELECT count() FROM system.numbers"
    gone = "The client went away before the query started"
    cancelled_before = engine.log.read_text().count(gone)
    holder = threading.Thread(target=post, args=(engine, heavy), kwargs={"timeout": 30})
    holder.start()  # the writer's statement holds the engine for WRITER_SECONDS
    time.sleep(0.5)
    for _ in range(3):  # three clients give up while they wait behind it
        _abandon(engine, WRITER, heavy)
    started = time.monotonic()
    status, _, answer = post(engine, "SELECT 42", timeout=4 * WRITER_SECONDS)
    waited = time.monotonic() - started
    holder.join(30)
    print(f"the next statement waited {waited:.1f} s behind one running and three abandoned")
    assert (status, answer) == (200, b"42\n")
    assert waited < WRITER_SECONDS + 2  # not 4 x WRITER_SECONDS
    assert engine.log.read_text().count(gone) - cancelled_before == 3


def test_status_says_not_running_when_ping_answers_but_queries_do_not(
    engine: EngineProcess,
) -> None:
    thread = threading.Thread(
        target=post, args=(engine, "SELECT count() FROM system.numbers"), kwargs={"timeout": 30}
    )
    thread.start()
    time.sleep(0.5)
    try:
        assert ping(engine.base)
        assert not answers(engine.url, timeout=1)
    finally:
        thread.join(30)
    assert answers(engine.url)
    assert not answers(engine.url.replace(WRITER[1], "wrong"))


def test_croupier_sql_asks_as_the_analyst_when_the_stack_has_one(
    engine: EngineProcess, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from croupier.cli import main as croupier_main

    monkeypatch.setenv("CROUPIER_STACK_DIR", "/nonexistent")
    monkeypatch.setenv("CROUPIER_CLICKHOUSE_DATABASE", "default")
    monkeypatch.setenv("CROUPIER_CLICKHOUSE_URL", engine.url)  # the writer
    monkeypatch.setenv("CROUPIER_CLICKHOUSE_ANALYST_URL", engine.analyst_url)
    cap = ["--timeout", str(READONLY_SECONDS)]  # the analyst's cap on this server
    assert croupier_main(["sql", "SELECT count() FROM bets", "--format", "csv", *cap]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2"
    # The writer could; the analyst cannot, so nothing changes.
    assert croupier_main(["sql", "INSERT INTO bets SELECT * FROM bets", *cap]) == 1
    assert "readonly" in capsys.readouterr().err.lower()
    assert post(engine, "SELECT count() FROM bets")[2] == b"2\n"
