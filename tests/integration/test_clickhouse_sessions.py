"""Sessions, SET, HTTP statuses, progress headers and query_id on the real server and engine.

One server process for the module: at most ``MAX_SESSIONS`` sessions, ``TEMPORARY_BYTES``
of temporary tables per session, one statement at a time (the default).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from email.message import Message
from typing import Any

import clickhouse_connect
import pytest

from sinks.clickhouse.client import connect
from tests.integration.clickhouse_server import (
    ANALYST,
    VIEWER,
    WRITER,
    EngineProcess,
    basic,
    free_port,
)

pytestmark = pytest.mark.integration

MAX_SESSIONS = 16
TEMPORARY_BYTES = 1 << 20


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    home = tmp_path_factory.mktemp("clickhouse-sessions")
    process = EngineProcess(
        home / "data", free_port(), home / "server.log",
        "--max-sessions", str(MAX_SESSIONS),
        "--session-temporary-bytes", str(TEMPORARY_BYTES),
        "--readonly-max-execution-time", "5",
    )  # fmt: skip
    process.start()
    ch = connect(process.url)
    ch.command("CREATE TABLE IF NOT EXISTS bets (id UInt64) ENGINE = MergeTree ORDER BY id")
    ch.command("INSERT INTO bets VALUES (1), (2)")
    ch.close()
    yield process
    if process.proc is not None:
        process.stop()


class Reply:
    """An HTTP answer with every header kept (progress headers repeat)."""

    def __init__(self, status: int, headers: Message, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def code(self) -> int:
        return int(self.headers.get("X-ClickHouse-Exception-Code", "0"))

    def all(self, name: str) -> list[str]:
        return self.headers.get_all(name) or []


def post(
    engine: EngineProcess,
    body: str,
    *,
    user: tuple[str, str] = WRITER,
    timeout: float = 30,
    **params: str | int,
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=timeout)
    try:
        query = urllib.parse.urlencode(params)
        conn.request(
            "POST", f"/?{query}", body=body.encode(), headers={"Authorization": basic(user)}
        )
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def session() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


def in_background(
    fn: Callable[..., Reply], *args: Any, **kwargs: Any
) -> tuple[threading.Thread, dict[str, Reply]]:
    """Run ``fn`` in a thread; its reply lands in the dict under ``reply``."""
    out: dict[str, Reply] = {}

    def run() -> None:
        out["reply"] = fn(*args, **kwargs)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


SLOW = "SELECT sleepEachRow(0.2) FROM numbers({n}) SETTINGS max_block_size = 1 FORMAT TSV"


# -- sessions --------------------------------------------------------------------------------


def test_sessions_are_bounded_and_expire(engine: EngineProcess) -> None:
    # First in the module, so that the open sessions are this test's.
    ids = [session() for _ in range(MAX_SESSIONS + 1)]
    replies = [post(engine, "SELECT 1", session_id=s, session_timeout=1) for s in ids]
    assert [r.status for r in replies[:MAX_SESSIONS]] == [200] * MAX_SESSIONS
    assert (replies[-1].status, replies[-1].code) == (413, 290), replies[-1].body
    time.sleep(2.5)  # idle past their timeout: the server closes them
    assert post(engine, "SELECT 1", session_id=ids[0], session_check=1).code == 372
    assert post(engine, "SELECT 1", session_id=ids[-1]).status == 200


def test_two_clickhouse_connect_clients_keep_their_own_temporary_tables(
    engine: EngineProcess,
) -> None:
    clients = [
        clickhouse_connect.get_client(  # a session_id each, by default
            host="127.0.0.1", port=engine.port, username=ANALYST[0], password=ANALYST[1]
        )
        for _ in range(2)
    ]
    try:
        for n, ch in enumerate(clients):
            ch.command("CREATE TEMPORARY TABLE scratch (n UInt8)")  # the same name, twice
            ch.command(f"INSERT INTO scratch VALUES ({n + 10})")
        assert [ch.query("SELECT n FROM scratch").result_rows for ch in clients] == [
            [(10,)],
            [(11,)],
        ]
        clients[0].command("SET max_threads = 3")  # and their own settings
        threads = "SELECT getSetting('max_threads') = 3"
        assert [ch.query(threads).result_rows for ch in clients] == [[(True,)], [(False,)]]
        # Nobody else sees them: neither a request without a session nor the writer's.
        reply = post(engine, "SELECT n FROM scratch", user=ANALYST)
        assert (reply.status, reply.code) == (404, 60), reply.body
        assert post(engine, "EXISTS TEMPORARY TABLE scratch").body == b"0\n"
    finally:
        for ch in clients:
            ch.close()


def test_a_session_keeps_its_temporary_tables_and_drops_them_when_it_expires(
    engine: EngineProcess,
) -> None:
    sid = session()
    assert (
        post(engine, "CREATE TEMPORARY TABLE t (x UInt8)", session_id=sid, session_timeout=1).status
        == 200
    )
    assert post(engine, "INSERT INTO t VALUES (7)", session_id=sid, session_timeout=1).status == 200
    assert post(engine, "SELECT x FROM t", session_id=sid, session_timeout=1).body == b"7\n"
    time.sleep(2.5)
    reply = post(engine, "SELECT 1", session_id=sid, session_check=1)
    assert (reply.status, reply.code) == (500, 372), reply.body  # SESSION_NOT_FOUND
    reply = post(engine, "SELECT x FROM t", session_id=sid)  # a new session of that name
    assert (reply.status, reply.code) == (404, 60), reply.body


def test_a_temporary_table_in_a_request_without_a_session_lasts_that_request(
    engine: EngineProcess,
) -> None:
    assert post(engine, "CREATE TEMPORARY TABLE once (x UInt8)").status == 200
    assert post(engine, "CREATE TEMPORARY TABLE once (x UInt8)").status == 200  # no clash
    assert post(engine, "SELECT * FROM once").code == 60


def test_another_user_cannot_use_my_session(engine: EngineProcess) -> None:
    sid = session()
    assert post(engine, "CREATE TEMPORARY TABLE mine (x UInt8)", session_id=sid).status == 200
    for params in ({"session_id": sid}, {"session_id": sid, "session_check": 1}):
        reply = post(engine, "SELECT * FROM mine", user=ANALYST, **params)
        assert (reply.status, reply.code) == (403, 497), reply.body


def test_a_session_serves_one_request_at_a_time(engine: EngineProcess) -> None:
    sid = session()
    thread, _ = in_background(post, engine, SLOW.format(n=6), session_id=sid, query_id="held-1")
    time.sleep(0.5)
    reply = post(engine, "SELECT 1", session_id=sid)
    assert (reply.status, reply.code) == (500, 373), reply.body  # SESSION_IS_LOCKED
    post(engine, "KILL QUERY WHERE query_id = 'held-1' SYNC")
    thread.join(10)
    assert post(engine, "SELECT 1", session_id=sid).status == 200


def test_session_parameters_are_checked(engine: EngineProcess) -> None:
    reply = post(engine, "SELECT 1", session_id=session(), session_timeout=3601)
    assert (reply.status, reply.code) == (500, 374), reply.body  # INVALID_SESSION_TIMEOUT
    reply = post(engine, "SELECT 1", session_id="bad\nid")
    assert (reply.status, reply.code) == (400, 36), reply.body


def test_analyst_temporary_tables_are_memory_and_bounded(engine: EngineProcess) -> None:
    sid = session()

    def ask(sql: str) -> Reply:
        return post(engine, sql, user=ANALYST, session_id=sid)

    assert ask("CREATE TEMPORARY TABLE big (s String)").status == 200
    assert ask("INSERT INTO big SELECT toString(number) FROM numbers(10)").status == 200
    assert ask("INSERT INTO big FORMAT TSV\nx\ny\n").status == 200
    assert ask("SELECT count() FROM big").body == b"12\n"
    # Real tables stay out of reach, whatever a temporary one is called.
    assert ask("CREATE TEMPORARY TABLE bets (id UInt64)").status == 200
    for sql in (
        "INSERT INTO default.bets VALUES (99)",
        "CREATE TEMPORARY TABLE m (x UInt8) ENGINE = MergeTree ORDER BY x",
        "CREATE TABLE real_one (x UInt8) ENGINE = Memory",
        "DROP TABLE default.bets",
    ):
        reply = ask(sql)
        assert (reply.status, reply.code) == (500, 164), (sql, reply.body)
    assert post(engine, "SELECT count() FROM bets").body == b"2\n"
    # Past the session's bound, the table that grew is dropped.
    reply = ask(f"INSERT INTO big SELECT repeat('x', 1000) FROM numbers({TEMPORARY_BYTES // 500})")
    assert (reply.status, reply.code) == (413, 290), reply.body
    assert ask("SELECT count() FROM big").code == 60
    assert ask("DROP TEMPORARY TABLE bets").status == 200


# -- SET --------------------------------------------------------------------------------------


def test_set_lasts_in_its_session_only(engine: EngineProcess) -> None:
    sid, other = session(), session()
    get = "SELECT getSetting('max_threads'), getSetting('max_execution_time')"
    default = post(engine, get, user=ANALYST).body
    assert (
        post(
            engine, "SET max_threads = 3, max_execution_time = 2", user=ANALYST, session_id=sid
        ).status
        == 200
    )
    assert post(engine, get, user=ANALYST, session_id=sid).body == b"3\t2\n"
    assert post(engine, get, user=ANALYST, session_id=other).body == default
    assert post(engine, get, user=ANALYST).body == default
    # A URL setting wins over the session's for its request only.
    assert post(engine, get, user=ANALYST, session_id=sid, max_threads=2).body == b"2\t2\n"
    assert post(engine, get, user=ANALYST, session_id=sid).body == b"3\t2\n"
    # Outside a session, as ClickHouse: accepted, and gone with the request.
    assert post(engine, "SET max_threads = 5", user=ANALYST).status == 200
    assert post(engine, get, user=ANALYST).body == default


def test_set_refuses_what_the_user_may_not_change(engine: EngineProcess) -> None:
    sid = session()
    cases = [
        (ANALYST, "SET max_execution_time = -1", 500, 452),
        (ANALYST, "SET max_memory_usage = 'lots'", 400, 27),  # the engine's parse error
        (ANALYST, "SET default_table_engine = 'Log'", 500, 452),  # forced
        (ANALYST, "SET input_format_values_interpret_expressions = 1", 500, 452),
        (ANALYST, "SET no_such_setting = 1", 404, 115),
        (VIEWER, "SET max_threads = 1", 500, 164),
        (ANALYST, "SET max_threads = ", 400, 62),
        (ANALYST, "SET readonly = 0", 500, 164),
    ]
    for user, sql, status, code in cases:
        reply = post(engine, sql, user=user, session_id=f"{sid}-{user[0]}")
        assert (reply.status, reply.code) == (status, code), (sql, reply.body)
    get = "SELECT getSetting('max_execution_time')"
    assert post(engine, get, user=ANALYST, session_id=f"{sid}-analyst").body == b"5\n"
    # Above the cap (a tool's own timeout), or 0: taken, and run at the cap.
    for sql in ("SET max_execution_time = 1000", "SET max_execution_time = 0"):
        assert post(engine, sql, user=ANALYST, session_id=f"{sid}-analyst").status == 200
        assert post(engine, get, user=ANALYST, session_id=f"{sid}-analyst").body == b"5\n"
    # The writer may make its own session read-only, and then not undo it.
    writer = f"{sid}-writer"
    assert post(engine, "SET readonly = 1", session_id=writer).status == 200
    reply = post(engine, "INSERT INTO bets VALUES (3)", session_id=writer)
    assert (reply.status, reply.code) == (500, 164), reply.body
    assert post(engine, "SET readonly = 0", session_id=writer).code == 164
    assert post(engine, "SELECT count() FROM bets", session_id=writer).body == b"2\n"


# -- HTTP statuses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "params", "status", "code"),
    [
        ("SELEC 1", {}, 400, 62),  # SYNTAX_ERROR
        ("SELECT * FROM no_such_table", {}, 404, 60),  # UNKNOWN_TABLE
        ("SELECT no_such_function(1)", {}, 404, 46),  # UNKNOWN_FUNCTION
        ("SELECT 1", {"no_such_setting": 1}, 404, 115),  # UNKNOWN_SETTING
        ("SELECT toUInt8('x')", {}, 400, 6),  # CANNOT_PARSE_TEXT
        ("SELECT throwIf(1)", {}, 500, 395),  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
        ("SELECT sleep(3)", {"max_execution_time": 1}, 408, 159),  # TIMEOUT_EXCEEDED
    ],
)
def test_errors_carry_clickhouse_status_and_code(
    engine: EngineProcess, sql: str, params: dict[str, Any], status: int, code: int
) -> None:
    reply = post(engine, sql, **params)
    assert (reply.status, reply.code) == (status, code), reply.body
    assert reply.body.startswith(f"Code: {code}.".encode())


# -- progress and query_id --------------------------------------------------------------------


def test_progress_headers_come_while_the_query_runs_when_asked(engine: EngineProcess) -> None:
    asked: dict[str, Any] = {
        "send_progress_in_http_headers": 1,
        "http_headers_progress_interval_ms": 150,
    }
    reply = post(engine, SLOW.format(n=8), **asked)
    assert (reply.status, reply.body) == (200, b"0\n" * 8)
    progress = [json.loads(v) for v in reply.all("X-ClickHouse-Progress")]
    assert len(progress) >= 4, progress  # 1.6 s at 150 ms, and the last one
    assert all(set(p) >= {"read_rows", "total_rows_to_read", "elapsed_ns"} for p in progress)
    read = [int(p["read_rows"]) for p in progress]
    assert read == sorted(read) and read[-1] == 8 and read[0] < 8
    assert json.loads(reply.headers["X-ClickHouse-Summary"])["read_rows"] == "8"
    assert reply.all("X-ClickHouse-Progress") and reply.headers["X-ClickHouse-Format"] == "TSV"
    assert post(engine, SLOW.format(n=2)).all("X-ClickHouse-Progress") == []


def test_an_error_after_progress_went_out_is_in_the_body_and_header(
    engine: EngineProcess,
) -> None:
    sql = ("SELECT throwIf(number = 5), sleepEachRow(0.1) FROM numbers(10) "
           "SETTINGS max_block_size = 1")  # fmt: skip
    reply = post(engine, sql, send_progress_in_http_headers=1,
                 http_headers_progress_interval_ms=100)  # fmt: skip
    assert reply.status == 200  # as ClickHouse: the status line went out with the progress
    assert reply.all("X-ClickHouse-Progress")
    assert reply.code == 395 and b"Code: 395." in reply.body


def test_query_id_headers(engine: EngineProcess) -> None:
    reply = post(engine, "SELECT 1")
    assert uuid.UUID(reply.headers["X-ClickHouse-Query-Id"])
    assert (
        reply.headers["X-ClickHouse-Timezone"] and reply.headers["X-ClickHouse-Server-Display-Name"]
    )
    assert post(engine, "SELECT 1", query_id="mine:1").headers["X-ClickHouse-Query-Id"] == "mine:1"
    reply = post(engine, "SELECT 1", query_id="x" * 200)
    assert (reply.status, reply.code) == (400, 36)


def test_same_query_id_kill_and_replace(engine: EngineProcess) -> None:
    thread, out = in_background(post, engine, SLOW.format(n=25), query_id="run-1")
    time.sleep(0.5)
    reply = post(engine, "SELECT 1", query_id="run-1")
    assert (reply.status, reply.code) == (500, 216), reply.body
    # Another user's query_id is another query: nothing of mine to kill.
    assert post(engine, "KILL QUERY WHERE query_id = 'run-1'", user=ANALYST).body == b""
    started = time.monotonic()
    reply = post(engine, "KILL QUERY WHERE query_id = 'run-1' SYNC")
    assert reply.body.split(b"\t")[:3] == [b"finished", b"run-1", WRITER[0].encode()]
    thread.join(10)
    assert time.monotonic() - started < 3  # not the 5 s the query would have taken
    assert (out["reply"].status, out["reply"].code) == (500, 394)  # QUERY_WAS_CANCELLED
    # replace_running_query=1 stops the running one and runs the new one.
    thread, out = in_background(post, engine, SLOW.format(n=25), query_id="run-2")
    time.sleep(0.5)
    reply = post(engine, "SELECT 42", query_id="run-2", replace_running_query=1)
    assert (reply.status, reply.body) == (200, b"42\n")
    thread.join(10)
    assert out["reply"].code == 394


def test_kill_cancels_a_query_waiting_its_turn(engine: EngineProcess) -> None:
    running, first = in_background(post, engine, SLOW.format(n=10), query_id="turn-1")
    time.sleep(0.4)
    waiting, second = in_background(post, engine, "SELECT 1", user=ANALYST, query_id="turn-2")
    time.sleep(0.3)
    reply = post(engine, "KILL QUERY WHERE query_id = 'turn-2' SYNC", user=ANALYST)
    assert reply.body.startswith(b"finished\tturn-2\tanalyst")
    waiting.join(5)
    assert (second["reply"].status, second["reply"].code) == (500, 394)
    running.join(10)
    assert first["reply"].status == 200  # the running one was not touched
