"""The run summed up: what was sent, what came back, money, throughput and latency."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

from croupier.sim.plan import BET, CASINO, DEAD, PAYMENT, Plan
from croupier.sim.run import Live, final_settlements
from croupier.sim.track import Outcomes, Sender


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None, "n": 0}
    v = sorted(values)

    def at(q: float) -> float:
        return round(v[min(len(v) - 1, int(q * len(v)))] * 1000, 1)

    return {
        "p50_ms": at(0.5),
        "p90_ms": at(0.9),
        "p99_ms": at(0.99),
        "max_ms": round(v[-1] * 1000, 1),
        "n": len(v),
    }


def summarise(plan: Plan, live: Live, left: dict[str, list[str]]) -> dict[str, Any]:
    sender, outcomes = live.sender, live.outcomes
    with outcomes.lock, sender.lock:
        return _summarise(plan, live, sender, outcomes, left)


def _summarise(
    plan: Plan, live: Live, sender: Sender, outcomes: Outcomes, left: dict[str, list[str]]
) -> dict[str, Any]:
    start = live.started
    sent: dict[str, Counter[str]] = {}
    for s in sender.sent:
        sent.setdefault(s.step.topic, Counter())[s.step.kind] += 1
    by: dict[str, Counter[str]] = {BET: Counter(), PAYMENT: Counter(), CASINO: Counter()}
    for (topic, _), seen in outcomes.seen.items():
        by[topic][seen.label] += 1
    dead = Counter(seen.label for seen in outcomes.dead.values())
    twice = sorted(ref for (_, ref), seen in outcomes.seen.items() if len(seen.values) > 1)
    contradictory = sorted(ref for (_, ref), seen in outcomes.seen.items() if len(seen.labels) > 1)
    retries = [s.step.repeat_of for s in sender.sent if s.step.repeat_of]
    # A producer's retry is answered with the first decision again: one copy per send.
    sends = Counter((BET, str(r)) for r in retries)
    republished = sum(max(0, seen.copies - 1 - sends[key]) for key, seen in outcomes.seen.items())
    once = [outcomes.seen.get((BET, str(r))) for r in retries]
    retries_once = sum(1 for x in once if x is not None and len(x.values) == 1)

    # Latency: first outcome consumed minus sent, per input (a retry is not a new input).
    lat_bets: list[float] = []
    lat_all: list[float] = []
    spike_end = start + plan.spike[1]
    before_spike_end: list[float] = []
    backlog_at_spike_end = 0
    for s in sender.sent:
        step = s.step
        if step.expect is None or step.ref is None or step.repeat_of is not None:
            continue
        got = (
            outcomes.dead.get(s.position)
            if step.expect == DEAD and s.position
            else outcomes.seen.get((step.expect, step.ref))
        )
        if got is None:
            if step.topic == "bets" and s.at <= spike_end:
                backlog_at_spike_end += 1
            continue
        took = max(0.0, got.first_at - s.at)
        lat_all.append(took)
        if step.expect == BET:
            lat_bets.append(took)
        if step.topic == "bets" and start and s.at <= spike_end:
            before_spike_end.append(got.first_at)
            if got.first_at > spike_end:
                backlog_at_spike_end += 1
    drain = max(0.0, max(before_spike_end, default=spike_end) - spike_end)

    # Throughput: outcomes a second over the match day, and the busiest second.
    times = [t - start for t in outcomes.decided_times if start and t >= start]
    span = max(times, default=0.0)
    buckets = Counter(int(t) for t in times)
    peak = max(buckets.values(), default=0)

    # Money: sportsbook GGR from the settlements topic (each bet's final settlement),
    # casino GGR from the calls answered ok (the amounts the run sent).
    ggr: dict[str, Decimal] = {}
    finals = final_settlements(outcomes.settlements)
    for doc in finals.values():
        if doc.get("kind") == "rolled_back":
            continue
        cur = str(doc.get("currency"))
        ggr[cur] = (
            ggr.get(cur, Decimal(0)) + Decimal(str(doc["stake"])) - Decimal(str(doc["payout"]))
        )
    casino: dict[str, Decimal] = {}
    for s in sender.sent:
        doc = s.step.doc or {}
        if s.step.topic != "casino" or s.step.ref is None:
            continue
        answer = outcomes.seen.get((CASINO, s.step.ref))
        if answer is None or answer.label != "ok":
            continue
        sign = 1 if doc["type"] == "debit" else -1
        cur = str(doc["currency"])
        casino[cur] = casino.get(cur, Decimal(0)) + sign * Decimal(doc["amount"])
    kinds = Counter(str(d.get("kind")) for d in outcomes.settlements.values())
    accepted = by[BET].get("accepted", 0)
    return {
        "sent": {t: dict(sorted(c.items())) for t, c in sorted(sent.items())},
        "sent_total": {t: sum(c.values()) for t, c in sorted(sent.items())},
        "deliberate": {
            "duplicates": len(retries),
            "malformed": sum(1 for s in sender.sent if s.step.expect == DEAD),
            "beyond_balance": sent.get("bets", Counter()).get("beyond_balance", 0),
            "stale": sum(
                v for k, v in sent.get("bets", Counter()).items() if k.startswith("stale")
            ),
            "unknown_market": sent.get("bets", Counter()).get("unknown_market", 0),
            "during_stop": sent.get("bets", Counter()).get("during_stop", 0),
        },
        "bets": {
            "accepted": accepted,
            "rejected": dict(sorted((k, v) for k, v in by[BET].items() if k != "accepted")),
        },
        "payments": dict(sorted(by[PAYMENT].items())),
        "casino": dict(sorted(by[CASINO].items())),
        "dead_letters": dict(sorted(dead.items())),
        "duplicates_decided_once": f"{retries_once}/{len(retries)}",
        "decided_more_than_once": twice,
        "contradictory": contradictory,
        "republished_identical": republished,
        "settlements": {
            "records": dict(sorted(kinds.items())),
            "bets_with_final_settlement": sum(
                1 for d in finals.values() if d.get("kind") != "rolled_back"
            ),
            "accepted_bets": accepted,
            "resettled_bets": kinds.get("resettled", 0),
        },
        "ggr": {
            "source": "sportsbook: the settlements topic (each bet's final settlement, stake "
            "minus payout); casino: debits minus credits and rollbacks answered ok",
            "sportsbook": {c: str(v) for c, v in sorted(ggr.items())},
            "casino": {c: str(v) for c, v in sorted(casino.items())},
        },
        "throughput": {
            "outcomes": len(times),
            "seconds": round(span, 2),
            "outcomes_per_s": round(len(times) / span, 1) if span else None,
            "peak_outcomes_in_1s": peak,
            "planned_spike_rate": plan.options.rate * plan.options.spike_factor,
        },
        "latency": {"bets": percentiles(lat_bets), "all": percentiles(lat_all)},
        "spike": {
            "start_s": plan.spike[0],
            "end_s": plan.spike[1],
            "backlog_at_end": backlog_at_spike_end,
            "drain_s": round(drain, 2),
        },
        "missing": left.get("missing", []),
        "unsettled": left.get("unsettled", []),
    }


def show(summary: dict[str, Any], out: Any) -> None:
    """The short summary, a line a figure: a table on a terminal, plain columns otherwise."""
    from croupier.commands.output import table

    s = summary
    rows: list[list[str]] = []

    def line(name: str, value: object) -> None:
        rows.append([name, str(value)])

    line("inputs sent", ", ".join(f"{t} {n}" for t, n in s["sent_total"].items()))
    d = s["deliberate"]
    line(
        "deliberate",
        f"{d['duplicates']} producer retries (decided once: "
        f"{s['duplicates_decided_once']}), {d['malformed']} malformed, {d['stale']} stale "
        f"prices, {d['unknown_market']} unknown markets, {d['beyond_balance']} beyond the "
        f"balance, {d['during_stop']} during stops",
    )
    rej = s["bets"]["rejected"]
    line(
        "bets",
        f"{s['bets']['accepted']} accepted, {sum(rej.values())} rejected: "
        + ", ".join(f"{k} {v}" for k, v in rej.items()),
    )
    line("payments", ", ".join(f"{k} {v}" for k, v in s["payments"].items()))
    line("casino calls", ", ".join(f"{k} {v}" for k, v in s["casino"].items()))
    line("dead letters", ", ".join(f"{k} {v}" for k, v in s["dead_letters"].items()) or "none")
    st = s["settlements"]
    line(
        "settlements",
        ", ".join(f"{k} {v}" for k, v in st["records"].items())
        + f"; {st['bets_with_final_settlement']} of {st['accepted_bets']} accepted bets "
        "settled",
    )
    g = s["ggr"]
    line(
        "GGR sportsbook (settlements)",
        ", ".join(f"{v} {c}" for c, v in g["sportsbook"].items()) or "none",
    )
    line("GGR casino (results)", ", ".join(f"{v} {c}" for c, v in g["casino"].items()) or "none")
    t = s["throughput"]
    line(
        "throughput",
        f"{t['outcomes_per_s']} outcomes/s over {t['seconds']} s; peak "
        f"{t['peak_outcomes_in_1s']} in one second (spike sent at {t['planned_spike_rate']:.0f}"
        "/s)",
    )
    for name in ("bets", "all"):
        q = s["latency"][name]
        line(
            f"latency {name} p50/p90/p99/max",
            f"{q['p50_ms']} / {q['p90_ms']} / {q['p99_ms']} / {q['max_ms']} ms ({q['n']})",
        )
    sp = s["spike"]
    line("spike drain", f"backlog {sp['backlog_at_end']} at its end, drained in {sp['drain_s']} s")
    if s["republished_identical"]:
        line(
            "republished decisions",
            f"{s['republished_identical']} identical copies (a worker replayed a batch)",
        )
    table(["figure", "value"], rows, indent="  ", header=False, file=out)
