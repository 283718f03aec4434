"""Bytes to models: a model, or a ``DecodeFailure`` that says why in words and a code."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

T = TypeVar("T")


@dataclass(frozen=True)
class DecodeFailure:
    """Why a message could not be decoded; ``reason`` is a closed code, ``error`` prose."""

    reason: str  # malformed_json | invalid
    error: str


def decode(adapter: TypeAdapter[T], raw: bytes | None) -> T | DecodeFailure:
    """Decode one UTF-8 JSON message with ``adapter``."""
    if raw is None:
        return DecodeFailure("malformed_json", "empty message (null value)")
    try:
        data: Any = json.loads(raw.decode("utf-8"), parse_float=_no_float_money)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return DecodeFailure("malformed_json", f"not UTF-8 JSON: {exc}")
    except _FloatRejected as exc:
        return DecodeFailure("invalid", str(exc))
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        return DecodeFailure("invalid", _summarise(exc))


class _FloatRejected(ValueError):
    pass


def _no_float_money(text: str) -> Any:
    # A JSON number with a fraction would reach a Decimal field through a float; amounts
    # and odds are decimal strings on the wire, so a fractional number is refused outright.
    msg = f"fractional JSON number {text}: amounts and odds must be decimal strings"
    raise _FloatRejected(msg)


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - 5
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
