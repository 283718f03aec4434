"""``to_minor_unit``, the one place money is rounded to a currency, against ISO 4217."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

import iso4217
from hypothesis import given
from hypothesis import strategies as st

from schemas.money import DEFAULT_MINOR_UNITS, MONEY_CONTEXT, minor_unit, to_minor_unit

# Straight from the published table, not through our MINOR_UNITS copy of it.
TABLE = {c.code: (DEFAULT_MINOR_UNITS if c.exponent is None else c.exponent)
         for c in iso4217.Currency}  # fmt: skip
CODES = sorted(TABLE)
ROUNDINGS = st.sampled_from([ROUND_DOWN, ROUND_HALF_EVEN])
amounts = st.decimals(
    min_value=Decimal("-1e18"), max_value=Decimal("1e18"), places=8, allow_nan=False
)


def test_every_currency_has_the_tables_unit() -> None:
    for code in CODES:
        assert minor_unit(code) == Decimal(1).scaleb(-TABLE[code]), code
    # The codes a hand table used to get wrong (it said 2 for each).
    assert {c: TABLE[c] for c in ("XPF", "RWF", "BIF", "DJF", "GNF", "KMF", "VUV", "CLF")} == {
        "XPF": 0, "RWF": 0, "BIF": 0, "DJF": 0, "GNF": 0, "KMF": 0, "VUV": 0, "CLF": 4,
    }  # fmt: skip


@given(st.sampled_from(CODES), amounts, ROUNDINGS)
def test_rounds_to_exactly_the_tables_places(code: str, amount: Decimal, rounding: str) -> None:
    out = to_minor_unit(amount, code, rounding)
    assert out.as_tuple().exponent == -TABLE[code]
    unit = minor_unit(code)
    assert abs(MONEY_CONTEXT.subtract(out, amount)) < unit
    if rounding == ROUND_DOWN:  # toward zero: never pays a fraction not won
        assert abs(out) <= abs(amount)


@given(st.sampled_from(CODES), st.integers(min_value=-(10**20), max_value=10**20), ROUNDINGS)
def test_never_changes_a_value_already_at_the_unit(code: str, units: int, rounding: str) -> None:
    at_unit = Decimal(units).scaleb(-TABLE[code])
    out = to_minor_unit(at_unit, code, rounding)
    assert out == at_unit
    assert str(out) == str(at_unit)  # the same digits and places, not only the same value
    assert to_minor_unit(out, code, rounding) == out  # idempotent
