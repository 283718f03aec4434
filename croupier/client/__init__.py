"""The producer kit: publish inbound messages as the contract says, and follow the decisions.

``pip install 'croupier[client]'`` brings only what this needs (pydantic and
confluent-kafka); it imports nothing of the workers. See docs/producers.md.
"""

from croupier.client.decisions import Decision, Decisions
from croupier.client.publisher import Delivery, Publisher, PublishError, topic_of
from schemas.partitioning import key_of, partition_for

__all__ = [
    "Decision",
    "Decisions",
    "Delivery",
    "PublishError",
    "Publisher",
    "key_of",
    "partition_for",
    "topic_of",
]
