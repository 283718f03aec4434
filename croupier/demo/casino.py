"""Step 7: the casino: an aggregator's calls through the seamless wallet, and Croupier Dice."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from croupier.demo.context import Demo, Player
from croupier.demo.payments import pay
from croupier.demo.printing import heading, print_table

D = Decimal


def casino(demo: Demo) -> None:
    heading("7. Casino: an aggregator's calls through the seamless wallet")
    cs = Player("cs", f"{demo.prefix}cs", "UK", "GBP", D("100.00"))
    demo.players.append(cs)
    now = demo.upstream.feed_time()
    items = [(cs.player_id, json.dumps(e).encode()) for e in demo.joining(cs, now)]
    demo.progress.wait(demo.upstream.send("players", items), demo.deadline, "the player")
    pay(demo, [("deposit", cs, "100.00")])
    tx = f"{demo.prefix}tx"

    def call(kind: str, n: int, rnd: int, amount: str, **extra: Any) -> tuple[str, bytes]:
        body = {"type": kind, "transaction_id": f"{tx}{n}", "round_id": f"{tx}-r{rnd}",
                "game_id": "netent-starburst", "player_id": cs.player_id,
                "amount": amount, "currency": cs.currency,
                "timestamp": demo.upstream.feed_time(), **extra}  # fmt: skip
        return cs.player_id, json.dumps(body).encode()

    cases = [  # (call, what it is, expected answer and balance)
        (call("debit", 1, 1, "2.00"), "debit, Starburst", "ok 98.00"),
        (call("debit", 1, 1, "2.00"), "the aggregator retries it", "ok 98.00"),
        (call("credit", 2, 1, "5.00", round_closed=True), "a win closes the round",
         "ok 103.00"),
        (call("debit", 3, 2, "3.00"), "debit", "ok 100.00"),
        (call("rollback", 4, 2, "3.00", reference_transaction_id=f"{tx}3"),
         "the game failed: rollback", "ok 103.00"),
        (call("debit", 5, 3, "1.00", game_id="redtiger-gonzos-quest-megaways"),
         "a game certified for ES only", "game_not_certified 103.00"),
        (call("rollback", 6, 4, "1.00", reference_transaction_id=f"{tx}7"),
         "rollback of a debit not seen yet", "ok 103.00"),
        (call("debit", 7, 4, "1.00"), "that debit, late", "transaction_rolled_back 103.00"),
    ]  # fmt: skip
    sent = demo.upstream.send("casino", [c for c, _, _ in cases])
    demo.progress.wait(sent, demo.deadline, "the casino calls")
    demo.tail.catch_up(demo.deadline)
    answers = [r.doc for r in demo.ours("casino-results") if r.key == cs.player_id]
    rows = []
    for n, ((_, body), what, want) in enumerate(cases):
        got = answers[n] if n < len(answers) else {}
        shown = f"{got.get('error') or got.get('status')} {got.get('balance')}"
        ok = demo.checks.expect(shown == want, f"casino call {n + 1}: {shown}, not {want}")
        doc = json.loads(body)
        rows.append((doc["transaction_id"].removeprefix(demo.prefix), doc["type"],
                     doc["amount"], what, shown, want, ok))  # fmt: skip
    print_table(["transaction", "call", "amount", "what", "answer", "expected", "check"],
                rows)  # fmt: skip
    same = len(answers) > 1 and answers[0] == answers[1]
    print(f"  the retry got the first answer itself: "
          f"{demo.checks.expect(same, 'the retried debit got another answer')}")  # fmt: skip

    heading("   Croupier Dice: the house's game, the certified RNG, the same wallet")
    from croupier.dice import Bet, DiceRefused, DiceTable

    try:
        table = DiceTable(demo.settings)
    except DiceRefused as exc:
        demo.checks.expect(False, f"the dice table refused to open: {exc}")
        return
    played = table.play([Bet(cs.player_id, D("1.00"), pick, cs.currency)
                         for pick in (1, 2, 3, 4, 6)], timeout=30)  # fmt: skip
    print(f"  RNG build {table.build} (rng/manifest.json; the game registry names it)")
    dice_rows: list[tuple[object, ...]] = []
    # The table sends every round's debit, then rolls and credits each: the debits'
    # answers count the stakes down, the credits' then count the wins up.
    cash = D("103.00")
    debited = [cash - n for n in range(1, len(played) + 1)]
    cash -= sum((p.bet.stake for p in played), D(0))
    for p, after_debit in zip(played, debited, strict=True):
        cash += p.win or 0
        seen = (p.debit.get("balance"), p.credit.get("balance") if p.credit else None)
        due = (str(after_debit), str(cash))
        ok = demo.checks.expect(p.completed and seen == due,
                                f"dice round {p.round_id}: {seen}, not {due}")  # fmt: skip
        dice_rows.append((p.round_id, p.bet.pick, p.roll, f"{p.bet.stake}", f"{p.win}",
                          f"{seen[0]} / {seen[1]}", ok))  # fmt: skip
    print_table(["round", "pick", "roll", "stake", "win", "balance (debit / credit)",
                 "check"], dice_rows)  # fmt: skip
    demo.final["cs"] = (f"{cash}", "0.00")
