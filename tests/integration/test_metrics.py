"""A worker's /metrics endpoint counts what it did, and ``croupier status`` reports it."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest

from config.settings import Settings
from croupier.cli import main
from croupier.stack.process import free_port
from croupier.status import parse
from tests.conftest import StartWorker
from tests.integration.helpers import bet, done, joined, odds_change, payment, produce, wait_for

pytestmark = pytest.mark.integration


def alive(producer: str = "live") -> bytes:
    now = datetime.now(UTC).isoformat()
    return json.dumps({"type": "alive", "producer": producer, "timestamp": now}).encode()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return parse(response.read().decode())


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_what_the_worker_did_and_status_reports_it(
    settings: Settings,
    worker_factory: StartWorker,
    cli_env: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    s = settings.model_copy(update={"metrics_port": port})
    url = f"http://127.0.0.1:{port}/metrics"
    worker = worker_factory(s)
    worker.wait_ready()
    T = settings.topic

    produce(s, "odds", [
        ("live", alive()),
        ("m-1", odds_change("m-1", {"1x2": {"home": "2.10", "draw": "3.40", "away": "3.60"}},
                            producer="live")),
    ])  # fmt: skip
    produce(s, "players", [*joined("p-1"), *joined("p-2")])
    wait_for(lambda: done(s, "players") == 4 and done(s, "odds") == 2, timeout=60,
             what="players and odds")  # fmt: skip
    pays = [
        ("p-1", payment("deposit", "pay-1", "p-1", "100.00")),
        ("p-2", payment("deposit", "pay-2", "p-2", "20.00")),
        ("p-9", payment("deposit", "pay-9", "p-9", "10.00")),  # unknown player
    ]
    produce(s, "payments", pays)
    wait_for(lambda: done(s, "payments") == 3, timeout=60, what="payments")
    home = ("m-1", "1x2", "home", "2.10")
    bets = [
        ("p-1", bet("b-1", "p-1", "10.00", [home])),
        ("p-2", bet("b-2", "p-2", "5.00", [home])),
        ("p-1", bet("b-3", "p-1", "5.00", [("m-1", "1x2", "home", "2.00")])),  # price moved
        ("p-2", bet("b-4", "p-2", "500.00", [home])),  # more than the wallet holds
        ("p-1", bet("b-5", "p-1", "5.00", [("m-7", "1x2", "home", "2.00")])),  # unknown market
        ("p-1", b'{"bet_id": "b-x", '),  # malformed
    ]
    produce(s, "bets", bets)
    wait_for(lambda: done(s, "bets") == len(bets), timeout=60, what="bets")

    # The decisions are counted after they are published and progress is recorded after
    # that, so by now the endpoint has them all.
    m = scrape(url)
    assert value(m, "croupier_events_consumed_total", topic=T("bets")) == len(bets)
    assert value(m, "croupier_events_consumed_total", topic=T("payments")) == 3
    assert value(m, "croupier_events_consumed_total", topic=T("players")) == 4
    assert value(m, "croupier_events_consumed_total", topic=T("odds")) == 2
    decided = {
        (dict(labels)["flow"], dict(labels)["status"], dict(labels)["reason"]): v
        for (name, labels), v in m.items()
        if name == "croupier_decisions_total"
    }
    assert decided == {
        ("bets", "accepted", ""): 2,
        ("bets", "rejected", "odds_changed"): 1,
        ("bets", "rejected", "insufficient_funds"): 1,
        ("bets", "rejected", "market_unknown"): 1,
        ("payments", "accepted", ""): 2,
        ("payments", "rejected", "unknown_player"): 1,
    }
    letters = {k: v for k, v in m.items() if k[0] == "croupier_dead_letters_total"}
    assert letters == {
        ("croupier_dead_letters_total", (("reason", "malformed_json"), ("topic", T("bets")))): 1
    }
    assert value(m, "croupier_sink_batch_seconds_count", sink="ledger.bets") >= 1
    assert value(m, "croupier_sink_batch_size_sum", sink="ledger.bets") == 5  # decoded bets
    assert value(m, "croupier_sink_batch_seconds_count", sink="ledger.payments") >= 1
    assert value(m, "croupier_flow_batch_size_sum", flow="bets") == len(bets)
    assert value(m, "croupier_feed_up", producer="live") == 1
    assert 0 <= value(m, "croupier_feed_alive_age_seconds", producer="live") < 20
    info = [dict(labels) for (name, labels), _ in m.items() if name == "croupier_process_info"]
    assert info == [{"role": "worker", "pid": str(worker.proc.pid)}]

    def lag_measured() -> bool:
        got = scrape(url)
        return value(got, "croupier_consumer_lag", topic=T("bets"), partition="0") == 0 and any(
            name == "croupier_consumer_lag" and dict(labels)["topic"] == T("bets")
            for name, labels in got
        )

    wait_for(lag_measured, timeout=15, what="the lag gauge")

    # croupier status finds the endpoint in CROUPIER_METRICS_URLS and reports the same.
    monkeypatch.setenv("CROUPIER_METRICS_URLS", url)
    capsys.readouterr()
    assert main(["status", "--json", "--interval", "0.5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["source"] == "CROUPIER_METRICS_URLS"
    assert [(p["pid"], p["role"], p["up"]) for p in report["processes"]] == [
        (worker.proc.pid, "worker", True)
    ]
    assert report["topics"][T("bets")]["events"] == len(bets)
    assert report["topics"][T("bets")]["lag"] == 0
    assert report["topics"][T("payments")]["events"] == 3
    got = {(d["flow"], d["status"], d["reason"]): d["total"] for d in report["decisions"]}
    assert got == {(f, st, r or None): n for (f, st, r), n in decided.items()}
    assert [(d["topic"], d["reason"], d["total"]) for d in report["dead_letters"]] == [
        (T("bets"), "malformed_json", 1)
    ]
    sink = report["sinks"]["ledger.bets"]
    assert sink["batches"] >= 1 and sink["p50_ms"] is not None and sink["p99_ms"] > 0
    assert report["feeds"]["live"]["up"] is True

    # The text form says the same at a glance.
    assert main(["status", "--interval", "0.2"]) == 0
    text = capsys.readouterr().out
    rows = [" ".join(line.split()) for line in text.splitlines()]  # aligned columns
    assert any(r.startswith("bets rejected odds_changed") for r in rows), text
    assert any(r.startswith("live up") for r in rows), text

    # One endpoint that does not answer beside one that does: exit 1.
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    monkeypatch.setenv("CROUPIER_METRICS_URLS", f"{url},{dead}")
    assert main(["status", "--json", "--interval", "0.2"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [p["up"] for p in report["processes"]] == [True, False]

    # No worker: exit 3, saying where it looked.
    worker.terminate()
    monkeypatch.setenv("CROUPIER_METRICS_URLS", url)
    assert main(["status", "--interval", "0.2"]) == 3
    assert "CROUPIER_METRICS_URLS" in capsys.readouterr().err
