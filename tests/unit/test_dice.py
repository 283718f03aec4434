"""Croupier Dice pays what its certificate says."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

import pytest

from config.games import load_catalogue
from rules import dice


def test_the_exact_return_to_player_is_the_certified_rtp() -> None:
    stake = Decimal("1.00")
    expected = (
        sum((Fraction(dice.win(stake, 3, roll, "EUR")) for roll in range(1, 7)), Fraction(0)) / 6
    )
    assert expected / Fraction(stake) == Fraction(97, 100)
    today = datetime.now(UTC).date()
    cert = load_catalogue().certification_for(dice.GAME_ID, "UK", today)
    assert cert is not None and cert.rtp == dice.RTP_PERCENT == Decimal("97.00")


def test_wins_round_down_to_minor_units_and_faces_are_checked() -> None:
    assert dice.win(Decimal("0.01"), 2, 2, "EUR") == Decimal("0.05")
    assert dice.win(Decimal("0.50"), 2, 2, "EUR") == Decimal("2.91")
    assert dice.win(Decimal("3"), 6, 6, "JPY") == Decimal("17")
    assert str(dice.win(Decimal("1.00"), 2, 5, "EUR")) == "0.00"
    with pytest.raises(ValueError, match=r"faces 1\.\.6"):
        dice.win(Decimal("1.00"), 7, 1, "EUR")
