"""``croupier wallet``: balances, statements and the books' reconciliation."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from croupier.commands import params, printers
from croupier.commands.output import emit_json
from croupier.exits import EXIT_FAILED, EXIT_OK


@click.group(help="the ledger: balances, statements, reconciliation")
def wallet() -> None:
    """The ledger."""


def _with_ledger(use: Callable[[Any], int]) -> int:
    from config.stackenv import stack_settings
    from sinks.postgres.ledger import Ledger

    settings = stack_settings()
    ledger = Ledger.connect(settings.pg_dsn.get_secret_value(), settings.pg_schema)
    try:
        return use(ledger)
    finally:
        ledger.close()


@wallet.command("balance", help="a player's balance and open stakes")
@click.argument("player")
@click.option("--currency", help="only this currency")
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
def balance(player: str, currency: str | None, as_json: bool) -> int:
    def show(ledger: Any) -> int:
        balances = [b for b in ledger.balances(player) if currency in (None, b.currency)]
        if not balances:
            print(
                f"croupier: player {player!r} has no wallet"
                + (f" in {currency}" if currency else ""),
                file=sys.stderr,
            )
            return EXIT_FAILED
        if as_json:
            docs = [b.as_json() for b in balances]
            emit_json(docs[0] if len(docs) == 1 else docs)
            return EXIT_OK
        for b in balances:
            shown = b.as_json()
            print(
                f"{b.player_id}  {b.currency}  balance {shown['balance']}  "
                f"pending {shown['pending']}  reserved {b.withdrawal_reserved}  "
                f"debt {shown['debt']}"
            )
        return EXIT_OK

    return _with_ledger(show)


@wallet.command("statement", help="a player's entries, with running balances")
@click.argument("player")
@click.option("--from", "since", type=params.TIME, help="RFC 3339 time, inclusive")
@click.option("--to", "until", type=params.TIME, help="RFC 3339 time, exclusive")
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
def statement(player: str, since: datetime | None, until: datetime | None, as_json: bool) -> int:
    def show(ledger: Any) -> int:
        lines = ledger.statement(player, since=since, until=until)
        if as_json:
            emit_json(
                [
                    {
                        "recorded_at": ln.recorded_at.isoformat(),
                        "key": ln.key,
                        "operation": ln.operation,
                        "account": ln.account,
                        "currency": ln.currency,
                        "amount": str(ln.amount),
                        "balance_after": str(ln.balance_after),
                    }
                    for ln in lines
                ]
            )
            return EXIT_OK
        printers.statement(lines)
        return EXIT_OK

    return _with_ledger(show)


@wallet.command("reconcile", help="prove the books; exit 1 on any imbalance")
@click.option("--json", "as_json", is_flag=True, help=params.JSON_HELP)
def reconcile(as_json: bool) -> int:
    def show(ledger: Any) -> int:
        rec = ledger.reconcile()
        if as_json:
            emit_json(
                {
                    "ok": rec.ok,
                    "currencies": [
                        {
                            "currency": c.currency,
                            "debits": str(c.debits),
                            "credits": str(c.credits),
                            "entries": c.entries,
                            "balanced": c.balanced,
                        }
                        for c in rec.currencies
                    ],
                    "unbalanced_transactions": [
                        [str(v) for v in r] for r in rec.unbalanced_transactions
                    ],
                    "balance_drift": [[str(v) for v in r] for r in rec.balance_drift],
                    "house": [[str(v) for v in r] for r in rec.house],
                    "debts": [d.as_json() for d in rec.debts],
                }
            )
            return EXIT_OK if rec.ok else EXIT_FAILED
        for c in rec.currencies:
            state = "balanced" if c.balanced else "IMBALANCE"
            print(
                f"{c.currency}  debits {c.debits}  credits {c.credits}  "
                f"entries {c.entries}  {state}"
            )
        for row in rec.unbalanced_transactions:
            print(f"unbalanced transaction {row[0]} in {row[1]}: {row[2]}")
        for owner, kind, cur, stored, derived in rec.balance_drift:
            print(f"balance drift {owner} {kind} {cur}: stored {stored}, entries say {derived}")
        for d in rec.debts:
            shown = d.as_json()
            print(
                f"{d.currency}  debt accounts {d.accounts}  in debt {d.in_debt}  "
                f"owed {shown['owed']}"
            )
        print("books balance" if rec.ok else "books DO NOT balance")
        return EXIT_OK if rec.ok else EXIT_FAILED

    return _with_ledger(show)
