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
Where ``croupier check`` already judges a thing (the books, the audit chains), the demo
takes its verdict from ``croupier.checks``.

One module a step (``players``, ``bets``, ``settlement``, ``protection``, ``casino``,
``books``, ``audit``, ``analytics``), each a function of the run; ``plumbing`` holds the
wires (producing, tailing the outputs, waiting on ``consumer_progress``), ``context`` a
run's ids, players and messages, ``printing`` the tables and the tally of checks.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable

import psycopg

from config.settings import Settings
from config.stackenv import load_stack_env
from croupier.demo import analytics, audit, bets, books, casino, players, protection, settlement
from croupier.demo.context import Demo
from croupier.demo.plumbing import DemoError
from croupier.exits import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_OK
from croupier.redact import redact

# The scenarios in the order they play: each takes the run and checks what it saw.
STEPS: tuple[Callable[[Demo], object], ...] = (
    players.register_and_deposit,
    bets.open_markets,
    bets.place_bets,
    settlement.stop_and_settle,
    settlement.show_settlements,
    protection.protection,
    casino.casino,
    books.show_books,
    audit.audit_and_reports,
    analytics.analytics,
)


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
        said = " ".join(redact(str(exc)).split())[:300]
        print(f"croupier demo: cannot reach the stack ({said}); is it up? try `make up`",
              file=sys.stderr)  # fmt: skip
        return EXIT_NOT_RUNNING
    try:
        for step in STEPS:
            step(demo)
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
