"""A committed offset past unprocessed messages (as Faust does after a crash) loses nothing."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from croupier.settings import Settings
from tests.conftest import StartWorker, WorkerProcess
from tests.integration.helpers import player_event, query, rows_recorded, wait_for

pytestmark = pytest.mark.integration


def commit_offset(settings: Settings, partition: int, offset: int) -> None:
    """Move the group's committed offset, as Faust did under SIGKILL."""
    committer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                          "group.id": settings.app_id, "enable.auto.commit": False})  # fmt: skip
    tp = TopicPartition(settings.topic("players"), partition, offset)
    committer.commit(offsets=[tp], asynchronous=False)
    committer.close()


def produce_to_partition_0(settings: Settings, players: range) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for n in players:
        producer.produce(settings.topic("players"), partition=0, key=f"p-{n}".encode(),
                         value=player_event("registered", f"p-{n}"))  # fmt: skip
    assert producer.flush(30) == 0


def three_rows_then_stop(settings: Settings, worker_factory: StartWorker) -> WorkerProcess:
    """Offsets 0..2 of partition 0 processed, then the worker stopped cleanly."""
    produce_to_partition_0(settings, range(0, 3))
    worker = worker_factory(settings)
    worker.wait_ready()
    wait_for(lambda: rows_recorded(settings) == 3, timeout=60, what="the first three rows")
    assert worker.terminate() == 0, worker.problems()
    return worker


def test_messages_the_consumer_skipped_are_read_back(
    settings: Settings, worker_factory: StartWorker
) -> None:
    worker = three_rows_then_stop(settings, worker_factory)

    produce_to_partition_0(settings, range(3, 8))  # offsets 3..7
    # What Faust did under SIGKILL: the group's committed offset moves past messages
    # (3, 4 and 5) that no agent processed.
    commit_offset(settings, 0, 6)

    worker_factory(settings, restart_of=worker)
    worker.wait_ready()
    wait_for(lambda: rows_recorded(settings) == 8, timeout=60, what="all eight rows")
    offsets = sorted(o for (o,) in query(settings, "SELECT source_offset FROM player_events"))
    assert offsets == list(range(8))
    assert query(settings, "SELECT count(*) FROM players") == [(8,)]
    progress = query(settings, "SELECT partition, next_offset FROM consumer_progress")
    assert progress == [(0, 8)]
    log = worker.log.read_text()
    assert "offsets 3..5 were skipped by the consumer; reading them back" in log


def test_a_tail_the_consumer_skipped_is_read_back_with_nothing_after_it(
    settings: Settings, worker_factory: StartWorker
) -> None:
    worker = three_rows_then_stop(settings, worker_factory)

    # The committed offset moves past the last messages, and nothing follows them: no
    # later batch would ever notice the hole. The repair timer must.
    produce_to_partition_0(settings, range(3, 6))  # offsets 3..5
    commit_offset(settings, 0, 6)
    worker_factory(settings, restart_of=worker)
    worker.wait_ready()
    wait_for(lambda: rows_recorded(settings) == 6, timeout=60, what="all six rows")
    offsets = sorted(o for (o,) in query(settings, "SELECT source_offset FROM player_events"))
    assert offsets == list(range(6))
    assert query(settings, "SELECT partition, next_offset FROM consumer_progress") == [(0, 6)]
    assert "done only to 3, committed past it; reading 3..5 back" in worker.log.read_text()
