"""Sessions, running queries and the temporary-table rules of the ClickHouse front, without I/O."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from sinks.clickhouse.guard import Refused, check_statement, parse_ast, statement_target
from sinks.clickhouse.sessions import (
    DEFAULT_SESSION_TIMEOUT,
    QueryRegistry,
    Running,
    SessionParams,
    SessionStore,
    Turns,
    kill_target,
    progress_header,
    session_params,
)


class FakeConnection:
    """Stands for a chdb connection: the store only opens and closes them."""

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused(fn: Callable[..., object], *args: Any, **kwargs: Any) -> Refused:
    with pytest.raises(Refused) as info:
        fn(*args, **kwargs)
    return info.value


# -- session parameters ---------------------------------------------------------------------


def test_session_params_read_id_timeout_and_check() -> None:
    assert session_params({}) is None
    assert session_params({"session_id": ""}) is None
    assert session_params({"session_id": "a-1"}) == SessionParams(
        "a-1", DEFAULT_SESSION_TIMEOUT, False
    )
    assert session_params(
        {"session_id": "a", "session_timeout": "5", "session_check": "1"}
    ) == SessionParams("a", 5, True)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"session_id": "a", "session_timeout": "3601"}, 374),
        ({"session_id": "a", "session_timeout": "-1"}, 374),
        ({"session_id": "a", "session_timeout": "soon"}, 374),
        ({"session_id": "a b"}, 36),
        ({"session_id": "x" * 129}, 36),
    ],
)
def test_session_params_refuse_bad_values(params: dict[str, str], code: int) -> None:
    assert refused(session_params, params).code == code


# -- the store --------------------------------------------------------------------------------


def store(max_sessions: int = 3) -> tuple[SessionStore, Clock, list[FakeConnection]]:
    opened: list[FakeConnection] = []
    clock = Clock()

    def open_connection() -> FakeConnection:
        opened.append(FakeConnection())
        return opened[-1]

    return SessionStore(open_connection, max_sessions=max_sessions, clock=clock), clock, opened


def test_a_session_is_kept_between_requests_and_a_sessionless_context_is_not() -> None:
    sessions, _, opened = store()
    where = SessionParams("s", 60, False)
    with sessions.context("u", where) as first:
        first.settings["max_threads"] = "3"
    with sessions.context("u", where) as second:
        assert second is first and second.settings == {"max_threads": "3"}
    with sessions.context("u", None) as fresh:
        assert fresh.session_id is None and fresh.conn is opened[-1]
    assert len(sessions) == 1 and not any(c.closed for c in opened)


def test_a_connection_without_a_session_is_reused_only_when_it_holds_nothing() -> None:
    sessions, _, opened = store()
    with sessions.context("u", None) as first:
        first.applied = {"max_threads": "2"}  # known: the next request's SET resets it
    with sessions.context("v", None) as second:
        assert second is first and second.user == "v"
        second.temporary = True  # a temporary table was made here
    assert opened[0].closed
    with pytest.raises(ValueError, match="boom"), sessions.context("u", None) as third:
        assert third is not first
        raise ValueError("boom")  # a failed statement: state unknown
    assert opened[1].closed
    with sessions.context("u", None):
        pass
    assert len(opened) == 3
    sessions.close()
    assert all(c.closed for c in opened)


def test_a_session_expires_after_its_idle_timeout() -> None:
    sessions, clock, opened = store()
    with sessions.context("u", SessionParams("s", 10, False)):
        clock.now += 100  # a long request does not count as idle
    assert sessions.sweep() == []
    clock.now += 9
    assert sessions.sweep() == []
    clock.now += 2
    assert sessions.sweep() == ["s"]
    assert opened[0].closed and len(sessions) == 0
    assert refused(sessions.context("u", SessionParams("s", 10, True)).__enter__).code == 372


def test_session_check_owner_lock_and_bound() -> None:
    sessions, _, _ = store(max_sessions=2)
    assert refused(sessions.context("u", SessionParams("s", 60, True)).__enter__).code == 372
    held = sessions.context("u", SessionParams("s", 60, False))
    held.__enter__()
    again = refused(sessions.context("u", SessionParams("s", 60, False)).__enter__)
    assert (again.code, again.name) == (373, "SESSION_IS_LOCKED")
    other = refused(sessions.context("v", SessionParams("s", 60, False)).__enter__)
    assert (other.code, other.name) == (497, "ACCESS_DENIED")
    held.__exit__(None, None, None)
    with sessions.context("u", SessionParams("t", 60, False)):
        pass
    assert refused(sessions.context("u", SessionParams("w", 60, False)).__enter__).code == 290


def test_a_held_session_is_not_swept_and_close_closes_all() -> None:
    sessions, clock, opened = store()
    held = sessions.context("u", SessionParams("s", 0, False))
    held.__enter__()
    clock.now += 1000
    assert sessions.sweep() == []
    held.__exit__(None, None, None)
    sessions.close()
    assert all(c.closed for c in opened)
    assert refused(sessions.context("u", SessionParams("s", 1, False)).__enter__).code == 236


# -- running queries --------------------------------------------------------------------------


def test_a_running_query_id_is_unique_per_user() -> None:
    queries = QueryRegistry(kill=lambda running: None)
    first = queries.start("u", "q")
    assert refused(queries.start, "u", "q").code == 216
    other = queries.start("v", "q")  # another user's query of that id
    assert queries.find("u", "q") is first and queries.find("v", "q") is other
    queries.finish(first)
    assert queries.find("u", "q") is None and first.done.is_set()
    assert queries.start("u", "q") is not first


def test_cancel_kills_in_the_engine_only_a_started_query() -> None:
    killed: list[Running] = []
    queries = QueryRegistry(kill=killed.append)
    waiting = queries.start("u", "w")
    queries.cancel(waiting)
    assert waiting.cancelled.is_set() and killed == []
    running = queries.start("u", "r")
    running.started.set()
    queries.cancel(running)
    assert killed == [running]


def test_replace_cancels_the_running_query_and_waits_for_it() -> None:
    def kill(running: Running) -> None:
        threading.Timer(0.05, queries.finish, [running]).start()

    queries = QueryRegistry(kill=kill)
    old = queries.start("u", "q")
    old.started.set()
    new = queries.start("u", "q", replace=True)
    assert old.cancelled.is_set() and old.done.is_set() and new is not old
    stuck = QueryRegistry(kill=lambda running: None)
    stuck.start("u", "q")
    assert refused(stuck.start, "u", "q", replace=True, wait=0.05).code == 216


# -- KILL QUERY, statement targets, progress ------------------------------------------------

KILL = """KillQueryQuery Function_equals SYNC (children 1)
 Function equals (children 1)
  ExpressionList (children 2)
   Identifier query_id
   Literal 'a-1'
"""


def test_kill_target_reads_only_query_id_equals_a_literal() -> None:
    assert kill_target(parse_ast(KILL)) == ("a-1", True)
    assert kill_target(parse_ast(KILL.replace(" SYNC ", " ASYNC "))) == ("a-1", False)
    assert kill_target(parse_ast(KILL.replace("'a-1'", "'a\\'b'"))) == (None, True)
    for other in (
        KILL.replace("Identifier query_id", "Identifier user"),
        KILL.replace("Function equals", "Function notEquals"),
        "KillQueryQuery Literal_UInt64_1 SYNC (children 1)\n Literal UInt64_1\n",
    ):
        assert refused(kill_target, parse_ast(other)).code == 48


INSERT_T = "InsertQuery   (children 1)\n Identifier t\n"
INSERT_DB_T = "InsertQuery   (children 2)\n Identifier db\n Identifier t\n"
INSERT_FUNCTION = "InsertQuery   (children 1)\n Function numbers (children 1)\n"
CREATE_T = """CreateQuery t (children 2)
 Identifier t
 Columns definition (children 1)
  ExpressionList (children 1)
   ColumnDeclaration x (children 1)
    DataType UInt8
"""
CREATE_T_MERGETREE = CREATE_T.replace("(children 2)", "(children 3)", 1) + (
    " Storage definition (children 2)\n  Function MergeTree\n  Identifier x\n"
)
CREATE_T_MEMORY = CREATE_T.replace("(children 2)", "(children 3)", 1) + (
    " Storage definition (children 1)\n  Function Memory\n"
)
DROP_T = "DropQuery  t (children 1)\n Identifier t\n"


def test_statement_target_is_one_unqualified_table() -> None:
    assert statement_target(parse_ast(INSERT_T)) == "t"
    assert statement_target(parse_ast(INSERT_DB_T)) is None
    assert statement_target(parse_ast(INSERT_FUNCTION)) is None
    assert statement_target(parse_ast(CREATE_T)) == "t"
    assert statement_target(parse_ast(DROP_T)) == "t"
    assert statement_target(parse_ast("SelectWithUnionQuery (children 1)\n")) is None


def test_readonly_2_may_work_with_temporary_tables_only() -> None:
    def check(ast: str, canonical: str, readonly: int = 2, temporary: bool = True) -> None:
        check_statement(ast, user="u", readonly=readonly, canonical=canonical,
                        is_temporary=lambda name: temporary)  # fmt: skip

    check(CREATE_T, "CREATE TEMPORARY TABLE t\n(\n    `x` UInt8\n)")
    check(CREATE_T_MEMORY, "CREATE TEMPORARY TABLE t\n(...)\nENGINE = Memory")
    check(INSERT_T, "INSERT INTO t FORMAT Values")
    check(DROP_T, "DROP TEMPORARY TABLE t")
    refusals = [
        (CREATE_T, "CREATE TABLE t\n(\n    `x` UInt8\n)", 2, True),
        (CREATE_T_MERGETREE, "CREATE TEMPORARY TABLE t (...) ENGINE = MergeTree", 2, True),
        (INSERT_T, "INSERT INTO t FORMAT Values", 2, False),  # t is a real table
        (INSERT_DB_T, "INSERT INTO db.t FORMAT Values", 2, True),
        (DROP_T, "DROP TABLE t", 2, True),
        (CREATE_T, "CREATE TEMPORARY TABLE t\n(\n    `x` UInt8\n)", 1, True),
    ]
    for ast, canonical, readonly, temporary in refusals:
        error = refused(check, ast, canonical, readonly, temporary)
        assert (error.code, error.name) == (164, "READONLY"), canonical


def test_progress_header_is_clickhouse_json_with_numbers_as_strings() -> None:
    value = progress_header({"read_rows": 3, "total_rows_to_read": 10, "elapsed_ns": 5,
                             "total_bytes_to_read": 7})  # fmt: skip
    parsed = json.loads(value)
    assert parsed["read_rows"] == "3" and parsed["total_rows_to_read"] == "10"
    assert parsed["written_rows"] == "0" and "total_bytes_to_read" not in parsed
    assert "\n" not in value and "\r" not in value


def test_turns_go_in_the_order_asked_and_a_waiter_may_give_up() -> None:
    turns = Turns(1)
    assert turns.acquire(give_up=lambda: False)
    order: list[str] = []
    quit_waiting = threading.Event()

    def wait(name: str, give_up: Callable[[], bool] = lambda: False) -> None:
        if turns.acquire(give_up=give_up):
            order.append(name)
            turns.release()
        else:
            order.append(f"{name} gave up")

    threads = []
    for name, give_up in (("a", quit_waiting.is_set), ("b", lambda: False), ("c", lambda: False)):
        threads.append(threading.Thread(target=wait, args=(name, give_up)))
        threads[-1].start()
        time.sleep(0.02)  # a, then b, then c in line
    quit_waiting.set()
    time.sleep(0.2)
    turns.release()
    for thread in threads:
        thread.join(5)
    assert order == ["a gave up", "b", "c"]
