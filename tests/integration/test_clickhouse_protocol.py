"""The ClickHouse front's transport, through the real server and engine: Native at the
client's protocol version, ``compress=1``/``decompress=1`` framing, HTTP Content-Encoding.

Raw HTTP checks the exact bytes; clickhouse-connect (which probes the protocol version and
decodes LZ4 and zstd answers itself) checks that a real client reads them.
"""

from __future__ import annotations

import http.client
import struct
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import clickhouse_connect
import pytest

from sinks.clickhouse.compression import (
    LZ4,
    NONE,
    ZSTD,
    Codec,
    checksum,
    compress_blocks,
    decode_content,
    decompress_blocks,
)
from tests.integration.clickhouse_server import WRITER, EngineProcess, basic, free_port

pytestmark = pytest.mark.integration

MAX_DECOMPRESSED = 1 << 20
HELLO = "SELECT displayName(), version(), revision(), timezone()"  # clickhouse-go's first query


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    home = tmp_path_factory.mktemp("clickhouse-protocol")
    process = EngineProcess(
        home / "data", free_port(), home / "server.log",
        "--max-decompressed-bytes", str(MAX_DECOMPRESSED),
    )  # fmt: skip
    process.start()
    status, _, body = exchange(process, "CREATE TABLE landed (n UInt64, s String) "
                               "ENGINE = MergeTree ORDER BY n")  # fmt: skip
    assert status == 200, body
    yield process
    if process.proc is not None:
        process.stop()


def exchange(
    engine: EngineProcess,
    body: bytes | str,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One POST as the writer: status, headers and the body exactly as it came."""
    conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=30)
    try:
        path = "/?" + urllib.parse.urlencode(params or {})
        all_headers = {"Authorization": basic(WRITER), **(headers or {})}
        conn.request("POST", path, body=body, headers=all_headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def code(headers: dict[str, str]) -> int:
    return int(headers.get("X-ClickHouse-Exception-Code", "0"))


class Blocks:
    """A small reader of ClickHouse's Native layout at a revision >= 54454, for checking."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        assert self.pos + size <= len(self.data), "ran off the end"
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    def string(self) -> bytes:
        return self.take(self.varint())


def test_clickhouse_gos_hello_comes_in_its_protocol_layout(engine: EngineProcess) -> None:
    params = {"default_format": "Native", "client_protocol_version": "54460"}
    status, _, body = exchange(engine, HELLO, params)
    assert status == 200, body
    blocks = Blocks(body)
    assert blocks.take(8) == bytes.fromhex("0100 02ffffffff 00")  # block info
    assert (blocks.varint(), blocks.varint()) == (4, 1)
    values: list[tuple[bytes, bytes]] = []
    for _ in range(4):
        _name, type_name = blocks.string(), blocks.string()
        assert blocks.take(1) == b"\x00"  # has_custom
        if type_name == b"UInt32":
            values.append((type_name, struct.pack("<I", struct.unpack("<I", blocks.take(4))[0])))
        else:
            values.append((type_name, blocks.string()))
    assert blocks.pos == len(body)  # nothing left: the block ends where chdb's did
    assert [t for t, _ in values] == [b"String", b"String", b"UInt32", b"String"]
    assert struct.unpack("<I", values[2][1])[0] > 54400  # revision()
    # Without the parameter: chdb's own layout, as before.
    plain = exchange(engine, HELLO, {"default_format": "Native"})[2]
    assert plain[:2] == b"\x04\x01"


def test_types_it_cannot_lay_out_are_refused_not_garbled(engine: EngineProcess) -> None:
    query = "SELECT 1::Variant(UInt8, String) AS v"
    params = {"default_format": "Native", "client_protocol_version": "54460"}
    status, headers, body = exchange(engine, query, params)
    assert (status, code(headers)) == (501, 48), body
    assert b"Variant" in body
    assert exchange(engine, query, {"default_format": "Native"})[0] == 200


TYPED = """
SELECT number AS n,
       toLowCardinality(toString(number)) AS lc,
       [toNullable(number), NULL] AS arr,
       map('k', toLowCardinality('v')) AS m,
       toDecimal64(number, 2) AS d,
       toDateTime64('2026-01-02 03:04:05.678', 3, 'UTC') AS t,
       (number, 'z') AS tup,
       toFixedString('ab', 2) AS fs,
       CAST('b' AS Enum8('a' = 1, 'b' = 2)) AS e
FROM numbers(3)
"""


@pytest.mark.parametrize("compress", ["lz4", "zstd", False])
def test_clickhouse_connect_reads_typed_results_at_its_protocol_version(
    engine: EngineProcess, compress: str | bool
) -> None:
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=engine.port, username=WRITER[0], password=WRITER[1],
        compress=compress,
    )  # fmt: skip
    try:
        assert client.protocol_version == 54405  # its probe saw the block info
        rows = client.query(TYPED).result_rows
        assert len(rows) == 3
        n, lc, arr, m, d, t, tup, fs, e = rows[2]
        assert (n, lc, arr, m, d) == (2, "2", [2, None], {"k": "v"}, Decimal("2.00"))
        # clickhouse-connect gives UTC columns back naive, in UTC
        assert t.replace(tzinfo=UTC) == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
        assert (tup, fs, e) == ((2, "z"), b"ab", "b")
        client.insert("landed", [(n, f"cc-{n}") for n in range(500)], column_names=["n", "s"])
        assert client.query("SELECT count() FROM landed WHERE s LIKE 'cc-%'").result_rows[0][0] > 0
    finally:
        client.close()


def _blocks(body: bytes) -> list[tuple[int, int, int]]:
    """(method, compressed size, plain size) of each block, checksums checked."""
    found = []
    position = 0
    while position < len(body):
        method, size, plain = struct.unpack_from("<BII", body, position + 16)
        assert (
            checksum(body[position + 16 : position + 16 + size]) == body[position : position + 16]
        )
        found.append((method, size, plain))
        position += 16 + size
    assert position == len(body)
    return found


@pytest.mark.parametrize(
    ("setting", "method"), [(None, LZ4), ("ZSTD", ZSTD), ("lz4", LZ4), ("none", NONE)]
)
def test_compress_answers_in_clickhouses_framing(
    engine: EngineProcess, setting: str | None, method: int
) -> None:
    query = "SELECT number, toString(number) FROM numbers(200000) FORMAT TabSeparated"
    plain = exchange(engine, query)[2]
    params = {"compress": "1"}
    if setting is not None:
        params["network_compression_method"] = setting
    status, _, body = exchange(engine, query, params)
    assert status == 200, body
    blocks = _blocks(body)
    assert {b[0] for b in blocks} == {method}
    assert [b[2] for b in blocks[:-1]] == [1 << 20] * (len(blocks) - 1)  # 1 MiB blocks
    assert decompress_blocks(body, 1 << 30) == plain
    if method != NONE:
        assert len(body) < len(plain) * 0.7


def test_errors_leave_plain_whatever_compression_was_asked(engine: EngineProcess) -> None:
    params = {"compress": "1", "enable_http_compression": "1"}
    status, headers, body = exchange(
        engine, "SELECT * FROM no_such_table", params, {"Accept-Encoding": "zstd"}
    )
    assert (status, code(headers)) == (404, 60)
    assert "Content-Encoding" not in headers and body.startswith(b"Code: 60.")


@pytest.mark.parametrize("encoding", ["zstd", "lz4", "gzip", "deflate"])
def test_http_compression_follows_accept_encoding(engine: EngineProcess, encoding: str) -> None:
    query = "SELECT number FROM numbers(10000) FORMAT TabSeparated"
    plain = exchange(engine, query)[2]
    status, headers, body = exchange(
        engine, query, {"enable_http_compression": "1"}, {"Accept-Encoding": f"{encoding}, br"}
    )
    assert status == 200 and headers["Content-Encoding"] == encoding
    assert decode_content(body, encoding, 1 << 30) == plain
    # enable_http_compression is 1 by default in ClickHouse 26.9, as in the engine; 0 is plain.
    status, headers, body = exchange(engine, query, {}, {"Accept-Encoding": encoding})
    assert headers["Content-Encoding"] == encoding
    off = {"enable_http_compression": "0"}
    status, headers, body = exchange(engine, query, off, {"Accept-Encoding": encoding})
    assert "Content-Encoding" not in headers and body == plain


def test_both_layers_at_once(engine: EngineProcess) -> None:
    query = f"{HELLO} FORMAT Native"
    reference = exchange(engine, query, {"client_protocol_version": "54460"})[2]
    params = {"client_protocol_version": "54460", "compress": "1", "enable_http_compression": "1"}
    status, headers, body = exchange(engine, query, params, {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    framed = decode_content(body, "gzip", 1 << 30)
    assert decompress_blocks(framed, 1 << 30) == reference


@pytest.mark.parametrize("codec", [Codec(LZ4), Codec(ZSTD, 3), Codec(NONE)])
def test_decompress_takes_framed_bodies(engine: EngineProcess, codec: Codec) -> None:
    rows = "".join(f"{n}\tdz-{codec.method}-{n}\n" for n in range(1000)).encode()
    framed = compress_blocks(rows, codec, block_size=4096)
    params = {"query": "INSERT INTO landed FORMAT TabSeparated", "decompress": "1"}
    status, _, body = exchange(engine, framed, params)
    assert status == 200, body
    count = f"SELECT count() FROM landed WHERE s LIKE 'dz-{codec.method}-%'"
    assert exchange(engine, count)[2] == b"1000\n"


def _count(engine: EngineProcess) -> bytes:
    return exchange(engine, "SELECT count() FROM landed")[2]


def test_corrupt_or_lying_bodies_are_refused_and_nothing_lands(engine: EngineProcess) -> None:
    before = _count(engine)
    framed = compress_blocks(b"1\tbad\n" * 100, Codec(LZ4))
    params = {"query": "INSERT INTO landed FORMAT TabSeparated", "decompress": "1"}
    broken = framed[:-1] + bytes([framed[-1] ^ 1])
    status, headers, body = exchange(engine, broken, params)
    assert (status, code(headers)) == (500, 40), body  # CHECKSUM_DOESNT_MATCH
    assert b"CHECKSUM_DOESNT_MATCH" in body
    status, headers, _ = exchange(engine, framed[:-3], params)
    assert (status, code(headers)) == (500, 33)  # cut short
    # A block claiming 1 GiB of plain data: refused from its header, nothing inflated.
    header = struct.pack("<BII", NONE, 9 + 10, 1 << 30)
    bomb = checksum(header + b"x" * 10) + header + b"x" * 10
    status, headers, _ = exchange(engine, bomb, params)
    assert (status, code(headers)) == (413, 290)
    # The checksum check can be waived, as in ClickHouse, and then the rows land.
    waived = {**params, "http_native_compression_disable_checksumming_on_decompress": "1"}
    flipped = bytes([framed[0] ^ 1]) + framed[1:]
    assert exchange(engine, flipped, waived)[0] == 200
    assert int(_count(engine)) == int(before) + 100


def test_bad_transport_parameters_are_clickhouse_errors(engine: EngineProcess) -> None:
    cases: list[tuple[dict[str, Any], int, int]] = [
        ({"compress": "1", "network_compression_method": "nonsense"}, 500, 432),
        ({"enable_http_compression": "1", "http_zlib_compression_level": "13"}, 400, 36),
        ({"client_protocol_version": "many"}, 400, 72),
    ]
    for params, status, error in cases:
        got, headers, body = exchange(engine, "SELECT 1", params)
        assert (got, code(headers)) == (status, error), (params, body)
