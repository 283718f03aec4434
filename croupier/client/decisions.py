"""``Decisions``: follow what Croupier decided about a player's or a bet's messages.

The outbound topics are keyed by ``player_id`` and partitioned like the inbound ones
(``schemas.partitioning``), so a player's decisions are all in one partition of each topic:
the reader assigns itself that partition and no other, and joins no consumer group.

Values are returned as parsed JSON objects, not as models: outbound messages may gain
fields and reason codes (the evolution policy, README), which a reader must let through.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.partitioning import partition_for

# The outbound topics keyed by player id.
PLAYER_TOPICS = (
    "bet-decisions",
    "settlements",
    "payment-decisions",
    "casino-results",
    "player-notifications",
)


@dataclass(frozen=True)
class Decision:
    """One outbound record about a player."""

    topic: str  # the contract's name, without the deployment's prefix
    partition: int
    offset: int
    key: str
    value: dict[str, Any]


class Decisions:
    """Reads a player's partition of the outbound topics from its start.

    ``of_bet`` and ``of_payment`` wait for one decision; ``of_player`` returns every record
    about a player up to now. ``config`` adds librdkafka settings (security, for one).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str = "",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic_prefix = topic_prefix
        self._conf = {
            "bootstrap.servers": bootstrap_servers,
            **(config or {}),
            "group.id": f"croupier-client-{uuid.uuid4().hex}",  # never committed to
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }

    def of_bet(self, player_id: str, bet_id: str, *, timeout: float = 30.0) -> Decision:
        """The decision on bet ``bet_id`` of ``player_id`` (accepted or rejected)."""
        return self.wait_for(
            "bet-decisions", player_id, lambda v: v.get("bet_id") == bet_id, timeout=timeout
        )

    def of_payment(self, player_id: str, payment_id: str, *, timeout: float = 30.0) -> Decision:
        """The decision on payment ``payment_id`` of ``player_id``."""
        return self.wait_for(
            "payment-decisions",
            player_id,
            lambda v: v.get("payment_id") == payment_id,
            timeout=timeout,
        )

    def wait_for(
        self,
        topic: str,
        player_id: str,
        match: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = 30.0,
    ) -> Decision:
        """The first record of ``player_id`` on ``topic`` that ``match`` accepts; raises
        TimeoutError when none comes within ``timeout`` seconds."""
        found: list[Decision] = []

        def done(batch: list[Decision]) -> bool:
            found.extend(d for d in batch if match(d.value))
            return bool(found)

        self._read((topic,), player_id, done, deadline=time.monotonic() + timeout)
        if not found:
            msg = f"no matching record of player {player_id!r} on {topic!r} in {timeout}s"
            raise TimeoutError(msg)
        return found[0]

    def of_player(
        self, player_id: str, *, topics: tuple[str, ...] = PLAYER_TOPICS, timeout: float = 30.0
    ) -> list[Decision]:
        """Every record of ``player_id`` on ``topics`` written before the call, in offset
        order per topic."""
        got: list[Decision] = []

        def never(batch: list[Decision]) -> bool:
            got.extend(batch)
            return False

        self._read(topics, player_id, never, deadline=time.monotonic() + timeout, to_end=True)
        return got

    def _read(
        self,
        topics: tuple[str, ...],
        player_id: str,
        done: Callable[[list[Decision]], bool],
        *,
        deadline: float,
        to_end: bool = False,
    ) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer(self._conf)
        try:
            wanted: dict[tuple[str, int], int] = {}
            for topic in topics:
                name = self.topic_prefix + topic
                meta = consumer.list_topics(name, timeout=max(deadline - time.monotonic(), 1))
                partitions = meta.topics[name].partitions
                if not partitions:
                    msg = f"topic {name!r} does not exist"
                    raise LookupError(msg)
                p = partition_for(player_id, len(partitions))
                _, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                wanted[(name, p)] = high
            consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in wanted])
            remaining = {tp for tp, high in wanted.items() if high > 0}
            while time.monotonic() < deadline and (remaining or not to_end):
                batch = []
                for record in consumer.consume(num_messages=500, timeout=0.5):
                    at, part, offset = record.topic(), record.partition(), record.offset()
                    if record.error() or at is None or part is None or offset is None:
                        continue
                    if offset + 1 >= wanted.get((at, part), 0):
                        remaining.discard((at, part))
                    if record.key() != player_id.encode():
                        continue
                    try:
                        value = json.loads(record.value() or b"null")
                    except ValueError:
                        continue  # not a decision of ours: nothing to follow
                    if not isinstance(value, dict):
                        continue
                    topic = at[len(self.topic_prefix) :]
                    batch.append(Decision(topic, part, offset, player_id, value))
                if done(batch):
                    return
                if remaining:
                    # The position passes a transaction's commit marker too, which is
                    # never delivered as a record.
                    at_now = consumer.position([TopicPartition(t, p) for t, p in remaining])
                    for tp in at_now:
                        if tp.offset >= wanted[(tp.topic, tp.partition)]:
                            remaining.discard((tp.topic, tp.partition))
        finally:
            consumer.close()
