"""Steps 4 and 5: bet_stop, a late bet, settlement, rollback, resettlement; what was published."""

from __future__ import annotations

from decimal import Decimal

from croupier.demo.bets import show_decisions
from croupier.demo.context import BetCase, Demo
from croupier.demo.printing import heading, print_table

D = Decimal


def stop_and_settle(demo: Demo) -> None:
    heading("4. bet_stop, a late bet, settlement, rollback and resettlement")
    sent = demo.upstream.send("odds", [demo.feed("bet_stop", demo.m1),
                                       demo.feed("bet_stop", demo.m2)])  # fmt: skip
    demo.progress.wait(sent, demo.deadline, "the bet stops")
    late = BetCase("b10", f"{demo.prefix}b10", demo.player("uk").player_id, "GBP", "5.00",
                   ((demo.m2, "1x2", "home", "1.50"),), "none", "market_suspended",
                   why="after bet_stop")  # fmt: skip
    sent = demo.upstream.send("bets", [(late.player, late.wire(demo.upstream.feed_time()))])
    demo.progress.wait(sent, demo.deadline, "the late bet")
    demo.tail.catch_up(demo.deadline)
    show_decisions(demo, [late])

    home_wins = {"home": "win", "draw": "lose", "away": "lose"}
    first = [
        demo.settle(demo.m1, {"1x2": home_wins, "total_2.5": {"over": "lose", "under": "win"}}),
        demo.settle(demo.m2, {"1x2": home_wins}),
    ]
    sent = demo.upstream.send("odds", first)
    demo.progress.wait(sent, demo.deadline, "the settlements")
    # The feed got m1's result wrong: it rolls the 1x2 market back and settles it again.
    correction = [
        demo.feed("rollback_bet_settlement", demo.m1, market_ids=["1x2"]),
        demo.settle(demo.m1, {"1x2": {"home": "lose", "draw": "win", "away": "lose"}}),
    ]
    sent = demo.upstream.send("odds", correction)
    demo.progress.wait(sent, demo.deadline, "the rollback and resettlement")
    demo.heartbeat.stop()
    demo.tail.catch_up(demo.deadline)
    print("\n  m1: 1x2 home win, total_2.5 under; m2: 1x2 home win; "
          "then m1 1x2 rolled back and resettled: draw win")  # fmt: skip


def show_settlements(demo: Demo) -> None:
    heading("5. Settlements published")
    p = demo.prefix
    z = "0.00"
    expected = {
        # settlement_id: (kind, result, payout)
        f"{p}b1/1": ("settled", "win", "20.00"),
        f"{p}b1/2": ("rolled_back", None, z),
        f"{p}b1/3": ("resettled", "lose", z),
        f"{p}b3/1": ("settled", "win", "20.00"),
        f"{p}b3/2": ("rolled_back", None, z),
        f"{p}b3/3": ("resettled", "lose", z),
        f"{p}b4/1": ("settled", "lose", z),
        f"{p}b4/2": ("rolled_back", None, z),
        f"{p}b4/3": ("resettled", "lose", z),
        f"{p}b5/1": ("settled", "lose", z),
        f"{p}b5/2": ("rolled_back", None, z),
        f"{p}b5/3": ("resettled", "win", "52.50"),
        f"{p}b6/1": ("settled", "lose", z),
    }
    got: dict[str, set[tuple[str, str | None, Decimal, str]]] = {}
    for r in demo.ours("settlements"):
        d = r.doc
        got.setdefault(str(d.get("settlement_id")), set()).add(
            (str(d.get("kind")), d.get("result"), D(str(d.get("payout", "NaN"))),
             str(d.get("currency", "")))
        )  # fmt: skip
    rows = []
    for sid in sorted(set(expected) | set(got), key=lambda s: (len(s), s)):
        want = expected.get(sid)
        seen = sorted(got.get(sid, set()), key=str)
        have = seen[0] if len(seen) == 1 else None
        ok = (
            want is not None
            and have is not None
            and (have[0], have[1], have[2]) == (want[0], want[1], D(want[2]))
        )
        mark = demo.checks.expect(ok, f"settlement {sid}: wanted {want}, got {seen}")
        if have is not None:
            shown = (have[0], have[1] or "", f"{have[2]} {have[3]}")
        else:
            shown = ("(conflicting)" if seen else "(missing)", "", "")
        expect = f"{want[0]} {want[1] or ''} {want[2]}" if want else "(unexpected)"
        rows.append((sid.removeprefix(p), *shown, expect, mark))
    print_table(["settlement", "kind", "result", "payout", "expected", "check"], rows)
