"""Compression as ClickHouse's HTTP interface does it: its block framing and Content-Encoding.

``compress=1`` (responses) and ``decompress=1`` (request bodies) use ClickHouse's own
framing, the one its native protocol and its data files use. Each block is::

    checksum    16 bytes   CityHash128 (v1.0.2) of the 9-byte header and the data
    method       1 byte    0x02 NONE, 0x82 LZ4 (and LZ4HC), 0x90 ZSTD
    size         4 bytes   UInt32 LE: header (9) + compressed data
    plain size   4 bytes   UInt32 LE: the data once decompressed
    data

A response is cut into blocks of at most 1 MiB of plain data (ClickHouse's buffer size),
compressed with the ``network_compression_method`` setting, at
``network_zstd_compression_level`` for ZSTD. Unlike ClickHouse 26.x, whose default became
ZSTD, the default here is LZ4, the older default: the JDBC driver (0.11) reads only LZ4
frames and fails on a ZSTD one ("Invalid LZ4 magic byte: '-112'") unless told otherwise.
A request body's blocks are checked (a wrong checksum is code 40, unless
``http_native_compression_disable_checksumming_on_decompress``) and their declared sizes
are held to the body limit before anything is decompressed.

HTTP ``Content-Encoding``: the method is chosen from ``Accept-Encoding`` in ClickHouse's
order of preference, among those this module speaks (zstd, lz4, gzip, deflate, xz, bz2;
no br nor snappy), at ``http_zlib_compression_level``.

Every failure is a :class:`WireError` carrying ClickHouse's code and name, never a crash.
"""

from __future__ import annotations

import bz2
import importlib
import lzma
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd  # a clickhouse-connect dependency before Python 3.14

# lz4 and clickhouse-cityhash ship no type information.
_CityHash128: Any = importlib.import_module("clickhouse_cityhash.cityhash").CityHash128
_lz4_block: Any = importlib.import_module("lz4.block")
_lz4_frame: Any = importlib.import_module("lz4.frame")

NONE = 0x02
LZ4 = 0x82
ZSTD = 0x90
CHECKSUM_SIZE = 16
HEADER_SIZE = 9
BLOCK_SIZE = 1 << 20  # DBMS_DEFAULT_BUFFER_SIZE: what one compressed block holds at most
MAX_COMPRESSED_SIZE = 0x40000000  # DBMS_MAX_COMPRESSED_SIZE: larger is corrupt data
_MASK64 = (1 << 64) - 1
_HEADER = struct.Struct("<BII")

# ClickHouse's codec family bytes that exist but are not network codecs spoken here.
_OTHER_CODECS = {
    0x91: "Multiple", 0x92: "Delta", 0x93: "T64", 0x94: "DoubleDelta", 0x95: "Gorilla",
    0x96: "AES_128_GCM_SIV", 0x97: "AES_256_GCM_SIV", 0x98: "FPC", 0x99: "DeflateQpl",
    0x9A: "GCD", 0x9B: "ZSTD_QPL",
}  # fmt: skip


class WireError(Exception):
    """A framing or codec failure: ClickHouse's code and name, and the words after them."""

    def __init__(self, code: int, name: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.name = name
        self.detail = detail


def checksum(block: bytes | memoryview) -> bytes:
    """The 16 checksum bytes ClickHouse writes before a compressed block.

    ClickHouse writes CityHash128's ``low64`` then ``high64``, each little-endian; the
    library gives them back as one integer with ``low64`` in the upper half.
    """
    value: int = _CityHash128(bytes(block))
    return (value >> 64).to_bytes(8, "little") + (value & _MASK64).to_bytes(8, "little")


@dataclass(frozen=True)
class Codec:
    """How response blocks are compressed: a method byte and, for ZSTD and LZ4HC, a level."""

    method: int = LZ4
    level: int = 0  # 0: the library's default (LZ4), else LZ4HC level or ZSTD level

    def compress(self, data: bytes | memoryview) -> bytes:
        """``data`` in the method's own block format (no framing)."""
        if self.method == NONE:
            return bytes(data)
        if self.method == ZSTD:
            return bytes(zstd.compress(bytes(data), level=self.level))
        if self.level:
            return bytes(
                _lz4_block.compress(
                    data, mode="high_compression", compression=self.level, store_size=False
                )
            )
        return bytes(_lz4_block.compress(data, store_size=False))


def codec_for(method: str | None, zstd_level: str | None = None) -> Codec:
    """The codec of the ``network_compression_method`` setting (LZ4 when not given)."""
    name = (method or "lz4").strip().upper()
    level = _level(zstd_level, "network_zstd_compression_level", 3, 1, 22)
    if name == "LZ4":
        return Codec(LZ4)
    if name == "LZ4HC":
        return Codec(LZ4, 9)  # ClickHouse's default LZ4HC level
    if name == "ZSTD":
        return Codec(ZSTD, level)
    if name == "NONE":
        return Codec(NONE)
    if name.title() in {v.title() for v in _OTHER_CODECS.values()}:
        detail = f"Codec {name} is not supported for network compression by the embedded server"
        raise WireError(48, "NOT_IMPLEMENTED", detail)
    raise WireError(432, "UNKNOWN_CODEC", f"Unknown codec family: {method}")


def _level(value: str | None, setting: str, default: int, low: int, high: int) -> int:
    if value is None or value.strip() == "":
        return default
    try:
        level = int(value)
    except ValueError as exc:
        detail = f"Cannot parse {setting}={value!r} as a number"
        raise WireError(72, "CANNOT_PARSE_NUMBER", detail) from exc
    if not low <= level <= high:
        detail = f"Invalid {setting} {level}: it must be between {low} and {high}"
        raise WireError(36, "BAD_ARGUMENTS", detail)
    return level


def compress_blocks(data: bytes | memoryview, codec: Codec, block_size: int = BLOCK_SIZE) -> bytes:
    """``data`` in ClickHouse's compressed framing, one block per ``block_size`` bytes."""
    view = memoryview(data)
    out = bytearray()
    for start in range(0, len(view), block_size):
        plain = view[start : start + block_size]
        packed = codec.compress(plain)
        header = _HEADER.pack(codec.method, HEADER_SIZE + len(packed), len(plain))
        block = header + packed
        out += checksum(block)
        out += block
    return bytes(out)


def decompress_blocks(data: bytes | memoryview, limit: int, *, verify: bool = True) -> bytes:
    """The plain bytes of a body in ClickHouse's compressed framing, at most ``limit`` of them.

    The sizes every block declares are held to ``limit`` before it is decompressed, so a
    bomb is refused at its first block, and each block must come out exactly that size.
    """
    view = memoryview(data)
    out = bytearray()
    position = 0
    while position < len(view):
        head = view[position : position + CHECKSUM_SIZE + HEADER_SIZE]
        if len(head) < CHECKSUM_SIZE + HEADER_SIZE:
            raise _short(len(view) - position, CHECKSUM_SIZE + HEADER_SIZE)
        method, size, plain_size = _HEADER.unpack_from(head, CHECKSUM_SIZE)
        if size < HEADER_SIZE:
            detail = (
                f"Can't decompress data: the compressed data size ({size}, this should "
                f"include header size) is less than the header size ({HEADER_SIZE})"
            )
            raise WireError(271, "CANNOT_DECOMPRESS", detail)
        if size > MAX_COMPRESSED_SIZE:
            detail = f"Too large size_compressed_without_checksum: {size}. Corrupted data?"
            raise WireError(39, "TOO_LARGE_SIZE_COMPRESSED", detail)
        if len(out) + plain_size > limit:
            detail = f"The compressed request body decompresses to more than {limit} bytes"
            raise WireError(290, "LIMIT_EXCEEDED", detail)
        end = position + CHECKSUM_SIZE + size
        if end > len(view):
            raise _short(len(view) - position - CHECKSUM_SIZE, size)
        block = view[position + CHECKSUM_SIZE : end]
        if verify:
            expected = bytes(head[:CHECKSUM_SIZE])
            actual = checksum(block)
            if actual != expected:
                detail = (f"Checksum doesn't match: corrupted data. Reference: {expected.hex()}. "
                          f"Actual: {actual.hex()}. Size of compressed block: {size}")  # fmt: skip
                raise WireError(40, "CHECKSUM_DOESNT_MATCH", detail)
        out += _decompress_block(method, block[HEADER_SIZE:], plain_size)
        position = end
    return bytes(out)


def _short(got: int, wanted: int) -> WireError:
    detail = f"Cannot read all data. Bytes read: {got}. Bytes expected: {wanted}"
    return WireError(33, "CANNOT_READ_ALL_DATA", detail)


def _decompress_block(method: int, packed: memoryview, plain_size: int) -> bytes:
    try:
        if method == NONE:
            plain = bytes(packed)
        elif method == LZ4:
            plain = bytes(_lz4_block.decompress(packed, uncompressed_size=plain_size))
        elif method == ZSTD:
            decompressor = zstd.ZstdDecompressor()
            plain = decompressor.decompress(bytes(packed), max_length=plain_size + 1)
            if not decompressor.eof or decompressor.unused_data:
                plain = b""  # a cut frame, or bytes after it: not what the header says
        elif method in _OTHER_CODECS:
            detail = (f"Codec {_OTHER_CODECS[method]} (0x{method:02x}) is not supported for "
                      "network compression by the embedded server")  # fmt: skip
            raise WireError(48, "NOT_IMPLEMENTED", detail)
        else:
            raise WireError(432, "UNKNOWN_CODEC", f"Unknown codec family code: {method}")
    except WireError:
        raise
    except Exception as exc:  # each codec library raises its own error types
        detail = f"Cannot decompress block (method 0x{method:02x}): {exc}"
        raise WireError(271, "CANNOT_DECOMPRESS", detail) from exc
    if len(plain) != plain_size:
        detail = (f"Cannot decompress block (method 0x{method:02x}): it holds {len(plain)} "
                  f"bytes, its header says {plain_size}")  # fmt: skip
        raise WireError(271, "CANNOT_DECOMPRESS", detail)
    return plain


# -- HTTP Content-Encoding ------------------------------------------------------------------

# ClickHouse's order of preference (chooseHTTPCompressionMethod), without br and snappy.
_PREFERENCE = ("zstd", "lz4", "gzip", "deflate", "xz", "bz2")


def choose_encoding(accept_encoding: str) -> str | None:
    """The Content-Encoding a response takes for this ``Accept-Encoding``, or None: plain."""
    offered = set()
    for item in accept_encoding.split(","):
        name, _, params = item.strip().lower().partition(";")
        if params.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
            continue  # "not acceptable"
        offered.add(name.strip())
    return next((name for name in _PREFERENCE if name in offered), None)


def http_level(value: str | None) -> int:
    """The ``http_zlib_compression_level`` (1 to 12, 3 by default, as ClickHouse 26.9)."""
    return _level(value, "http_zlib_compression_level", 3, 1, 12)


def encode_content(data: bytes, encoding: str, level: int = 3) -> bytes:
    """``data`` in the HTTP Content-Encoding ``encoding`` (one of ``choose_encoding``'s).

    Levels 10 to 12 are libdeflate's; zlib, xz and bz2 stop at 9 and take 9 for them.
    """
    if encoding in ("gzip", "deflate", "xz", "bz2"):
        level = min(level, 9)
    if encoding == "gzip":
        packer = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return packer.compress(data) + packer.flush()
    if encoding == "deflate":  # ClickHouse's deflate is a zlib stream
        return zlib.compress(data, level)
    if encoding == "zstd":
        return zstd.compress(data, level=level)
    if encoding == "lz4":
        return bytes(_lz4_frame.compress(data, compression_level=level))
    if encoding == "xz":
        return lzma.compress(data, preset=level)
    if encoding == "bz2":
        return bz2.compress(data, level)
    detail = f"Unknown Content-Encoding {encoding!r}"
    raise WireError(89, "UNKNOWN_COMPRESSION_METHOD", detail)


class _TooLarge(Exception):
    pass


def decode_content(data: bytes, encoding: str, limit: int) -> bytes:
    """A request body with its Content-Encoding undone, never more than ``limit`` bytes.

    A bomb is refused once it has grown that far, not after it has filled the memory.
    Streams may come back to back (gzip members, LZ4 and zstd frames: clients send one per
    insert block); each is decoded.
    """
    name = encoding.strip().lower()
    if name in ("", "identity") or not data:
        return data
    decoders: dict[str, Callable[[], Any]] = {
        # MAX_WBITS | 32 takes a gzip or a zlib header: ClickHouse's deflate is zlib.
        "gzip": lambda: zlib.decompressobj(zlib.MAX_WBITS | 32),
        "deflate": lambda: zlib.decompressobj(zlib.MAX_WBITS | 32),
        "zstd": zstd.ZstdDecompressor,
        "lz4": _lz4_frame.LZ4FrameDecompressor,
        "xz": lzma.LZMADecompressor,
        "bz2": bz2.BZ2Decompressor,
    }
    if name not in decoders:
        detail = f"Unknown Content-Encoding {encoding!r}: use {', '.join(_PREFERENCE)}"
        raise WireError(89, "UNKNOWN_COMPRESSION_METHOD", detail)
    try:
        return _streams(data, limit, decoders[name], name)
    except _TooLarge as exc:
        detail = f"The {name} request body decompresses to more than {limit} bytes"
        raise WireError(290, "LIMIT_EXCEEDED", detail) from exc
    except Exception as exc:  # each codec library raises its own error types
        detail = f"Cannot decode the {name} request body: {exc}"
        raise WireError(271, "CANNOT_DECOMPRESS", detail) from exc


def _streams(data: bytes, limit: int, decompressor_of: Callable[[], Any], name: str) -> bytes:
    """Streams back to back, each with a fresh decompressor, at most ``limit`` bytes out."""
    parts: list[bytes] = []
    size = 0
    rest = data
    while True:
        decompressor = decompressor_of()
        if hasattr(decompressor, "unconsumed_tail"):  # zlib's: max_length is positional
            part = decompressor.decompress(rest, limit + 1 - size)
            ended = decompressor.eof
            rest = decompressor.unused_data
            if decompressor.unconsumed_tail:
                raise _TooLarge
        else:
            part = decompressor.decompress(rest, max_length=limit + 1 - size)
            ended = decompressor.eof
            if not ended and not decompressor.needs_input:
                raise _TooLarge  # output stopped at max_length
            rest = decompressor.unused_data if ended else b""
        size += len(part)
        if size > limit:
            raise _TooLarge
        if not ended:
            msg = f"truncated {name} stream"
            raise ValueError(msg)
        parts.append(part)
        if not rest:
            return b"".join(parts)
