"""Exact money: ISO 4217 currencies, their minor units, and the amount types of the wire.

``Money`` is what rules compute with: a ``Decimal`` and a currency, added and subtracted
in integer minor units so nothing rounds, and never mixed across currencies. The
``*Amount`` and ``Odds`` types are the wire's decimal strings; ``Priced`` is the base of
every message whose amounts are in one ``currency``, and checks each amount against that
currency's minor units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import (
    ROUND_DOWN,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from typing import Annotated, Any, ClassVar, Self

import iso4217
from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema, model_validator

from schemas.base import DecimalStr, WireModel, shown

CURRENCY_PATTERN = r"^[A-Z]{3}$"
Currency = Annotated[str, Field(pattern=CURRENCY_PATTERN)]

# ISO 4217's minor units, from its published table (the iso4217 package, which follows
# each amendment): EUR 2, JPY 0, XPF 0, KWD 3, CLF 4. A code the table does not give minor
# units for (a metal, XTS, XXX) or does not list has DEFAULT_MINOR_UNITS.
MINOR_UNITS: dict[str, int] = {
    c.code: c.exponent for c in iso4217.Currency if c.exponent is not None
}
DEFAULT_MINOR_UNITS = 2

_CURRENCY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class CurrencyMismatch(ValueError):
    """Two amounts in different currencies were combined."""


def _require_currency(currency: object) -> str:
    if not isinstance(currency, str):
        msg = f"currency must be an ISO 4217 code string, not {type(currency).__name__}"
        raise TypeError(msg)
    if len(currency) != 3 or not set(currency) <= _CURRENCY_CHARS:
        msg = f"currency {currency!r} is not an ISO 4217 code (three capital letters)"
        raise ValueError(msg)
    return currency


def minor_units(currency: str) -> int:
    """How many decimal places ``currency`` has (EUR 2, JPY 0, KWD 3; codes ISO 4217 gives
    no minor units, or does not list, 2)."""
    return MINOR_UNITS.get(_require_currency(currency), DEFAULT_MINOR_UNITS)


# The one Decimal context money and odds are computed in (``rules/decimals.py`` says why):
# 100 digits, and an invalid operation, a division by zero or an overflow raise.
MONEY_PRECISION = 100
MONEY_CONTEXT = Context(
    prec=MONEY_PRECISION,
    rounding=ROUND_HALF_EVEN,
    Emax=999_999,
    Emin=-999_999,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)


def minor_unit(currency: str) -> Decimal:
    """The smallest amount of ``currency``: 0.01 EUR, 1 JPY, 0.001 KWD."""
    return Decimal(1).scaleb(-minor_units(currency), context=MONEY_CONTEXT)


def to_minor_unit(amount: Decimal, currency: str, rounding: str = ROUND_DOWN) -> Decimal:
    """``amount`` rounded to ``currency``'s minor unit, written with exactly its places
    (down by default: never pay a fraction that was not won). The only place money is
    rounded to a currency: rules, sinks and the front door all come here."""
    return amount.quantize(minor_unit(currency), rounding=rounding, context=MONEY_CONTEXT)


def _exponent(amount: Decimal) -> int:
    exponent = amount.as_tuple().exponent
    if not isinstance(exponent, int):  # "n", "N", "F": NaN and infinity
        msg = f"amount {amount} is not a finite decimal"
        raise ValueError(msg)
    return exponent


def _decimal_places(amount: Decimal) -> int:
    return max(0, -_exponent(amount))


def check_scale(amount: Decimal, currency: str) -> Decimal:
    """``amount`` if it has no more decimals than ``currency`` allows; ValueError if it has.

    Decimals count as written: "10.000" EUR is refused even though it equals 10.00, since a
    producer writing three places for a two-place currency has its minor units wrong.
    """
    if not isinstance(amount, Decimal):
        msg = f"amount must be a Decimal, not {type(amount).__name__}"
        raise TypeError(msg)
    places = _decimal_places(amount)
    allowed = minor_units(currency)
    if places > allowed:
        msg = f"{amount} has {places} decimal places; {currency} allows {allowed}"
        raise ValueError(msg)
    return amount


@dataclass(frozen=True)
class Money:
    """An exact amount in one currency; arithmetic refuses to mix currencies.

    Amounts may be negative (a net position, a balance change). Sums and differences are
    computed in integer minor units, so they are exact at any size and carry the
    currency's scale ("10.5" + "1" EUR is "11.50").
    """

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        # A float has already lost the exact value before it gets here: refused, loudly.
        if not isinstance(self.amount, Decimal):
            msg = f"Money needs a Decimal amount, not {type(self.amount).__name__}"
            raise TypeError(msg)
        check_scale(self.amount, _require_currency(self.currency))

    @classmethod
    def zero(cls, currency: str) -> Money:
        """Nothing, in ``currency``."""
        return cls.from_minor(0, currency)

    @classmethod
    def from_minor(cls, units: int, currency: str) -> Money:
        """The amount of ``units`` minor units (cents, öre, fils) of ``currency``."""
        if isinstance(units, bool) or not isinstance(units, int):
            msg = f"minor units must be an int, not {type(units).__name__}"
            raise TypeError(msg)
        places = minor_units(currency)
        # Built from digits rather than by division, so no context precision can round it.
        digits = tuple(int(d) for d in str(abs(units)))
        return cls(Decimal((int(units < 0), digits, -places)), currency)

    def to_minor(self) -> int:
        """The amount in integer minor units of the currency (exact: the scale is checked)."""
        sign, digits, _ = self.amount.as_tuple()
        # check_scale in __post_init__ made this shift non-negative: no fraction of a unit.
        shift = _exponent(self.amount) + self.minor_units
        units: int = int("".join(map(str, digits)) or "0") * 10**shift
        return -units if sign else units

    @property
    def minor_units(self) -> int:
        return minor_units(self.currency)

    def _same_currency(self, other: Money, op: str) -> None:
        if other.currency != self.currency:
            msg = f"cannot {op} {other.currency} and {self.currency}"
            raise CurrencyMismatch(msg)

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "add")
        return Money.from_minor(self.to_minor() + other.to_minor(), self.currency)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "subtract")
        return Money.from_minor(self.to_minor() - other.to_minor(), self.currency)

    def __neg__(self) -> Money:
        return Money.from_minor(-self.to_minor(), self.currency)

    def __lt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "compare")
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "compare")
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "compare")
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "compare")
        return self.amount >= other.amount

    def __str__(self) -> str:
        return f"{self.amount:f} {self.currency}"


# Amounts and odds on the wire are decimal strings: no exponent, no spaces, a sign only
# where the value may be negative, and a bounded number of digits on each side of the
# point, so every amount fits PostgreSQL, ClickHouse and the rules' Decimal context with
# room to spare. A JSON number is refused even when whole, so the decoder agrees with the
# published JSON Schema; Python code may pass a Decimal, whose digits are bounded alike.
SIGNED_DECIMAL = r"^-?[0-9]+(\.[0-9]+)?$"
UNSIGNED_DECIMAL = r"^[0-9]+(\.[0-9]+)?$"

AMOUNT_DIGITS = 18  # integer digits of an amount a producer sends (a stake, a deposit)
AMOUNT_PLACES = max(MINOR_UNITS.values())  # the most any currency has (CLF 4); Priced checks each
TOTAL_DIGITS = 32  # integer digits of a total Croupier writes (a payout, a balance)
ODDS_DIGITS = 6  # a leg's price is below 1,000,000
ODDS_PLACES = 4
COMBINED_ODDS_DIGITS = 18  # an accumulator's price: legs multiplied, never rounded
COMBINED_ODDS_PLACES = 100
FACTOR_PLACES = 6  # a dead-heat factor such as 0.333333


def decimal_pattern(digits: int, places: int, *, signed: bool = False) -> str:
    """The pattern of a decimal string with at most ``digits`` and ``places`` digits."""
    sign = "-?" if signed else ""
    return rf"^{sign}[0-9]{{1,{digits}}}(\.[0-9]{{1,{places}}})?$"


def _cut(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _shape(value: str | Decimal) -> tuple[bool, int, int]:
    """Whether ``value`` has a minus sign (not counting a computed -0), and its digits
    before and after the point."""
    if isinstance(value, str):
        whole, _, fraction = value.lstrip("-").partition(".")
        return value.startswith("-"), len(whole), len(fraction)
    sign, numerals, exponent = value.as_tuple()
    places = -exponent if isinstance(exponent, int) else 0
    return bool(sign) and not value.is_zero(), max(0, len(numerals) - places), max(0, places)


def _decimal_string(digits: int, places: int, *, signed: bool = False) -> BeforeValidator:
    bounded = re.compile(decimal_pattern(digits, places, signed=signed))
    well_formed = re.compile(SIGNED_DECIMAL)

    def problem(value: str | Decimal) -> str | None:
        negative, whole, fraction = _shape(value)
        written = _cut(str(value))
        if negative and not signed:
            return f"{written} must not be negative"
        if whole > digits:
            return f"{written} has {whole} digits before the point; at most {digits}"
        if fraction > places:
            return f"{written} has {fraction} decimal places; at most {places}"
        return None

    def check(value: Any) -> Any:
        if isinstance(value, str):
            if bounded.fullmatch(value):
                return Decimal(value)
            if not well_formed.fullmatch(value):
                msg = f"{shown(value)} is not a plain decimal string such as '10.50'"
                raise ValueError(msg)
        elif isinstance(value, Decimal):
            if not value.is_finite():
                return value  # refused after the Decimal checks, with its own message
        else:
            msg = f"must be a decimal string such as '10.50', not {type(value).__name__}"
            if isinstance(value, float):
                msg += ": amounts and odds must be decimal strings"
            raise ValueError(msg)
        msg = problem(value) or ""
        if msg:
            raise ValueError(msg)
        return Decimal(value) if isinstance(value, str) else value

    return BeforeValidator(check)


def _no_negative_zero(value: Decimal) -> Decimal:
    # Decimal("-0") would serialise as "-0", which the unsigned patterns refuse.
    return value.copy_abs() if value.is_zero() else value


def decimal_schema(pattern: str, description: str) -> WithJsonSchema:
    """The JSON Schema of a decimal string field: what producers build against."""
    return WithJsonSchema({"type": "string", "pattern": pattern, "description": description})


# What the models' bounds (``gt=0``, ``gt=1``) say, as the schemas' patterns can: a
# lookahead that refuses an all-zero value, or any value of 1 or below ("0.5", "1.000").
ABOVE_ZERO = r"(?!0*(\.0*)?$)"
ABOVE_ONE = r"(?!0*(\.[0-9]*)?$)(?!0*1(\.0*)?$)"


def above(guard: str, pattern: str) -> str:
    """``pattern`` (anchored with ``^``) that also refuses what ``guard`` looks ahead for."""
    return "^" + guard + pattern.removeprefix("^")


_AMOUNT = f"at most {AMOUNT_DIGITS} digits before the point and the currency's minor units"
_TOTAL = f"at most {TOTAL_DIGITS} digits before the point and the currency's minor units"
_ODDS = f"at most {ODDS_DIGITS} digits before the point and {ODDS_PLACES} after"

PositiveAmount = Annotated[
    DecimalStr,
    _decimal_string(AMOUNT_DIGITS, AMOUNT_PLACES),
    Field(gt=0),
    decimal_schema(
        above(ABOVE_ZERO, decimal_pattern(AMOUNT_DIGITS, AMOUNT_PLACES)),
        f"decimal string, greater than zero, {_AMOUNT}",
    ),
]
NonNegativeAmount = Annotated[
    DecimalStr,
    _decimal_string(AMOUNT_DIGITS, AMOUNT_PLACES),
    Field(ge=0),
    AfterValidator(_no_negative_zero),
    decimal_schema(
        decimal_pattern(AMOUNT_DIGITS, AMOUNT_PLACES), f"decimal string, zero or more, {_AMOUNT}"
    ),
]
Total = Annotated[
    DecimalStr,
    _decimal_string(TOTAL_DIGITS, AMOUNT_PLACES),
    Field(ge=0),
    AfterValidator(_no_negative_zero),
    decimal_schema(
        decimal_pattern(TOTAL_DIGITS, AMOUNT_PLACES), f"decimal string, zero or more, {_TOTAL}"
    ),
]
"""A total Croupier writes (a payout, a balance): wider than any amount sent in."""
SignedTotal = Annotated[
    DecimalStr,
    _decimal_string(TOTAL_DIGITS, AMOUNT_PLACES, signed=True),
    AfterValidator(_no_negative_zero),
    decimal_schema(
        decimal_pattern(TOTAL_DIGITS, AMOUNT_PLACES, signed=True),
        f"decimal string, may be negative, {_TOTAL}",
    ),
]
Odds = Annotated[
    DecimalStr,
    _decimal_string(ODDS_DIGITS, ODDS_PLACES),
    Field(gt=1),
    decimal_schema(
        above(ABOVE_ONE, decimal_pattern(ODDS_DIGITS, ODDS_PLACES)),
        f"decimal odds as a string, greater than 1, {_ODDS}",
    ),
]
CombinedOdds = Annotated[
    DecimalStr,
    _decimal_string(COMBINED_ODDS_DIGITS, COMBINED_ODDS_PLACES),
    Field(gt=1),
    decimal_schema(
        above(ABOVE_ONE, decimal_pattern(COMBINED_ODDS_DIGITS, COMBINED_ODDS_PLACES)),
        "decimal odds as a string, greater than 1: the legs' prices multiplied",
    ),
]
"""An accumulator's price as Croupier writes it: every leg's places kept."""
DeadHeatFactor = Annotated[
    DecimalStr,
    _decimal_string(1, FACTOR_PLACES),
    Field(gt=0, le=1),
    decimal_schema(
        rf"^(0(\.[0-9]{{1,{FACTOR_PLACES}}})?|1(\.0{{1,{FACTOR_PLACES}}})?)$",
        f"decimal string in (0, 1], at most {FACTOR_PLACES} decimal places",
    ),
]


class Priced(WireModel):
    """A message whose amounts are all in its ``currency``: each must fit its minor units.

    Subclasses name their amount fields in ``amount_fields``; ``None`` values are skipped.
    """

    amount_fields: ClassVar[tuple[str, ...]] = ("amount",)
    currency: Currency

    @model_validator(mode="after")
    def _amounts_fit_the_currency(self) -> Self:
        for name in self.amount_fields:
            value = getattr(self, name)
            if value is None:
                continue
            try:
                check_scale(value, self.currency)
            except ValueError as exc:
                msg = f"{name}: {exc}"
                raise ValueError(msg) from exc
        return self

    def money(self, name: str = "amount") -> Money:
        """The amount field ``name`` as ``Money`` in this message's currency."""
        value = getattr(self, name) if name in self.amount_fields else None
        if value is None:
            msg = f"{type(self).__name__} has no amount {name!r}"
            raise ValueError(msg)
        return Money(value, self.currency)
