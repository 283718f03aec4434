"""``croupier demo``: a simulated match on the running stack, from odds to reconciliation.

Against the workers ``croupier stack up`` runs, with ids unique to this run (so it can be
run again and again on the same stack):

1. four players register (UK, DK, ES, NJ, each in their own currency), open a session
   (the NJ player also passes a geolocation check, as New Jersey's policy requires) and
   deposit;
2. a producer's feed starts (``alive`` heartbeats every two seconds) and prices two
   matches; the home price of the first moves twice;
3. bets arrive: singles, an accumulator, a stale price under ``odds_change: none``, a
   lower price under ``higher``, any price under ``any``, an unknown player, an unknown
   market, a stake beyond the balance, a producer's retry and a malformed message;
4. ``bet_stop``, a bet after it, ``bet_settlement``, then the feed corrects itself:
   ``rollback_bet_settlement`` and a corrected ``bet_settlement`` (a resettlement);
5. player protection: a self-excluded player is refused a bet and a deposit at once but
   may withdraw; a loss limit stops play at exactly its amount; a session an hour old
   gets its reality check on ``player-notifications``;
6. the casino: a game aggregator's debits, credits and rollbacks through the seamless
   wallet (a retried debit answered with its first answer, a rollback giving the stake
   back, a game not certified in the player's jurisdiction, a late debit after its
   rollback), then rounds of Croupier Dice, the house's own game, rolled by the
   certified generator;
7. balances from the ledger and ``Ledger.reconcile()``;
8. the audit trail verified, every wallet of the run rebuilt from it alone and set beside
   the ledger, and the DK and ES regulator streams verified and written as their files
   (SAFE-style XML with TamperTokens; SCI-style signed batches) under ``.stack/reports``.

Each step waits until the workers have recorded the messages as done in PostgreSQL
(``consumer_progress``), then reads what they published. Everything is printed as
tables and checked against what must happen; any difference makes the exit status 1.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from config.kafka import librdkafka_conf, make_producer
from config.settings import Settings
from config.stackenv import load_stack_env
from croupier.exits import EXIT_FAILED, EXIT_OK
from croupier.redact import redact
from sinks.postgres.ledger import Ledger

D = Decimal
HEARTBEAT_SECONDS = 2.0
FEED_PRODUCER = "demo"  # one producer for every run: silent between runs, back with each


class DemoError(Exception):
    """The stack did not answer, or the workers did not get through a step in time."""


# -- talking to Kafka and PostgreSQL ----------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """A message Kafka acknowledged, and where it landed."""

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes


@dataclass(frozen=True)
class Out:
    """A message a worker published."""

    topic: str
    key: str
    doc: dict[str, Any]


class Upstream:
    """The upstream producers: produce, flush, and know where every message landed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = make_producer(settings)
        self._clock = datetime.now(UTC)
        self._lock = threading.Lock()

    def feed_time(self) -> str:
        """Now, strictly after every feed time handed out before (feed order is time order)."""
        with self._lock:
            self._clock = max(datetime.now(UTC), self._clock + timedelta(milliseconds=1))
            return self._clock.isoformat()

    def send(self, topic: str, items: Sequence[tuple[str, bytes]]) -> list[Sent]:
        """Produce ``(key, value)`` pairs to a contract topic; wait until Kafka has them all."""
        delivered: dict[int, Sent] = {}
        errors: list[str] = []

        def report(index: int, key: str, value: bytes) -> Callable[[Any, Any], None]:
            def on_delivery(err: Any, msg: Any) -> None:
                if err is not None:
                    errors.append(str(err))
                else:
                    delivered[index] = Sent(msg.topic(), msg.partition(), msg.offset(), key, value)

            return on_delivery

        real = self.settings.topic(topic)
        for n, (key, value) in enumerate(items):
            self.producer.produce(real, key=key.encode(), value=value,
                                  on_delivery=report(n, key, value))  # fmt: skip
            self.producer.poll(0)
        self.producer.flush(30)
        if errors or len(delivered) != len(items):
            msg = f"Kafka did not take every message for {real}: {errors or 'no report'}"
            raise DemoError(msg)
        return [delivered[n] for n in range(len(items))]


class Tail:
    """Reads topics from where they ended when the demo started: only what comes after."""

    def __init__(self, settings: Settings, topics: Iterable[str]) -> None:
        from confluent_kafka import Consumer, TopicPartition
        from confluent_kafka.admin import AdminClient

        self.admin = AdminClient(librdkafka_conf(settings))
        self.consumer = Consumer({
            **librdkafka_conf(settings),
            "group.id": f"croupier-demo-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        })  # fmt: skip
        meta = self.admin.list_topics(timeout=10).topics
        partitions: list[tuple[str, int]] = []
        for topic in topics:
            if topic not in meta:
                msg = f"topic {topic} does not exist: run `croupier topics create`"
                raise DemoError(msg)
            partitions += [(topic, p) for p in meta[topic].partitions]
        self.next = self.ends(partitions)
        self.consumer.assign([TopicPartition(t, p, o) for (t, p), o in self.next.items()])
        self.records: list[Out] = []

    def ends(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Each partition's end offset, asked in one request (a consumer asks one by one,
        each queued behind its fetch: half a second a partition)."""
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec

        futures = self.admin.list_offsets(
            # OffsetSpec ships without annotations.
            {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions},  # type: ignore[no-untyped-call]
            request_timeout=10,
        )
        return {(tp.topic, tp.partition): int(f.result().offset) for tp, f in futures.items()}

    def catch_up(self, deadline: float) -> None:
        """Read everything published so far (up to each partition's current end)."""
        target = self.ends(self.next)
        while any(self.next[tp] < end for tp, end in target.items()):
            if time.monotonic() > deadline:
                msg = "timed out reading the workers' outputs"
                raise DemoError(msg)
            for m in self.consumer.consume(num_messages=500, timeout=0.2):
                topic, partition, offset, key = m.topic(), m.partition(), m.offset(), m.key()
                if m.error() or topic is None or partition is None or offset is None:
                    continue
                self.next[(topic, partition)] = offset + 1
                try:
                    doc = json.loads(m.value() or b"null")
                except ValueError:
                    doc = None
                self.records.append(
                    Out(topic, key.decode() if key else "", doc if isinstance(doc, dict) else {})
                )
            # The consumer's position, not the last offset read: it steps over control records.
            for tp in self.consumer.position(self.consumer.assignment()):
                if tp.offset >= 0:
                    self.next[(tp.topic, tp.partition)] = tp.offset

    def close(self) -> None:
        self.consumer.close()


class Progress:
    """How far the workers' consumer group has finished each partition (PostgreSQL's word)."""

    def __init__(self, settings: Settings) -> None:
        self.group = settings.app_id
        self.conn = psycopg.connect(
            settings.pg_dsn.get_secret_value(),
            options=f"-c search_path={settings.pg_schema}",
            autocommit=True,
        )

    def wait(self, sent: Iterable[Sent], deadline: float, what: str) -> None:
        """Wait until every message in ``sent`` is done: its rows, outputs and table moves."""
        need: dict[tuple[str, int], int] = {}
        for s in sent:
            need[(s.topic, s.partition)] = max(need.get((s.topic, s.partition), 0), s.offset + 1)
        topics = sorted({t for t, _ in need})
        while True:
            rows = self.conn.execute(
                """SELECT topic, partition, next_offset FROM consumer_progress
                    WHERE consumer_group = %s AND topic = ANY(%s)""",
                (self.group, topics),
            ).fetchall()
            done = {(t, p): o for t, p, o in rows}
            if all(done.get(tp, 0) >= offset for tp, offset in need.items()):
                return
            if time.monotonic() > deadline:
                msg = f"timed out waiting for the workers to finish {what}"
                raise DemoError(msg)
            time.sleep(0.1)

    def wait_reports(self, deadline: float) -> None:
        """Wait until the reporter has read the whole audit trail and published it all."""
        while True:
            behind = self.conn.execute(
                """SELECT (SELECT count(*) FROM audit_heads h LEFT JOIN report_progress p
                             USING (chain) WHERE h.seq > coalesce(p.seq, 0))
                        + (SELECT count(*) FROM report_heads h LEFT JOIN report_published p
                             USING (jurisdiction) WHERE h.seq > coalesce(p.seq, 0))"""
            ).fetchone()
            if behind is not None and behind[0] == 0:
                return
            if time.monotonic() > deadline:
                msg = "timed out waiting for the reporter (are the workers of this code up?)"
                raise DemoError(msg)
            time.sleep(0.2)

    def close(self) -> None:
        self.conn.close()


class Heartbeat:
    """The feed producer's ``alive`` messages, every couple of seconds, in a thread."""

    def __init__(self, upstream: Upstream, producer: str) -> None:
        self.upstream, self.producer = upstream, producer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-alive", daemon=True)

    def beat(self) -> list[Sent]:
        msg = {"type": "alive", "producer": self.producer, "timestamp": self.upstream.feed_time()}
        return self.upstream.send("odds", [(self.producer, json.dumps(msg).encode())])

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.beat()
            except Exception:  # a missed beat shows up as market_suspended
                continue

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)


# -- the match-day script ---------------------------------------------------------------------


@dataclass(frozen=True)
class Player:
    short: str
    player_id: str
    jurisdiction: str
    currency: str
    deposit: Decimal


Leg = tuple[str, str, str, str]  # event, market, outcome, odds the player saw


@dataclass(frozen=True)
class BetCase:
    """A bet to place and what Croupier must answer."""

    short: str
    bet_id: str
    player: str  # player id
    currency: str
    stake: str
    legs: tuple[Leg, ...]
    policy: str
    expect: str  # "accepted" or the rejection reason
    expect_odds: str | None = None
    why: str = ""

    def wire(self, at: str) -> bytes:
        return json.dumps({
            "bet_id": self.bet_id, "player_id": self.player, "placed_at": at,
            "stake": self.stake, "currency": self.currency, "odds_change": self.policy,
            "selections": [{"event_id": e, "market_id": m, "outcome_id": o, "odds": p}
                           for e, m, o, p in self.legs],
        }).encode()  # fmt: skip


@dataclass
class Checks:
    """Every expectation the demo checks, and the ones that failed."""

    failures: list[str] = field(default_factory=list)
    passed: int = 0

    def expect(self, ok: bool, what: str) -> str:
        if ok:
            self.passed += 1
            return "ok"
        self.failures.append(what)
        return "FAIL"


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    body = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]
    for line in [list(headers), ["-" * w for w in widths], *body]:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def heading(text: str) -> None:
    print(f"\n{text}")


class Demo:
    """One run of the match: its ids, its messages, what it saw and what it checked."""

    def __init__(self, settings: Settings, run: str, deadline: float) -> None:
        self.settings, self.run, self.deadline = settings, run, deadline
        self.prefix = f"demo-{run}-"
        self.upstream = Upstream(settings)
        self.progress = Progress(settings)
        out = (
            "bet-decisions",
            "settlements",
            "payment-decisions",
            "dead-letters",
            "player-notifications",
            "casino-results",
        )
        self.tail = Tail(settings, [settings.topic(t) for t in out])
        self.checks = Checks()
        self.feed_producer = FEED_PRODUCER
        self.heartbeat = Heartbeat(self.upstream, self.feed_producer)
        self.m1, self.m2 = f"{self.prefix}m1", f"{self.prefix}m2"
        self.players = [
            Player("uk", f"{self.prefix}uk", "UK", "GBP", D("100.00")),
            Player("dk", f"{self.prefix}dk", "DK", "DKK", D("500.00")),
            Player("es", f"{self.prefix}es", "ES", "EUR", D("100.00")),
            Player("nj", f"{self.prefix}nj", "NJ", "USD", D("100.00")),
        ]
        self.final: dict[str, tuple[str, str]] = {}  # short -> (cash, pending) at the end

    def close(self) -> None:
        self.heartbeat.stop()
        self.tail.close()
        self.progress.close()

    def ours(self, topic: str) -> list[Out]:
        real = self.settings.topic(topic)
        return [r for r in self.tail.records if r.topic == real and r.key.startswith(self.prefix)]

    def player(self, short: str) -> Player:
        return next(p for p in self.players if p.short == short)

    # -- 1. players and deposits ------------------------------------------------------------

    def register_and_deposit(self) -> None:
        heading("1. Players register and deposit")
        now = self.upstream.feed_time()
        regs = [
            (p.player_id, json.dumps(event).encode())
            for p in self.players for event in self.joining(p, now)
        ]  # fmt: skip
        self.progress.wait(self.upstream.send("players", regs), self.deadline, "registrations")
        pays = [
            (p.player_id, json.dumps({
                "type": "deposit", "payment_id": f"{p.player_id}-dep", "player_id": p.player_id,
                "amount": str(p.deposit), "currency": p.currency, "timestamp": now,
            }).encode())
            for p in self.players
        ]  # fmt: skip
        self.progress.wait(self.upstream.send("payments", pays), self.deadline, "deposits")
        self.tail.catch_up(self.deadline)
        got = {r.doc.get("payment_id"): r.doc for r in self.ours("payment-decisions")}
        rows = []
        for p in self.players:
            d = got.get(f"{p.player_id}-dep", {})
            status = d.get("status", "(none)")
            ok = self.checks.expect(status == "accepted", f"deposit of {p.short}: {status}")
            rows.append((p.player_id, p.jurisdiction, f"{p.deposit} {p.currency}", status, ok))
        print_table(["player", "jurisdiction", "deposit", "payment decision", "check"], rows)

    def joining(
        self, p: Player, now: str, *, session_at: str | None = None
    ) -> list[dict[str, Any]]:
        """A player's first events: registered, a session open, located where required."""
        base = {"player_id": p.player_id, "timestamp": now}
        events: list[dict[str, Any]] = [
            {**base, "type": "registered", "jurisdiction": p.jurisdiction,
             "currency": p.currency, "birth_date": "1990-05-01"},
            {**base, "type": "session_started", "session_id": f"{p.player_id}-s1",
             "timestamp": session_at or now},
        ]  # fmt: skip
        if p.jurisdiction == "NJ":
            geo = {"type": "geolocation", "jurisdiction": "NJ", "allowed": True,
                   "checked_at": now, "geolocate_in": 3600, "ip": "198.51.100.7"}  # fmt: skip
            events.append({**base, **geo})
        return events

    # -- 2. the feed ----------------------------------------------------------------------

    def odds(self, event: str, markets: dict[str, dict[str, str]]) -> tuple[str, bytes]:
        return event, json.dumps({
            "type": "odds_change", "event_id": event, "producer": self.feed_producer,
            "timestamp": self.upstream.feed_time(),
            "markets": [{"market_id": m, "status": "active",
                         "outcomes": [{"outcome_id": o, "odds": p} for o, p in prices.items()]}
                        for m, prices in markets.items()],
        }).encode()  # fmt: skip

    def feed(self, kind: str, event: str, **fields: Any) -> tuple[str, bytes]:
        msg = {"type": kind, "event_id": event, "producer": self.feed_producer,
               "timestamp": self.upstream.feed_time(), **fields}  # fmt: skip
        return event, json.dumps(msg).encode()

    def settle(self, event: str, results: dict[str, dict[str, str]]) -> tuple[str, bytes]:
        markets = [{"market_id": m, "outcomes": [{"outcome_id": o, "result": r}
                                                 for o, r in res.items()]}
                   for m, res in results.items()]  # fmt: skip
        return self.feed("bet_settlement", event, markets=markets)

    def open_markets(self) -> None:
        heading(f"2. The feed: producer {self.feed_producer} is alive and prices two matches")
        # The first heartbeat is done before any price is sent: after a silence it marks the
        # producer as recovered, and only prices newer than that reopen its markets.
        self.progress.wait(self.heartbeat.beat(), self.deadline, "the first heartbeat")
        self.heartbeat.start()
        prices = [
            ("m1", "1x2", {"home": "2.10", "draw": "3.40", "away": "3.60"}),
            ("m1", "total_2.5", {"over": "1.90", "under": "1.90"}),
            ("m2", "1x2", {"home": "1.50", "draw": "4.00", "away": "6.00"}),
            ("m1", "1x2", {"home": "2.05", "draw": "3.45", "away": "3.70"}),
            ("m1", "1x2", {"home": "2.00", "draw": "3.50", "away": "3.80"}),
        ]
        events = {"m1": self.m1, "m2": self.m2}
        sent = self.upstream.send("odds", [self.odds(events[e], {m: p}) for e, m, p in prices])
        self.progress.wait(sent, self.deadline, "the odds")
        print_table(
            ["event", "market", "prices (odds_change, in feed order)"],
            [(events[e], m, "  ".join(f"{o} {p}" for o, p in pr.items())) for e, m, pr in prices],
        )

    # -- 3. bets ----------------------------------------------------------------------------

    def bet_cases(self) -> list[BetCase]:
        uk, dk, es, nj = (self.player(s) for s in ("uk", "dk", "es", "nj"))
        m1, m2 = self.m1, self.m2

        def case(short: str, p: Player, stake: str, legs: Sequence[Leg], policy: str,
                 expect: str, odds: str | None = None, why: str = "") -> BetCase:  # fmt: skip
            return BetCase(short, f"{self.prefix}{short}", p.player_id, p.currency, stake,
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
            BetCase("b9", f"{self.prefix}b9", f"{self.prefix}ghost", "EUR", "5.00",
                    ((m1, "1x2", "home", "2.00"),), "none", "unknown_player",
                    why="never registered"),
        ]  # fmt: skip

    def place_bets(self) -> dict[str, BetCase]:
        heading("3. Bets (b1 is sent twice: a producer retry; one more message is malformed)")
        cases = self.bet_cases()
        at = self.upstream.feed_time()
        items = [(c.player, c.wire(at)) for c in cases]
        retry = items[0]
        malformed = (self.player("uk").player_id, f'{{"bet_id": "{self.prefix}bx", '.encode())
        sent = self.upstream.send("bets", [*items, retry, malformed])
        self.progress.wait(sent, self.deadline, "the bets")
        self.tail.catch_up(self.deadline)
        self.show_decisions(cases)
        # The malformed message: a dead letter with its bytes and source position.
        bad = sent[-1]
        letters = [r.doc for r in self.ours("dead-letters")
                   if r.doc.get("source", {}).get("offset") == bad.offset
                   and r.doc.get("source", {}).get("partition") == bad.partition
                   and r.doc.get("source", {}).get("topic") == bad.topic]  # fmt: skip
        reason = letters[0]["reason"] if letters else "(none)"
        ok = self.checks.expect(reason == "malformed_json", f"malformed bet: {reason}")
        print(f"\n  malformed message at {bad.topic}[{bad.partition}]@{bad.offset}: "
              f"dead letter, reason {reason}  {ok}")  # fmt: skip
        return {c.short: c for c in cases}

    def show_decisions(self, cases: Sequence[BetCase]) -> None:
        decided: dict[str, list[dict[str, Any]]] = {}
        for r in self.ours("bet-decisions"):
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
                and (
                    c.expect_odds is None or (odds is not None and D(str(odds)) == D(c.expect_odds))
                )
            )
            if c.short == "b1":  # the producer's retry: the first decision again, not a second
                ok = ok and len(docs) == 2
            wanted = f"{c.expect} {c.expect_odds or ''}".strip()
            mark = self.checks.expect(
                ok, f"bet {c.short}: wanted {wanted}, got {got} {odds or ''} x{len(docs)}"
            )
            short = self.prefix
            legs = " + ".join(f"{e.removeprefix(short)} {m} {o} @{p}" for e, m, o, p in c.legs)
            rows.append((c.short, c.player.removeprefix(self.prefix), f"{c.stake} {c.currency}",
                         legs, c.policy, d.get("status", "(none)"), d.get("reason") or "",
                         odds or "", len(docs), c.why, mark))  # fmt: skip
        print_table(["bet", "player", "stake", "selections", "odds_change", "status", "reason",
                     "odds", "decisions", "case", "check"], rows)  # fmt: skip

    # -- 4. stop, settle, correct ---------------------------------------------------------

    def stop_and_settle(self) -> None:
        heading("4. bet_stop, a late bet, settlement, rollback and resettlement")
        sent = self.upstream.send("odds", [self.feed("bet_stop", self.m1),
                                           self.feed("bet_stop", self.m2)])  # fmt: skip
        self.progress.wait(sent, self.deadline, "the bet stops")
        late = BetCase("b10", f"{self.prefix}b10", self.player("uk").player_id, "GBP", "5.00",
                       ((self.m2, "1x2", "home", "1.50"),), "none", "market_suspended",
                       why="after bet_stop")  # fmt: skip
        sent = self.upstream.send("bets", [(late.player, late.wire(self.upstream.feed_time()))])
        self.progress.wait(sent, self.deadline, "the late bet")
        self.tail.catch_up(self.deadline)
        self.show_decisions([late])

        home_wins = {"home": "win", "draw": "lose", "away": "lose"}
        first = [
            self.settle(self.m1, {"1x2": home_wins, "total_2.5": {"over": "lose", "under": "win"}}),
            self.settle(self.m2, {"1x2": home_wins}),
        ]
        sent = self.upstream.send("odds", first)
        self.progress.wait(sent, self.deadline, "the settlements")
        # The feed got m1's result wrong: it rolls the 1x2 market back and settles it again.
        correction = [
            self.feed("rollback_bet_settlement", self.m1, market_ids=["1x2"]),
            self.settle(self.m1, {"1x2": {"home": "lose", "draw": "win", "away": "lose"}}),
        ]
        sent = self.upstream.send("odds", correction)
        self.progress.wait(sent, self.deadline, "the rollback and resettlement")
        self.heartbeat.stop()
        self.tail.catch_up(self.deadline)
        print("\n  m1: 1x2 home win, total_2.5 under; m2: 1x2 home win; "
              "then m1 1x2 rolled back and resettled: draw win")  # fmt: skip

    def show_settlements(self) -> None:
        heading("5. Settlements published")
        p = self.prefix
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
        for r in self.ours("settlements"):
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
            mark = self.checks.expect(ok, f"settlement {sid}: wanted {want}, got {seen}")
            if have is not None:
                shown = (have[0], have[1] or "", f"{have[2]} {have[3]}")
            else:
                shown = ("(conflicting)" if seen else "(missing)", "", "")
            expect = f"{want[0]} {want[1] or ''} {want[2]}" if want else "(unexpected)"
            rows.append((sid.removeprefix(p), *shown, expect, mark))
        print_table(["settlement", "kind", "result", "payout", "expected", "check"], rows)

    # -- 5. player protection -------------------------------------------------------------

    def protection(self) -> None:
        heading("6. Player protection: exclusion, a loss limit, a reality check")
        m3 = f"{self.prefix}m3"
        prices = {"1x2": {"home": "2.50", "draw": "3.20", "away": "2.80"}}
        sent = self.upstream.send("odds", [self.odds(m3, prices)])
        self.progress.wait(sent, self.deadline, "m3's odds")
        now = self.upstream.feed_time()
        hour_ago = (datetime.now(UTC) - timedelta(minutes=60, seconds=-3)).isoformat()
        ex = Player("ex", f"{self.prefix}ex", "UK", "GBP", D("100.00"))
        lo = Player("lo", f"{self.prefix}lo", "ES", "EUR", D("100.00"))
        rc = Player("rc", f"{self.prefix}rc", "DK", "DKK", D("500.00"))
        self.players += [ex, lo, rc]
        events = [*self.joining(ex, now), *self.joining(lo, now),
                  *self.joining(rc, now, session_at=hour_ago),
                  {"type": "limit_set", "player_id": lo.player_id, "limit": "loss",
                   "period": "day", "amount": "15.00", "currency": "EUR",
                   "timestamp": now}]  # fmt: skip
        items = [(e["player_id"], json.dumps(e).encode()) for e in events]
        self.progress.wait(self.upstream.send("players", items), self.deadline, "the players")
        self.pay([("deposit", ex, "100.00"), ("deposit", lo, "100.00"), ("deposit", rc, "500.00")])
        excluded = {"type": "self_excluded", "player_id": ex.player_id, "until": None,
                    "timestamp": self.upstream.feed_time()}  # fmt: skip
        self.progress.wait(self.upstream.send("players", [(ex.player_id, json.dumps(excluded)
                                                            .encode())]), self.deadline,
                           "the exclusion")  # fmt: skip
        home = ((m3, "1x2", "home", "2.50"),)

        def case(short: str, p: Player, stake: str, expect: str, why: str) -> BetCase:
            odds = "2.50" if expect == "accepted" else None
            return BetCase(short, f"{self.prefix}{short}", p.player_id, p.currency, stake,
                           home, "any", expect, odds, why)  # fmt: skip

        cases = [
            case("x1", ex, "5.00", "self_excluded", "self-excluded a moment ago"),
            case("l1", lo, "10.00", "accepted", "loss 10.00 of 15.00 a day"),
            case("l2", lo, "5.00", "accepted", "loss 15.00: the limit, exactly"),
            case("l3", lo, "0.01", "loss_limit", "one cent past the limit"),
            case("r1", rc, "20.00", "accepted", "in a session an hour old"),
        ]
        at = self.upstream.feed_time()
        sent = self.upstream.send("bets", [(c.player, c.wire(at)) for c in cases])
        self.progress.wait(sent, self.deadline, "the bets")
        self.tail.catch_up(self.deadline)
        self.show_decisions(cases)
        print()
        self.pay([("deposit", ex, "50.00", "self_excluded"),
                  ("withdrawal", ex, "60.00", "accepted")], show=True)  # fmt: skip

        # The reality check: the DK interval is 60 minutes, so it falls due within seconds.
        wait_until = time.monotonic() + 15
        notes: list[dict[str, Any]] = []
        while time.monotonic() < min(wait_until, self.deadline) and not notes:
            self.tail.catch_up(self.deadline)
            notes = [r.doc for r in self.ours("player-notifications")
                     if r.doc.get("player_id") == rc.player_id]  # fmt: skip
            time.sleep(0.2)
        note = notes[0] if notes else {}
        ok = self.checks.expect(
            note.get("type") == "reality_check_due" and note.get("net_position") == "-20.00"
            and int(note.get("elapsed_seconds", 0)) >= 3600,
            f"reality check of rc: {note or '(none)'}",
        )  # fmt: skip
        print()
        print_table(["notification", "player", "session", "elapsed", "net position", "check"], [(
            note.get("type", "(none)"), rc.player_id, note.get("session_id"),
            f"{int(note.get('elapsed_seconds', 0)) // 60} min", f"{note.get('net_position')} "
            f"{note.get('currency', '')}", ok)])  # fmt: skip

    def pay(self, items: Sequence[tuple[Any, ...]], *, show: bool = False) -> None:
        """Deposits and withdrawals ``(kind, player, amount[, expected])``; check each."""
        msgs = []
        for n, (kind, p, amount, *_) in enumerate(items):
            pid = f"{p.player_id}-{kind}-{n}-{uuid.uuid4().hex[:4]}"
            msgs.append((pid, p, kind, amount, items[n][3] if len(items[n]) > 3 else "accepted"))
        sent = self.upstream.send("payments", [(p.player_id, json.dumps({
            "type": kind, "payment_id": pid, "player_id": p.player_id, "amount": amount,
            "currency": p.currency, "timestamp": self.upstream.feed_time()}).encode())
            for pid, p, kind, amount, _ in msgs])  # fmt: skip
        self.progress.wait(sent, self.deadline, "the payments")
        self.tail.catch_up(self.deadline)
        got = {r.doc.get("payment_id"): r.doc for r in self.ours("payment-decisions")}
        rows = []
        for pid, p, kind, amount, want in msgs:
            d = got.get(pid, {})
            result = d.get("status") if d.get("status") == "accepted" else d.get("reason")
            ok = self.checks.expect(result == want, f"{kind} of {p.short}: {result}, not {want}")
            rows.append((p.player_id, kind, f"{amount} {p.currency}", result, want, ok))
        if show:
            print_table(["player", "payment", "amount", "decision", "expected", "check"], rows)

    # -- 6. the casino ----------------------------------------------------------------------

    def casino(self) -> None:
        heading("7. Casino: an aggregator's calls through the seamless wallet")
        cs = Player("cs", f"{self.prefix}cs", "UK", "GBP", D("100.00"))
        self.players.append(cs)
        now = self.upstream.feed_time()
        items = [(cs.player_id, json.dumps(e).encode()) for e in self.joining(cs, now)]
        self.progress.wait(self.upstream.send("players", items), self.deadline, "the player")
        self.pay([("deposit", cs, "100.00")])
        tx = f"{self.prefix}tx"

        def call(kind: str, n: int, rnd: int, amount: str, **extra: Any) -> tuple[str, bytes]:
            body = {"type": kind, "transaction_id": f"{tx}{n}", "round_id": f"{tx}-r{rnd}",
                    "game_id": "netent-starburst", "player_id": cs.player_id,
                    "amount": amount, "currency": cs.currency,
                    "timestamp": self.upstream.feed_time(), **extra}  # fmt: skip
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
        sent = self.upstream.send("casino", [c for c, _, _ in cases])
        self.progress.wait(sent, self.deadline, "the casino calls")
        self.tail.catch_up(self.deadline)
        answers = [r.doc for r in self.ours("casino-results") if r.key == cs.player_id]
        rows = []
        for n, ((_, body), what, want) in enumerate(cases):
            got = answers[n] if n < len(answers) else {}
            shown = f"{got.get('error') or got.get('status')} {got.get('balance')}"
            ok = self.checks.expect(shown == want, f"casino call {n + 1}: {shown}, not {want}")
            doc = json.loads(body)
            rows.append((doc["transaction_id"].removeprefix(self.prefix), doc["type"],
                         doc["amount"], what, shown, want, ok))  # fmt: skip
        print_table(["transaction", "call", "amount", "what", "answer", "expected", "check"],
                    rows)  # fmt: skip
        same = len(answers) > 1 and answers[0] == answers[1]
        print(f"  the retry got the first answer itself: "
              f"{self.checks.expect(same, 'the retried debit got another answer')}")  # fmt: skip

        heading("   Croupier Dice: the house's game, the certified RNG, the same wallet")
        from croupier.dice import Bet, DiceRefused, DiceTable

        try:
            table = DiceTable(self.settings)
        except DiceRefused as exc:
            self.checks.expect(False, f"the dice table refused to open: {exc}")
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
            ok = self.checks.expect(p.completed and seen == due,
                                    f"dice round {p.round_id}: {seen}, not {due}")  # fmt: skip
            dice_rows.append((p.round_id, p.bet.pick, p.roll, f"{p.bet.stake}", f"{p.win}",
                              f"{seen[0]} / {seen[1]}", ok))  # fmt: skip
        print_table(["round", "pick", "roll", "stake", "win", "balance (debit / credit)",
                     "check"], dice_rows)  # fmt: skip
        self.final["cs"] = (f"{cash}", "0.00")

    # -- 7. the books -----------------------------------------------------------------------

    def show_books(self) -> None:
        heading("8. Balances (ledger)")
        final = {"uk": ("85.00", "0.00"), "dk": ("450.00", "0.00"), "es": ("90.00", "0.00"),
                 "nj": ("142.50", "0.00"), "ex": ("40.00", "0.00"), "lo": ("85.00", "15.00"),
                 "rc": ("480.00", "20.00"), **self.final}  # fmt: skip
        ledger = Ledger.connect(self.settings.pg_dsn.get_secret_value(), self.settings.pg_schema)
        try:
            rows = []
            for p in self.players:
                got = {b.currency: b for b in ledger.balances(p.player_id)}.get(p.currency)
                cash, pending = (got.cash, got.pending) if got else (None, None)
                want_cash, want_pending = final[p.short]
                ok = self.checks.expect(
                    cash == D(want_cash) and pending == D(want_pending),
                    f"balance of {p.short}: wanted {want_cash}/{want_pending}, "
                    f"got {cash}/{pending}",
                )
                shown = got.as_json() if got else {"balance": "(none)", "pending": ""}
                rows.append((p.player_id, p.currency, f"{p.deposit}", shown["balance"],
                             shown["pending"], f"{want_cash} / {want_pending}", ok))  # fmt: skip
            print_table(["player", "currency", "deposited", "balance", "pending",
                         "expected", "check"], rows)  # fmt: skip

            heading(f"9. Reconciliation of the whole ledger (schema {self.settings.pg_schema})")
            rec = ledger.reconcile()
            print_table(
                ["currency", "debits", "credits", "entries", "state"],
                [(c.currency, c.debits, c.credits, c.entries,
                  "balanced" if c.balanced else "IMBALANCE") for c in rec.currencies],
            )  # fmt: skip
            for row in rec.unbalanced_transactions:
                print(f"  unbalanced transaction {row[0]} in {row[1]}: {row[2]}")
            for owner, kind, cur, stored, derived in rec.balance_drift:
                print(f"  balance drift {owner} {kind} {cur}: stored {stored}, entries {derived}")
            ok = self.checks.expect(rec.ok, "the ledger does not reconcile")
            print(f"  {'books balance' if rec.ok else 'books DO NOT balance'}  {ok}")
        finally:
            ledger.close()

    # -- 8. the audit trail and the regulators ---------------------------------------------

    def audit_and_reports(self) -> None:
        heading("10. The audit trail: verified, every wallet of this run rebuilt from it alone")
        from sinks.postgres import audit
        from sinks.postgres.rebuild import rebuild

        dsn, schema = self.settings.pg_dsn.get_secret_value(), self.settings.pg_schema
        with psycopg.connect(dsn, options=f"-c search_path={schema}") as conn:
            checked = audit.verify(conn)
            ok = self.checks.expect(checked.ok, f"audit verify: {checked.problems}")
            state = "every chain verifies" if checked.ok else checked.problems
            print(f"  {checked.records} records in {checked.chains} hash chains: {state}  {ok}")
            rows = []
            for p in self.players:
                (wallet,) = rebuild(conn, p.player_id)
                shown = {k: v for (c, k), v in wallet.balances.items() if c == p.currency}
                ok = self.checks.expect(wallet.ok, f"rebuild of {p.short}: {wallet.differences}")
                rows.append((p.player_id, wallet.operations, len(wallet.entries),
                             f"{shown.get('cash', D('0.00'))} / {shown.get('pending', D('0.00'))}",
                             "agrees with the ledger" if wallet.ok else "DIFFERS", ok))  # fmt: skip
        print_table(["player", "operations", "entries", "cash / pending (from the trail)",
                     "beside the ledger", "check"], rows)  # fmt: skip

        heading("11. Regulator reports: the DK and ES streams verified and written as files")
        from config.policies import load_policies
        from croupier import report_files

        policies = load_policies(self.settings.policy_dir)
        self.progress.wait_reports(self.deadline)
        for j in ("DK", "ES"):
            policy = policies.get(j)
            assert policy is not None
            where = self.settings.report_signing_key.parent / "files" / j
            written = report_files.write(self.settings, policy, where, idle_timeout=3)
            problems = written.problems or report_files.verify(self.settings, policy, where)
            ok = self.checks.expect(not problems, f"reports of {j}: {problems}")
            print(f"  reports.{j}: {written.records} new record(s), chain verified, written as "
                  f"{policy.reporting.format} to {where} ({len(written.files)} file(s)); "
                  f"the directory verifies: {ok}")  # fmt: skip
            for f in written.files[:4]:
                print(f"    {f}")

    def analytics(self) -> None:
        heading("12. The analyst's view, the pipeline still running: GGR and hold per market")
        from croupier import analytics, sql

        s = self.settings
        left = max(10.0, self.deadline - time.monotonic())
        caught = analytics.wait_caught_up(s, timeout=left)
        ok = self.checks.expect(caught, "the analytics sink did not catch up with `audit`")
        print(f"  the analytics sink has every committed fact of `audit` in ClickHouse  {ok}")
        # The run's own event ids (hex): shown as an analyst would type them.
        where = f"event_id IN ('{self.m1}', '{self.m2}')"
        query = f"SELECT event_id, market_id, currency, bets, handle, ggr, hold FROM ggr_by_market WHERE {where} ORDER BY event_id, market_id"  # noqa: S608, E501
        print(f'  $ croupier sql "{query}"')
        for line in sql.run(s.clickhouse_url, s.clickhouse_database, query).splitlines():
            print(f"    {line}")
        # The same money as the ledger: GGR of this run's settled single bets on the two
        # matches, stakes minus payouts, per currency, from PostgreSQL.
        total = f"SELECT currency, sum(ggr) AS ggr FROM ggr_by_market WHERE {where} GROUP BY 1"  # noqa: S608
        rows = json.loads(sql.run(s.clickhouse_url, s.clickhouse_database, total, "json"))
        in_clickhouse = {r["currency"]: D(str(r["ggr"])) for r in rows if r["ggr"] is not None}
        with psycopg.connect(s.pg_dsn.get_secret_value(),
                             options=f"-c search_path={s.pg_schema}") as conn:  # fmt: skip
            in_ledger = {c: D(str(g)) for c, g in conn.execute(
                """SELECT b.currency, sum(b.stake - b.payout) FROM bets b
                    WHERE b.status = 'settled'
                      AND (SELECT count(*) FROM bet_legs l WHERE l.bet_id = b.bet_id) = 1
                      AND EXISTS (SELECT 1 FROM bet_legs l WHERE l.bet_id = b.bet_id
                                     AND l.event_id IN (%s, %s))
                    GROUP BY 1""", (self.m1, self.m2)).fetchall()}  # fmt: skip
        ok = self.checks.expect(in_clickhouse == in_ledger,
                                f"GGR: ClickHouse {in_clickhouse}, ledger {in_ledger}")  # fmt: skip
        shown = ", ".join(f"{g} {c}" for c, g in sorted(in_ledger.items())) or "none"
        print(f"  GGR of the settled single bets, ClickHouse beside the ledger: {shown}  {ok}")


def run_demo(*, timeout: float = 120.0) -> int:
    """Play one match on the running stack; EXIT_OK when everything came out as it must."""
    load_stack_env()
    settings = Settings()
    run = uuid.uuid4().hex[:6]
    started = time.monotonic()
    print(f"Croupier demo, run {run}: Kafka {settings.kafka_bootstrap_servers}, "
          f"group {settings.app_id}, schema {settings.pg_schema}")  # fmt: skip
    from confluent_kafka import KafkaException

    try:
        demo = Demo(settings, run, started + timeout)
    except (DemoError, KafkaException, psycopg.OperationalError) as exc:
        print(f"croupier demo: cannot reach the stack ({redact(str(exc))}); is it up? try "
              "`make up`")  # fmt: skip
        return EXIT_FAILED
    try:
        demo.register_and_deposit()
        demo.open_markets()
        demo.place_bets()
        demo.stop_and_settle()
        demo.show_settlements()
        demo.protection()
        demo.casino()
        demo.show_books()
        demo.audit_and_reports()
        demo.analytics()
    except DemoError as exc:
        demo.checks.failures.append(str(exc))
        print(f"\n  {redact(str(exc))} (are the workers running? `croupier stack status`; "
              "logs in .stack/logs/)")  # fmt: skip
    finally:
        demo.close()
    elapsed = time.monotonic() - started
    checks = demo.checks
    if checks.failures:
        print(f"\n{len(checks.failures)} check(s) FAILED ({checks.passed} passed) "
              f"in {elapsed:.1f}s:")  # fmt: skip
        for f in checks.failures:
            print(f"  - {f}")
        return EXIT_FAILED
    print(f"\nall {checks.passed} checks passed in {elapsed:.1f}s (run {run})")
    return EXIT_OK
