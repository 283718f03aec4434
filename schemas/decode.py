"""Bytes to models: a model, or a ``DecodeFailure`` that says why in words and a code.

``decode`` never raises, whatever the bytes. In order:

1. a key over ``MAX_KEY_BYTES`` or a value over ``MAX_MESSAGE_BYTES`` is ``too_large``
   (checked before any parsing, so a huge message costs nothing);
2. no value at all, bytes that are not UTF-8 JSON, or JSON nested deeper than the
   parser's limit (``MAX_DEPTH``) are ``malformed_json``;
3. JSON that breaks the wire contract is ``invalid``: a field of the wrong type (inbound
   models are strict, nothing is coerced), out of bounds, unknown or missing, and an
   object that names one key twice (``{"stake": "1.00", "stake": "90.00"}``: which one
   a reader takes is up to the reader, so neither is taken).

The error text is short (``MAX_ERROR_CHARS``), printable, and quotes no more than a few
dozen characters of the input.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from schemas.base import safe_text

log = logging.getLogger(__name__)
T = TypeVar("T")

# A message on an inbound topic is at most this large. The biggest real messages are odds
# changes with many markets, a few kilobytes; a dead letter carries up to 256 KiB of the
# input (``schemas.records``), so every message that is not too large fits one whole.
MAX_MESSAGE_BYTES = 128 * 1024
# Keys are ids (at most 128 characters); anything much longer is not a key of ours.
MAX_KEY_BYTES = 1024
# The JSON parser refuses deeper nesting; no message of the contract goes deeper than 6.
MAX_DEPTH = 200
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class DecodeFailure:
    """Why a message could not be decoded; ``reason`` is a closed code, ``error`` prose."""

    reason: str  # too_large | malformed_json | invalid
    error: str


def decode(
    adapter: TypeAdapter[T], raw: bytes | None, *, key: bytes | None = None
) -> T | DecodeFailure:
    """Decode one UTF-8 JSON message (and check its Kafka ``key``'s size) with ``adapter``."""
    try:
        return _decode(adapter, raw, key)
    except Exception as exc:
        log.exception("decoding a message failed unexpectedly")
        return DecodeFailure(
            "invalid", f"the message could not be validated ({type(exc).__name__})"
        )


def _decode(adapter: TypeAdapter[T], raw: bytes | None, key: bytes | None) -> T | DecodeFailure:
    if key is not None and len(key) > MAX_KEY_BYTES:
        return DecodeFailure("too_large", f"key of {len(key)} bytes; at most {MAX_KEY_BYTES}")
    if raw is None:
        return DecodeFailure("malformed_json", "empty message (null value)")
    if len(raw) > MAX_MESSAGE_BYTES:
        return DecodeFailure(
            "too_large", f"message of {len(raw)} bytes; at most {MAX_MESSAGE_BYTES}"
        )
    try:
        model = adapter.validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        if errors and errors[0]["type"] == "json_invalid":
            return DecodeFailure("malformed_json", _cut(f"not UTF-8 JSON: {errors[0]['msg']}"))
        return DecodeFailure("invalid", _summarise(errors, exc.error_count()))
    # The parser above keeps the last of two equal keys; only a message that is valid
    # that way needs the second look (and it is small and shallow by then).
    duplicate = _duplicate_key(raw)
    if duplicate is not None:
        return DecodeFailure("invalid", duplicate)
    return model


class _DuplicateKey(ValueError):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _DuplicateKey(name)
            seen.add(name)
    return obj


# Built once: ``json.loads`` with a hook builds a decoder per call, which costs more than
# the parse of a small message.
_UNIQUE_KEYS = json.JSONDecoder(object_pairs_hook=_unique)


def _duplicate_key(raw: bytes) -> str | None:
    try:
        _UNIQUE_KEYS.decode(raw.decode("utf-8"))
    except _DuplicateKey as exc:
        return _cut(f"{safe_text(str(exc), 40)}: a key appears twice in one object")
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        # Only a repeated key's earlier value can get here: the parse above passed.
        return _cut(f"a repeated key's value cannot be read: {safe_text(str(exc), 100)}")
    return None


def _cut(text: str) -> str:
    return safe_text(text, MAX_ERROR_CHARS)


def _summarise(errors: list[Any], count: int) -> str:
    parts = []
    for err in errors[:5]:
        where = ".".join(safe_text(str(p), 40) for p in err["loc"]) or "message"
        parts.append(f"{where}: {safe_text(err['msg'], 200)}")
    more = count - 5
    if more > 0:
        parts.append(f"and {more} more")
    return _cut("; ".join(parts))
