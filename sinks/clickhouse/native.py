"""ClickHouse's Native output at the client's ``client_protocol_version``, from chdb's.

chdb writes Native as a server writes it for protocol version 0, and no setting asks it for
another. A client that sends ``client_protocol_version`` (clickhouse-go over HTTP always
does, clickhouse-connect once its probe passes) reads each block as ClickHouse's
``NativeWriter`` writes it for that version:

- version > 0: each block starts with its block info, field-tagged: field 1
  ``is_overflows`` (0), field 2 ``bucket_num`` (Int32 -1), from 54480 field 3
  ``out_of_order_buckets`` (an empty list), then 0;
- version >= 54454 (custom serialization): after each column's type, a byte
  ``has_custom``; chdb's data is always in the default serialization, so 0;
- version < 54337: a top-level ``DateTime('zone')`` is named ``DateTime``.

So :func:`reframe` parses chdb's block stream (varints, names, types) and walks each
column's data by its type to find where it ends. Types it cannot walk (Variant, Dynamic,
JSON, Object, AggregateFunction), and LowCardinality or Dynamic and JSON below the versions
that changed their bytes, are refused with ClickHouse's code 48 rather than sent in a layout
the client would misread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from sinks.clickhouse.compression import WireError

BLOCK_INFO_REVISION = 51903
DATETIME_TIMEZONE_REVISION = 54337
LOW_CARDINALITY_REVISION = 54405
CUSTOM_SERIALIZATION_REVISION = 54454
OUT_OF_ORDER_BUCKETS_REVISION = 54480

_FIXED = {
    "UInt8": 1, "Int8": 1, "Bool": 1, "Enum8": 1,
    "UInt16": 2, "Int16": 2, "Enum16": 2, "Date": 2, "BFloat16": 2,
    "UInt32": 4, "Int32": 4, "Float32": 4, "Date32": 4, "DateTime": 4, "IPv4": 4,
    "Decimal32": 4, "Time": 4,
    "UInt64": 8, "Int64": 8, "Float64": 8, "DateTime64": 8, "Decimal64": 8, "Time64": 8,
    "UInt128": 16, "Int128": 16, "UUID": 16, "IPv6": 16, "Decimal128": 16,
    "UInt256": 32, "Int256": 32, "Decimal256": 32,
}  # fmt: skip
# Geo types are names for tuples and arrays of them.
_ALIASES = {
    "Point": "Tuple(Float64, Float64)",
    "Ring": "Array(Point)",
    "LineString": "Array(Point)",
    "MultiLineString": "Array(Ring)",
    "Polygon": "Array(Ring)",
    "MultiPolygon": "Array(Polygon)",
}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ELEMENT_NAME = re.compile(r"(?:`(?:[^`\\]|\\.)*`|[A-Za-z_][A-Za-z0-9_.]*)\s+(?=[A-Za-z_])")
_MAX_TYPE_NAME = 1 << 16
_MAX_TYPE_DEPTH = 100  # brackets nested in a type name: bounds parse_type's recursion
_LC_SHARED_DICTIONARIES = 1  # the only key version of LowCardinality's bulk serialization
_LC_GLOBAL_DICTIONARY = 1 << 8
_LC_ADDITIONAL_KEYS = 1 << 9


@dataclass(frozen=True)
class Type:
    """A parsed type name: ``Array(UInt8)`` is ``Type("Array", (Type("UInt8"),))``."""

    name: str
    args: tuple[Type, ...] = ()
    raw: tuple[str, ...] = ()  # the arguments as written (Decimal precision, FixedString size)


def _malformed(detail: str) -> WireError:
    return WireError(117, "INCORRECT_DATA", f"Cannot re-frame Native output: {detail}")


def _refuse(type_name: str, why: str) -> WireError:
    detail = (f"Native output of type {type_name} {why}; ask without client_protocol_version "
              "or in another format (RowBinary, JSON)")  # fmt: skip
    return WireError(48, "NOT_IMPLEMENTED", detail)


@lru_cache(maxsize=512)
def parse_type(text: str) -> Type:
    """The type tree of a ClickHouse type name as ``getName()`` writes it."""
    text = text.strip()
    if len(text) > _MAX_TYPE_NAME or _depth(text) > _MAX_TYPE_DEPTH:
        msg = f"a type name too long or too deep ({len(text)} characters)"
        raise _malformed(msg)
    match = _IDENTIFIER.match(text)
    if match is None:
        msg = f"bad type name {text[:100]!r}"
        raise _malformed(msg)
    name = match.group(0)
    rest = text[match.end() :].strip()
    if not rest:
        return parse_type(_ALIASES[name]) if name in _ALIASES else Type(name)
    if not (rest.startswith("(") and rest.endswith(")")):
        msg = f"bad type name {text[:100]!r}"
        raise _malformed(msg)
    raw = tuple(_split_arguments(rest[1:-1]))
    if name in ("Tuple", "Nested"):
        if raw == ("",):
            return Type(name)  # Tuple(): check_type refuses it
        elements = tuple(parse_type(_ELEMENT_NAME.sub("", arg, count=1)) for arg in raw)
        if name == "Nested":  # serialized as Array(Tuple(...))
            return Type("Array", (Type("Tuple", elements),))
        return Type("Tuple", elements)
    if name in ("Array", "Nullable", "LowCardinality"):
        if len(raw) != 1:
            msg = f"bad type name {text[:100]!r}"
            raise _malformed(msg)
        return Type(name, (parse_type(raw[0]),), raw)
    if name == "Map":
        if len(raw) != 2:
            msg = f"bad type name {text[:100]!r}"
            raise _malformed(msg)
        pair = Type("Tuple", (parse_type(raw[0]), parse_type(raw[1])))
        return Type("Array", (pair,))
    if name == "SimpleAggregateFunction":
        if len(raw) < 2:
            msg = f"bad type name {text[:100]!r}"
            raise _malformed(msg)
        return parse_type(raw[-1])
    return Type(name, (), raw)


def _depth(text: str) -> int:
    """How deep brackets nest (quoted ones count too: an overestimate is harmless)."""
    depth = deepest = 0
    for c in text:
        if c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
    return deepest


def _split_arguments(text: str) -> list[str]:
    """Top-level comma-separated arguments, quotes and brackets respected."""
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'`\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                msg = f"unbalanced type arguments {text[:100]!r}"
                raise _malformed(msg)
        elif c == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
        i += 1
    if quote or depth:
        msg = f"unbalanced type arguments {text[:100]!r}"
        raise _malformed(msg)
    parts.append(text[start:].strip())
    return parts


def _width(kind: Type) -> int | None:
    """Bytes per value of a fixed-width type, None for the others."""
    if kind.name == "FixedString":
        return _count(kind.raw[0]) if len(kind.raw) == 1 else None
    if kind.name == "Decimal":
        precision = _count(kind.raw[0]) if kind.raw else 10
        return 4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32
    if kind.name.startswith("Interval"):
        return 8
    return _FIXED.get(kind.name)


def _count(text: str) -> int:
    if not text.isdigit():
        msg = f"bad type argument {text[:50]!r}"
        raise _malformed(msg)
    return int(text)


def check_type(kind: Type, type_name: str, revision: int) -> None:
    """Refuse a type this module cannot walk, or whose bytes differ at ``revision``."""
    if kind.name in ("Array", "Nullable", "Tuple", "LowCardinality"):
        if kind.name == "LowCardinality" and revision < LOW_CARDINALITY_REVISION:
            raise _refuse(type_name, f"needs client_protocol_version >= {LOW_CARDINALITY_REVISION}")
        if kind.name == "Tuple" and not kind.args:  # Tuple(): rare, and not walked here
            raise _refuse(type_name, "is not supported by the embedded server")
        for arg in kind.args:
            check_type(arg, type_name, revision)
    elif kind.name not in ("String", "Nothing") and _width(kind) is None:
        raise _refuse(type_name, "is not supported by the embedded server")


class _Reader:
    """A cursor over chdb's bytes; running off the end is CANNOT_READ_ALL_DATA."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _need(self, size: int) -> int:
        end = self.pos + size
        if size < 0 or end > len(self.data):
            detail = (f"Cannot read all data. Bytes read: {len(self.data) - self.pos}. "
                      f"Bytes expected: {size}")  # fmt: skip
            raise WireError(33, "CANNOT_READ_ALL_DATA", detail)
        return end

    def skip(self, size: int) -> None:
        self.pos = self._need(size)

    def varint(self) -> int:
        value = 0
        for shift in range(0, 70, 7):
            self._need(1)
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        msg = "a varint longer than 10 bytes"
        raise _malformed(msg)

    def uint64(self) -> int:
        end = self._need(8)
        value = int.from_bytes(self.data[self.pos : end], "little")
        self.pos = end
        return value

    def string(self) -> bytes:
        size = self.varint()
        end = self._need(size)
        value = self.data[self.pos : end]
        self.pos = end
        return value

    def strings(self, count: int) -> None:
        data, pos, size = self.data, self.pos, len(self.data)
        for _ in range(count):
            length = 0
            shift = 0
            while True:
                if pos >= size:
                    self.pos = pos
                    self._need(1)
                byte = data[pos]
                pos += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift >= 70:
                    msg = "a varint longer than 10 bytes"
                    raise _malformed(msg)
            pos += length
            if pos > size:
                self.pos = pos - length
                self._need(length)
        self.pos = pos


def _skip_prefix(reader: _Reader, kind: Type) -> None:
    """The state prefix a bulk serialization writes before a column's data."""
    if kind.name == "LowCardinality":
        version = reader.uint64()
        if version != _LC_SHARED_DICTIONARIES:
            msg = f"LowCardinality key version {version}"
            raise _malformed(msg)
    for arg in kind.args:
        _skip_prefix(reader, arg)


def _skip_data(reader: _Reader, kind: Type, rows: int) -> None:
    if rows == 0:
        return  # no bytes, as an Array with no elements writes none for its nested type
    name = kind.name
    width = _width(kind)
    if width is not None:
        reader.skip(width * rows)
    elif name == "String":
        reader.strings(rows)
    elif name == "Nothing":
        reader.skip(rows)
    elif name == "Nullable":
        reader.skip(rows)  # the null map
        _skip_data(reader, kind.args[0], rows)
    elif name == "Array":
        reader.skip(8 * (rows - 1))
        elements = reader.uint64()  # the last offset: offsets count from the block's start
        _skip_data(reader, kind.args[0], elements)
    elif name == "Tuple":
        for element in kind.args:
            _skip_data(reader, element, rows)
    elif name == "LowCardinality":
        flags = reader.uint64()
        if flags & _LC_GLOBAL_DICTIONARY or (flags & 0xFF) > 3:
            msg = f"LowCardinality index flags {flags:#x}"
            raise _malformed(msg)
        if flags & _LC_ADDITIONAL_KEYS:
            keys = reader.uint64()
            inner = kind.args[0]
            _skip_data(reader, inner.args[0] if inner.name == "Nullable" else inner, keys)
        indexes = reader.uint64()
        reader.skip(indexes * (1 << (flags & 0xFF)))
    else:  # check_type let it through: a bug here, not in the data
        raise _refuse(name, "is not supported by the embedded server")


def _block_info(revision: int) -> bytes:
    fields = b"\x01\x00" + b"\x02\xff\xff\xff\xff"  # is_overflows false, bucket_num -1
    if revision >= OUT_OF_ORDER_BUCKETS_REVISION:
        fields += b"\x03\x00"  # out_of_order_buckets: none
    return fields + b"\x00"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def parse_revision(value: str | None) -> int:
    """The ``client_protocol_version`` URL parameter as a number (0 when not given)."""
    if value is None or value.strip() == "":
        return 0
    if not value.strip().isdigit() or len(value.strip()) > 19:
        detail = f"Cannot parse client_protocol_version={value[:40]!r} as UInt64"
        raise WireError(72, "CANNOT_PARSE_NUMBER", detail)
    return int(value)


def reframe(data: bytes, revision: int) -> bytes:
    """chdb's Native output (version 0) as ClickHouse writes it for ``revision``."""
    if revision <= 0 or not data:
        return data
    reader = _Reader(data)
    out = bytearray()
    info = _block_info(revision)
    while reader.pos < len(data):
        columns = reader.varint()
        rows = reader.varint()
        out += info
        out += _varint(columns)
        out += _varint(rows)
        for _ in range(columns):
            name = reader.string()
            type_bytes = reader.string()
            try:
                type_name = type_bytes.decode()
            except UnicodeDecodeError as exc:
                msg = "a type name that is not UTF-8"
                raise _malformed(msg) from exc
            kind = parse_type(type_name)
            check_type(kind, type_name, revision)
            if revision < DATETIME_TIMEZONE_REVISION and type_name.startswith("DateTime("):
                type_bytes = b"DateTime"
            out += _varint(len(name)) + name
            out += _varint(len(type_bytes)) + type_bytes
            if revision >= CUSTOM_SERIALIZATION_REVISION:
                out += b"\x00"  # has_custom: chdb wrote the default serialization
            start = reader.pos
            if rows:  # no rows: no bytes at all, not even the state prefix
                _skip_prefix(reader, kind)
                _skip_data(reader, kind, rows)
            out += data[start : reader.pos]
    return bytes(out)
