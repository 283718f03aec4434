"""Deposit, loss and session-time limits: setting them, and what they allow at a moment.

Modelled on the UK Gambling Commission's RTS 12: a player may set several limits (kind
and period); the lowest in force applies. A decrease (or a first limit) takes effect at
once; an increase or a removal only after the jurisdiction's cooling-off period, and
until then the old value holds.

Periods are rolling and end at the moment of the decision: ``day`` is the last 24 hours,
``week`` the last 7 days, ``month`` back to the same wall-clock time one calendar month
earlier (UTC; clamped to the month's last day, so 31 March looks back to 28 or 29
February). A window is half-open, ``(start, at]``: a record exactly one period old no
longer counts.

The running totals are built from records the caller reads from the ledger (stakes,
payouts, deposits: each posted once, by key) and from the sessions table, so a replay
never counts anything twice. Loss is stakes minus winnings: a stake counts in full when
it is placed (a bet not yet settled is money at risk), a payout (a void's refund
included) counts back when it is paid, and a rolled-back payout counts again.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from rules.decimals import MONEY_CONTEXT, total
from schemas.players import LimitKind, LimitSet, PendingLimit, Period, PlayerLimit

_FIXED = {"day": timedelta(hours=24), "week": timedelta(days=7)}


def month_before(at: datetime) -> datetime:
    """The same wall-clock time one calendar month earlier (clamped to the month's end)."""
    year, month = (at.year, at.month - 1) if at.month > 1 else (at.year - 1, 12)
    day = min(at.day, calendar.monthrange(year, month)[1])
    return at.replace(year=year, month=month, day=day)


def window_start(period: Period, at: datetime) -> datetime:
    """Where the rolling ``period`` that ends at ``at`` begins (exclusive)."""
    if period == "month":
        return month_before(at)
    return at - _FIXED[period]


def earliest_start(at: datetime) -> datetime:
    """The start of the longest window: every record older than this is irrelevant."""
    return min(window_start(p, at) for p in ("day", "week", "month"))


# -- setting a limit -----------------------------------------------------------------------


Value = Decimal | int | None  # an amount, minutes, or no limit


def _value(kind: LimitKind, amount: Decimal | None, minutes: int | None) -> Value:
    return minutes if kind == "session" else amount


def _looser(new: Value, old: Value) -> bool:
    """Whether ``new`` allows more than ``old`` (``None`` is no limit: loosest of all)."""
    if old is None:
        return False
    return new is None or new > old


def matured(limit: PlayerLimit, at: datetime) -> PlayerLimit:
    """``limit`` with a pending change folded in once its cooling-off has ended."""
    pending = limit.pending
    if pending is None or at < pending.effective_at:
        return limit
    return limit.model_copy(
        update={"amount": pending.amount, "minutes": pending.minutes, "pending": None,
                "set_at": pending.effective_at}
    )  # fmt: skip


def in_force(limit: PlayerLimit, at: datetime) -> Value:
    """The value of ``limit`` at ``at`` (``None``: no limit)."""
    now = matured(limit, at)
    return _value(now.kind, now.amount, now.minutes)


def set_limit(
    limits: Sequence[PlayerLimit],
    event: LimitSet,
    cooling_off: timedelta,
    *,
    at: datetime | None = None,
) -> tuple[PlayerLimit, ...]:
    """The limits after ``event``, decided at ``at``: tighter at once, looser after
    ``cooling_off``.

    ``at`` is when the change is decided: the player rules pass the later of the event's
    time and the server's, so a loosening dated back still waits its full cooling-off
    (left out, the event's own time). Every pending change that has matured by then is
    folded in first. Setting the value already in force (or a tighter one) cancels a
    pending loosening.
    """
    at = event.timestamp if at is None else at
    out: list[PlayerLimit] = []
    current: PlayerLimit | None = None
    for item in limits:
        item = matured(item, at)
        if (item.kind, item.period) == (event.limit, event.period):
            current = item
        else:
            out.append(item)
    new = _value(event.limit, event.amount, event.minutes)
    old = None if current is None else _value(current.kind, current.amount, current.minutes)
    currency = event.currency if event.limit != "session" else None
    if current is not None and _looser(new, old):
        updated = current.model_copy(
            update={"pending": PendingLimit(amount=event.amount, minutes=event.minutes,
                                            effective_at=at + cooling_off)}
        )  # fmt: skip
    elif current is None and new is None:
        return tuple(out)  # removing a limit that does not exist changes nothing
    else:
        updated = PlayerLimit(
            kind=event.limit,
            period=event.period,
            amount=event.amount,
            minutes=event.minutes,
            currency=currency,
            set_at=at,
        )
    out.append(updated)
    out.sort(key=lambda item: (item.kind, ("day", "week", "month").index(item.period)))
    return tuple(out)


# -- usage ---------------------------------------------------------------------------------


@dataclass
class Usage:
    """A player's activity that limits count, as records (time, amount).

    ``loss`` holds signed contributions (a stake +, a payout -); ``deposits`` positive
    amounts; ``sessions`` (start, end) pairs, ``end`` ``None`` for the open session.
    """

    loss: list[tuple[datetime, Decimal]] = field(default_factory=list)
    deposits: list[tuple[datetime, Decimal]] = field(default_factory=list)
    sessions: list[tuple[datetime, datetime | None]] = field(default_factory=list)


def money_total(
    records: Iterable[tuple[datetime, Decimal]], since: datetime, at: datetime
) -> Decimal:
    """The sum of the records in the window ``(since, at]``."""
    return total(amount for t, amount in records if since < t <= at)


def session_seconds(
    sessions: Iterable[tuple[datetime, datetime | None]], since: datetime, at: datetime
) -> float:
    """Seconds of session time inside ``(since, at]``; an open session runs until ``at``."""
    total = 0.0
    for start, end in sessions:
        lo, hi = max(start, since), min(end or at, at)
        if hi > lo:
            total += (hi - lo).total_seconds()
    return total


@dataclass(frozen=True)
class Breach:
    """A limit the action would break: which, what is used, what it allows."""

    kind: LimitKind
    period: Period
    used: Decimal | float
    limit: Decimal | int

    def describe(self, currency: str) -> str:
        if self.kind == "session":
            return (
                f"session time {self.used / 60:.1f} of {self.limit} minutes per {self.period} "
                "used up"
            )
        return f"{self.kind} {self.used} of {self.limit} {currency} per {self.period}"


def money_breach(
    limits: Iterable[PlayerLimit],
    kind: LimitKind,
    records: Sequence[tuple[datetime, Decimal]],
    amount: Decimal,
    at: datetime,
) -> Breach | None:
    """The first ``kind`` limit that ``amount`` more at ``at`` would exceed, if any.

    Reaching a limit exactly is allowed; going past it is not.
    """
    for item in limits:
        if item.kind != kind:
            continue
        cap = in_force(item, at)
        if cap is None:
            continue
        used = money_total(records, window_start(item.period, at), at)
        after = MONEY_CONTEXT.add(used, amount)
        if after > Decimal(cap):
            return Breach(kind, item.period, after, cap)
    return None


def session_breach(
    limits: Iterable[PlayerLimit],
    sessions: Sequence[tuple[datetime, datetime | None]],
    at: datetime,
) -> Breach | None:
    """The first session-time limit already used up at ``at``, if any."""
    for item in limits:
        if item.kind != "session":
            continue
        cap = in_force(item, at)
        if cap is None:
            continue
        used = session_seconds(sessions, window_start(item.period, at), at)
        if used >= int(cap) * 60:
            return Breach("session", item.period, used, int(cap))
    return None


def has_limits(limits: Iterable[PlayerLimit], kinds: Iterable[LimitKind], at: datetime) -> bool:
    """Whether any limit of these kinds is in force at ``at``."""
    wanted = set(kinds)
    return any(item.kind in wanted and in_force(item, at) is not None for item in limits)
