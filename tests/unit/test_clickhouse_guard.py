"""The ClickHouse front's rules without the engine: AST verdicts, settings, logins, bodies.

The ``EXPLAIN AST`` texts below are what chdb 4.4 answers for the statement in the comment;
tests/integration/test_clickhouse_security.py runs the same rules through the engine.
"""

from __future__ import annotations

import base64
import gzip
import importlib
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sinks.clickhouse.guard import (
    Limits,
    Refused,
    User,
    check_statement,
    effective_settings,
    load_users,
    parse_ast,
    strictest,
    users_document,
)
from sinks.clickhouse.server import ClickHouseError, credentials, decode_body

# SELECT * FROM file('/etc/passwd') AS f, (SELECT file('/x') AS y) INTO OUTFILE '/tmp/x'
# FORMAT CSV SETTINGS max_threads=1
FILE_AND_OUTFILE = """SelectWithUnionQuery (children 4)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Asterisk
   TablesInSelectQuery (children 2)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      Function file (alias f) (children 1)
       ExpressionList (children 1)
        Literal '/etc/passwd'
 Literal '/tmp/x'
 Set
 Identifier CSV
"""
# SELECT * FROM numbers(2) AS n
NUMBERS = """SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Asterisk
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      Function numbers (alias n) (children 1)
       ExpressionList (children 1)
        Literal UInt64_2
"""
# SELECT 1 AS `a (children 3`, then the same with a table function named in an alias trap
ALIAS_TRAP = """SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Literal UInt64_1 (alias a (children 3)
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      Function hdfsCluster (alias numbers (children 1)) (children 1)
"""
# CREATE TABLE x (a Date) ENGINE = ReplacingMergeTree(a) PARTITION BY toYYYYMM(a) ORDER BY a
MERGETREE = """CreateQuery x (children 3)
 Identifier x
 Columns definition (children 1)
  ExpressionList (children 1)
   ColumnDeclaration a (children 1)
    DataType Date
 Storage definition (children 3)
  Function ReplacingMergeTree (children 1)
   ExpressionList (children 1)
    Identifier a
  Function toYYYYMM (children 1)
   ExpressionList (children 1)
    Identifier a
  Identifier a
"""
FILE_ENGINE = MERGETREE.replace("ReplacingMergeTree", "File")
# INSERT INTO t FROM INFILE '/etc/passwd' FORMAT CSV
INFILE = """InsertQuery   (children 2)
 Literal '/etc/passwd'
 Identifier t
"""
# INSERT INTO FUNCTION url('http://x', CSV) SELECT 1
INSERT_URL = """InsertQuery   (children 2)
 Function url (children 1)
  ExpressionList (children 2)
   Literal 'http://x'
   Identifier CSV
 SelectWithUnionQuery (children 1)
  ExpressionList (children 1)
   SelectQuery (children 1)
    ExpressionList (children 1)
     Literal UInt64_1
"""
PLAIN_INSERT = """InsertQuery  t (children 1)
 Identifier t
"""
INSERT_WITH_SETTINGS = PLAIN_INSERT.replace("(children 1)", "(children 2)") + " Set\n"


def refused(ast: str, readonly: int = 0) -> Refused:
    with pytest.raises(Refused) as info:
        check_statement(ast, user="u", readonly=readonly)
    return info.value


def test_parse_ast_reads_depth_kind_and_name() -> None:
    nodes = parse_ast(NUMBERS)
    assert nodes[0].kind == "SelectWithUnionQuery" and nodes[0].depth == 0
    function = next(n for n in nodes if n.kind == "Function")
    assert (function.name, function.depth) == ("numbers", 6)


def test_a_table_function_that_reads_files_is_refused_even_for_the_writer() -> None:
    assert refused(FILE_AND_OUTFILE.replace(" Literal '/tmp/x'\n", "")).code == 497
    assert refused(FILE_AND_OUTFILE).code in (497, 564)


def test_into_outfile_is_refused_with_clickhouse_code() -> None:
    ast = FILE_AND_OUTFILE.replace("Function file", "Function numbers")
    error = refused(ast)
    assert (error.code, error.name) == (564, "INTO_OUTFILE_NOT_ALLOWED")


def test_safe_table_functions_pass_and_an_alias_cannot_pose_as_one() -> None:
    check_statement(NUMBERS, user="u", readonly=1)
    assert refused(ALIAS_TRAP).code == 497


def test_storage_engine_is_its_first_function() -> None:
    check_statement(MERGETREE, user="u", readonly=0)  # toYYYYMM is no engine
    assert refused(FILE_ENGINE).code == 497


def test_readonly_refuses_writes_and_query_settings() -> None:
    error = refused(MERGETREE, readonly=1)
    assert (error.code, error.name) == (164, "READONLY")
    assert refused(MERGETREE, readonly=2).code == 164
    assert refused(FILE_AND_OUTFILE.replace("Function file", "Function numbers"), 2).code in (
        164,
        564,
    )


def test_infile_and_insert_into_function_are_refused() -> None:
    assert refused(INFILE).code == 7
    assert refused(INSERT_URL).code == 497
    check_statement(PLAIN_INSERT, user="u", readonly=0)
    assert refused(INSERT_WITH_SETTINGS).code == 164


@pytest.mark.parametrize("root", ["SYSTEM query", "AttachQuery x", "BackupQuery", "Set"])
def test_system_attach_backup_and_set_are_refused(root: str) -> None:
    assert refused(root + "\n").code == 497


@pytest.mark.parametrize(
    "name", ["file", "FILE", "`file`", "url", "postgresql", "remoteSecure", "s3Cluster"]
)
def test_denied_functions_anywhere(name: str) -> None:
    ast = f"SelectWithUnionQuery\n ExpressionList\n  SelectQuery\n   Function {name} (children 1)\n"
    assert refused(ast).code == 497


# -- settings ------------------------------------------------------------------------------

DEFAULTS = {"max_threads": "0", "max_execution_time": "0", "output_format_json_quote_decimals": "0"}
LIMITS = Limits(readonly_max_execution_time=30)


def settings_for(requested: dict[str, str], readonly: int) -> dict[str, str]:
    return effective_settings(
        requested, user="u", readonly=readonly, limits=LIMITS, defaults=DEFAULTS
    )


def test_readonly_1_refuses_a_changed_setting_and_takes_an_unchanged_one() -> None:
    with pytest.raises(Refused) as info:
        settings_for({"max_threads": "1"}, 1)
    assert info.value.code == 164
    assert settings_for({"max_threads": "0"}, 1)["max_execution_time"] == "30"


def test_readonly_2_takes_settings_within_the_caps() -> None:
    got = settings_for({"output_format_json_quote_decimals": "1", "max_execution_time": "5"}, 2)
    assert got["max_execution_time"] == "5"
    assert got["output_format_json_quote_decimals"] == "1"
    for value in ("31", "0", "inf", "3600"):  # a tool's own timeout runs at the cap
        assert settings_for({"max_execution_time": value}, 2)["max_execution_time"] == "30"
    for value in ("-1", "x", "nan"):
        with pytest.raises(Refused) as info:
            settings_for({"max_execution_time": value}, 2)
        assert info.value.code == 452


def test_writer_gets_defaults_it_may_override_and_forced_settings_it_may_not() -> None:
    got = settings_for({}, 0)
    assert got["max_execution_time"] == str(LIMITS.writer_max_execution_time)
    assert got["input_format_values_interpret_expressions"] == "0"
    assert settings_for({"max_execution_time": "0"}, 0)["max_execution_time"] == "0"
    for name, value in [("dialect", "prql"), ("default_table_engine", "File"),
                        ("input_format_values_interpret_expressions", "1")]:  # fmt: skip
        with pytest.raises(Refused):
            settings_for({name: value}, 0)
    assert settings_for({"dialect": "ClickHouse"}, 0)["dialect"] == "clickhouse"


def test_strictest_readonly_level() -> None:
    assert strictest(0, 2, 0) == 2
    assert strictest(2, 1) == 1
    assert strictest(0) == 0


# -- users and logins ----------------------------------------------------------------------


def test_users_file_keeps_hashes_and_checks_passwords(tmp_path: Any) -> None:
    path = tmp_path / "users.json"
    path.write_text(users_document({"w": ("secret", 0), "a": ("other", 2)}))
    assert "secret" not in path.read_text()
    users = load_users(path)
    assert users["w"].password_ok("secret")
    assert not users["w"].password_ok("Secret")
    assert users["a"].readonly == 2


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_credentials_three_ways_and_never_two() -> None:
    assert credentials(basic("a", "p:q"), {}) == ("a", "p:q")
    assert credentials({"X-ClickHouse-User": "a", "X-ClickHouse-Key": "k"}, {}) == ("a", "k")
    assert credentials({}, {"user": "a", "password": "k"}) == ("a", "k")
    assert credentials({}, {}) == ("default", "")
    both = credentials(basic("a", "p"), {"user": "a", "password": "p"})
    assert isinstance(both, ClickHouseError) and both.code == 516
    assert isinstance(credentials({"Authorization": "Basic !!!"}, {}), ClickHouseError)
    assert isinstance(credentials({"Authorization": "Negotiate x"}, {}), ClickHouseError)


@given(
    st.dictionaries(
        st.sampled_from(["Authorization", "X-ClickHouse-User", "X-ClickHouse-Key", "Other"]),
        st.text(),
    ),
    st.dictionaries(st.sampled_from(["user", "password", "query"]), st.text()),
)
def test_credentials_never_crash(headers: dict[str, str], params: dict[str, str]) -> None:
    found = credentials(headers, params)
    assert isinstance(found, ClickHouseError | tuple)


def test_a_user_with_a_wrong_password_is_refused() -> None:
    from sinks.clickhouse.server import authenticate

    users = {"w": User("w", __import__("hashlib").sha256(b"pw").hexdigest())}
    assert authenticate(users, "w", "pw").name == "w"
    for name, password in [("w", "bad"), ("nobody", "pw"), ("default", "")]:
        with pytest.raises(ClickHouseError) as info:
            authenticate(users, name, password)
        assert info.value.code == 516 and info.value.http_status == 403
    with pytest.raises(ClickHouseError) as info:
        authenticate(users, "default", "", anonymous=True)
    assert info.value.code == 516 and info.value.http_status == 401


# -- bodies --------------------------------------------------------------------------------

LIMIT = 1 << 20


def _lz4(data: bytes) -> bytes:
    frame: Any = importlib.import_module("lz4.frame")
    return bytes(frame.compress(data))


def _zstd(data: bytes) -> bytes:
    from backports import zstd

    return zstd.compress(data)


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("zstd", _zstd), ("lz4", _lz4)],
)
def test_bombs_stop_at_the_limit_and_honest_bodies_pass(encoding: str, pack: Any) -> None:
    bomb = pack(b"\0" * (64 << 20))
    with pytest.raises(ClickHouseError) as info:
        decode_body(bomb, encoding, LIMIT)
    assert (info.value.code, info.value.http_status) == (290, 413)
    honest = b"row\n" * 1000
    assert decode_body(pack(honest), encoding, LIMIT) == honest
    exact = b"x" * LIMIT
    assert decode_body(pack(exact), encoding, LIMIT) == exact
    with pytest.raises(ClickHouseError):
        decode_body(pack(honest)[:-6], encoding, LIMIT)  # truncated


@given(st.binary(max_size=4096), st.sampled_from(["gzip", "deflate", "zstd", "lz4"]))
def test_garbage_bodies_fail_as_clickhouse_errors(data: bytes, encoding: str) -> None:
    try:
        out = decode_body(data, encoding, 1024)
    except ClickHouseError:
        return
    assert len(out) <= 1024
