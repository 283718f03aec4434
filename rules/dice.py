"""Croupier Dice, the house's own game: pick a face, one fair die is rolled.

A correct pick pays ``PAYOUT`` times the stake (the stake included), anything else pays
nothing: the return to player is ``PAYOUT / 6`` = 97.00 %, the RTP the game's
certification in ``games/catalogue.toml`` states (the dice table refuses to open when
they differ). A win is rounded down to the currency's minor units, so the house never pays
a fraction of a cent more than the stated RTP; stakes in whole cents of 0.50 or more round
nothing away.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from schemas.money import MONEY_CONTEXT, to_minor_unit

GAME_ID = "croupier-dice"
FACES = 6
PAYOUT = Decimal("5.82")
RTP_PERCENT = MONEY_CONTEXT.multiply(MONEY_CONTEXT.divide(PAYOUT, FACES), 100).quantize(
    Decimal("0.01"), context=MONEY_CONTEXT
)  # 97.00


def win(stake: Decimal, pick: int, roll: int, currency: str) -> Decimal:
    """What a round pays: ``PAYOUT`` x stake when the roll is the pick, else zero."""
    if not (1 <= pick <= FACES and 1 <= roll <= FACES):
        msg = f"pick and roll are faces 1..{FACES}, got pick {pick}, roll {roll}"
        raise ValueError(msg)
    if roll != pick:
        return to_minor_unit(Decimal(0), currency)
    return to_minor_unit(MONEY_CONTEXT.multiply(stake, PAYOUT), currency, ROUND_DOWN)
