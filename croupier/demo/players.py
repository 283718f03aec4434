"""Step 1: four players register, open a session and deposit."""

from __future__ import annotations

import json

from croupier.demo.context import Demo
from croupier.demo.printing import heading, print_table


def register_and_deposit(demo: Demo) -> None:
    heading("1. Players register and deposit")
    now = demo.upstream.feed_time()
    regs = [
        (p.player_id, json.dumps(event).encode())
        for p in demo.players for event in demo.joining(p, now)
    ]  # fmt: skip
    demo.progress.wait(demo.upstream.send("players", regs), demo.deadline, "registrations")
    pays = [
        (p.player_id, json.dumps({
            "type": "deposit", "payment_id": f"{p.player_id}-dep", "player_id": p.player_id,
            "amount": str(p.deposit), "currency": p.currency, "timestamp": now,
        }).encode())
        for p in demo.players
    ]  # fmt: skip
    demo.progress.wait(demo.upstream.send("payments", pays), demo.deadline, "deposits")
    demo.tail.catch_up(demo.deadline)
    got = {r.doc.get("payment_id"): r.doc for r in demo.ours("payment-decisions")}
    rows = []
    for p in demo.players:
        d = got.get(f"{p.player_id}-dep", {})
        status = d.get("status", "(none)")
        ok = demo.checks.expect(status == "accepted", f"deposit of {p.short}: {status}")
        rows.append((p.player_id, p.jurisdiction, f"{p.deposit} {p.currency}", status, ok))
    print_table(["player", "jurisdiction", "deposit", "payment decision", "check"], rows)
