"""The match day as data: every message of a simulated run, from a seed. Pure, no I/O.

``make_plan`` draws players, matches, goals, the feed's prices and churn, the bets (with
their mix), casino rounds and payments from ``random.Random(seed)``; the same options
and seed give the same steps in the same order, whatever the run id (which only
prefixes the ids). Times are seconds of the match day after the set-up; the sender fills
the timestamps (``timestamp``, ``placed_at``, ``checked_at``) from the clock as it sends.
"""

from __future__ import annotations

import bisect
import copy
import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from croupier.sim.book import MARKETS, Score, prices, results
from schemas.money import to_minor_unit

D = Decimal
CURRENCY = {"UK": "GBP", "DK": "DKK", "ES": "EUR", "NJ": "USD"}  # as the demo uses them
JURISDICTIONS = tuple(CURRENCY)
# Casino games certified in each jurisdiction, and one that is not (game_not_certified);
# tests/unit/test_simulate.py holds them against games/catalogue.toml.
_EVERYWHERE = ("netent-starburst", "playngo-book-of-dead", "evolution-lightning-roulette")
CASINO_GAMES = {
    "UK": (*_EVERYWHERE, "igt-cleopatra"),
    "DK": (*_EVERYWHERE, "igt-cleopatra"),
    "ES": _EVERYWHERE,
    "NJ": (*_EVERYWHERE, "igt-cleopatra"),
}
UNCERTIFIED = {
    "UK": "redtiger-gonzos-quest-megaways",
    "DK": "redtiger-gonzos-quest-megaways",
    "ES": "playngo-reactoonz",
    "NJ": "playngo-reactoonz",
}
STAMPS = ("timestamp", "placed_at", "checked_at")  # filled from the clock when sent

# Outcome topics: where the answer to an input is published.
BET, PAYMENT, CASINO, DEAD = "bet-decisions", "payment-decisions", "casino-results", "dead-letters"

# The bet mix (weights of the random bets; the guaranteed cases come on top).
MIX = {
    "single": 72.0,
    "accumulator": 14.0,
    "stale": 7.0,
    "unknown_market": 2.5,
    "beyond_balance": 1.0,
    "retry": 2.5,
    "malformed": 1.0,
}
MALFORMED = ("bad_json", "unknown_field", "missing_field")
HEARTBEAT_SECONDS = 2.0


@dataclass(frozen=True)
class Options:
    """What a run plays: sizes, pace and the seed."""

    seed: int = 7
    players: int = 40
    matches: int = 3
    rate: float = 20.0  # bets a second, base
    duration: float = 30.0  # seconds of match time (90 minutes)
    spike_factor: float = 20.0


@dataclass
class Step:
    """One message to send at ``at`` seconds, and the outcome it must get."""

    at: float
    topic: str  # inbound contract topic
    key: str
    kind: str
    doc: dict[str, Any] | None = None  # the JSON body; None stamps filled when sent
    raw: bytes | None = None  # exact bytes (a malformed message)
    expect: str | None = None  # the outcome topic, or None (no answer is published)
    ref: str | None = None  # the id the outcome carries (bet, payment, transaction id)
    repeat_of: str | None = None  # a producer retry: the exact bytes sent for this bet id

    def body(self, now: str) -> bytes:
        if self.raw is not None:
            return self.raw
        doc = dict(self.doc or {})
        for name in STAMPS:
            if name in doc and doc[name] is None:
                doc[name] = now
        return json.dumps(doc).encode()


@dataclass(frozen=True)
class Player:
    player_id: str
    jurisdiction: str
    currency: str
    deposit: Decimal
    deposit_limit: Decimal | None
    loss_limit: Decimal | None


@dataclass
class Match:
    event_id: str
    home_rate: float
    away_rate: float
    goals: list[tuple[float, str]]  # (minute, "home" | "away")
    # The feed as the plan publishes it: (at, prices or None while stopped), in time order.
    feed: list[tuple[float, dict[str, dict[str, Decimal]] | None]] = field(default_factory=list)
    final: Score = (0, 0)
    corrected: Score | None = None  # the rolled-back match: the score it is resettled with

    def prices_at(self, at: float) -> dict[str, dict[str, Decimal]] | None:
        """What the feed had published at ``at`` (None: stopped or not yet priced)."""
        i = bisect.bisect_right([t for t, _ in self.feed], at) - 1
        return self.feed[i][1] if i >= 0 else None


@dataclass
class Plan:
    """A whole match day: set-up, timed steps, and the timeline to show and record."""

    run_id: str
    options: Options
    players: list[Player]
    matches: list[Match]
    setup: list[Step]  # players' events, the first heartbeat, pre-match prices
    deposits: list[Step]  # the first deposits, once the players are known
    steps: list[Step]  # the match day, in time order
    phases: list[tuple[float, str]]
    kickoff: float
    spike: tuple[float, float]
    full_time: float
    end: float
    excluded: tuple[str, float]  # who self-excludes, when
    rolled_back: str  # the match whose settlement is rolled back and settled again

    def phase_at(self, at: float) -> str:
        i = bisect.bisect_right([t for t, _ in self.phases], at) - 1
        return self.phases[max(i, 0)][1]

    def all_steps(self) -> list[Step]:
        return [*self.setup, *self.deposits, *self.steps]

    def counts(self) -> dict[str, dict[str, int]]:
        """Messages per topic and kind."""
        out: dict[str, Counter[str]] = {}
        for s in self.all_steps():
            out.setdefault(s.topic, Counter())[s.kind] += 1
        return {t: dict(sorted(c.items())) for t, c in sorted(out.items())}

    def timeline(self) -> list[dict[str, Any]]:
        goals = [
            {
                "at": round(self.kickoff + m / 90 * self.options.duration, 3),
                "event_id": x.event_id,
                "minute": int(m),
                "team": team,
            }
            for x in self.matches
            for m, team in x.goals
        ]
        return [
            *({"at": round(t, 3), "phase": name} for t, name in self.phases),
            *goals,
            *(
                {
                    "event_id": x.event_id,
                    "final": list(x.final),
                    **({"corrected": list(x.corrected)} if x.corrected else {}),
                }
                for x in self.matches
            ),
        ]


def _poisson_draw(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _money(value: Decimal, currency: str) -> str:
    """An amount as the wire writes it: in ``currency``'s minor units."""
    return str(to_minor_unit(value, currency, ROUND_HALF_EVEN))


class _Builder:
    """Draws the plan; one instance per plan (its own ``Random``)."""

    def __init__(self, o: Options, run_id: str, geo_required: frozenset[str]) -> None:
        if o.players < 4 or o.matches < 1 or o.rate <= 0 or o.duration < 6 or o.spike_factor < 1:
            msg = "need players >= 4, matches >= 1, rate > 0, duration >= 6, spike factor >= 1"
            raise ValueError(msg)
        self.o, self.run_id, self.geo = o, run_id, geo_required
        self.rng = random.Random(o.seed)
        self.p = f"{run_id}-"
        self.steps: list[Step] = []
        self.n: Counter[str] = Counter()
        dur = o.duration
        self.kickoff = max(2.0, round(0.1 * dur, 3))
        self.spike = (self.kickoff, self.kickoff + max(1.0, min(3.0, round(0.08 * dur, 3))))
        self.full_time = self.kickoff + dur
        self.stop_s = max(0.8, min(3.0, dur / 20))
        self.feed_producer = f"{self.p}feed"

    def next_id(self, what: str) -> str:
        self.n[what] += 1
        return f"{self.p}{what}{self.n[what]}"

    def minute_at(self, minute: float) -> float:
        return self.kickoff + minute / 90 * self.o.duration

    # -- players --------------------------------------------------------------------------

    def players(self) -> list[Player]:
        out = []
        for n in range(self.o.players):
            j = JURISDICTIONS[n % len(JURISDICTIONS)]
            scale = 7 if j == "DK" else 1
            deposit = D(self.rng.randrange(20, 51) * 10 * scale)
            dep_limit = deposit * D("1.5") if self.rng.random() < 0.25 else None
            loss = (deposit * D("0.3")).quantize(D(1)) if self.rng.random() < 0.2 else None
            out.append(Player(f"{self.p}p{n + 1}", j, CURRENCY[j], deposit, dep_limit, loss))
        return out

    def joining(self, pl: Player) -> list[Step]:
        base = {"player_id": pl.player_id, "timestamp": None}
        docs: list[dict[str, Any]] = [
            {
                **base,
                "type": "registered",
                "jurisdiction": pl.jurisdiction,
                "currency": pl.currency,
                "birth_date": f"{self.rng.randrange(1960, 2004)}-05-01",
            },
            {**base, "type": "session_started", "session_id": f"{pl.player_id}-s1"},
        ]
        if pl.jurisdiction in self.geo:
            docs.append(
                {
                    **base,
                    "type": "geolocation",
                    "jurisdiction": pl.jurisdiction,
                    "allowed": True,
                    "checked_at": None,
                    "geolocate_in": 3600,
                    "ip": f"198.51.100.{self.rng.randrange(1, 255)}",
                }
            )
        for kind, amount in (("deposit", pl.deposit_limit), ("loss", pl.loss_limit)):
            if amount is not None:
                docs.append(
                    {
                        **base,
                        "type": "limit_set",
                        "limit": kind,
                        "period": "day",
                        "amount": _money(amount, pl.currency),
                        "currency": pl.currency,
                    }
                )
        return [Step(0.0, "players", pl.player_id, d["type"], d) for d in docs]

    def payment(self, at: float, pl: Player, kind: str, amount: Decimal, label: str) -> Step:
        pid = self.next_id("pay")
        doc = {
            "type": kind,
            "payment_id": pid,
            "player_id": pl.player_id,
            "amount": _money(amount, pl.currency),
            "currency": pl.currency,
            "timestamp": None,
        }
        return Step(at, "payments", pl.player_id, label, doc, expect=PAYMENT, ref=pid)

    # -- the feed -------------------------------------------------------------------------

    def matches(self) -> list[Match]:
        out = []
        for k in range(self.o.matches):
            hr, ar = self.rng.uniform(0.9, 2.0), self.rng.uniform(0.6, 1.5)
            goals = [
                (self.rng.uniform(3, 86), team)
                for team, lam in (("home", hr), ("away", ar))
                for _ in range(_poisson_draw(self.rng, lam))
            ]
            out.append(Match(f"{self.p}m{k + 1}", hr, ar, sorted(goals)))
        if not any(m.goals for m in out):  # a match day without a goal shows no bet stop
            out[0].goals.append((round(self.rng.uniform(20, 70), 1), "home"))
        for m in out:  # goals closer than a stop apart would overlap their stops
            kept: list[tuple[float, str]] = []
            for g in m.goals:
                if not kept or self.minute_at(g[0]) - self.minute_at(kept[-1][0]) > 2 * self.stop_s:
                    kept.append(g)
            m.goals = kept
        return out

    def odds_doc(
        self, m: Match, book: dict[str, dict[str, Decimal]], only: list[str] | None = None
    ) -> dict[str, Any]:
        markets = [
            {
                "market_id": mk,
                "status": "active",
                "outcomes": [{"outcome_id": o, "odds": str(p)} for o, p in outs.items()],
            }
            for mk, outs in book.items()
            if only is None or mk in only
        ]
        return {
            "type": "odds_change",
            "event_id": m.event_id,
            "producer": self.feed_producer,
            "timestamp": None,
            "markets": markets,
        }

    def feed_doc(self, kind: str, m: Match, **fields: Any) -> dict[str, Any]:
        return {
            "type": kind,
            "event_id": m.event_id,
            "producer": self.feed_producer,
            "timestamp": None,
            **fields,
        }

    def play_feed(self, m: Match) -> tuple[Step, list[Step]]:
        """The match's pre-match prices (set-up) and its feed during the day."""
        score = [0, 0]
        nudges = {mk: 1.0 for mk, _ in MARKETS}
        dur = self.o.duration

        def left(at: float) -> float:
            return min(1.0, max(0.0, 1 - (at - self.kickoff) / dur))

        book = prices((0, 0), m.home_rate, m.away_rate, 1.0, nudges)
        m.feed.append((-1.0, book))
        first = Step(0.0, "odds", m.event_id, "odds_change", self.odds_doc(m, book))
        steps: list[Step] = []
        stops = [(self.minute_at(g), team) for g, team in m.goals]
        at = self.rng.uniform(1.0, 3.0)
        events: list[tuple[float, str, str]] = [(t, "goal", team) for t, team in stops]
        while at < self.full_time - 0.5:
            events.append((at, "churn", ""))
            at += self.rng.uniform(2.0, 4.0)
        events.sort()
        stopped_until = -1.0
        for t, what, team in events:
            if what == "churn":
                if t < stopped_until + 0.2:
                    continue  # no prices while stopped: an odds_change would reopen the markets
                moved = self.rng.sample([mk for mk, _ in MARKETS], self.rng.randint(1, 3))
                for mk in moved:
                    nudges[mk] = min(1.1, max(0.9, nudges[mk] * self.rng.uniform(0.96, 1.04)))
                book = prices((score[0], score[1]), m.home_rate, m.away_rate, left(t), nudges)
                m.feed.append((t, book))
                steps.append(
                    Step(t, "odds", m.event_id, "odds_change", self.odds_doc(m, book, moved))
                )
                continue
            score[0 if team == "home" else 1] += 1
            steps.append(Step(t, "odds", m.event_id, "bet_stop", self.feed_doc("bet_stop", m)))
            m.feed.append((t, None))
            back = t + self.stop_s
            stopped_until = back
            book = prices((score[0], score[1]), m.home_rate, m.away_rate, left(back), nudges)
            m.feed.append((back, book))
            steps.append(
                Step(back, "odds", m.event_id, "odds_change_after_goal", self.odds_doc(m, book))
            )
        m.final = (score[0], score[1])
        ft = self.full_time
        m.feed.append((ft, None))
        steps.append(Step(ft, "odds", m.event_id, "bet_stop", self.feed_doc("bet_stop", m)))
        steps.append(
            Step(ft + 1.0, "odds", m.event_id, "bet_settlement", self.settlement(m, m.final))
        )
        return first, steps

    def settlement(self, m: Match, score: Score) -> dict[str, Any]:
        markets = [
            {"market_id": mk, "outcomes": [{"outcome_id": o, "result": r} for o, r in res.items()]}
            for mk, res in results(score).items()
        ]
        return self.feed_doc("bet_settlement", m, markets=markets)

    def rollback(self, m: Match) -> list[Step]:
        """The feed got the result wrong: roll every market back, settle again."""
        h, a = m.final
        m.corrected = (a, h) if h != a else (h + 1, a)  # home and away the wrong way round
        ft = self.full_time
        return [
            Step(
                ft + 2.0,
                "odds",
                m.event_id,
                "rollback_bet_settlement",
                self.feed_doc("rollback_bet_settlement", m),
            ),
            Step(
                ft + 2.5,
                "odds",
                m.event_id,
                "bet_settlement_corrected",
                self.settlement(m, m.corrected),
            ),
        ]

    # -- bets -----------------------------------------------------------------------------

    def bet_times(self) -> list[float]:
        o = self.o
        segments = [
            (0.0, self.spike[0], o.rate),
            (self.spike[0], self.spike[1], o.rate * o.spike_factor),
            (self.spike[1], self.full_time, o.rate),
        ]
        times: list[float] = []
        for a, b, r in segments:
            times += sorted(a + (b - a) * self.rng.random() for _ in range(round(r * (b - a))))
        return times

    def stake(self, pl: Player, choices: tuple[int, ...] = (1, 2, 2, 5, 5, 10, 20)) -> Decimal:
        return D(self.rng.choice(choices) * (7 if pl.currency == "DKK" else 1))

    def bet(
        self,
        at: float,
        pl: Player,
        kind: str,
        legs: list[tuple[str, str, str, Decimal]],
        stake: Decimal,
        policy: str,
    ) -> Step:
        bet_id = self.next_id("b")
        doc = {
            "bet_id": bet_id,
            "player_id": pl.player_id,
            "placed_at": None,
            "stake": _money(stake, pl.currency),
            "currency": pl.currency,
            "odds_change": policy,
            "selections": [
                {"event_id": e, "market_id": mk, "outcome_id": oc, "odds": str(p)}
                for e, mk, oc, p in legs
            ],
        }
        return Step(at, "bets", pl.player_id, kind, doc, expect=BET, ref=bet_id)

    def leg(self, m: Match, at: float, taken: set[str]) -> tuple[str, str, str, Decimal] | None:
        book = m.prices_at(at) or m.prices_at(at - self.stop_s - 0.01) or m.feed[0][1]
        assert book is not None
        free = [mk for mk, _ in MARKETS if mk not in taken]
        if not free:
            return None
        mk = self.rng.choice(free)
        oc = self.rng.choice(sorted(book[mk]))
        return m.event_id, mk, oc, book[mk][oc]

    def policy(self) -> str:
        return self.rng.choices(("none", "higher", "any"), (35, 30, 35))[0]

    def one_bet(self, at: float, kind: str, pl: Player, matches: list[Match]) -> list[Step]:
        rng = self.rng
        m = rng.choice(matches)
        if kind in ("single", "retry"):
            leg = self.leg(m, at, set())
            assert leg is not None
            step = self.bet(at, pl, "single", [leg], self.stake(pl), self.policy())
            if kind == "single":
                return [step]
            again = Step(
                at + rng.uniform(0.05, 0.3), "bets", pl.player_id, "retry", repeat_of=step.ref
            )
            return [step, again]
        if kind == "accumulator":
            legs: list[tuple[str, str, str, Decimal]] = []
            used: dict[str, set[str]] = {}
            for _ in range(rng.randint(2, 4)):
                mm = rng.choice(matches)
                got = self.leg(mm, at, used.setdefault(mm.event_id, set()))
                if got is not None:
                    used[mm.event_id].add(got[1])
                    legs.append(got)
            return [self.bet(at, pl, "accumulator", legs, self.stake(pl, (1, 2, 5)), self.policy())]
        if kind.startswith("stale"):
            e, mk, oc, current = self.leg(m, at, set()) or ("", "", "", D(0))
            policy = (
                kind.removeprefix("stale_")
                if "_" in kind
                else rng.choice(("none", "none", "higher", "any"))
            )
            delta = D(rng.randrange(5, 30)) / 100
            seen = (
                current - delta
                if policy == "higher" and current - delta > D("1.01")
                else (current + delta)
            )
            return [
                self.bet(at, pl, f"stale_{policy}", [(e, mk, oc, seen)], self.stake(pl), policy)
            ]
        if kind == "unknown_market":
            leg = (
                m.event_id,
                "correct_score",
                f"{rng.randrange(4)}-{rng.randrange(4)}",
                D(rng.randrange(600, 2500)) / 100,
            )
            return [self.bet(at, pl, kind, [leg], self.stake(pl), "any")]
        if kind == "beyond_balance":
            leg = self.leg(m, at, set())
            assert leg is not None
            return [self.bet(at, pl, kind, [leg], pl.deposit * 50, "any")]
        if kind == "during_stop":
            leg = self.leg(m, at, set())
            assert leg is not None
            return [self.bet(at, pl, kind, [leg], self.stake(pl), "any")]
        return [self.malformed(at, pl, kind.removeprefix("malformed_"), m)]

    def malformed(self, at: float, pl: Player, how: str, m: Match) -> Step:
        bet_id = self.next_id("bad")
        leg = self.leg(m, at, set())
        assert leg is not None
        doc: dict[str, Any] = {
            "bet_id": bet_id,
            "player_id": pl.player_id,
            "placed_at": None,
            "stake": "1.00",
            "currency": pl.currency,
            "odds_change": "any",
            "selections": [
                {"event_id": leg[0], "market_id": leg[1], "outcome_id": leg[2], "odds": str(leg[3])}
            ],
        }
        if how == "bad_json":
            raw = f'{{"bet_id": "{bet_id}", "player_id": "{pl.player_id}", "stake": '.encode()
            return Step(
                at, "bets", pl.player_id, "malformed_bad_json", raw=raw, expect=DEAD, ref=bet_id
            )
        if how == "unknown_field":
            doc["promo_code"] = "FREEBET10"
        else:
            del doc["stake"]
        return Step(at, "bets", pl.player_id, f"malformed_{how}", doc, expect=DEAD, ref=bet_id)

    # -- casino ---------------------------------------------------------------------------

    def casino(self, players: list[Player]) -> list[Step]:
        rng = self.rng
        out: list[Step] = []
        rate = max(0.5, self.o.rate / 8)
        end = self.full_time + 1.0
        n = round(rate * end)
        times = sorted(end * rng.random() for _ in range(n))
        special = {0: "rollback", 1: "uncertified"} if n >= 4 else {}
        for i, at in enumerate(times):
            pl = rng.choice(players)
            what = (
                special.get(i) or rng.choices(("round", "rollback", "uncertified"), (88, 8, 4))[0]
            )
            round_id = self.next_id("r")
            debit_tx = self.next_id("tx")
            stake = D(rng.choice((10, 20, 50, 100, 200))) / 100 * (7 if pl.currency == "DKK" else 1)
            game = (
                UNCERTIFIED[pl.jurisdiction]
                if what == "uncertified"
                else rng.choice(CASINO_GAMES[pl.jurisdiction])
            )
            base = {
                "round_id": round_id,
                "game_id": game,
                "player_id": pl.player_id,
                "currency": pl.currency,
                "timestamp": None,
            }
            out.append(
                Step(
                    at,
                    "casino",
                    pl.player_id,
                    f"debit{'_uncertified' * (what == 'uncertified')}",
                    {
                        "type": "debit",
                        "transaction_id": debit_tx,
                        **base,
                        "amount": _money(stake, pl.currency),
                    },
                    expect=CASINO,
                    ref=debit_tx,
                )
            )
            if what == "uncertified":
                continue
            later = at + rng.uniform(0.2, 0.8)
            tx = self.next_id("tx")
            doc: dict[str, Any]
            if what == "rollback":
                doc = {
                    "type": "rollback",
                    "transaction_id": tx,
                    **base,
                    "reference_transaction_id": debit_tx,
                    "amount": _money(stake, pl.currency),
                }
            else:
                k = rng.choices((0, 0.5, 1, 2, 3, 5, 10), (55, 10, 12, 10, 6, 5, 2))[0]
                doc = {
                    "type": "credit",
                    "transaction_id": tx,
                    **base,
                    "amount": _money(stake * D(str(k)), pl.currency),
                    "round_closed": True,
                }
            out.append(Step(later, "casino", pl.player_id, str(doc["type"]), doc, None, CASINO, tx))
        return out

    # -- the day --------------------------------------------------------------------------

    def build(self) -> Plan:
        rng = self.rng
        players = self.players()
        matches = self.matches()
        setup = [s for pl in players for s in self.joining(pl)]
        setup.append(
            Step(
                0.0,
                "odds",
                self.feed_producer,
                "alive",
                {"type": "alive", "producer": self.feed_producer, "timestamp": None},
            )
        )
        steps: list[Step] = []
        for m in matches:
            first, feed = self.play_feed(m)
            setup.append(first)
            steps += feed
        rolled = matches[0]
        steps += self.rollback(rolled)
        deposits = [self.payment(0.0, pl, "deposit", pl.deposit, "deposit") for pl in players]
        end = self.full_time + 3.0
        t = 0.0
        while t < end:
            steps.append(
                Step(
                    t,
                    "odds",
                    self.feed_producer,
                    "alive",
                    {"type": "alive", "producer": self.feed_producer, "timestamp": None},
                )
            )
            t += HEARTBEAT_SECONDS

        dur, ko = self.o.duration, self.kickoff
        unlimited = [pl for pl in players if pl.loss_limit is None] or players
        # Guaranteed cases, at fixed points of the day, so even a short run shows each one.
        fixed: list[tuple[float, str, Player]] = [
            (ko + 0.15 * dur, "stale_none", rng.choice(players)),
            (ko + 0.55 * dur, "stale_higher", rng.choice(players)),
            (ko + 0.25 * dur, "unknown_market", rng.choice(players)),
            (ko + 0.35 * dur, "beyond_balance", rng.choice(unlimited)),
            (ko + 0.20 * dur, "retry", rng.choice(players)),
            *(
                (ko + f * dur, f"malformed_{how}", rng.choice(players))
                for f, how in zip((0.3, 0.5, 0.7), MALFORMED, strict=True)
            ),
        ]
        for at, kind, pl in fixed:
            steps += self.one_bet(at, kind, pl, matches)
        # Bets while a goal's stop holds, and after full time (stopped, then settled).
        for m in matches:
            for minute, _ in m.goals:
                at = self.minute_at(minute) + self.stop_s * rng.uniform(0.4, 0.7)
                steps += self.one_bet(at, "during_stop", rng.choice(players), [m])
            for after in (0.5, 1.6):
                steps += self.one_bet(
                    self.full_time + after, "during_stop", rng.choice(players), [m]
                )

        # The random bets at the base rate, the kick-off spike on top.
        kinds, weights = list(MIX), list(MIX.values())
        malformed = 0
        for at in self.bet_times():
            kind = rng.choices(kinds, weights)[0]
            pl = rng.choice(unlimited if kind == "beyond_balance" else players)
            if kind == "malformed":
                kind = f"malformed_{MALFORMED[malformed % len(MALFORMED)]}"
                malformed += 1
            steps += self.one_bet(at, kind, pl, matches)

        # Mid-match, one player self-excludes; later bets and deposits are refused.
        ex = rng.choice(players)
        ex_at = ko + 0.45 * dur
        steps.append(
            Step(
                ex_at,
                "players",
                ex.player_id,
                "self_excluded",
                {
                    "type": "self_excluded",
                    "player_id": ex.player_id,
                    "until": None,
                    "timestamp": None,
                },
            )
        )
        for later in (max(1.5, 0.12 * dur), 0.3 * dur):
            steps += self.one_bet(ex_at + later, "single", ex, matches)
            steps[-1].kind = "after_exclusion"
        steps.append(
            self.payment(
                ex_at + max(2.0, 0.15 * dur), ex, "deposit", D(20), "deposit_after_exclusion"
            )
        )
        # Top-ups (past a deposit limit for those who set one) and, after the match,
        # a few withdrawals.
        for pl in players:
            if pl.deposit_limit is not None or rng.random() < 0.15:
                at = ko + rng.uniform(0.1, 0.9) * dur
                steps.append(self.payment(at, pl, "deposit", pl.deposit * D("0.75"), "top_up"))
        leaving = rng.sample(players, max(1, len(players) // 6))
        for pl in leaving:
            amount = D(rng.randrange(10, 41) * (7 if pl.currency == "DKK" else 1))
            steps.append(self.payment(self.full_time + 1.5, pl, "withdrawal", amount, "withdrawal"))
        steps += self.casino(players)
        steps.sort(key=lambda s: s.at)

        phases = [
            (0.0, "pre-match"),
            (self.spike[0], "kick-off spike"),
            (self.spike[1], "1st half"),
            (ko + dur / 2, "2nd half"),
        ]
        for m in matches:
            short = m.event_id.removeprefix(self.p)
            for minute, _ in m.goals:
                at = self.minute_at(minute)
                phases.append((at, f"goal {short} {int(minute)}'"))
                back = at + self.stop_s
                phases.append((back, "1st half" if back < ko + dur / 2 else "2nd half"))
        phases += [(self.full_time, "full time"), (self.full_time + 1.0, "settlement")]
        phases.sort()
        return Plan(
            self.run_id,
            self.o,
            players,
            matches,
            setup,
            deposits,
            steps,
            phases,
            self.kickoff,
            self.spike,
            self.full_time,
            end,
            (ex.player_id, ex_at),
            rolled.event_id,
        )


def make_plan(
    options: Options, run_id: str, geo_required: frozenset[str] = frozenset({"NJ"})
) -> Plan:
    """The match day for ``options`` (its seed); ids start with ``<run_id>-``.

    ``geo_required``: the jurisdictions whose policy wants a geolocation check to play.
    """
    return copy.deepcopy(_Builder(options, run_id, geo_required).build())
