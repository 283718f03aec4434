"""The one Decimal context money and odds are computed in, never Python's 28-digit default.

Python's default context keeps 28 significant digits: an accumulator's combined odds, or a
stake times them, can need more, and then ``quantize`` raises ``InvalidOperation`` (and a
sum silently rounds). ``MONEY_CONTEXT`` keeps 100 digits, far beyond any amount the wire
allows times any odds a policy accepts, and traps what must never pass silently: an invalid
operation, a division by zero, an overflow. Rounding to a currency's minor unit is always
explicit (``to_minor_unit``, in ``schemas/money.py``, the one place that rounds to
a currency's minor unit), never a side effect of the context's precision.

Use it through the helpers here, or ``decimal.localcontext(MONEY_CONTEXT)`` around the
arithmetic, or a ``context=`` argument: never the thread's ambient context, which any
library may have changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

# Defined beside the money type, at the bottom: every layer rounds money in that one place.
from schemas.money import MONEY_CONTEXT

__all__ = ["MONEY_CONTEXT", "product", "total"]


def product(values: Iterable[Decimal]) -> Decimal:
    """The product of ``values`` (1 when there are none), in ``MONEY_CONTEXT``."""
    total = Decimal(1)
    for value in values:
        total = MONEY_CONTEXT.multiply(total, value)
    return total


def total(values: Iterable[Decimal]) -> Decimal:
    """The sum of ``values`` (0 when there are none), in ``MONEY_CONTEXT``."""
    out = Decimal(0)
    for value in values:
        out = MONEY_CONTEXT.add(out, value)
    return out
