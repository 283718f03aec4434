"""The embedded ClickHouse engine: chdb behind the ClickHouse HTTP interface.

Starts ``python -m sinks.clickhouse.server`` on a free port over a fresh data directory and
talks to it the way every Croupier process does: clickhouse-connect, and plain HTTP.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from sinks.clickhouse.client import connect
from tests.integration.clickhouse_server import DIRECT, WRITER, EngineProcess, basic, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

BETS_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    bet_id    String,
    player_id UInt64,
    stake     Decimal(18, 2),
    placed_at DateTime64(3, 'UTC'),
    promo     Nullable(String)
) ENGINE = MergeTree ORDER BY bet_id
"""
BET_COLUMNS = ["bet_id", "player_id", "stake", "placed_at", "promo"]
UTC = dt.UTC
BETS = [
    ("b-1", 1, Decimal("10.50"), dt.datetime(2026, 3, 1, 12, 0, 0, 123000, UTC), None),
    ("b-2", 2**64 - 1, Decimal("-0.01"), dt.datetime(2026, 3, 1, 12, 0, 1, 0, UTC), "WELCOME"),
    ("b-3", 7, Decimal("9999999999999999.99"), dt.datetime(1999, 12, 31, 0, 0, 0, 0, UTC), "ü €"),
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    home = tmp_path_factory.mktemp("clickhouse")
    process = EngineProcess(home / "data", free_port(), home / "server.log")
    process.start()
    yield process
    if process.proc is not None:
        process.stop()


@pytest.fixture
def client(engine: EngineProcess) -> Iterator[Any]:
    ch = clickhouse_connect.get_client(
        host="127.0.0.1", port=engine.port, username=WRITER[0], password=WRITER[1], tz_mode="aware"
    )
    yield ch
    ch.close()


def http(engine: EngineProcess, path: str, body: bytes | None = None) -> tuple[Any, bytes]:
    """One raw HTTP exchange, as curl would make it."""
    request = urllib.request.Request(
        f"{engine.base}{path}", data=body, headers={"Authorization": basic(WRITER)}
    )
    with DIRECT.open(request, timeout=10) as resp:
        return resp.headers, resp.read()


def test_ping_and_root_answer_ok(engine: EngineProcess) -> None:
    assert http(engine, "/ping")[1] == b"Ok.\n"
    assert http(engine, "/")[1] == b"Ok.\n"


def test_health_and_readiness_answer_without_credentials_and_say_nothing_more(
    engine: EngineProcess,
) -> None:
    """/healthz and /readyz, as every Croupier process has them: no credentials needed,
    and nothing but "Ok." said (no version, no data)."""
    for path in ("/healthz", "/readyz"):
        with DIRECT.open(f"{engine.base}{path}", timeout=10) as resp:
            assert resp.status == 200 and resp.read() == b"Ok.\n"
    with pytest.raises(urllib.error.HTTPError) as refused:
        DIRECT.open(f"{engine.base}/?query=SELECT%201", timeout=10)
    assert refused.value.code in (401, 403, 516)  # a statement still needs a user


def test_rows_round_trip_exactly(client: Any) -> None:
    client.command(BETS_DDL.format(table="bets_round_trip"))
    summary = client.insert("bets_round_trip", BETS, column_names=BET_COLUMNS)

    assert summary.written_rows == 3
    rows = client.query("SELECT * FROM bets_round_trip ORDER BY bet_id").result_rows
    assert [tuple(row) for row in rows] == BETS
    assert client.command("SELECT count() FROM bets_round_trip") == 3


@pytest.mark.parametrize("compress", ["lz4", "zstd", "gzip", False])
def test_compressed_inserts_arrive(engine: EngineProcess, compress: str | bool) -> None:
    ch = clickhouse_connect.get_client(
        host="127.0.0.1",
        port=engine.port,
        username=WRITER[0],
        password=WRITER[1],
        compress=compress,
    )
    try:
        table = f"compressed_{compress or 'none'}"
        ch.command(f"CREATE TABLE {table} (n UInt64, s String) ENGINE = MergeTree ORDER BY n")
        ch.insert(table, [(n, f"row {n}") for n in range(1000)], column_names=["n", "s"])
        assert ch.query(f"SELECT count(), sum(n) FROM {table}").result_rows == [(1000, 499500)]
    finally:
        ch.close()


def test_unknown_table_raises_clickhouse_error(client: Any) -> None:
    with pytest.raises(DatabaseError, match=r"Code: 60\. DB::Exception: .*UNKNOWN_TABLE"):
        client.query("SELECT * FROM no_such_table")

    assert client.command("SELECT 1") == 1  # the server lives on


def test_a_refused_insert_fails_as_on_a_server_never_silently(client: Any) -> None:
    """chdb's streaming insert reports success when the engine refuses the rows; the server
    must answer with the engine's error, for a constraint and a materialized view alike."""
    client.command("CREATE TABLE refused (s String, CONSTRAINT short CHECK length(s) < 5) "
                   "ENGINE = MergeTree ORDER BY s")  # fmt: skip
    client.command("CREATE TABLE refused_mapped (s String) ENGINE = MergeTree ORDER BY s")
    client.command("CREATE MATERIALIZED VIEW refused_mv TO refused_mapped AS SELECT s FROM "
                   "refused WHERE throwIf(s = 'nope', 'mapping refused') = 0")  # fmt: skip
    with pytest.raises(DatabaseError, match=r"Code: 469\..*short"):
        client.insert("refused", [("too long",)], column_names=["s"])
    with pytest.raises(DatabaseError, match=r"Code: 395\..*mapping refused"):
        client.raw_insert("refused", ["s"], b"nope\n", fmt="TabSeparated")
    client.raw_insert("refused", ["s"], b"ok\n", fmt="TabSeparated")
    assert client.command("SELECT count() FROM refused_mapped") == 1
    assert client.query("SELECT s FROM refused ORDER BY s").result_rows == [("nope",), ("ok",)]


def test_settings_apply_to_their_request_only(client: Any) -> None:
    query = "SELECT getSetting('max_result_rows')"
    assert client.query(query, settings={"max_result_rows": 1000}).result_rows == [(1000,)]
    assert client.query(query).result_rows == [(0,)]


def test_bind_parameters_in_url_and_in_form(client: Any) -> None:
    query = "SELECT {n:UInt8} + 1, length({s:String})"
    assert client.query(query, parameters={"n": 1, "s": "short"}).result_rows == [(2, 5)]
    # Past 4 KiB of parameters clickhouse-connect posts them as multipart/form-data.
    assert client.query(query, parameters={"n": 1, "s": "x" * 10_000}).result_rows == [(2, 10_000)]


def test_concurrent_clients_inserts_add_up(engine: EngineProcess, client: Any) -> None:
    client.command(
        "CREATE TABLE ledger_lines (writer UInt8, n UInt32) ENGINE = MergeTree ORDER BY n"
    )
    failures: list[BaseException] = []

    def write(writer: int) -> None:
        ch = clickhouse_connect.get_client(
            host="127.0.0.1", port=engine.port, username=WRITER[0], password=WRITER[1]
        )
        try:
            for batch in range(20):
                rows = [(writer, batch * 50 + i) for i in range(50)]
                ch.insert("ledger_lines", rows, column_names=["writer", "n"])
        except BaseException as exc:
            failures.append(exc)
        finally:
            ch.close()

    threads = [threading.Thread(target=write, args=(writer,)) for writer in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    counts = client.query(
        "SELECT writer, count() FROM ledger_lines GROUP BY writer ORDER BY writer"
    )
    assert counts.result_rows == [(1, 1000), (2, 1000)]


def test_raw_http_post_answers_as_clickhouse_does(engine: EngineProcess) -> None:
    headers, body = http(engine, "/", b"SELECT 1 FORMAT JSON")

    assert json.loads(body)["data"] == [{"1": 1}]
    assert headers["X-ClickHouse-Format"] == "JSON"
    assert headers["X-ClickHouse-Query-Id"]
    assert json.loads(headers["X-ClickHouse-Summary"])["result_rows"] == "1"


def test_raw_http_insert_with_query_in_url_and_data_in_body(engine: EngineProcess) -> None:
    http(
        engine, "/", b"CREATE TABLE events (id UInt32, kind String) ENGINE = MergeTree ORDER BY id"
    )
    rows = b'{"id": 1, "kind": "deposit"}\n{"id": 2, "kind": "bet"}\n'
    request = urllib.request.Request(
        f"{engine.base}/?query=INSERT%20INTO%20events%20FORMAT%20JSONEachRow",
        data=gzip.compress(rows),
        headers={"Content-Encoding": "gzip", "Authorization": basic(WRITER)},
    )
    with DIRECT.open(request, timeout=10) as resp:
        assert json.loads(resp.headers["X-ClickHouse-Summary"])["written_rows"] == "2"

    assert (
        http(engine, "/?query=SELECT%20kind%20FROM%20events%20ORDER%20BY%20id")[1]
        == b"deposit\nbet\n"
    )


def test_raw_http_error_carries_the_code(engine: EngineProcess) -> None:
    with pytest.raises(urllib.error.HTTPError) as raised:
        http(engine, "/", b"SELECT * FROM no_such_table")

    assert raised.value.headers["X-ClickHouse-Exception-Code"] == "60"
    assert b"(UNKNOWN_TABLE)" in raised.value.read()


def test_data_survives_a_restart(engine: EngineProcess) -> None:
    before = connect(engine.url)
    try:
        before.command(BETS_DDL.format(table="bets_durable"))
        before.insert("bets_durable", BETS, BET_COLUMNS)
    finally:
        before.close()

    assert engine.stop() == 0
    engine.start()

    after = connect(engine.url)
    try:
        assert after.query("SELECT * FROM bets_durable ORDER BY bet_id") == BETS
    finally:
        after.close()


def test_chdb_adapter_gives_the_same_result(engine: EngineProcess, tmp_path: Path) -> None:
    query = "SELECT * FROM bets_same ORDER BY bet_id"
    results = []
    for url in (engine.url, f"chdb://{tmp_path / 'chdb'}"):
        ch = connect(url)
        try:
            assert ch.ping()
            ch.command(BETS_DDL.format(table="bets_same"))
            ch.insert("bets_same", BETS, BET_COLUMNS)
            results.append(ch.query(query))
        finally:
            ch.close()

    assert results[0] == results[1] == BETS


def test_insert_values_larger_than_max_query_size(client: Any, engine: EngineProcess) -> None:
    # ClickHouse parses only the head of an INSERT and streams VALUES as data, past
    # max_query_size (256 KiB); the front's one-statement check must not change that.
    client.command("CREATE TABLE IF NOT EXISTS many (a UInt64, s String) ENGINE = Memory")
    rows = b",".join(b"(%d, 'twenty characters...')" % i for i in range(50_000))
    assert len(rows) > 1 << 20
    http(engine, "/", b"INSERT INTO many VALUES " + rows)
    assert client.command("SELECT count() FROM many") == 50_000
