"""Base model and field types shared by every wire message."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer


class WireModel(BaseModel):
    """A message on the wire: immutable, unknown fields rejected, JSON in and out."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


def _exact(value: Decimal) -> Decimal:
    if not value.is_finite():
        msg = "amount must be a finite decimal"
        raise ValueError(msg)
    return value


# Money and odds travel as decimal strings; a JSON number would have passed through a float.
DecimalStr = Annotated[
    Decimal,
    AfterValidator(_exact),
    PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json"),
]
