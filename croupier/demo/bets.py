"""Steps 2 and 3: the feed prices two matches, and bets arrive."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from croupier.demo.context import BetCase, Demo, Leg, Player
from croupier.demo.printing import heading, print_table

D = Decimal


def open_markets(demo: Demo) -> None:
    heading(f"2. The feed: producer {demo.feed_producer} is alive and prices two matches")
    # The first heartbeat is done before any price is sent: after a silence it marks the
    # producer as recovered, and only prices newer than that reopen its markets.
    demo.progress.wait(demo.heartbeat.beat(), demo.deadline, "the first heartbeat")
    demo.heartbeat.start()
    prices = [
        ("m1", "1x2", {"home": "2.10", "draw": "3.40", "away": "3.60"}),
        ("m1", "total_2.5", {"over": "1.90", "under": "1.90"}),
        ("m2", "1x2", {"home": "1.50", "draw": "4.00", "away": "6.00"}),
        ("m1", "1x2", {"home": "2.05", "draw": "3.45", "away": "3.70"}),
        ("m1", "1x2", {"home": "2.00", "draw": "3.50", "away": "3.80"}),
    ]
    events = {"m1": demo.m1, "m2": demo.m2}
    sent = demo.upstream.send("odds", [demo.odds(events[e], {m: p}) for e, m, p in prices])
    demo.progress.wait(sent, demo.deadline, "the odds")
    print_table(
        ["event", "market", "prices (odds_change, in feed order)"],
        [(events[e], m, "  ".join(f"{o} {p}" for o, p in pr.items())) for e, m, pr in prices],
    )


def bet_cases(demo: Demo) -> list[BetCase]:
    uk, dk, es, nj = (demo.player(s) for s in ("uk", "dk", "es", "nj"))
    m1, m2 = demo.m1, demo.m2

    def case(short: str, p: Player, stake: str, legs: Sequence[Leg], policy: str,
             expect: str, odds: str | None = None, why: str = "") -> BetCase:  # fmt: skip
        return BetCase(short, f"{demo.prefix}{short}", p.player_id, p.currency, stake,
                       tuple(legs), policy, expect, odds, why)  # fmt: skip

    return [
        case("b1", uk, "10.00", [(m1, "1x2", "home", "2.00")], "none", "accepted", "2.00",
             "single at the current price"),
        case("b2", dk, "20.00", [(m1, "1x2", "home", "2.10")], "none", "odds_changed",
             why="stale price, odds_change none"),
        case("b3", es, "10.00", [(m1, "1x2", "home", "1.95")], "higher", "accepted", "2.00",
             "saw 1.95, takes the better 2.00"),
        case("b4", dk, "50.00", [(m1, "1x2", "away", "3.60")], "any", "accepted", "3.80",
             "stale price, odds_change any"),
        case("b5", nj, "10.00", [(m1, "1x2", "draw", "3.50"), (m2, "1x2", "home", "1.50")],
             "none", "accepted", "5.25", "accumulator: 3.50 x 1.50"),
        case("b6", uk, "5.00", [(m1, "total_2.5", "over", "1.90")], "none", "accepted",
             "1.90", "over/under market"),
        case("b7", es, "5.00", [(m1, "correct_score", "2-1", "9.00")], "none",
             "market_unknown", why="no such market"),
        case("b8", dk, "10000.00", [(m1, "1x2", "draw", "3.50")], "none",
             "insufficient_funds", why="stake beyond the balance"),
        BetCase("b9", f"{demo.prefix}b9", f"{demo.prefix}ghost", "EUR", "5.00",
                ((m1, "1x2", "home", "2.00"),), "none", "unknown_player",
                why="never registered"),
    ]  # fmt: skip


def place_bets(demo: Demo) -> dict[str, BetCase]:
    heading("3. Bets (b1 is sent twice: a producer retry; one more message is malformed)")
    cases = bet_cases(demo)
    at = demo.upstream.feed_time()
    items = [(c.player, c.wire(at)) for c in cases]
    retry = items[0]
    malformed = (demo.player("uk").player_id, f'{{"bet_id": "{demo.prefix}bx", '.encode())
    sent = demo.upstream.send("bets", [*items, retry, malformed])
    demo.progress.wait(sent, demo.deadline, "the bets")
    demo.tail.catch_up(demo.deadline)
    show_decisions(demo, cases)
    # The malformed message: a dead letter with its bytes and source position.
    bad = sent[-1]
    letters = [r.doc for r in demo.ours("dead-letters")
               if r.doc.get("source", {}).get("offset") == bad.offset
               and r.doc.get("source", {}).get("partition") == bad.partition
               and r.doc.get("source", {}).get("topic") == bad.topic]  # fmt: skip
    reason = letters[0]["reason"] if letters else "(none)"
    ok = demo.checks.expect(reason == "malformed_json", f"malformed bet: {reason}")
    print(f"\n  malformed message at {bad.topic}[{bad.partition}]@{bad.offset}: "
          f"dead letter, reason {reason}  {ok}")  # fmt: skip
    return {c.short: c for c in cases}


def show_decisions(demo: Demo, cases: Sequence[BetCase]) -> None:
    decided: dict[str, list[dict[str, Any]]] = {}
    for r in demo.ours("bet-decisions"):
        decided.setdefault(str(r.doc.get("bet_id")), []).append(r.doc)
    rows = []
    for c in cases:
        docs = decided.get(c.bet_id, [])
        distinct = {json.dumps(d, sort_keys=True) for d in docs}
        d = docs[0] if docs else {}
        got = d.get("status", "(none)") if d.get("status") != "rejected" else d.get("reason")
        odds = d.get("odds")
        ok = (
            len(distinct) == 1
            and got == c.expect
            and (c.expect_odds is None or (odds is not None and D(str(odds)) == D(c.expect_odds)))
        )
        if c.short == "b1":  # the producer's retry: the first decision again, not a second
            ok = ok and len(docs) == 2
        wanted = f"{c.expect} {c.expect_odds or ''}".strip()
        mark = demo.checks.expect(
            ok, f"bet {c.short}: wanted {wanted}, got {got} {odds or ''} x{len(docs)}"
        )
        short = demo.prefix
        legs = " + ".join(f"{e.removeprefix(short)} {m} {o} @{p}" for e, m, o, p in c.legs)
        rows.append((c.short, c.player.removeprefix(demo.prefix), f"{c.stake} {c.currency}",
                     legs, c.policy, d.get("status", "(none)"), d.get("reason") or "",
                     odds or "", len(docs), c.why, mark))  # fmt: skip
    print_table(["bet", "player", "stake", "selections", "odds_change", "status", "reason",
                 "odds", "decisions", "case", "check"], rows)  # fmt: skip
