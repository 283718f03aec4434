"""Player protection end to end: exclusion, limits, sessions, reality checks, geolocation.

Everything runs on the real broker and PostgreSQL with the shipped jurisdiction policies.
Times are the wall clock's: a boundary (a cooling-off ending, a geolocation check
expiring, a session reaching its limit) is placed a few seconds from now by the events'
own timestamps, and the test waits for it.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from config.kafka import consume_until
from config.settings import Settings
from tests.conftest import StartWorker
from tests.integration.helpers import (
    bet,
    done,
    joined,
    odds_change,
    player_event,
    produce,
    query,
    settlement,
    wait_for,
)

pytestmark = pytest.mark.integration

D = Decimal
HOME = ("m-1", "1x2", "home", "2.00")


def stamp(delta: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta)).isoformat()


def money(kind: str, payment_id: str, player_id: str, amount: str, currency: str = "EUR") -> bytes:
    body = {"type": kind, "payment_id": payment_id, "player_id": player_id, "amount": amount,
            "currency": currency, "timestamp": stamp()}  # fmt: skip
    return json.dumps(body).encode()


def limit(player_id: str, kind: str, period: str, amount: str | None, *, at: str | None = None,
          currency: str = "EUR") -> bytes:  # fmt: skip
    fields: dict[str, Any] = {"limit": kind, "period": period, "timestamp": at or stamp()}
    if kind == "session":
        fields["minutes"] = None if amount is None else int(amount)
    else:
        fields.update(amount=amount, currency=currency)
    return player_event("limit_set", player_id, **fields)


def decided(settings: Settings, topic: str, field: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    """The decision of each id on ``topic`` (waits until every one is there)."""
    records = consume_until(
        settings, [settings.topic(topic)],
        want=lambda rs: ids <= {json.loads(r.value)[field] for r in rs}, timeout=60,
    )  # fmt: skip
    out = {}
    for r in records:
        d = json.loads(r.value)
        if d[field] in ids:
            out[d[field]] = d
    return out


def outcome(d: dict[str, Any]) -> str:
    return str(d["status"] if d["status"] == "accepted" else d["reason"])


def place(settings: Settings, pid: str, *bets: tuple[str, str], legs: Any = (HOME,)) -> list[str]:
    """Place bets ``(bet_id, stake)`` for ``pid``; their outcomes, in order."""
    produce(settings, "bets", [(pid, bet(b, pid, s, list(legs), policy="any")) for b, s in bets])
    got = decided(settings, "bet-decisions", "bet_id", {b for b, _ in bets})
    return [outcome(got[b]) for b, _ in bets]


def pay(
    settings: Settings, pid: str, *items: tuple[str, str, str], currency: str = "EUR"
) -> list[str]:
    """Payments ``(kind, payment_id, amount)`` for ``pid``; their outcomes, in order."""
    produce(settings, "payments", [(pid, money(k, i, pid, a, currency)) for k, i, a in items])
    got = decided(settings, "payment-decisions", "payment_id", {i for _, i, _ in items})
    return [outcome(got[i]) for _, i, _ in items]


def players_done(settings: Settings, n: int) -> None:
    wait_for(lambda: done(settings, "players") >= n, timeout=30, what=f"{n} player events")


@pytest.fixture
def worker(settings: Settings, worker_factory: StartWorker) -> Any:
    w = worker_factory(settings)
    w.wait_ready()
    prices = {"1x2": {"home": "2.00", "away": "3.00"}}
    produce(settings, "odds", [(m, odds_change(m, prices)) for m in ("m-1", "m-2")])
    wait_for(lambda: done(settings, "odds") == 2, timeout=30, what="odds")
    return w


def test_a_self_exclusion_stops_every_product_at_once_and_still_lets_the_player_withdraw(
    settings: Settings, worker: Any
) -> None:
    produce(settings, "players", joined("p-1"))
    players_done(settings, 2)
    assert pay(settings, "p-1", ("deposit", "d-0", "500.00")) == ["accepted"]

    # Bets and deposits stream in while the exclusion arrives on the players topic: the
    # same partition number of three topics, decided by three agents.
    bets = [(f"b-{n}", "1.00") for n in range(150)]
    deposits = [("deposit", f"d-{n}", "1.00") for n in range(1, 31)]

    def stream() -> None:
        for n in range(0, 150, 5):
            produce(settings, "bets", [("p-1", bet(b, "p-1", s, [HOME], policy="any"))
                                       for b, s in bets[n:n + 5]])  # fmt: skip
            kind, payment_id, amount = deposits[n // 5]
            produce(settings, "payments", [("p-1", money(kind, payment_id, "p-1", amount))])
            time.sleep(0.03)

    producer = threading.Thread(target=stream)
    producer.start()
    time.sleep(0.4)
    produce(settings, "players", [("p-1", player_event("self_excluded", "p-1", until=None,
                                                       timestamp=stamp()))])  # fmt: skip
    producer.join()
    got_bets = decided(settings, "bet-decisions", "bet_id", {b for b, _ in bets})
    got_pays = decided(settings, "payment-decisions", "payment_id", {i for _, i, _ in deposits})
    wait_for(lambda: done(settings, "bets") == 150, timeout=30, what="bets")

    excluded = int(query(settings, "SELECT version FROM players WHERE player_id = 'p-1'")[0][0])
    rows = query(settings, "SELECT bet_id, standing_version, status, reason FROM bets")
    rows += query(settings, "SELECT payment_id, standing_version, 'x', NULL FROM payment_events "
                  "WHERE payment_id <> 'd-0'")  # fmt: skip
    decisions = {**got_bets, **got_pays}
    before = after = 0
    for key, version, _, _ in rows:
        # Every decision was judged against a standing PostgreSQL had committed, read in
        # its own transaction: before the exclusion's version it passes, from it on not.
        if version < excluded:
            assert outcome(decisions[key]) == "accepted", (key, version)
            before += 1
        else:
            assert outcome(decisions[key]) == "self_excluded", (key, version)
            after += 1
    assert before > 0 and after > 0, "the exclusion did not land mid-stream"

    # Once the exclusion is committed, the very next decision of every product sees it.
    assert place(settings, "p-1", ("b-next", "1.00")) == ["self_excluded"]
    assert pay(settings, "p-1", ("deposit", "d-next", "1.00")) == ["self_excluded"]
    # ... and the player can still take their money out.
    assert pay(settings, "p-1", ("withdrawal", "w-1", "100.00")) == ["accepted"]


def test_limits_hold_to_the_cent_count_winnings_and_loosen_only_after_cooling_off(
    settings: Settings, worker: Any
) -> None:
    produce(settings, "players", [
        *joined("p-2"), ("p-2", limit("p-2", "deposit", "day", "50.00")),
        ("p-2", limit("p-2", "loss", "day", "20.00")),
        *joined("p-3"), ("p-3", limit("p-3", "deposit", "day", "10.00", at=stamp(-90_000))),
    ])  # fmt: skip
    players_done(settings, 7)

    # Deposits: a limit exactly reached is allowed; one cent more is not.
    assert pay(settings, "p-2", ("deposit", "a-1", "30.00"), ("deposit", "a-2", "20.00"),
               ("deposit", "a-3", "0.01")) == ["accepted", "accepted", "deposit_limit"]  # fmt: skip
    # Loss: stakes count when placed; 20.00 exactly is the limit.
    assert place(settings, "p-2", *[(f"l-{n}", "5.00") for n in range(4)], ("l-4", "0.01")) == [
        "accepted", "accepted", "accepted", "accepted", "loss_limit",
    ]  # fmt: skip
    # Winnings count back: four 5.00 wins at 2.00 pay 40.00, so the player is 20.00 up.
    produce(settings, "odds", [("m-1", settlement("m-1", {"1x2": {"home": "win", "away": "lose"}},
                                                  at=stamp()))])  # fmt: skip
    wait_for(lambda: query(settings, "SELECT count(*) FROM bets WHERE status = 'settled'")
             == [(4,)], timeout=30, what="settlement")  # fmt: skip
    m2 = (("m-2", "1x2", "home", "2.00"),)
    assert place(settings, "p-2", ("l-5", "40.00"), ("l-6", "0.01"), legs=m2) == [
        "accepted", "loss_limit",
    ]  # fmt: skip

    # A looser deposit limit waits out the cooling-off; a tighter one applies at once.
    produce(settings, "players", [("p-2", limit("p-2", "deposit", "day", "500.00"))])
    players_done(settings, 8)
    assert pay(settings, "p-2", ("deposit", "a-4", "1.00")) == ["deposit_limit"]
    produce(settings, "players", [("p-2", limit("p-2", "deposit", "week", "40.00"))])
    players_done(settings, 9)
    assert pay(settings, "p-2", ("deposit", "a-5", "0.01")) == ["deposit_limit"]

    # p-3's increase is dated 24 hours minus 8 seconds back, as if its cooling-off were
    # nearly over: the server's clock decides, so it waits the full 24 hours from now.
    assert pay(settings, "p-3", ("deposit", "c-1", "10.00"), ("deposit", "c-2", "5.00")) == [
        "accepted", "deposit_limit",
    ]  # fmt: skip
    sent = datetime.now(UTC)
    asked = (sent + timedelta(seconds=8) - timedelta(hours=24)).isoformat()
    produce(settings, "players", [("p-3", limit("p-3", "deposit", "day", "100.00", at=asked))])
    players_done(settings, 10)
    assert pay(settings, "p-3", ("deposit", "c-3", "5.00")) == ["deposit_limit"]
    pending = query(settings, "SELECT standing -> 'limits' -> 0 -> 'pending' ->> 'effective_at' "
                    "FROM players WHERE player_id = 'p-3'")[0][0]  # fmt: skip
    assert datetime.fromisoformat(pending) >= sent + timedelta(hours=24)

    ledger = query(
        settings,
        "SELECT coalesce(sum(amount), 0) FROM ledger_transactions "
        "WHERE player_id = 'p-2' AND operation = 'deposit' AND status = 'applied'",
    )
    assert ledger == [(D("50.00"),)]


def test_sessions_reality_checks_and_session_time_limits(settings: Settings, worker: Any) -> None:
    produce(settings, "players", [("p-4", player_event("registered", "p-4"))])
    players_done(settings, 1)
    assert pay(settings, "p-4", ("deposit", "e-0", "100.00")) == ["accepted"]
    assert place(settings, "p-4", ("s-0", "1.00")) == ["no_session"]

    # A session that started an hour minus 8 seconds ago: its first reality check (the UK
    # interval is 60 minutes) falls due in 8 seconds, after the bet, with the session's
    # net position.
    produce(settings, "players", [("p-4", player_event("session_started", "p-4",
                                   session_id="long", timestamp=stamp(-3592)))])  # fmt: skip
    players_done(settings, 2)
    assert place(settings, "p-4", ("s-1", "5.00")) == ["accepted"]
    records = consume_until(settings, [settings.topic("player-notifications")],
                            want=lambda rs: len(rs) >= 1, timeout=30)  # fmt: skip
    check = json.loads(records[0].value)
    assert (check["type"], check["player_id"], check["session_id"], check["sequence"]) == (
        "reality_check_due", "p-4", "long", 1,
    )  # fmt: skip
    assert check["elapsed_seconds"] >= 3600 and check["net_position"] == "-5.00"
    assert check["currency"] == "EUR"
    time.sleep(2)  # the watcher keeps running: the same check is not sent twice
    assert query(settings, "SELECT count(*) FROM reality_checks") == [(1,)]

    # A one-minute daily session limit, and a session that started 52 seconds ago.
    produce(settings, "players", [
        ("p-5", player_event("registered", "p-5")),
        ("p-5", limit("p-5", "session", "day", "1")),
        ("p-5", player_event("session_started", "p-5", session_id="short", timestamp=stamp(-52))),
    ])  # fmt: skip
    players_done(settings, 5)
    assert pay(settings, "p-5", ("deposit", "f-0", "10.00")) == ["accepted"]
    assert place(settings, "p-5", ("s-2", "1.00")) == ["accepted"]
    wait_for(lambda: query(settings, "SELECT end_reason FROM player_sessions "
                           "WHERE session_id = 'short'") == [("session_limit",)],
             timeout=20, what="the session ended at its limit")  # fmt: skip
    assert place(settings, "p-5", ("s-3", "1.00")) == ["session_limit"]
    # A new session the same day finds the limit still used up.
    produce(settings, "players", [("p-5", player_event("session_started", "p-5", session_id="again",
                                                       timestamp=stamp()))])  # fmt: skip
    players_done(settings, 7)
    assert place(settings, "p-5", ("s-4", "1.00")) == ["session_limit"]


def test_geolocation_registration_age_and_licence(settings: Settings, worker: Any) -> None:
    nj = {"jurisdiction": "NJ", "currency": "USD", "birth_date": "1990-05-01"}
    produce(settings, "players", [
        *joined("p-nj", **nj),
        ("p-kid", player_event("registered", "p-kid", jurisdiction="NJ", currency="USD",
                               birth_date="2006-01-01")),  # 20: New Jersey requires 21
        ("p-de", player_event("registered", "p-de", jurisdiction="DE")),  # no licence there
    ])  # fmt: skip
    players_done(settings, 4)
    letters = query(settings, "SELECT reason FROM dead_letters WHERE source_topic = %s ORDER BY 1",
                    (settings.topic("players"),))  # fmt: skip
    assert letters == [("underage",), ("unlicensed_jurisdiction",)]
    assert pay(settings, "p-nj", ("deposit", "g-0", "100.00"), currency="USD") == ["accepted"]
    usd = [("p-nj", bet(f"n-{n}", "p-nj", "1.00", [HOME], policy="any", currency="USD"))
           for n in range(8)]  # fmt: skip

    def bet_nj(n: int) -> str:
        produce(settings, "bets", [usd[n]])
        return outcome(decided(settings, "bet-decisions", "bet_id", {f"n-{n}"})[f"n-{n}"])

    def geo(ip: str, valid_for: int, where: str = "NJ", allowed: bool = True) -> None:
        produce(settings, "players", [("p-nj", player_event(
            "geolocation", "p-nj", jurisdiction=where, allowed=allowed, checked_at=stamp(),
            geolocate_in=valid_for, ip=ip, timestamp=stamp()))])  # fmt: skip

    assert bet_nj(0) == "geo_blocked"  # no check yet
    # Valid for 68 seconds less New Jersey's 60-second buffer: 8 seconds.
    geo("198.51.100.7", 68)
    players_done(settings, 5)
    assert bet_nj(1) == "accepted"
    time.sleep(8.5)
    assert bet_nj(2) == "geo_blocked"  # expired between two bets
    geo("198.51.100.7", 3600)
    players_done(settings, 6)
    assert bet_nj(3) == "accepted"
    # A new session from another address invalidates the check.
    moved = player_event("session_started", "p-nj", session_id="s-2", ip="203.0.113.9",
                         timestamp=stamp())  # fmt: skip
    produce(settings, "players", [("p-nj", moved)])
    players_done(settings, 7)
    assert bet_nj(4) == "geo_blocked"
    geo("203.0.113.9", 3600, where="PA")  # located outside the licence
    players_done(settings, 8)
    assert bet_nj(5) == "geo_blocked"
    geo("203.0.113.9", 3600, allowed=False)
    players_done(settings, 9)
    assert bet_nj(6) == "geo_blocked"
    geo("203.0.113.9", 3600)
    players_done(settings, 10)
    assert bet_nj(7) == "accepted"


def test_reality_checks_survive_sigkills_none_lost_none_recorded_twice(
    settings: Settings, worker_factory: StartWorker
) -> None:
    worker = worker_factory(settings)
    worker.wait_ready()
    # 80 sessions whose first reality check falls due one every 0.25 s, from 6 s from now.
    sessions = 80
    events: list[tuple[str, bytes]] = []
    for n in range(sessions):
        pid = f"rc-{n}"
        events.append((pid, player_event("registered", pid)))
        events.append((pid, player_event("session_started", pid, session_id=f"s-{n}",
                                         timestamp=stamp(-3600 + 6 + n * 0.25))))  # fmt: skip
    produce(settings, "players", events)
    players_done(settings, len(events))
    # Killed three times while they fall due, restarted each time.
    for pause in (6.5, 3.0, 3.0):
        time.sleep(pause)
        worker.kill()
        worker = worker_factory(settings, restart_of=worker)
        worker.wait_ready()
    assert worker.history == [-9, -9, -9]
    wait_for(lambda: query(settings, "SELECT count(*) FROM reality_checks") == [(sessions,)],
             timeout=60, what="every reality check recorded")  # fmt: skip
    recorded = query(settings, "SELECT count(DISTINCT player_id), max(sequence) "
                     "FROM reality_checks")  # fmt: skip
    assert recorded == [(sessions, 1)]
    # Each one is on the topic: at least once (a kill between Kafka and the commit sends it
    # again), and only ever as the same check.
    records = consume_until(
        settings, [settings.topic("player-notifications")],
        want=lambda rs: len({json.loads(r.value)["player_id"] for r in rs}) >= sessions,
        timeout=60,
    )  # fmt: skip
    sent = [json.loads(r.value) for r in records]
    assert {(d["player_id"], d["session_id"], d["sequence"]) for d in sent} == {
        (f"rc-{n}", f"s-{n}", 1) for n in range(sessions)
    }
