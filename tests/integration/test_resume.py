"""Where a flow resumes: its group's committed offset, else PostgreSQL's progress."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from config.kafka import consume_until
from config.settings import Settings
from streams.flow import group_of
from tests.conftest import StartWorker
from tests.integration.helpers import done, joined, produce, query, wait_for

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


def forget(settings: Settings, flow: str) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for future in admin.delete_consumer_groups([group_of(settings, flow)],
                                               request_timeout=30).values():  # fmt: skip
        future.result()


def faust_committed(settings: Settings, topic: str, offsets: dict[int, int]) -> None:
    """Commit ``offsets`` for the Faust consumer's group, as a deployment before this had."""
    committer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                          "group.id": settings.app_id, "enable.auto.commit": False})  # fmt: skip
    committer.commit(offsets=[TopicPartition(settings.topic(topic), p, o)
                              for p, o in offsets.items()], asynchronous=False)  # fmt: skip
    committer.close()


def test_where_a_flow_resumes(settings: Settings, worker_factory: StartWorker) -> None:
    worker = worker_factory(settings)
    worker.wait_ready()
    produce(settings, "players", joined("p-1"))
    wait_for(lambda: done(settings, "players") == 2, timeout=60, what="the registration")
    produce(settings, "payments", [("p-1", deposit(f"d-{n}")) for n in range(3)])
    assert sorted(decisions(settings, 3)) == ["d-0", "d-1", "d-2"]
    progress = dict(query(settings, "SELECT partition, next_offset FROM consumer_progress "
                          "WHERE topic = %s", (settings.topic("payments"),)))  # fmt: skip
    assert list(progress.values()) == [3]  # one player: one partition
    (partition,) = progress

    # With its offsets, a flow resumes at them: nothing is published again on a restart.
    assert worker.terminate() == 0, worker.problems()
    worker_factory(settings, restart_of=worker)
    worker.wait_ready()
    assert len(decisions(settings, 3)) == 3

    # A group that never committed, with no Faust consumer before it, starts at the
    # beginning: the decided deposits are answered again (their stored bytes), never lost
    # (PostgreSQL's progress alone is written before the answers are published).
    assert worker.terminate() == 0, worker.problems()
    forget(settings, "payments")
    worker_factory(settings, restart_of=worker)
    worker.wait_ready()
    again = decisions(settings, 6)
    assert len(again) == 6 and again[:3] == again[3:]

    # Moving over from the Faust consumer: its group's commits (here one behind what
    # PostgreSQL says is done, as Faust's could be either way) and the progress give the
    # lower of the two, so nothing is skipped and little replayed.
    assert worker.terminate() == 0, worker.problems()
    forget(settings, "payments")
    faust_committed(settings, "payments", {partition: 2})
    produce(settings, "payments", [("p-1", deposit(f"d-{n}")) for n in range(3, 5)])
    worker_factory(settings, restart_of=worker)
    worker.wait_ready()
    assert decisions(settings, 9)[6:] == ["d-2", "d-3", "d-4"]
