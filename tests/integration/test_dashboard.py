"""The dashboard in a real browser (Debian's chromium, headless, driven by Selenium
through Debian's chromedriver) against a live worker.

The page loads and draws, its numbers are the ones a scrape of the worker taken at the
same moment says, and an odds producer that falls silent shows as down within the feed
timeout (plus one poll of the page). ``CROUPIER_DASHBOARD_SCREENSHOT=path`` keeps a
screenshot (docs/dashboard.png comes from here).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from config.settings import Settings
from croupier import dashboard
from croupier.stack.process import free_port
from croupier.status import parse
from tests.conftest import StartWorker
from tests.integration.helpers import bet, done, joined, odds_change, payment, produce, wait_for

pytestmark = pytest.mark.integration

FEED_TIMEOUT = 4.0


def chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
    assert browser and Path(driver).exists(), (
        "chromium and chromedriver are missing: `make browser` (make test does) installs "
        "Debian's chromium and chromium-driver"
    )
    return browser, driver


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    binary, driver = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1500,1900"):  # fmt: skip
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def alive(producer: str, at: datetime) -> bytes:
    return json.dumps({"type": "alive", "producer": producer,
                       "timestamp": at.isoformat()}).encode()  # fmt: skip


# One script reads a whole table at once: the page redraws its rows every second.
READ_TABLE = """
return [...document.querySelectorAll("#" + arguments[0] + " tbody tr")].map((tr) => {
  const row = {...tr.dataset};
  [...tr.querySelectorAll("td")].forEach((td, i) => { row[td.className || String(i)] =
                                                          td.textContent; });
  return row;
});
"""


def cells(browser: webdriver.Chrome, table: str) -> dict[str, dict[str, str]]:
    """Each row of a table: its data attributes and its cells' texts (by class)."""
    found: dict[str, dict[str, str]] = {}
    for row in browser.execute_script(READ_TABLE, table):
        key = row.get("key") or row.get("topic") or row.get("producer") or row.get("flow")
        found[str(key or row)] = row
    return found


def test_the_page_shows_the_scrape_and_a_silent_feed(
    settings: Settings, worker_factory: StartWorker, browser: webdriver.Chrome
) -> None:
    metrics_port, port = free_port(), free_port()
    s = settings.model_copy(update={"metrics_port": metrics_port, "feed_timeout": FEED_TIMEOUT})
    worker_url = f"http://127.0.0.1:{metrics_port}/metrics"
    worker = worker_factory(s)
    server = dashboard.serve(port, [worker_url], {})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        worker.wait_ready()
        T = s.topic
        produce(s, "odds", [
            ("live", alive("live", datetime.now(UTC))),
            ("m-1", odds_change("m-1", {"1x2": {"home": "2.10", "draw": "3.40",
                                                "away": "3.60"}})),
        ])  # fmt: skip
        produce(s, "players", [*joined("p-1")])
        wait_for(lambda: done(s, "players") == 2 and done(s, "odds") == 2, timeout=60,
                 what="players and odds")  # fmt: skip
        produce(s, "payments", [("p-1", payment("deposit", "pay-1", "p-1", "50.00"))])
        wait_for(lambda: done(s, "payments") == 1, timeout=60, what="the deposit")
        bets = [
            ("p-1", bet("b-1", "p-1", "10.00", [("m-1", "1x2", "home", "2.10")])),
            ("p-1", bet("b-2", "p-1", "5.00", [("m-1", "1x2", "home", "2.00")])),  # moved
            ("p-1", bet("b-3", "p-1", "500.00", [("m-1", "1x2", "home", "2.10")])),  # no funds
            ("p-1", b"{not json"),
        ]
        produce(s, "bets", bets)
        wait_for(lambda: done(s, "bets") == len(bets), timeout=60, what="bets")
        # Keep the feed alive until the page shows it up.
        browser.get(f"http://127.0.0.1:{port}/")

        sent = [2]  # odds messages so far

        def shown_up() -> bool:
            produce(s, "odds", [("live", alive("live", datetime.now(UTC)))])
            sent[0] += 1
            feeds = cells(browser, "feeds")
            return feeds.get("live", {}).get("up") == "1"

        wait_for(shown_up, timeout=60, what="the page showing the live feed up")
        assert browser.find_element(By.ID, "status").get_attribute("data-state") == "ok"
        assert browser.execute_script("return typeof uPlot") == "function"
        assert browser.find_elements(By.CSS_SELECTOR, "#chart-bets canvas")
        last_alive = datetime.now(UTC)
        produce(s, "odds", [("live", alive("live", last_alive))])  # the feed's last word
        wait_for(lambda: done(s, "odds") == sent[0] + 1, timeout=30, what="the last alive")

        # A scrape of the worker and the page, at the same moment (nothing is in flight).
        with urllib.request.urlopen(worker_url, timeout=10) as response:
            scraped = parse(response.read().decode())
        time.sleep(1.5)  # one poll of the page
        decisions = cells(browser, "decisions")
        expected = {
            "|".join((dict(labels)["flow"], dict(labels)["status"], dict(labels)["reason"])): v
            for (name, labels), v in scraped.items() if name == "croupier_decisions_total"
        }  # fmt: skip
        assert {k: int(v["num total"]) for k, v in decisions.items()} == expected
        assert expected == {"bets|accepted|": 1, "bets|rejected|odds_changed": 1,
                            "bets|rejected|insufficient_funds": 1,
                            "payments|accepted|": 1}  # fmt: skip
        letters = cells(browser, "dead-letters")
        assert {k: int(v["num total"]) for k, v in letters.items()} == {
            f"{T('bets')}|malformed_json": 1
        }
        topics = cells(browser, "lag")
        for topic in ("bets", "odds", "players", "payments"):
            events = scraped[("croupier_events_consumed_total", (("topic", T(topic)),))]
            assert int(topics[T(topic)]["num events"]) == events
        assert topics[T("bets")]["num lag"] in {"0", "—"}
        latency = cells(browser, "latency")
        assert int(latency["bets"]["num batches"]) == int(
            scraped[("croupier_flow_batch_seconds_count", (("flow", "bets"),))]
        )
        decided = cells(browser, "decision-latency")  # per message, from its Kafka time
        assert (
            int(decided["bets"]["num decided"])
            == int(scraped[("croupier_decision_latency_seconds_count", (("flow", "bets"),))])
            >= 3
        )  # the three bets (and the letter's message, answered by its dead letter)
        assert float(decided["bets"]["num"]) > 0  # its p50, in ms
        processes = cells(browser, "processes")
        assert [p["up"] for p in processes.values()] == ["1"]
        if path := os.environ.get("CROUPIER_DASHBOARD_SCREENSHOT"):
            browser.save_screenshot(path)

        # The producer falls silent: down on the page within the timeout and one poll.
        def shown_down() -> bool:
            return cells(browser, "feeds").get("live", {}).get("up") == "0"

        wait_for(shown_down, timeout=FEED_TIMEOUT + 10, what="the page showing the feed down")
        silent = (datetime.now(UTC) - last_alive).total_seconds()
        assert FEED_TIMEOUT <= silent <= FEED_TIMEOUT + 5, silent
        assert cells(browser, "feeds")["live"]["state"] == "DOWN"
    finally:
        server.shutdown()
        server.server_close()
