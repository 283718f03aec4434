"""click parameter types over ``croupier.arguments``' checks: a bad value is a usage error
(exit 2) whose message says what to fix, before anything is sent or opened."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from croupier import arguments


class Checked(click.ParamType):
    """A value passed through one of ``croupier.arguments``' checks (argparse types)."""

    def __init__(self, check: Callable[[str], Any], name: str) -> None:
        self.check = check
        self.name = name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value  # a default, already of its type
        try:
            return self.check(value)
        except argparse.ArgumentTypeError as exc:
            self.fail(str(exc), param, ctx)


def _count(text: str) -> int:
    return arguments.positive_int(text, most=1_000_000_000)


def _samples(text: str) -> int:
    # Fewer leave the battery's chi-square cells too empty to test (it refuses them).
    value = arguments.positive_int(text, most=100_000_000)
    if value < 10_000:
        msg = f"{text!r}: the battery needs at least 10000 outputs per stream"
        raise argparse.ArgumentTypeError(msg)
    return value


def _currency(text: str) -> str:
    if len(text) != 3 or not text.isascii() or not text.isupper() or not text.isalpha():
        msg = f"{text[:20]!r} is not an ISO 4217 currency code such as EUR"
        raise argparse.ArgumentTypeError(msg)
    return text


def _aware(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        msg = f"{text[:40]!r} is not an RFC 3339 time such as 2026-11-24T00:00:00Z"
        raise argparse.ArgumentTypeError(msg) from None
    if value.tzinfo is None:
        msg = f"{text!r} has no time zone; write it as RFC 3339, e.g. 2026-11-24T00:00:00Z"
        raise argparse.ArgumentTypeError(msg)
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        msg = f"{text[:40]!r} is not a number"
        raise argparse.ArgumentTypeError(msg) from None


JURISDICTION = Checked(arguments.jurisdiction, "J")
BUSINESS_ID = Checked(arguments.business_id, "ID")
ROUNDS = Checked(arguments.positive_int, "N")
SECONDS = Checked(arguments.seconds, "SECONDS")
DECIMAL = Checked(arguments.decimal_text, "AMOUNT")
COUNT = Checked(_count, "N")
SAMPLES = Checked(_samples, "N")
CURRENCY = Checked(_currency, "CURRENCY")
TIME = Checked(_aware, "TIME")
NUMBER = Checked(_float, "NUMBER")  # a plain float, checked by the command itself

JSON_HELP = "print one JSON document on stdout instead of the text"
