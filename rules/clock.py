"""The server's clock decides: a producer's time too far from it is refused (``clock_skew``).

A producer's timestamp orders its own messages and is recorded; it never decides
acceptance, voids, windows or partitions by itself. Where it would still weigh on a
decision (a feed time that orders a market or keeps a producer "up", a geolocation
check's start, a session's start, a limit's start), a time beyond ``now + tolerance`` is
refused: a message stamped in year 9999 must not keep a producer up for ever, make later
messages stale, or keep a check valid for ever. A bet's ``placed_at`` is held to the
tolerance both ways: a bet dated far back or ahead is refused rather than recorded with a
time nobody can trust. ``now`` is always the server's decision time, passed in.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# The default of CROUPIER_CLOCK_SKEW_SECONDS: producers keep NTP time, so minutes of
# difference are a broken clock or a forged time, and seconds of it a slow network.
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)


def ahead(stamp: datetime, now: datetime, tolerance: timedelta, *, what: str) -> str | None:
    """Why ``stamp`` is refused (``None`` when it is not): it is more than ``tolerance``
    ahead of the server's ``now``."""
    if stamp > now + tolerance:
        return (
            f"{what} {stamp.isoformat()} is {stamp - now} ahead of the server's clock "
            f"(tolerance {tolerance})"
        )
    return None


def skewed(stamp: datetime, now: datetime, tolerance: timedelta, *, what: str) -> str | None:
    """Why ``stamp`` is refused (``None`` when it is not): it is more than ``tolerance``
    ahead of, or behind, the server's ``now``."""
    if stamp < now - tolerance:
        return (
            f"{what} {stamp.isoformat()} is {now - stamp} behind the server's clock "
            f"(tolerance {tolerance})"
        )
    return ahead(stamp, now, tolerance, what=what)
