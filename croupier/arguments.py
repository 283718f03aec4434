"""Command-line input checks and the one-line errors the command line ends with.

Every value a user types is checked before anything is sent or opened: a jurisdiction
is two or three capitals (it becomes a file name and a topic name), a stake is a
positive amount in the currency's minor units, counts and seconds are positive and
bounded. A bad setting or an unreachable service ends in one line on stderr that says
what to fix, never a traceback, and never a secret (``redact``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

JURISDICTION = re.compile(r"^[A-Z]{2,3}$")
# The wire's id alphabet (issue 15): what a player id can be, so a typo or a hostile
# value never reaches a topic.
BUSINESS_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_STAKE_DIGITS = 18  # integer digits: far above any real stake, far below overflow
MAX_ROUNDS = 10_000
MAX_SECONDS = 86_400.0

EXIT_SETTINGS = 2  # what the user must fix: a setting, an argument, a service address


class InputError(ValueError):
    """A value given on the command line that cannot be used; the message says why."""


def jurisdiction(text: str) -> str:
    """An argparse type: a jurisdiction code (``UK``, ``DK``, ``ES``...), nothing else."""
    if not JURISDICTION.fullmatch(text):
        msg = f"{text!r} is not a jurisdiction: two or three capital letters, e.g. UK"
        raise argparse.ArgumentTypeError(msg)
    return text


def business_id(text: str) -> str:
    """An argparse type: an id of the wire's alphabet ``[A-Za-z0-9._:-]``, 1 to 128 long."""
    if not BUSINESS_ID.fullmatch(text):
        msg = f"{text[:40]!r} is not an id: 1 to 128 of A-Z a-z 0-9 . _ : -"
        raise argparse.ArgumentTypeError(msg)
    return text


def positive_int(text: str, *, most: int = MAX_ROUNDS) -> int:
    """An argparse type: a whole number from 1 to ``most``."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= most:
        msg = f"{text!r} is not a whole number from 1 to {most}"
        raise argparse.ArgumentTypeError(msg)
    return value


def seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds (at most a day)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= MAX_SECONDS:  # also refuses nan and inf
        msg = f"{text!r} is not a number of seconds above 0 and at most {MAX_SECONDS:g}"
        raise argparse.ArgumentTypeError(msg)
    return value


def decimal_text(text: str) -> Decimal:
    """An argparse type: a plain decimal number (``1.00``), no exponent, NaN or infinity."""
    if not re.fullmatch(r"[0-9]{1,40}(\.[0-9]{1,40})?|-[0-9.]{1,80}", text):
        msg = f"{text[:40]!r} is not a decimal amount such as 1.00"
        raise argparse.ArgumentTypeError(msg)
    try:
        return Decimal(text)
    except InvalidOperation:
        msg = f"{text[:40]!r} is not a decimal amount such as 1.00"
        raise argparse.ArgumentTypeError(msg) from None


def stake(amount: Decimal, currency: str) -> Decimal:
    """``amount`` when it is a positive stake in ``currency``'s minor units; else InputError."""
    from schemas.money import check_scale  # pydantic: only when a stake is checked

    try:
        check_scale(amount, currency)
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from None
    if amount <= 0:
        msg = f"the stake must be above 0, not {amount}"
        raise InputError(msg)
    if amount.adjusted() >= MAX_STAKE_DIGITS:
        msg = f"the stake {amount} has more than {MAX_STAKE_DIGITS} integer digits"
        raise InputError(msg)
    return amount


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without passwords (``croupier.redact.redact``)."""
    from croupier.redact import redact as hide

    return hide(text, secrets)


def printable(text: str) -> str:
    """``text`` safe for a terminal: every non-printable character as its escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type when it has none), shortened."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= limit else first[: limit - 1] + "…"
