"""The partitioning rule of the inbound topics: which field is a message's Kafka key, and
which partition a key goes to.

Every flow reads one key's messages in order from one partition, and the per-player and
per-event state the workers keep is partitioned the same way, so every producer must key
and partition alike:

* the key is the UTF-8 bytes of ``player_id`` on ``bets``, ``payments``, ``casino`` and
  ``players``; of ``event_id`` on ``odds`` (``producer`` for an ``alive`` heartbeat);
* the partition is ``(murmur2(key) & 0x7fffffff) % partitions``: the default partitioner
  of the Java client (and of Faust's aiokafka). librdkafka's default is ``consistent_random``
  (CRC32), so librdkafka-based clients (confluent-kafka in Python, Go, .NET) must set
  ``partitioner=murmur2_random``.

A message whose key is not its rule's is still processed (its bytes decide), but counted
(``croupier_wrongly_keyed``): it may have gone to another partition than the player's
other messages and overtaken them.
"""

from __future__ import annotations

# The key field(s) of each inbound topic, in the order they are looked for.
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "odds": ("event_id", "producer"),
    "bets": ("player_id",),
    "payments": ("player_id",),
    "casino": ("player_id",),
    "players": ("player_id",),
}
# Every inbound message carries exactly one of these (a player's or an event's id, or for
# a heartbeat its producer's); the first present is its key.
_ANY_KEY = ("player_id", "event_id", "producer")

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def key_of(message: object) -> str:
    """The Kafka key ``message`` must be published under (see the module docstring)."""
    for name in _ANY_KEY:
        value = getattr(message, name, None)
        if isinstance(value, str):
            return value
    msg = f"{type(message).__name__} carries none of {', '.join(_ANY_KEY)}: not an inbound message"
    raise ValueError(msg)


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` (``org.apache.kafka.common.utils.Utils.murmur2``),
    as an unsigned 32-bit number."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    rest = length % 4
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions``, as Java's default partitioner picks it."""
    if partitions < 1:
        msg = f"a topic has at least one partition, not {partitions}"
        raise ValueError(msg)
    data = key.encode() if isinstance(key, str) else key
    return (murmur2(data) & 0x7FFFFFFF) % partitions
