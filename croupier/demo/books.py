"""Steps 8 and 9: balances from the ledger, and the whole ledger's reconciliation."""

from __future__ import annotations

from decimal import Decimal

from croupier import checks
from croupier.demo.context import Demo
from croupier.demo.printing import heading, print_table
from sinks.postgres.ledger import Ledger

D = Decimal


def show_books(demo: Demo) -> None:
    heading("8. Balances (ledger)")
    final = {"uk": ("85.00", "0.00"), "dk": ("450.00", "0.00"), "es": ("90.00", "0.00"),
             "nj": ("142.50", "0.00"), "ex": ("40.00", "0.00"), "lo": ("85.00", "15.00"),
             "rc": ("480.00", "20.00"), **demo.final}  # fmt: skip
    ledger = Ledger.connect(demo.settings.pg_dsn.get_secret_value(), demo.settings.pg_schema)
    try:
        rows = []
        for p in demo.players:
            got = {b.currency: b for b in ledger.balances(p.player_id)}.get(p.currency)
            cash, pending = (got.cash, got.pending) if got else (None, None)
            want_cash, want_pending = final[p.short]
            ok = demo.checks.expect(
                cash == D(want_cash) and pending == D(want_pending),
                f"balance of {p.short}: wanted {want_cash}/{want_pending}, got {cash}/{pending}",
            )
            shown = got.as_json() if got else {"balance": "(none)", "pending": ""}
            rows.append((p.player_id, p.currency, f"{p.deposit}", shown["balance"],
                         shown["pending"], f"{want_cash} / {want_pending}", ok))  # fmt: skip
        print_table(["player", "currency", "deposited", "balance", "pending",
                     "expected", "check"], rows)  # fmt: skip

        heading(f"9. Reconciliation of the whole ledger (schema {demo.settings.pg_schema})")
        rec = ledger.reconcile()
        print_table(
            ["currency", "debits", "credits", "entries", "state"],
            [(c.currency, c.debits, c.credits, c.entries,
              "balanced" if c.balanced else "IMBALANCE") for c in rec.currencies],
        )  # fmt: skip
        verdict = checks.books_balance(rec)  # what `croupier check` says of it
        for breach in verdict.examples:
            print(f"  {breach}")
        ok = demo.checks.expect(verdict.ok, f"the ledger does not reconcile: {verdict.examples}")
        print(f"  {'books balance' if verdict.ok else 'books DO NOT balance'}  {ok}")
    finally:
        ledger.close()
