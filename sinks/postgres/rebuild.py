"""Event-sourced rebuild: a wallet reconstructed from the audit trail alone, set beside the
ledger.

Every operation the ledger records through a flow leaves an audit record
(``entity = 'ledger_transaction'``, see ``ledger.ledger_records``) with the request, the
ledger's answer and every entry it posted. Replaying a player's records in ledger order
(the transaction id each names) gives their accounts (cash, pending, withdrawal reserve
and debt per currency), their balances and every entry, without reading a ledger table. The
rebuild is then compared with the ledger: the stored balances, every entry of the
player's accounts, and the balance after each operation the ledger answered with. A
ledger transaction of the player with no audit record, or the other way round, is a
difference too: the trail must be complete to be the truth.

The replay checks the trail's own arithmetic as it goes: no account goes below zero (a
debt account: above zero), each operation split its money between cash and debt as the
debt rule says (``rules/ledger.py``: a rollback's shortfall becomes debt, money coming back
pays a debt first), and the cash and pending balances after each applied record are the
ones the record states.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

from rules.ledger import split

PLAYER_ACCOUNTS = ("cash", "pending", "withdrawal_reserve", "debt")
_ZERO = Decimal(0)


@dataclass
class Wallet:
    """One player's wallet as the trail tells it, and where it differs from the ledger."""

    player_id: str
    balances: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # (cur, kind)
    entries: list[tuple[int, str, str, Decimal]] = field(default_factory=list)
    operations: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def to_json(self) -> dict[str, Any]:
        return {
            "player_id": self.player_id, "ok": self.ok, "operations": self.operations,
            "entries": len(self.entries),
            "balances": [{"currency": c, "account": k, "balance": str(v)}
                         for (c, k), v in sorted(self.balances.items())],
            "differences": self.differences,
        }  # fmt: skip


def replay(player_id: str, records: Iterable[dict[str, Any]]) -> Wallet:
    """The wallet the records (the ``after`` of each) build, in transaction order."""
    wallet = Wallet(player_id)
    for rec in sorted(records, key=lambda r: int(r["txn_id"])):
        wallet.operations += 1
        if rec["status"] != "applied":
            continue
        currency = str(rec["currency"])
        cash_before = wallet.balances.get((currency, "cash"), _ZERO)
        debt_before = wallet.balances.get((currency, "debt"), _ZERO)
        moved: dict[str, Decimal] = {}
        for entry in rec["entries"]:
            if entry["owner"] != player_id:
                continue  # the house's side
            kind = str(entry["account"])
            slot = (currency, kind)
            amount = Decimal(entry["amount"])
            moved[kind] = moved.get(kind, _ZERO) + amount
            wallet.balances[slot] = wallet.balances.get(slot, _ZERO) + amount
            wallet.entries.append((int(rec["txn_id"]), currency, kind, amount))
            held = wallet.balances[slot]
            if held > 0 if kind == "debt" else held < 0:
                side = "above" if kind == "debt" else "below"
                wallet.differences.append(
                    f"{rec['key']}: {kind} {currency} {side} zero in the trail"
                )
        _check_debt_rule(wallet, rec, cash_before, debt_before, moved)
        for kind, stated in (("cash", rec["cash_after"]), ("pending", rec["pending_after"])):
            held = wallet.balances.get((currency, kind), Decimal(0))
            if held != Decimal(stated):
                wallet.differences.append(
                    f"{rec['key']}: the trail sums {kind} to {held}, the record says {stated}"
                )
    return wallet


def _check_debt_rule(
    wallet: Wallet, rec: dict[str, Any], cash: Decimal, debt: Decimal, moved: dict[str, Decimal]
) -> None:
    """Did the record split the player's money between cash and debt as the rule says?"""
    got = (moved.get("cash", _ZERO), moved.get("debt", _ZERO))
    # A trail already broken (flagged above) is read as kindly as it allows.
    want = split(str(rec["operation"]), max(cash, _ZERO), max(-debt, _ZERO), got[0] + got[1])
    if got != (want.cash, want.debt):
        wallet.differences.append(
            f"{rec['key']}: moved cash {got[0]} and debt {got[1]}; the debt rule says cash "
            f"{want.cash} and debt {want.debt}"
        )


_TRAIL_SQL = """
SELECT body FROM audit_records
 WHERE entity = 'ledger_transaction'
   AND (%(player)s::text IS NULL OR body::jsonb -> 'after' ->> 'player_id' = %(player)s)"""

_PLAYERS_SQL = """
SELECT DISTINCT owner FROM ledger_accounts
 WHERE owner <> 'house' AND (%(player)s::text IS NULL OR owner = %(player)s)"""


def _trail(conn: psycopg.Connection[Any], player_id: str | None) -> dict[str, list[Any]]:
    by_player: dict[str, list[Any]] = {}
    for (body,) in conn.execute(_TRAIL_SQL, {"player": player_id}):
        after = json.loads(body)["after"]
        by_player.setdefault(after["player_id"], []).append(after)
    return by_player


def rebuild(
    conn: psycopg.Connection[Any],
    player_id: str | None = None,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Wallet]:
    """Rebuild one player's wallet (or every player's) from the trail; compare.
    ``on_progress(done, total)`` after each wallet."""
    trail = _trail(conn, player_id)
    ledger_players = {r[0] for r in conn.execute(_PLAYERS_SQL, {"player": player_id})}
    wallets = []
    players = sorted(set(trail) | ledger_players)
    for pid in players:
        wallet = replay(pid, trail.get(pid, []))
        _compare(conn, wallet, {int(r["txn_id"]) for r in trail.get(pid, [])})
        wallets.append(wallet)
        if on_progress is not None:
            on_progress(len(wallets), len(players))
    return wallets


def _compare(conn: psycopg.Connection[Any], wallet: Wallet, audited: set[int]) -> None:
    pid = wallet.player_id
    stored = {
        (c.strip(), k): Decimal(b) for c, k, b in conn.execute(
            "SELECT currency, kind, balance FROM ledger_accounts WHERE owner = %s", (pid,))
    }  # fmt: skip
    for slot in sorted(set(stored) | set(wallet.balances)):
        have, want = wallet.balances.get(slot, Decimal(0)), stored.get(slot, Decimal(0))
        if have != want:
            wallet.differences.append(
                f"{slot[1]} {slot[0]}: the trail rebuilds {have}, the ledger holds {want}"
            )
    entries = conn.execute(
        """SELECT e.txn_id, a.currency, a.kind, e.amount FROM ledger_entries e
             JOIN ledger_accounts a USING (account_id)
            WHERE a.owner = %s ORDER BY e.txn_id, e.entry_id""",
        (pid,),
    ).fetchall()
    ledger_entries = sorted((int(t), c.strip(), k, Decimal(a)) for t, c, k, a in entries)
    if ledger_entries != sorted(wallet.entries):
        missing = len(set(ledger_entries) - set(wallet.entries))
        extra = len(set(wallet.entries) - set(ledger_entries))
        wallet.differences.append(
            f"entries: {missing} in the ledger and not in the trail, {extra} the other way"
        )
    txns = {int(t) for (t,) in conn.execute(
        "SELECT txn_id FROM ledger_transactions WHERE player_id = %s", (pid,))}  # fmt: skip
    unaudited = sorted(txns - audited)
    if unaudited:
        wallet.differences.append(
            f"{len(unaudited)} ledger transaction(s) without an audit record, "
            f"first txn {unaudited[0]}"
        )
