"""Where a flow resumes: its group's committed offset, else PostgreSQL's progress."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from confluent_kafka.admin import AdminClient

from croupier.kafka import consume_until
from croupier.settings import Settings
from streams.flow import group_of
from tests.conftest import StartWorker
from tests.integration.helpers import done, joined, produce, wait_for

pytestmark = pytest.mark.integration


def deposit(payment_id: str) -> bytes:
    return json.dumps({"type": "deposit", "payment_id": payment_id, "player_id": "p-1",
                       "amount": "1.00", "currency": "EUR",
                       "timestamp": datetime.now(UTC).isoformat()}).encode()  # fmt: skip


def decisions(settings: Settings, at_least: int) -> list[str]:
    records = consume_until(settings, [settings.topic("payment-decisions")],
                            want=lambda rs: len(rs) >= at_least, timeout=60)  # fmt: skip
    time.sleep(2)  # a replay would publish more by now
    records = consume_until(settings, [settings.topic("payment-decisions")],
                            want=lambda rs: len(rs) >= at_least, timeout=60)  # fmt: skip
    return [json.loads(r.value)["payment_id"] for r in records]


def test_a_group_that_never_committed_starts_where_postgresql_says(
    settings: Settings, worker_factory: StartWorker
) -> None:
    worker = worker_factory(settings)
    worker.wait_ready()
    produce(settings, "players", joined("p-1"))
    wait_for(lambda: done(settings, "players") == 2, timeout=60, what="the registration")
    produce(settings, "payments", [("p-1", deposit(f"d-{n}")) for n in range(3)])
    assert sorted(decisions(settings, 3)) == ["d-0", "d-1", "d-2"]
    assert worker.terminate() == 0, worker.problems()

    # The flow's group forgets its offsets (a deployment coming from the Faust consumer,
    # or offsets expired): PostgreSQL's progress is where it resumes, so the three
    # decided deposits are not replayed (a replay would publish their answers again).
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    group = group_of(settings, "payments")
    for future in admin.delete_consumer_groups([group], request_timeout=30).values():
        future.result()
    produce(settings, "payments", [("p-1", deposit(f"d-{n}")) for n in range(3, 5)])
    worker_factory(settings, restart_of=worker)
    worker.wait_ready()
    assert sorted(decisions(settings, 5)) == [f"d-{n}" for n in range(5)]

    # And with its offsets, it resumes at them: nothing more is published on a restart.
    assert worker.terminate() == 0, worker.problems()
    worker_factory(settings, restart_of=worker)
    worker.wait_ready()
    assert len(decisions(settings, 5)) == 5
