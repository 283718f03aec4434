"""The eight invariants of a running stack, gathered from topics, PostgreSQL and ClickHouse.

Every fact is read in bulk (a topic scan by position, one set-based query per question);
the verdicts come from the pure functions of ``croupier.checks``. What each flow records
per input (its *outcome*, keyed by the input's Kafka position):

``bets``      a ``bets`` row (decided), a ``bet_duplicates`` row (a producer's retry of a bet
              decided before), or a dead letter (undecodable; same id, other content)
``payments``  a ``payment_events`` row (decided, duplicate or retry), or a dead letter
``casino``    a ``casino_calls`` row (decided, duplicate, conflict or retry), or a dead letter
``players``   a ``player_events`` row (applied or unchanged), or a dead letter
``odds``      settlement-kind messages a ``market_messages`` row, or a dead letter;
              ``odds_change``, ``bet_stop`` and ``alive`` only move the odds and feed-health
              tables, which keep no per-message row: they are checked as done by the flow's
              progress, and a malformed one needs its dead letter
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg

from config.settings import Settings
from croupier import checks
from croupier.checks import (
    Aggregate,
    Decisions,
    Position,
    Row,
    classify_outcomes,
    compare_decisions,
    diff_aggregates,
    diff_keys,
    like_prefix,
)
from croupier.checks.kafka import ends, scan
from rules import ledger_keys
from topologies.topics import INBOUND

_OUTCOME_TABLES = {
    "bets": ("bets", "bet_duplicates"),
    "payments": ("payment_events",),
    "casino": ("casino_calls",),
    "players": ("player_events",),
    "odds": ("market_messages",),
}
_TABLE_ONLY = frozenset({"odds_change", "bet_stop", "alive"})  # odds types with no row


def _count(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> int:
    row = conn.execute(sql.encode(), params).fetchone()
    return int(row[0]) if row else 0


def _pos(p: Position) -> str:
    return f"{p[0]}/{p[1]}"


# -- catching up -------------------------------------------------------------------------


def progress(conn: psycopg.Connection[Any], settings: Settings, topic: str) -> dict[int, int]:
    rows = conn.execute(
        "SELECT partition, next_offset FROM consumer_progress "
        "WHERE consumer_group = %s AND topic = %s",
        (settings.app_id, settings.topic(topic)),
    ).fetchall()
    return {int(p): int(o) for p, o in rows}


def _behind(conn: psycopg.Connection[Any], settings: Settings, clickhouse: bool) -> list[str]:
    out = []
    for name in INBOUND:
        topic = settings.topic(name)
        done = progress(conn, settings, name)
        for p, (low, high) in sorted(ends(settings, topic).items()):
            at = max(done.get(p, 0), low)
            if at < high:
                out.append(f"{topic}[{p}]: flow done to {at}, topic ends at {high} "
                           f"({high - at} not processed)")  # fmt: skip
    unrelayed = _count(
        conn,
        """SELECT coalesce(sum(h.seq - coalesce(p.seq, 0)), 0)
             FROM audit_heads h LEFT JOIN audit_published p USING (chain)""",
    )
    if unrelayed:
        out.append(f"audit relay: {unrelayed} committed audit record(s) not yet published")
    if clickhouse:
        from croupier import analytics

        lag = analytics.lag(settings)
        if lag:
            out.append(f"analytics sink: {lag} audit record(s) not yet in ClickHouse")
    return out


def catch_up(
    conn: psycopg.Connection[Any],
    settings: Settings,
    *,
    wait: float,
    clickhouse: bool,
    on_progress: Callable[[int, int], None] | None = None,
) -> Row:
    """Wait (up to ``wait`` seconds) until the flows, the relay and the sink are done;
    ``on_progress(caught up, parts)`` after each look."""
    row = Row("workers caught up (flows, audit relay, analytics sink)")
    row.checked = len(INBOUND) + 1 + int(clickhouse)
    deadline = time.monotonic() + wait
    while True:
        behind = _behind(conn, settings, clickhouse)
        if on_progress is not None:
            on_progress(max(0, row.checked - len(behind)), row.checked)
        if not behind or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    for what in behind:
        row.breach(what)
    if behind:
        row.notes.append(f"still behind after {wait:g} s: the inputs they have not reached "
                         "are counted as pending, not as breaches")  # fmt: skip
    return row


# -- 1 and 2: outcomes and decisions -----------------------------------------------------


def _outcome_counts(
    conn: psycopg.Connection[Any], topic: str, tables: tuple[str, ...]
) -> dict[Position, int]:
    parts = [
        f"SELECT source_partition, source_offset FROM {t} WHERE source_topic = %(t)s"  # noqa: S608 - constants
        for t in (*tables, "dead_letters")
    ]
    union = " UNION ALL ".join(parts)
    sql = f"SELECT source_partition, source_offset, count(*) FROM ({union}) o GROUP BY 1, 2"  # noqa: S608 - constants
    return {(int(p), int(o)): int(n) for p, o, n in conn.execute(sql.encode(), {"t": topic})}


def _matches(prefix: str | None, key: bytes | None) -> bool:
    return prefix is None or (key is not None and key.startswith(prefix.encode()))


def outcomes_and_decisions(
    conn: psycopg.Connection[Any], settings: Settings, prefix: str | None
) -> tuple[Row, Row]:
    """Rows 1 and 2: every input's single outcome, published; no bet decided twice."""
    from schemas.decode import DecodeFailure, decode
    from schemas.odds import ODDS_MESSAGE

    one = Row("every input has exactly one outcome (decision or dead letter)")
    two = Row("no bet decided twice")

    published_letters: set[tuple[str, int, int]] = set()

    def letter(p: int, off: int, key: bytes | None, value: bytes | None) -> None:
        if _matches(prefix, key) and value:
            src = json.loads(value)["source"]
            published_letters.add((src["topic"], int(src["partition"]), int(src["offset"])))

    scan(settings, settings.topic("dead-letters"), letter)

    pending = 0
    for name in INBOUND:
        topic = settings.topic(name)
        needs: list[Position] = []
        table_only: list[Position] = []

        def take(p: int, off: int, key: bytes | None, value: bytes | None,
                 odds: bool = name == "odds", needs: list[Position] = needs,
                 table_only: list[Position] = table_only) -> None:  # fmt: skip
            if not _matches(prefix, key):
                return
            if odds:
                msg = decode(ODDS_MESSAGE, value)
                if not isinstance(msg, DecodeFailure) and msg.type in _TABLE_ONLY:
                    table_only.append((p, off))
                    return
            needs.append((p, off))

        scan(settings, topic, take)
        done = progress(conn, settings, name)
        counts = _outcome_counts(conn, topic, _OUTCOME_TABLES[name])
        result = classify_outcomes(topic, needs, counts, done)
        # A table-only odds message has its outcome in the odds table, or, when the flow
        # refused it after decoding (a clock too far off, a message set aside), in its one
        # dead letter: the table did not take it.
        result.inputs += len(table_only)
        for pos in table_only:
            if counts.get(pos, 0) > 1:
                result.several.append((pos, counts[pos]))
            elif counts.get(pos, 0) == 1:
                result.decided += 1
            elif pos[1] >= done.get(pos[0], 0):
                result.pending.append(pos)
            else:
                result.decided += 1
        one.checked += result.inputs
        pending += len(result.pending)
        for pos in result.missing:
            one.breach(f"{topic} {_pos(pos)}: no outcome, though the flow is done past it")
        for pos, n in result.several:
            one.breach(f"{topic} {_pos(pos)}: {n} outcomes")
        stored_letters = {
            (int(p), int(o))
            for p, o in conn.execute(
                "SELECT source_partition, source_offset FROM dead_letters WHERE source_topic = %s",
                (topic,),
            )
        }
        wanted = stored_letters & {*needs, *table_only}
        for p, o in sorted(wanted):
            if (topic, p, o) not in published_letters:
                one.breach(f"{topic} {p}/{o}: dead letter stored, never published on dead-letters")
    if pending:
        one.notes.append(f"{pending} input(s) not reached by the workers yet (pending)")

    published = Decisions()

    def decision(p: int, off: int, key: bytes | None, value: bytes | None) -> None:
        if value and _matches(prefix, key):
            published.add(json.loads(value)["bet_id"], value)

    scan(settings, settings.topic("bet-decisions"), decision)
    stored = dict(
        conn.execute(
            "SELECT bet_id, md5(decision) FROM bets WHERE bet_id LIKE %s",
            (like_prefix(prefix),),
        ).fetchall()
    )
    twice, unstored, unpublished = compare_decisions(
        published, stored, lambda v: hashlib.md5(v).hexdigest()
    )
    two.checked = len(published.values)
    for bet_id, values in sorted(twice.items()):
        shown = " | ".join(v.decode(errors="replace") for v in values[:2])
        two.breach(f"bet {bet_id}: {len(values)} different decisions published: {shown}")
    for bet_id in unstored:
        two.breach(f"bet {bet_id}: the decision published is not the one stored")
    republished = published.republished()
    if republished:
        two.notes.append(f"{republished} decision(s) republished byte for byte (a retry "
                         "answered again, or a replay after a crash: not a breach)")  # fmt: skip
    for bet_id in unpublished:
        one.breach(f"bet {bet_id}: decided and stored, never published on bet-decisions")
    return one, two


# -- 3, 4, 5: the ledger -----------------------------------------------------------------

_STAKES_SQL = """
SELECT b.bet_id, b.status, b.stake, t.operation, t.status, t.amount
  FROM bets b LEFT JOIN ledger_transactions t ON t.idempotency_key = %(bet)s || b.bet_id
 WHERE b.bet_id LIKE %(like)s
   AND ((b.status <> 'rejected' AND (t.txn_id IS NULL OR t.status <> 'applied'
                                     OR t.operation <> 'stake' OR t.amount <> b.stake))
     OR (b.status = 'rejected' AND t.status = 'applied'))
 LIMIT 1000"""

_ORPHAN_STAKES_SQL = """
SELECT t.idempotency_key, t.amount, t.currency
  FROM ledger_transactions t LEFT JOIN bets b ON t.idempotency_key = %(bet)s || b.bet_id
 WHERE t.operation = 'stake' AND t.status = 'applied' AND b.bet_id IS NULL
   AND t.player_id LIKE %(like)s
 LIMIT 1000"""

# Per bet, the settlements in force (applied, no applied unsettle) against the book.
_PAYOUTS_SQL = """
WITH live AS (
    SELECT substr(st.idempotency_key, length(%(bet)s) + 1) AS bet_id, s.idempotency_key AS key,
           s.payout
      FROM ledger_transactions s JOIN ledger_transactions st ON st.txn_id = s.reference_id
     WHERE s.operation = 'settle' AND s.status = 'applied' AND s.player_id LIKE %(like)s
       AND NOT EXISTS (SELECT 1 FROM ledger_transactions u
                        WHERE u.reference_id = s.txn_id AND u.operation = 'unsettle'
                          AND u.status = 'applied')),
per_bet AS (SELECT bet_id, count(*) AS n, min(key) AS key, min(payout) AS payout
              FROM live GROUP BY bet_id),
book AS (SELECT bet_id, settlement_id, payout FROM bets
          WHERE status = 'settled' AND bet_id LIKE %(like)s)
SELECT coalesce(b.bet_id, l.bet_id), l.n, l.key, l.payout, b.settlement_id, b.payout
  FROM book b FULL JOIN per_bet l ON l.bet_id = b.bet_id
 WHERE l.n IS DISTINCT FROM 1 OR b.bet_id IS NULL
    OR l.key IS DISTINCT FROM %(settlement)s || b.settlement_id
    OR l.payout IS DISTINCT FROM b.payout
 LIMIT 1000"""


def money_moved_once(conn: psycopg.Connection[Any], prefix: str | None) -> Row:
    """Row 3: one stake per accepted bet (none for a rejected one), one payout in force."""
    row = Row("no stake reserved or payout paid twice")
    like = {"like": like_prefix(prefix)}
    row.checked = _count(conn, "SELECT count(*) FROM bets WHERE bet_id LIKE %(like)s", like)
    row.checked += _count(
        conn,
        "SELECT count(*) FROM ledger_transactions WHERE operation IN ('settle', 'unsettle') "
        "AND player_id LIKE %(like)s",
        like,
    )
    # The ledger's key prefixes (rules/ledger_keys.py), bound as parameters.
    keyed = like | {
        "bet": ledger_keys.prefix("bet"),
        "settlement": ledger_keys.prefix("settlement"),
    }
    for bet_id, status, stake, op, t_status, amount in conn.execute(_STAKES_SQL, keyed):
        key = ledger_keys.stake(bet_id)
        if status == "rejected":
            row.breach(f"bet {bet_id}: rejected, yet {key} reserved {amount}")
        elif op is None:
            row.breach(f"bet {bet_id}: {status} with no stake transaction {key}")
        else:
            row.breach(f"bet {bet_id}: {status} stake {stake}, ledger {key} is "
                       f"{op} {t_status} {amount}")  # fmt: skip
    for key, amount, currency in conn.execute(_ORPHAN_STAKES_SQL, keyed):
        row.breach(f"{key}: stake of {amount} {currency} reserved for no decided bet")
    for bet_id, n, key, payout, settlement_id, book_payout in conn.execute(_PAYOUTS_SQL, keyed):
        if n and n > 1:
            row.breach(f"bet {bet_id}: {n} settlements in force in the ledger (paid twice)")
        elif settlement_id is None:
            row.breach(f"bet {bet_id}: the ledger's {key} pays {payout}, the bet is not settled")
        elif key is None:
            row.breach(f"bet {bet_id}: settled by {settlement_id}, which the ledger "
                       "has not in force")  # fmt: skip
        else:
            row.breach(f"bet {bet_id}: book {settlement_id} pays {book_payout}, "
                       f"ledger {key} pays {payout}")  # fmt: skip
    return row


def no_negative_balance(conn: psycopg.Connection[Any]) -> Row:
    """Row 4: no wallet account below zero, now or after any transaction. A debt account
    is the one the other way round: zero or below (what the player owes, negated), never
    above (a debt account holding credit would be money kept off the cash)."""
    row = Row("no negative balance")
    row.checked = _count(conn, "SELECT count(*) FROM ledger_accounts WHERE balance IS NOT NULL")
    for owner, kind, currency, balance in conn.execute(
        """SELECT owner, kind, currency, balance FROM ledger_accounts
            WHERE CASE WHEN kind = 'debt' THEN balance > 0 ELSE balance < 0 END LIMIT 100"""
    ):
        row.breach(f"{owner} {kind} {currency.strip()}: {balance}")
    for key, cash, pending in conn.execute(
        """SELECT idempotency_key, cash_after, pending_after FROM ledger_transactions
            WHERE status = 'applied' AND (cash_after < 0 OR pending_after < 0) LIMIT 100"""
    ):
        row.breach(f"{key}: left cash {cash}, pending {pending}")
    return row


def books_balance(conn: psycopg.Connection[Any]) -> Row:
    """Row 5: ``Ledger.reconcile()``: entries balance per currency, balances equal entries."""
    from sinks.postgres.ledger import Ledger

    return checks.books_balance(Ledger(conn).reconcile())


# -- 6: settlements against a replay -----------------------------------------------------


def settlements_replay(conn: psycopg.Connection[Any], prefix: str | None) -> Row:
    """Row 6: every bet with a settlement history, replayed from the recorded events
    (``sinks/postgres/replay/settlement.py``'s checks), loaded in chunks, not bet by bet."""
    from croupier.checks.replay import settled_reports

    row = Row("settlements match a replay")
    for report in settled_reports(conn, like_prefix(prefix)):
        row.checked += 1
        if not report.agree:
            bad = [f"{c.name}: {c.detail}" for c in report.checks if not c.ok]
            row.breach(f"bet {report.bet.bet_id}: " + "; ".join(bad))
    return row


# -- 7: the audit trail ------------------------------------------------------------------


def audit_trail(conn: psycopg.Connection[Any], pin: Any = None) -> Row:
    """Row 7: chains and checkpoints verify (``croupier audit verify``; the checkpoints
    only with a pinned key, ``pin``), and the trail rebuilds every wallet to the ledger's
    balances (``croupier audit rebuild --all``)."""
    from sinks.postgres import audit
    from sinks.postgres.rebuild import rebuild

    result = audit.verify(conn)
    checkpoints, signed = audit.verify_checkpoints(conn, pin) if pin is not None else (0, [])
    wallets = rebuild(conn)
    row = checks.audit_trail(result, wallets, signed)
    if pin is None:
        row.notes.append("checkpoints not checked: no pinned key (CROUPIER_AUDIT_PUBLIC_KEY)")
    row.checked = result.records + checkpoints + len(wallets)
    row.notes.append(f"{result.records} records in {result.chains} chains, {checkpoints} "
                     f"checkpoints, {len(wallets)} wallets rebuilt")  # fmt: skip
    return row


# -- 8: ClickHouse -----------------------------------------------------------------------


def _ch_prefix(prefix: str | None) -> str:
    if prefix is None:
        return "1"
    quoted = prefix.replace("\\", "\\\\").replace("'", "\\'")
    return f"startsWith(player_id, '{quoted}')"


def _aggregate(rows: list[Any]) -> Aggregate:
    return {
        tuple(str(v).strip() for v in r[:-3]): (int(r[-3]), Decimal(r[-2]), Decimal(r[-1]))
        for r in rows
    }


def clickhouse_facts(
    conn: psycopg.Connection[Any], settings: Settings, prefix: str | None, ch: Any
) -> Row:
    """Row 8: ClickHouse's ledger transactions, bets and casino wallet calls against
    PostgreSQL's: per currency and kind the count, the money moved (credit entries) and
    payouts, stakes and prices, or amounts and how many moved money; and the sets of
    business keys (idempotency keys, bet ids, transaction ids)."""
    row = Row("ClickHouse holds exactly the ledger's facts")
    db, where = settings.clickhouse_database, _ch_prefix(prefix)
    like = {"like": like_prefix(prefix)}
    pairs: list[tuple[str, str, str, str]] = [
        (
            "ledger_transactions",
            # What each transaction moved (its credit entries): the request's amount is
            # what the audit carries, the stored one is derived for a referencing operation.
            """SELECT t.currency, t.operation, t.status, count(*), coalesce(sum(m.moved), 0),
                      coalesce(sum(t.payout), 0)
                 FROM ledger_transactions t
                 LEFT JOIN (SELECT txn_id, sum(amount) AS moved FROM ledger_entries
                             WHERE amount > 0 GROUP BY txn_id) m USING (txn_id)
                WHERE t.player_id LIKE %(like)s GROUP BY 1, 2, 3""",
            f"""SELECT currency, operation, status, count(),
                       sum(arraySum(arrayFilter(x -> x > 0, entry_amount))), sum(ifNull(payout, 0))
                  FROM {db}.ledger_transactions FINAL WHERE {where} GROUP BY 1, 2, 3""",  # noqa: S608 - a checked identifier, a quoted prefix
            "key",
        ),
        (
            "bets",
            """SELECT currency, CASE WHEN status = 'rejected' THEN 'rejected'
                                     ELSE 'accepted' END, count(*), sum(stake),
                      coalesce(sum(odds), 0)
                 FROM bets WHERE player_id LIKE %(like)s GROUP BY 1, 2""",
            f"""SELECT currency, status, count(), sum(stake), sum(ifNull(odds, 0))
                  FROM {db}.bets FINAL WHERE {where} GROUP BY 1, 2""",  # noqa: S608 - as above
            "bet_id",
        ),
        (
            "casino_transactions",
            # Every wallet call a game made, the refused ones too (those move no money, so
            # the ledger's transactions alone do not show them).
            """SELECT currency, type, status, count(*), sum(amount),
                      count(*) FILTER (WHERE moved)
                 FROM casino_transactions WHERE player_id LIKE %(like)s GROUP BY 1, 2, 3""",
            f"""SELECT currency, type, status, count(), sum(amount), countIf(moved)
                  FROM {db}.casino_transactions FINAL WHERE {where} GROUP BY 1, 2, 3""",  # noqa: S608 - as above
            "transaction_id",
        ),
    ]
    keys_sql = {
        "ledger_transactions": "SELECT idempotency_key FROM ledger_transactions "
        "WHERE player_id LIKE %(like)s",
        "bets": "SELECT bet_id FROM bets WHERE player_id LIKE %(like)s",
        "casino_transactions": "SELECT transaction_id FROM casino_transactions "
        "WHERE player_id LIKE %(like)s",
    }
    for table, pg_sql, ch_sql, key in pairs:
        ledger = _aggregate(conn.execute(pg_sql.encode(), like).fetchall())
        analytics = _aggregate(ch.query(ch_sql))
        for d in diff_aggregates(ledger, analytics):
            row.breach(f"{table} {d}")
        pg_keys = {k for (k,) in conn.execute(keys_sql[table].encode(), like)}
        keys = f"SELECT {key} FROM {db}.{table} FINAL WHERE {where}"  # noqa: S608 - as above
        ch_keys = {str(k) for (k,) in ch.query(keys)}
        row.checked += len(pg_keys)
        missing, extra = diff_keys(pg_keys, ch_keys)
        for k in missing[:3]:
            row.breach(f"{table} {k}: in PostgreSQL, not in ClickHouse")
        row.breaches += max(0, len(missing) - 3)
        for k in extra[:3]:
            row.breach(f"{table} {k}: in ClickHouse, not in PostgreSQL")
        row.breaches += max(0, len(extra) - 3)
    return row
