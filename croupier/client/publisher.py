"""``Publisher``: validate an inbound message against the contract, key it, publish it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, TypeAdapter

from schemas.decode import DecodeFailure, decode
from schemas.partitioning import key_of
from schemas.topics import INBOUND_TOPICS

# Wait this long for the broker's acknowledgement before giving up on a message.
DELIVERY_TIMEOUT = 30.0


class PublishError(Exception):
    """A message was not published: refused by the contract, or not acknowledged."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # invalid | malformed_json | too_large | not_delivered


@dataclass(frozen=True)
class Delivery:
    """Where the broker stored a published message."""

    topic: str  # as named on the broker (with the deployment's prefix)
    partition: int
    offset: int
    key: str


def _types(adapter: TypeAdapter[Any]) -> set[str]:
    """The ``type`` values an inbound topic's schema accepts (none for ``bets``)."""
    schema = adapter.json_schema()
    found: set[str] = set()
    for model in [schema, *schema.get("$defs", {}).values()]:
        prop = model.get("properties", {}).get("type", {})
        if "const" in prop:
            found.add(prop["const"])
        found.update(prop.get("enum", []))
    return found


_TOPIC_OF_TYPE = {t: topic for topic, a in INBOUND_TOPICS.items() for t in _types(a)}


def topic_of(message: Mapping[str, Any]) -> str:
    """The inbound topic of a JSON object: by its ``type``, and ``bets`` for a bet request
    (the one message without a ``type``)."""
    kind = message.get("type")
    if kind is None:
        return "bets"
    topic = _TOPIC_OF_TYPE.get(kind) if isinstance(kind, str) else None
    if topic is None:
        known = ", ".join(sorted(_TOPIC_OF_TYPE))
        msg = f"no inbound message has type {kind!r}; known types: {known}"
        raise PublishError(msg, reason="invalid")
    return topic


def _jsonable(value: object) -> str:
    # Amounts and odds as decimal strings, times as RFC 3339: what the wire carries.
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    msg = f"{type(value).__name__} is not a JSON value"
    raise TypeError(msg)


def prepare(message: BaseModel | Mapping[str, Any] | bytes | str) -> tuple[str, str, bytes]:
    """``(topic, key, bytes)`` of an inbound message the contract accepts, as the workers
    decode it; raises ``PublishError`` for any other."""
    if isinstance(message, BaseModel):
        raw = message.model_dump_json(exclude_none=False).encode()
        parsed: Any = json.loads(raw)
    else:
        if isinstance(message, Mapping):
            parsed = message
            try:
                raw = json.dumps(message, separators=(",", ":"), default=_jsonable).encode()
            except (TypeError, ValueError, RecursionError) as exc:
                msg = f"cannot be written as JSON: {exc}"
                raise PublishError(msg, reason="invalid") from None
        elif isinstance(message, str | bytes):
            raw = message.encode() if isinstance(message, str) else message
            try:
                parsed = json.loads(raw)
            except ValueError as exc:
                msg = f"not UTF-8 JSON: {exc}"
                raise PublishError(msg, reason="malformed_json") from None
        else:
            msg = f"a message is a model, a mapping or JSON text, not {type(message).__name__}"
            raise PublishError(msg, reason="invalid")
    if not isinstance(parsed, Mapping):
        msg = f"a message is a JSON object, not {type(parsed).__name__}"
        raise PublishError(msg, reason="invalid")
    topic = topic_of(parsed)
    model = decode(INBOUND_TOPICS[topic], raw)
    if isinstance(model, DecodeFailure):
        msg = f"{topic}: the contract refuses the message ({model.reason}): {model.error}"
        raise PublishError(msg, reason=model.reason)
    return topic, key_of(model), raw


class Publisher:
    """Publishes inbound messages with idempotence, ``acks=all`` and Java's partitioning.

    ``publish`` validates the message exactly as the workers will (the same models and the
    same decoder), picks its topic and its key by the contract, and returns its
    ``Delivery`` once the broker has acknowledged it, or raises ``PublishError``.
    ``config`` adds librdkafka settings (security, for one); it cannot turn off
    idempotence, ``acks=all`` or the partitioner.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str = "",
        config: Mapping[str, Any] | None = None,
        timeout: float = DELIVERY_TIMEOUT,
    ) -> None:
        from confluent_kafka import Producer

        self.topic_prefix = topic_prefix
        self.timeout = timeout
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "linger.ms": 5,
                "delivery.timeout.ms": int(timeout * 1000),
                **(config or {}),
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": "murmur2_random",
            }
        )

    def publish(self, message: BaseModel | Mapping[str, Any] | bytes | str) -> Delivery:
        """Publish one message (a model, a JSON object, or its JSON text); see the class."""
        topic, key, raw = prepare(message)
        return self._send(self.topic_prefix + topic, key, raw)

    def _send(self, topic: str, key: str, value: bytes) -> Delivery:
        outcome: list[tuple[Any, Any]] = []

        def on_delivery(err: Any, msg: Any) -> None:
            outcome.append((err, msg))

        try:
            self._producer.produce(topic, key=key.encode(), value=value, on_delivery=on_delivery)
        except (BufferError, ValueError) as exc:
            msg = f"{topic}: not queued ({exc})"
            raise PublishError(msg, reason="not_delivered") from exc
        self._producer.flush(self.timeout)
        if not outcome:
            msg = f"{topic}: no acknowledgement within {self.timeout}s"
            raise PublishError(msg, reason="not_delivered")
        ((err, result),) = outcome
        if err is not None:
            msg = f"{topic}: not delivered ({err})"
            raise PublishError(msg, reason="not_delivered")
        return Delivery(result.topic(), result.partition(), result.offset(), key)

    def close(self) -> None:
        """Deliver what is queued (bounded by the timeout)."""
        self._producer.flush(self.timeout)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
