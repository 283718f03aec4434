"""Deposits and withdrawals of the later steps, each checked against its expected decision."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from croupier.demo.context import Demo
from croupier.demo.printing import print_table


def pay(demo: Demo, items: Sequence[tuple[Any, ...]], *, show: bool = False) -> None:
    """Deposits and withdrawals ``(kind, player, amount[, expected])``; check each."""
    msgs = []
    for n, (kind, p, amount, *_) in enumerate(items):
        pid = f"{p.player_id}-{kind}-{n}-{uuid.uuid4().hex[:4]}"
        msgs.append((pid, p, kind, amount, items[n][3] if len(items[n]) > 3 else "accepted"))
    sent = demo.upstream.send("payments", [(p.player_id, json.dumps({
        "type": kind, "payment_id": pid, "player_id": p.player_id, "amount": amount,
        "currency": p.currency, "timestamp": demo.upstream.feed_time()}).encode())
        for pid, p, kind, amount, _ in msgs])  # fmt: skip
    demo.progress.wait(sent, demo.deadline, "the payments")
    demo.tail.catch_up(demo.deadline)
    got = {r.doc.get("payment_id"): r.doc for r in demo.ours("payment-decisions")}
    rows = []
    for pid, p, kind, amount, want in msgs:
        d = got.get(pid, {})
        result = d.get("status") if d.get("status") == "accepted" else d.get("reason")
        ok = demo.checks.expect(result == want, f"{kind} of {p.short}: {result}, not {want}")
        rows.append((p.player_id, kind, f"{amount} {p.currency}", result, want, ok))
    if show:
        print_table(["player", "payment", "amount", "decision", "expected", "check"], rows)
