"""Native output re-framed for a client's protocol version, from bytes chdb wrote (version 0).

The version-0 inputs are chdb 4.4's own output for the queries named beside them; the
expected layouts are ClickHouse's NativeWriter's (block info, then per column name, type,
``has_custom`` byte from 54454, data).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.clickhouse.compression import WireError
from sinks.clickhouse.native import Type, parse_revision, parse_type, reframe

CLICKHOUSE_GO = 54460  # what clickhouse-go v2 sends as client_protocol_version
CLICKHOUSE_CONNECT = 54405  # what clickhouse-connect's probe sends
INFO = bytes.fromhex("0100 02ffffffff 00")  # is_overflows 0, bucket_num -1, end
INFO_54480 = bytes.fromhex("0100 02ffffffff 0300 00")  # and no out_of_order_buckets

# SELECT 1 AS a, 'x' AS b
SIMPLE = bytes.fromhex("02010161 0555496e7438 010162 06537472696e67 0178")


def _column(name: bytes, type_name: bytes, data: bytes, custom: bool) -> bytes:
    head = bytes([len(name)]) + name + bytes([len(type_name)]) + type_name
    return head + (b"\x00" if custom else b"") + data


# SELECT [toLowCardinality('q'), toLowCardinality('r')] AS l, toNullable(7) AS n,
#        map('k', 2) AS m FROM numbers(2)
WIDE_COLUMNS = [
    (
        b"l",
        b"Array(LowCardinality(String))",
        bytes.fromhex(
            "0100000000000000"  # LowCardinality's key version (the state prefix)
            "0200000000000000 0400000000000000"  # array offsets 2, 4
            "0006000000000000"  # index flags: additional keys, UInt8 indexes
            "0300000000000000 00 0171 0172"  # three keys: '', 'q', 'r'
            "0400000000000000 01020102"  # four indexes
        ),
    ),
    (b"n", b"Nullable(UInt8)", bytes.fromhex("0000 0707")),
    (
        b"m",
        b"Map(String, UInt8)",
        bytes.fromhex("0100000000000000 0200000000000000 016b 016b 0202"),
    ),
]
WIDE = b"\x03\x02" + b"".join(_column(n, t, d, False) for n, t, d in WIDE_COLUMNS)


def test_version_zero_is_left_as_chdb_wrote_it() -> None:
    assert reframe(SIMPLE, 0) == SIMPLE
    assert reframe(b"", CLICKHOUSE_GO) == b""


def test_clickhouse_go_gets_block_info_and_a_serialization_byte_per_column() -> None:
    expected = (
        INFO
        + b"\x02\x01"
        + _column(b"a", b"UInt8", b"\x01", True)
        + _column(b"b", b"String", b"\x01x", True)
    )
    assert reframe(SIMPLE, CLICKHOUSE_GO) == expected


def test_clickhouse_connect_probe_reads_its_check_column() -> None:
    # clickhouse-connect checks bytes 8..16 of "SELECT 1 AS check" at 54405.
    probe = b"\x01\x01" + _column(b"check", b"UInt8", b"\x01", False)
    out = reframe(probe, CLICKHOUSE_CONNECT)
    assert out[8:16] == b"\x01\x01\x05check"
    assert out == INFO + probe  # no serialization byte below 54454


def test_newer_versions_carry_the_third_block_info_field() -> None:
    assert reframe(SIMPLE, 54480).startswith(INFO_54480 + b"\x02\x01")
    assert reframe(SIMPLE, 54479).startswith(INFO + b"\x02\x01")


def test_nested_low_cardinality_nullable_and_map_are_walked_to_their_end() -> None:
    expected = INFO + b"\x03\x02" + b"".join(_column(n, t, d, True) for n, t, d in WIDE_COLUMNS)
    assert reframe(WIDE, CLICKHOUSE_GO) == expected
    # Blocks back to back: each gets its own block info.
    assert reframe(WIDE + SIMPLE, CLICKHOUSE_GO) == expected + reframe(SIMPLE, CLICKHOUSE_GO)


def test_zero_rows_means_no_data_bytes_not_even_a_prefix() -> None:
    empty = b"\x01\x00" + _column(b"l", b"LowCardinality(String)", b"", False)
    expected = _column(b"l", b"LowCardinality(String)", b"", True)
    assert reframe(empty, CLICKHOUSE_GO) == INFO + b"\x01\x00" + expected


def test_old_clients_get_datetime_without_its_zone() -> None:
    block = b"\x01\x01" + _column(b"t", b"DateTime('Asia/Tokyo')", b"\x00\xb9\x55\x69", False)
    assert b"DateTime('Asia/Tokyo')" in reframe(block, 54337)
    old = reframe(block, 54336)
    assert old == INFO + b"\x01\x01" + _column(b"t", b"DateTime", b"\x00\xb9\x55\x69", False)


def test_types_it_cannot_walk_are_refused_with_code_48() -> None:
    # SELECT 1::Variant(UInt8, String) AS v
    variant = b"\x01\x01" + _column(b"v", b"Variant(String, UInt8)", bytes(8) + b"\x01\x01", False)
    with pytest.raises(WireError) as info:
        reframe(variant, CLICKHOUSE_GO)
    assert (info.value.code, info.value.name) == (48, "NOT_IMPLEMENTED")
    empty_tuple = b"\x01\x01" + _column(b"t", b"Tuple()", b"\x00", False)
    with pytest.raises(WireError) as info:
        reframe(empty_tuple, CLICKHOUSE_GO)
    assert info.value.code == 48
    low_card = b"\x01\x00" + _column(b"l", b"LowCardinality(String)", b"", False)
    with pytest.raises(WireError) as info:
        reframe(low_card, 54404)  # ClickHouse would strip LowCardinality: not done here
    assert info.value.code == 48


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Tuple(a UInt8, `b c` Nullable(String))",
         Type("Tuple", (Type("UInt8"), Type("Nullable", (Type("String"),), ("String",))))),
        ("Point", Type("Tuple", (Type("Float64"), Type("Float64")))),
        ("SimpleAggregateFunction(sum, UInt64)", Type("UInt64")),
        ("Enum8('a,b' = 1, 'c)' = 2)", Type("Enum8", (), ("'a,b' = 1", "'c)' = 2"))),
        ("Nested(x UInt8)", Type("Array", (Type("Tuple", (Type("UInt8"),)),))),
    ],
)  # fmt: skip
def test_type_names_parse_as_clickhouse_writes_them(name: str, expected: Type) -> None:
    assert parse_type(name) == expected


def test_decimal_and_fixed_string_widths_come_from_their_arguments() -> None:
    block = (
        b"\x02\x02"
        + _column(b"d", b"Decimal(20, 2)", bytes(32), False)
        + _column(b"f", b"FixedString(3)", b"abcdef", False)
    )
    out = reframe(block, CLICKHOUSE_GO)
    assert out.endswith(b"FixedString(3)\x00abcdef")


def test_every_truncation_is_a_clean_clickhouse_error() -> None:
    for cut in range(1, len(WIDE)):
        with pytest.raises(WireError) as info:
            reframe(WIDE[:cut], CLICKHOUSE_GO)
        assert info.value.code in (33, 117, 48)


def test_a_type_nested_past_reason_is_refused_not_a_recursion_error() -> None:
    deep = b"Array(" * 5000 + b"UInt8" + b")" * 5000
    size = len(deep)  # 60005: a three-byte varint
    varint = bytes([0x80 | (size & 0x7F), 0x80 | ((size >> 7) & 0x7F), size >> 14])
    block = b"\x01\x01\x01a" + varint + deep
    with pytest.raises(WireError) as info:
        reframe(block, CLICKHOUSE_GO)
    assert info.value.code == 117


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash_or_hang(data: bytes) -> None:
    try:
        out = reframe(data, CLICKHOUSE_GO)
    except WireError as exc:
        assert exc.code in (33, 48, 117)
        return
    assert out.startswith(INFO) or out == data == b""


def test_protocol_version_parameter() -> None:
    assert parse_revision(None) == parse_revision("") == 0
    assert parse_revision("54460") == CLICKHOUSE_GO
    for bad in ("-1", "54460x", "1" * 25):
        with pytest.raises(WireError) as info:
            parse_revision(bad)
        assert info.value.code == 72
