"""Player protection inside the transaction that moves the money.

Every product's placement transaction (bets, deposits and withdrawal requests, casino
debits) reads its players' standings from ``players`` and the activity their limits count
(the ledger's applied operations of the last month, their sessions), calls
``rules.compliance.check``, and posts to the ledger, all in one transaction.

Why no stale standing lets money move: the standing is read from PostgreSQL at the
decision, never from a cache. The players flow commits a self-exclusion (or a lower
limit) to the same row; a decision that reads the row after that commit sees it, and one
that read it before was decided before the exclusion existed. Each decision stores the
standing version it was judged against, so the order can be checked afterwards.

Why some rows are locked: a limit spans products. A bet and a casino debit of one player,
decided by different workers at the same moment, could each see the loss below the limit
and together pass it. So the rows of players with a loss or deposit limit in force are
locked (``FOR NO KEY UPDATE``, in player order) and read again under the lock, and their
activity is read after it: the second product waits for the first to commit and counts
its stake. The players flow's update of a locked row waits the same way. Players without
such a limit (most of them) are not locked: nothing of theirs can race. A bets batch
makes the same reads in one statement (``bets_load``, migration 0029), which picks the
rows to lock in SQL by the kinds of limit a standing holds, before Python can ask which
are in force: it may lock a player whose limit is still cooling off or has lapsed, never
fewer.

Within a batch, what a check lets through counts at once against the player's later
checks in the batch (a stake adds to the loss, a deposit to the deposits). A stake the
ledger then refuses (insufficient funds) still counts for the rest of that batch: the
error is on the safe side and gone with the next batch, which reads the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from rules import compliance
from rules.limits import Usage, earliest_start, has_limits
from rules.policy import Policies
from schemas.players import LimitKind, PlayerState
from sinks.postgres.sink import PgSink

_STANDINGS_SQL = "SELECT player_id, standing FROM players WHERE player_id = ANY(%s)"

_LOCKED_SQL = """
SELECT player_id, standing FROM players WHERE player_id = ANY(%s)
 ORDER BY player_id FOR NO KEY UPDATE"""

# A player's applied operations that limits count: (player, time, loss, deposit). A
# payout counts back against loss; a rollback of a payout or of a casino debit undoes it.
_LOSS = """CASE t.operation
            WHEN 'stake' THEN t.amount
            WHEN 'casino_debit' THEN t.amount
            WHEN 'settle' THEN -t.payout
            WHEN 'casino_credit' THEN -t.amount
            WHEN 'unsettle' THEN r.payout
            WHEN 'casino_rollback' THEN -r.amount
       END"""
_COUNTED = """t.status = 'applied'
   AND t.operation IN ('deposit', 'stake', 'settle', 'unsettle', 'casino_debit',
                       'casino_credit', 'casino_rollback')"""

_ACTIVITY_SQL = f"""
SELECT t.player_id, t.occurred_at, {_LOSS} AS loss,
       CASE WHEN t.operation = 'deposit' THEN t.amount END AS deposit
  FROM ledger_transactions t
  LEFT JOIN ledger_transactions r ON r.txn_id = t.reference_id
 WHERE t.player_id = ANY(%s) AND t.occurred_at > %s AND {_COUNTED}"""  # noqa: S608 - constants

MONEY_LIMITS: tuple[LimitKind, ...] = ("loss", "deposit")

_SESSIONS_SQL = """
SELECT player_id, started_at, ended_at FROM player_sessions
 WHERE player_id = ANY(%s) AND (ended_at IS NULL OR ended_at > %s)"""


async def read_usage(
    conn: Any, money: Sequence[str], timed: Sequence[str], since: datetime
) -> dict[str, Usage]:
    """The activity since ``since``: ledger records of ``money``, sessions of ``timed``."""
    usage: dict[str, Usage] = {}
    if money:
        cursor = await conn.execute(_ACTIVITY_SQL, (list(money), since))
        for pid, at, loss, deposit in await cursor.fetchall():
            u = usage.setdefault(pid, Usage())
            if loss is not None:
                u.loss.append((at, Decimal(loss)))
            if deposit is not None:
                u.deposits.append((at, Decimal(deposit)))
    if timed:
        cursor = await conn.execute(_SESSIONS_SQL, (list(timed), since))
        for pid, started, ended in await cursor.fetchall():
            usage.setdefault(pid, Usage()).sessions.append((started, ended))
    return usage


@dataclass
class Guarded:
    """The standings and activity of a transaction's players, and the checks on them."""

    policies: Policies
    standings: dict[str, PlayerState] = field(default_factory=dict)
    usage: dict[str, Usage] = field(default_factory=dict)

    def version(self, player_id: str) -> int | None:
        standing = self.standings.get(player_id)
        return None if standing is None else standing.version

    def jurisdiction(self, player_id: str) -> str | None:
        standing = self.standings.get(player_id)
        return None if standing is None else standing.jurisdiction

    def currency(self, player_id: str) -> str | None:
        standing = self.standings.get(player_id)
        return None if standing is None else standing.currency

    def check(
        self,
        player_id: str,
        *,
        action: compliance.Action,
        currency: str,
        amount: Decimal,
        at: datetime,
    ) -> compliance.Blocked | None:
        """Ask the compliance rules about one action (``count`` it once it goes ahead)."""
        return compliance.check(
            self.standings.get(player_id),
            action=action,
            currency=currency,
            at=at,
            policies=self.policies,
            amount=amount,
            usage=self.usage.get(player_id),
        )

    def count(
        self, player_id: str, *, action: compliance.Action, amount: Decimal, at: datetime
    ) -> None:
        """Count an action that goes ahead against the player's later checks in the batch."""
        usage = self.usage.setdefault(player_id, Usage())
        if action in ("bet", "casino_debit"):
            usage.loss.append((at, amount))
        elif action == "deposit":
            usage.deposits.append((at, amount))

    def count_win(self, player_id: str, *, amount: Decimal, at: datetime) -> None:
        """Count money paid back (a casino win, a rollback's refund) against the loss."""
        self.usage.setdefault(player_id, Usage()).loss.append((at, -amount))


async def guard(conn: Any, policies: Policies, player_ids: Sequence[str], at: datetime) -> Guarded:
    """Read what the compliance rules need in ``conn``'s transaction, locking the rows of
    players whose money limits could race across products."""
    out = Guarded(policies)
    ids = sorted(set(player_ids))
    if not ids:
        return out
    cursor = await conn.execute(_STANDINGS_SQL, (ids,))
    for pid, standing in await cursor.fetchall():
        out.standings[pid] = PlayerState.model_validate(standing)
    limited = [p for p, s in out.standings.items() if has_limits(s.limits, MONEY_LIMITS, at)]
    if limited:
        cursor = await conn.execute(_LOCKED_SQL, (sorted(limited),))
        for pid, standing in await cursor.fetchall():  # as committed when the lock was granted
            out.standings[pid] = PlayerState.model_validate(standing)
    money = [p for p, s in out.standings.items() if has_limits(s.limits, MONEY_LIMITS, at)]
    timed = [p for p, s in out.standings.items() if has_limits(s.limits, ("session",), at)]
    out.usage = await read_usage(conn, money, timed, earliest_start(at))
    return out


# The same reads in one statement: ``bets_load`` (migration 0029), in the placement's
# transaction. Which players have a limit in force is the rules' question, asked after the
# reads; so the statements pick players by the kinds of limit their standing holds at all
# (a superset: a limit still cooling off, or expired, is locked and read for nothing).


# Standings parsed before, by their exact stored JSON (jsonb prints one text for one
# value, and a standing carries its version): a row read again still decides, and parsing
# it again was most of protection's CPU. Oldest out first past the bound.
_PARSED: dict[str, PlayerState] = {}
_PARSED_MAX = 4096


def parse_standing(text: str) -> PlayerState:
    """The standing stored as ``text``, parsed once per process (a frozen model)."""
    state = _PARSED.get(text)
    if state is None:
        state = PlayerState.model_validate_json(text)
        if len(_PARSED) >= _PARSED_MAX:
            del _PARSED[next(iter(_PARSED))]
        _PARSED[text] = state
    return state


def _kinds(kinds: Sequence[str]) -> list[str]:
    return [json.dumps([{"kind": k}]) for k in kinds]


def guarded_from(
    policies: Policies,
    at: datetime,
    every: Sequence[tuple[str, str]],
    locked: Sequence[tuple[str, str]],
    activity: Sequence[tuple[str, str, str | None, str | None]],
    sessions: Sequence[tuple[str, str, str | None]],
) -> Guarded:
    """What ``guard`` gives, from ``bets_load``'s protection rows (migration 0029, as JSON):
    standings as stored text, the locked ones last; times in ISO 8601, amounts as text."""
    out = Guarded(policies)
    for pid, standing in every:
        out.standings[pid] = parse_standing(standing)
    for pid, standing in locked:  # as committed when the lock was granted
        out.standings[pid] = parse_standing(standing)
    money = {p for p, s in out.standings.items() if has_limits(s.limits, MONEY_LIMITS, at)}
    timed = {p for p, s in out.standings.items() if has_limits(s.limits, ("session",), at)}
    usage = out.usage
    for pid, when, loss, deposit in activity:
        if pid in money:
            u = usage.setdefault(pid, Usage())
            if loss is not None:
                u.loss.append((datetime.fromisoformat(when), Decimal(loss)))
            if deposit is not None:
                u.deposits.append((datetime.fromisoformat(when), Decimal(deposit)))
    for pid, started, ended in sessions:
        if pid in timed:
            end = None if ended is None else datetime.fromisoformat(ended)
            usage.setdefault(pid, Usage()).sessions.append((datetime.fromisoformat(started), end))
    return out


def guard_kinds() -> tuple[list[str], list[str]]:
    """The limit kinds ``bets_load`` locks and reads by (money, session), as jsonb texts."""
    return _kinds(MONEY_LIMITS), _kinds(("session",))


# -- sessions: reality checks and session-time limits ---------------------------------------

# The open sessions that need attention now: a reality check due (the n-th interval of
# their jurisdiction has passed and fewer than n checks were sent), or a session-time limit
# to watch. Sessions with neither are not even read.
_ATTENTION_SQL = """
SELECT s.player_id, s.session_id, s.started_at, p.standing, coalesce(c.last, 0)
  FROM player_sessions s
  JOIN players p USING (player_id)
  JOIN unnest(%s::text[], %s::float8[]) AS pol(jurisdiction, every)
    ON pol.jurisdiction = p.jurisdiction
  LEFT JOIN LATERAL (
        SELECT max(r.sequence) AS last FROM reality_checks r
         WHERE r.player_id = s.player_id AND r.session_id = s.session_id
           AND r.started_at = s.started_at) c ON true
 WHERE s.ended_at IS NULL
   AND (floor(extract(epoch FROM %s - s.started_at) / pol.every) > coalesce(c.last, 0)
        OR p.standing -> 'limits' @> '[{"kind": "session"}]')
 ORDER BY s.player_id"""

# Loss since each player's session start: stakes minus winnings (net position = -loss).
_NET_SQL = f"""
SELECT t.player_id, coalesce(sum({_LOSS}), 0)
  FROM unnest(%s::text[], %s::timestamptz[]) AS d(player_id, since)
  JOIN ledger_transactions t ON t.player_id = d.player_id AND t.occurred_at > d.since
  LEFT JOIN ledger_transactions r ON r.txn_id = t.reference_id
 WHERE {_COUNTED}
 GROUP BY 1"""  # noqa: S608 - constants

_CHECK_SQL = """
INSERT INTO reality_checks (player_id, session_id, started_at, sequence, elapsed_seconds,
                            net_position, currency, message)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"""


@dataclass(frozen=True)
class OpenSessionRow:
    """An open session with its player's standing and the last reality check sent."""

    player_id: str
    session_id: str
    started_at: datetime
    standing: PlayerState
    last_check: int  # 0: none yet


@dataclass(frozen=True)
class RealityCheck:
    player_id: str
    session_id: str
    started_at: datetime
    sequence: int
    elapsed_seconds: int
    net_position: Decimal
    currency: str
    message: str  # the JSON to publish


# One pass at a time across every worker: the others skip their tick.
_WATCH_LOCK = 0x63_72_6F_75_70_69_65  # "croupie"


class SessionSink(PgSink):
    """What the session watcher reads and records, one worker's pass at a time."""

    async def watch(
        self,
        at: datetime,
        intervals: dict[str, float],
        plan: Callable[
            [list[OpenSessionRow], dict[str, Usage], dict[str, Decimal]],
            tuple[list[RealityCheck], list[OpenSessionRow]],
        ],
        send: Callable[[Sequence[RealityCheck], Sequence[OpenSessionRow]], Awaitable[None]],
    ) -> bool:
        """One pass over the open sessions; ``False`` when another worker holds the pass.

        ``intervals`` is each jurisdiction's reality-check interval in seconds. ``plan``
        gets the sessions that need attention, the session spans of players with a
        session-time limit and each player's loss since their session started; it decides
        the reality checks due and the sessions to end. ``send`` publishes them and waits
        for Kafka. Only checks not recorded before are sent, and the record commits after
        Kafka has them: a crash may send one twice (same sequence), never lose one.
        """
        async with self.transaction() as conn:
            cursor = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_WATCH_LOCK,))
            row = await cursor.fetchone()
            if not row or not row[0]:
                return False
            cursor = await conn.execute(
                _ATTENTION_SQL, (list(intervals), list(intervals.values()), at)
            )
            rows = [
                OpenSessionRow(pid, sid, started, PlayerState.model_validate(standing), last)
                for pid, sid, started, standing, last in await cursor.fetchall()
            ]
            timed = sorted({r.player_id for r in rows
                            if has_limits(r.standing.limits, ("session",), at)})  # fmt: skip
            usage = await read_usage(conn, (), timed, earliest_start(at))
            loss: dict[str, Decimal] = {}
            if rows:
                cursor = await conn.execute(
                    _NET_SQL, ([r.player_id for r in rows], [r.started_at for r in rows])
                )
                loss = {pid: Decimal(total) for pid, total in await cursor.fetchall()}
            checks, ends = plan(rows, usage, loss)
            fresh = []
            for c in checks:
                cursor = await conn.execute(
                    _CHECK_SQL + " RETURNING sequence",
                    (c.player_id, c.session_id, c.started_at, c.sequence, c.elapsed_seconds,
                     c.net_position, c.currency, c.message),
                )  # fmt: skip
                if await cursor.fetchone():
                    fresh.append(c)
            await send(fresh, ends)
        return True
