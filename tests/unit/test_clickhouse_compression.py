"""ClickHouse's compressed block framing and the HTTP Content-Encodings, hostile inputs too.

The reference blocks are ClickHouse's own: data files (``a.bin``) of MergeTree parts that
chdb 4.4 (ClickHouse 26.9) wrote for ``'croupier'`` six times in a String column with
``CODEC(NONE)``, ``CODEC(LZ4)`` and ``CODEC(ZSTD(1))``. A data file is a run of the same
blocks ``compress=1`` sends, checksums included.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.clickhouse.compression import (
    LZ4,
    NONE,
    ZSTD,
    Codec,
    WireError,
    checksum,
    choose_encoding,
    codec_for,
    compress_blocks,
    decode_content,
    decompress_blocks,
    encode_content,
    http_level,
)

PLAIN = b"croupier" * 6
REFERENCE = {
    NONE: "ac456ed00e553633ff72832bd561457f02390000003000000063726f757069657263726f7570696572"
    "63726f757069657263726f757069657263726f757069657263726f7570696572",
    ZSTD: "579a11dfb3a92b89c45858e0b8a00dd790200000003000000028b52ffd20307500004063726f75706965"
    "72010057162e",
    LZ4: "d2cf16d92f3551b5f45da1cdf57e1f59821b000000300000008f63726f7570696572080010507570696572",
}
LIMIT = 1 << 20


@pytest.mark.parametrize("method", [NONE, LZ4, ZSTD])
def test_clickhouse_blocks_decompress_and_their_checksums_match(method: int) -> None:
    block = bytes.fromhex(REFERENCE[method])
    assert checksum(block[16:]) == block[:16]
    assert decompress_blocks(block, LIMIT) == PLAIN
    assert decompress_blocks(block * 3, LIMIT) == PLAIN * 3


@pytest.mark.parametrize("codec", [Codec(NONE), Codec(LZ4), Codec(LZ4, 9), Codec(ZSTD, 1)])
def test_framing_is_clickhouses_and_round_trips(codec: Codec) -> None:
    data = bytes(range(256)) * 40 + b"tail"  # 10244 bytes: three blocks of 4096 at most
    framed = compress_blocks(data, codec, block_size=4096)
    position, sizes = 0, []
    while position < len(framed):
        method, size, plain_size = struct.unpack_from("<BII", framed, position + 16)
        assert method == codec.method
        block = framed[position + 16 : position + 16 + size]
        assert checksum(block) == framed[position : position + 16]
        sizes.append(plain_size)
        position += 16 + size
    assert sizes == [4096, 4096, 2052]
    assert decompress_blocks(framed, LIMIT) == data
    assert compress_blocks(b"", codec) == b""


def test_the_network_compression_method_setting_chooses_the_codec() -> None:
    assert codec_for(None) == codec_for("lz4") == Codec(LZ4)
    assert codec_for("ZSTD", "5") == Codec(ZSTD, 5)
    assert codec_for("zstd") == Codec(ZSTD, 3)  # network_zstd_compression_level's default
    assert codec_for("none") == Codec(NONE)
    assert codec_for("LZ4HC").method == LZ4
    for name, code in (("T64", 48), ("Delta", 48), ("nonsense", 432)):
        with pytest.raises(WireError) as info:
            codec_for(name)
        assert info.value.code == code
    with pytest.raises(WireError) as info:
        codec_for("zstd", "99")
    assert info.value.code == 36


def _reframe(block: bytes, *, method: int | None = None, size: int | None = None,
             plain: int | None = None, sign: bool = True) -> bytes:  # fmt: skip
    """``block`` with header fields replaced, signed again unless ``sign`` is False."""
    old_method, old_size, old_plain = struct.unpack_from("<BII", block, 16)
    header = struct.pack(
        "<BII",
        old_method if method is None else method,
        old_size if size is None else size,
        old_plain if plain is None else plain,
    )
    body = header + block[25:]
    return (checksum(body) if sign else block[:16]) + body


LZ4_BLOCK = bytes.fromhex(REFERENCE[LZ4])


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (LZ4_BLOCK[:-1], 33),  # cut short
        (LZ4_BLOCK[:20], 33),  # cut inside the header
        (bytes([LZ4_BLOCK[0] ^ 1]) + LZ4_BLOCK[1:], 40),  # checksum wrong
        (LZ4_BLOCK[:30] + bytes([LZ4_BLOCK[30] ^ 0x40]) + LZ4_BLOCK[31:], 40),  # data flipped
        (_reframe(LZ4_BLOCK, size=4), 271),  # size smaller than the header
        (_reframe(LZ4_BLOCK, size=0x40000001), 39),  # size past ClickHouse's maximum
        (_reframe(LZ4_BLOCK, plain=47), 271),  # plain size says less than the block holds
        (_reframe(LZ4_BLOCK, plain=49), 271),  # plain size says more
        (_reframe(LZ4_BLOCK, plain=LIMIT + 1), 290),  # a bomb: refused before decompressing
        (_reframe(LZ4_BLOCK, method=0x90), 271),  # LZ4 bytes called ZSTD
        (_reframe(LZ4_BLOCK, method=0x93), 48),  # T64: a column codec, not a network one
        (_reframe(LZ4_BLOCK, method=0x42), 432),  # no such codec
    ],
)
def test_hostile_frames_are_clickhouse_errors(frame: bytes, code: int) -> None:
    with pytest.raises(WireError) as info:
        decompress_blocks(frame, LIMIT)
    assert info.value.code == code


def test_checksums_are_skipped_only_when_asked() -> None:
    flipped = bytes([LZ4_BLOCK[0] ^ 1]) + LZ4_BLOCK[1:]
    assert decompress_blocks(flipped, LIMIT, verify=False) == PLAIN


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096), st.booleans())
def test_arbitrary_bytes_are_clean_errors(data: bytes, verify: bool) -> None:
    try:
        out = decompress_blocks(data, 1024, verify=verify)
    except WireError as exc:
        assert exc.code in (33, 39, 40, 48, 271, 290, 432)
        return
    assert len(out) <= 1024


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=20000), st.sampled_from([NONE, LZ4, ZSTD]))
def test_any_bytes_round_trip(data: bytes, method: int) -> None:
    framed = compress_blocks(data, Codec(method, 1 if method == ZSTD else 0), block_size=8192)
    assert decompress_blocks(framed, len(data)) == data


# -- HTTP Content-Encoding ------------------------------------------------------------------


def test_the_encoding_is_chosen_in_clickhouses_order() -> None:
    assert choose_encoding("gzip, deflate, zstd") == "zstd"
    assert choose_encoding("gzip, lz4") == "lz4"
    assert choose_encoding("deflate, gzip") == "gzip"
    assert choose_encoding("br, deflate") == "deflate"  # no br here
    assert choose_encoding("zstd;q=0, gzip") == "gzip"
    assert choose_encoding("br") is None
    assert choose_encoding("") is None


def test_http_compression_level_is_held_to_clickhouses_range() -> None:
    assert http_level(None) == 3
    assert http_level("9") == 9
    assert http_level("12") == 12  # libdeflate's levels: gzip and deflate take 9
    assert gzip.decompress(encode_content(b"x" * 100, "gzip", 12)) == b"x" * 100
    for bad, code in (("0", 36), ("13", 36), ("x", 72)):
        with pytest.raises(WireError) as info:
            http_level(bad)
        assert info.value.code == code


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "lz4", "xz", "bz2"])
def test_content_encodings_round_trip_and_bombs_stop(encoding: str) -> None:
    data = b"row\n" * 5000
    packed = encode_content(data, encoding, 3)
    assert packed != data
    assert decode_content(packed, encoding, LIMIT) == data
    bomb = encode_content(b"\0" * (16 << 20), encoding, 1)
    with pytest.raises(WireError) as info:
        decode_content(bomb, encoding, LIMIT)
    assert info.value.code == 290
    with pytest.raises(WireError) as info:
        decode_content(packed[:-4], encoding, LIMIT)
    assert info.value.code == 271


def test_the_standard_decoders_read_what_is_sent() -> None:
    data = b"croupier\n" * 100
    assert gzip.decompress(encode_content(data, "gzip")) == data
    assert zlib.decompress(encode_content(data, "deflate")) == data
    assert lzma.decompress(encode_content(data, "xz")) == data
    assert bz2.decompress(encode_content(data, "bz2")) == data


def test_streams_back_to_back_are_all_read() -> None:
    # gzip members (``cat a.gz b.gz``), as zstd and LZ4 frames already were.
    assert decode_content(gzip.compress(b"a\n") + gzip.compress(b"b\n"), "gzip", LIMIT) == b"a\nb\n"
    with pytest.raises(WireError) as info:
        decode_content(gzip.compress(b"a\n") + b"junk", "gzip", LIMIT)
    assert info.value.code == 271


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048), st.sampled_from(["gzip", "deflate", "zstd", "lz4", "xz", "bz2"]))
def test_garbage_bodies_are_clean_errors(data: bytes, encoding: str) -> None:
    try:
        out = decode_content(data, encoding, 1024)
    except WireError as exc:
        assert exc.code in (271, 290)
        return
    assert len(out) <= 1024


def test_unknown_encodings_are_code_89() -> None:
    with pytest.raises(WireError) as info:
        decode_content(b"x", "br", LIMIT)
    assert info.value.code == 89
