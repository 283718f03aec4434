"""A football match's markets priced from a score model: what the simulated feed publishes.

Each team scores as a Poisson process over the 90 minutes. A market's price is the
inverse of its probability given the score so far and the time left, with the
bookmaker's margin; a goal moves every market, and time passing moves them a little.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

MARGIN = Decimal("1.06")  # the overround: prices are 1 / (probability x margin)
MIN_ODDS, MAX_ODDS = Decimal("1.01"), Decimal("51.00")
CENT = Decimal("0.01")
MAX_GOALS = 12

# (market id, outcomes): the markets every simulated match offers.
MARKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("1x2", ("home", "draw", "away")),
    ("total_1.5", ("over", "under")),
    ("total_2.5", ("over", "under")),
    ("btts", ("yes", "no")),
    ("double_chance", ("home_draw", "home_away", "draw_away")),
)

Score = tuple[int, int]


def _poisson(lam: float) -> list[float]:
    return [math.exp(-lam) * lam**k / math.factorial(k) for k in range(MAX_GOALS + 1)]


def probabilities(
    score: Score, home_rate: float, away_rate: float, left: float
) -> dict[str, dict[str, float]]:
    """Each outcome's probability, from ``score`` with ``left`` (0..1) of the match to play."""
    ph, pa = _poisson(home_rate * left), _poisson(away_rate * left)
    p: dict[str, dict[str, float]] = {m: dict.fromkeys(outs, 0.0) for m, outs in MARKETS}
    for x, px in enumerate(ph):
        for y, py in enumerate(pa):
            w = px * py
            h, a = score[0] + x, score[1] + y
            one = "home" if h > a else "away" if a > h else "draw"
            p["1x2"][one] += w
            p["total_1.5"]["over" if h + a > 1 else "under"] += w
            p["total_2.5"]["over" if h + a > 2 else "under"] += w
            p["btts"]["yes" if h > 0 and a > 0 else "no"] += w
    r = p["1x2"]
    p["double_chance"] = {
        "home_draw": r["home"] + r["draw"],
        "home_away": r["home"] + r["away"],
        "draw_away": r["draw"] + r["away"],
    }
    return p


def price(probability: float, nudge: float = 1.0) -> Decimal:
    """Decimal odds for ``probability`` with the margin, times ``nudge``, in cents."""
    if probability <= 0:
        return MAX_ODDS
    raw = Decimal(1) / (Decimal(repr(probability)) * MARGIN) * Decimal(repr(nudge))
    return min(MAX_ODDS, max(MIN_ODDS, raw.quantize(CENT, ROUND_HALF_UP)))


def prices(
    score: Score, home_rate: float, away_rate: float, left: float, nudges: dict[str, float]
) -> dict[str, dict[str, Decimal]]:
    """Every market's prices; ``nudges`` (per market, ~1.0) is the trader's drift."""
    probs = probabilities(score, home_rate, away_rate, left)
    return {
        m: {o: price(q, nudges.get(m, 1.0)) for o, q in outs.items()} for m, outs in probs.items()
    }


def results(score: Score) -> dict[str, dict[str, str]]:
    """Every market's result at full time with ``score``."""
    h, a = score
    one = "home" if h > a else "away" if a > h else "draw"

    def pick(winner: str, outs: tuple[str, ...]) -> dict[str, str]:
        return {o: "win" if o == winner else "lose" for o in outs}

    out = {
        "1x2": pick(one, ("home", "draw", "away")),
        "total_1.5": pick("over" if h + a > 1 else "under", ("over", "under")),
        "total_2.5": pick("over" if h + a > 2 else "under", ("over", "under")),
        "btts": pick("yes" if h > 0 and a > 0 else "no", ("yes", "no")),
    }
    out["double_chance"] = {
        "home_draw": "win" if one in ("home", "draw") else "lose",
        "home_away": "win" if one in ("home", "away") else "lose",
        "draw_away": "win" if one in ("draw", "away") else "lose",
    }
    return out
