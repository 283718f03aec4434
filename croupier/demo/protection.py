"""Step 6: player protection: exclusion, a loss limit, a reality check."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from croupier.demo.bets import show_decisions
from croupier.demo.context import BetCase, Demo, Player
from croupier.demo.payments import pay
from croupier.demo.printing import heading, print_table

D = Decimal


def protection(demo: Demo) -> None:
    heading("6. Player protection: exclusion, a loss limit, a reality check")
    m3 = f"{demo.prefix}m3"
    prices = {"1x2": {"home": "2.50", "draw": "3.20", "away": "2.80"}}
    sent = demo.upstream.send("odds", [demo.odds(m3, prices)])
    demo.progress.wait(sent, demo.deadline, "m3's odds")
    now = demo.upstream.feed_time()
    hour_ago = (datetime.now(UTC) - timedelta(minutes=60, seconds=-3)).isoformat()
    ex = Player("ex", f"{demo.prefix}ex", "UK", "GBP", D("100.00"))
    lo = Player("lo", f"{demo.prefix}lo", "ES", "EUR", D("100.00"))
    rc = Player("rc", f"{demo.prefix}rc", "DK", "DKK", D("500.00"))
    demo.players += [ex, lo, rc]
    events = [*demo.joining(ex, now), *demo.joining(lo, now),
              *demo.joining(rc, now, session_at=hour_ago),
              {"type": "limit_set", "player_id": lo.player_id, "limit": "loss",
               "period": "day", "amount": "15.00", "currency": "EUR",
               "timestamp": now}]  # fmt: skip
    items = [(e["player_id"], json.dumps(e).encode()) for e in events]
    demo.progress.wait(demo.upstream.send("players", items), demo.deadline, "the players")
    pay(demo, [("deposit", ex, "100.00"), ("deposit", lo, "100.00"), ("deposit", rc, "500.00")])
    excluded = {"type": "self_excluded", "player_id": ex.player_id, "until": None,
                "timestamp": demo.upstream.feed_time()}  # fmt: skip
    demo.progress.wait(demo.upstream.send("players", [(ex.player_id, json.dumps(excluded)
                                                        .encode())]), demo.deadline,
                       "the exclusion")  # fmt: skip
    home = ((m3, "1x2", "home", "2.50"),)

    def case(short: str, p: Player, stake: str, expect: str, why: str) -> BetCase:
        odds = "2.50" if expect == "accepted" else None
        return BetCase(short, f"{demo.prefix}{short}", p.player_id, p.currency, stake,
                       home, "any", expect, odds, why)  # fmt: skip

    cases = [
        case("x1", ex, "5.00", "self_excluded", "self-excluded a moment ago"),
        case("l1", lo, "10.00", "accepted", "loss 10.00 of 15.00 a day"),
        case("l2", lo, "5.00", "accepted", "loss 15.00: the limit, exactly"),
        case("l3", lo, "0.01", "loss_limit", "one cent past the limit"),
        case("r1", rc, "20.00", "accepted", "in a session an hour old"),
    ]
    at = demo.upstream.feed_time()
    sent = demo.upstream.send("bets", [(c.player, c.wire(at)) for c in cases])
    demo.progress.wait(sent, demo.deadline, "the bets")
    demo.tail.catch_up(demo.deadline)
    show_decisions(demo, cases)
    print()
    pay(demo, [("deposit", ex, "50.00", "self_excluded"),
              ("withdrawal", ex, "60.00", "accepted")], show=True)  # fmt: skip

    # The reality check: the DK interval is 60 minutes, so it falls due within seconds.
    wait_until = time.monotonic() + 15
    notes: list[dict[str, Any]] = []
    while time.monotonic() < min(wait_until, demo.deadline) and not notes:
        demo.tail.catch_up(demo.deadline)
        notes = [r.doc for r in demo.ours("player-notifications")
                 if r.doc.get("player_id") == rc.player_id]  # fmt: skip
        time.sleep(0.2)
    note = notes[0] if notes else {}
    ok = demo.checks.expect(
        note.get("type") == "reality_check_due" and note.get("net_position") == "-20.00"
        and int(note.get("elapsed_seconds", 0)) >= 3600,
        f"reality check of rc: {note or '(none)'}",
    )  # fmt: skip
    print()
    print_table(["notification", "player", "session", "elapsed", "net position", "check"], [(
        note.get("type", "(none)"), rc.player_id, note.get("session_id"),
        f"{int(note.get('elapsed_seconds', 0)) // 60} min", f"{note.get('net_position')} "
        f"{note.get('currency', '')}", ok)])  # fmt: skip
