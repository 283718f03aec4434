"""The text reports of the commands whose output is more than a line or a table: a bet's
replay beside the book and the ledger, a range replay, the audit trail's verdicts. Each has
its ``--json`` twin in the report's own ``as_json``/``to_json``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from croupier.commands.output import say, table

if TYPE_CHECKING:
    from sinks.postgres.ledger import StatementLine
    from sinks.postgres.rebuild import Wallet
    from sinks.postgres.replay import RangeReport, SettlementReport
    from topologies.topics import TopicOutcome


def settlement(report: SettlementReport) -> None:
    """``replay settlement BET_ID``: history, replay, settlements table and ledger, side by side."""
    b, doc = report.bet, report.as_json()
    head = f"bet {b.bet_id} of {b.player_id}: stake {doc['stake']} {b.currency}, {b.status}"
    if b.odds is None:
        print(f"{head} ({b.reason}); nothing to settle")
    else:
        print(f"{head} at {b.odds}; {report.messages} settlement message(s) of its events replayed")
    history = doc["replay"]["history"] if doc["replay"] else []
    if history or report.settlements or report.ledger:
        ids = [h["settlement_id"] for h in history]
        ids += [
            s["settlement_id"] for s in doc["book"]["settlements"] if s["settlement_id"] not in ids
        ]
        ids += [
            t["key"].removeprefix("settlement:")
            for t in doc["ledger"]["settlements"]
            if t["key"].removeprefix("settlement:") not in ids
        ]
        mine = {h["settlement_id"]: h for h in history}
        book = {s["settlement_id"]: s for s in doc["book"]["settlements"]}
        led = {t["key"].removeprefix("settlement:"): t for t in doc["ledger"]["settlements"]}
        table(
            ["settlement", "replay", "settlements table", "ledger"],
            [
                [sid, _step(mine.get(sid)), _step(book.get(sid)), _ledger_step(led.get(sid))]
                for sid in ids
            ],
            title="history",
        )
    checks = [["ok" if c.ok else "DIFFERS", c.name, c.detail] for c in report.checks]
    if checks:
        table(["verdict", "check", "detail"], checks, verdicts=0)
    if report.agree:
        say("replay, book and ledger agree", "green")
    else:
        say("replay, book and ledger DO NOT agree", "bold red")


def _step(s: dict[str, Any] | None) -> str:
    if s is None:
        return "-"
    return " ".join(str(v) for v in (s["kind"], s["result"], s["payout"]) if v is not None)


def _ledger_step(t: dict[str, Any] | None) -> str:
    if t is None:
        return "-"
    if t["status"] != "applied":
        return f"{t['operation']} {t['status']} ({t['reason']})"
    return f"{t['operation']} cash {t['cash']}"


def replay_range(report: RangeReport) -> None:
    """``replay --from --to``: what was re-run, and every difference from the live tables."""
    if not report.players:
        print("no bet was decided in the range; nothing to replay")
        return
    print(
        f"replayed {len(report.players)} player(s): {report.bets} bet(s), "
        f"{report.bets_in_range} decided in the range; {report.messages} settlement "
        f"message(s); {report.recorded_operations} other ledger operation(s)"
    )
    where = f"kept as schema {report.scratch_schema}" if report.kept else "dropped"
    print(f"scratch schema {where}")
    for note in report.notes:
        print(f"note: {note}")
    for d in report.differences:
        print(f"  DIFFERS {d.what}  {d.field}: live {d.live}, replay {d.replay}")
    print(
        "no differences: the replay agrees with the live tables"
        if report.agree
        else f"{len(report.differences)} difference(s) from the live tables"
    )


def problems(found: list[Any]) -> None:
    """Broken audit records, one line each."""
    for p in found:
        print(f"BROKEN  {p.chain}  record {p.seq}: {p.what}")


def rebuilt(wallets: list[Wallet], shown: list[Wallet]) -> None:
    """``audit rebuild``: each wallet shown (one player's, or those that differ), a total."""
    bad = [w for w in wallets if not w.ok]
    for w in shown:
        balances = ", ".join(f"{k} {v} {c}" for (c, k), v in sorted(w.balances.items()))
        print(
            f"{w.player_id}: {w.operations} operations, {len(w.entries)} entries "
            f"from the trail; {balances or 'no balance'}: "
            f"{'agrees with the ledger' if w.ok else 'DIFFERS'}"
        )
        for d in w.differences:
            print(f"  {d}")
    print(
        f"{len(wallets)} wallet(s) rebuilt from the audit trail, {len(bad)} differ from the ledger"
    )


def statement(lines: list[StatementLine]) -> None:
    """``wallet statement``: one row per entry, with the running balance (nothing if none)."""
    headers = ["recorded_at", "operation", "account", "amount", "currency", "balance_after"]
    rows = [
        [f"{ln.recorded_at:%Y-%m-%d %H:%M:%S}", ln.operation, ln.account, str(ln.amount),
         ln.currency, str(ln.balance_after), ln.key]
        for ln in lines
    ]  # fmt: skip
    if rows:
        table([*headers, "key"], rows, right=(3, 5))


def topics(outcomes: list[TopicOutcome]) -> None:
    """``topics create``: each topic created, already there, or there with another shape."""
    rows = [[o.status, o.name, o.detail] for o in outcomes]
    table(["status", "topic", "detail"], rows, verdicts=0)
