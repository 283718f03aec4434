"""Kafka helpers: every client's security configuration, made here once from the settings,
and small confluent-kafka helpers for the command line, the demo and tests.

Croupier has three kinds of Kafka client, and each names the same things its own way:
librdkafka (confluent-kafka: the flows' sources and senders, the auditor, admin and
command-line clients) takes ``security.protocol``/``sasl.*``/``ssl.*`` keys, Faust
(aiokafka) takes ``broker_credentials`` with an ``ssl.SSLContext``, and the regulator's
kafka-python reader takes ``security_protocol``/``sasl_*``/``ssl_*`` arguments. Each gets
the same protocol, mechanism, credentials and trust from ``KAFKA_SECURITY_PROTOCOL``,
``KAFKA_SASL_*`` and ``KAFKA_SSL_*``; broker host names are always verified against
their certificates.
"""

from __future__ import annotations

import logging
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from config.settings import Settings

LIBRDKAFKA_LOG = logging.getLogger("librdkafka")  # librdkafka's lines, in our format


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())


def librdkafka_security(settings: Settings) -> dict[str, Any]:
    """The ``security.protocol``, ``sasl.*`` and ``ssl.*`` keys of a confluent-kafka client."""
    s = settings
    conf: dict[str, Any] = {"security.protocol": s.kafka_security_protocol}
    if s.kafka_security_protocol.startswith("SASL_"):
        conf["sasl.mechanism"] = s.kafka_sasl_mechanism
        conf["sasl.username"] = s.kafka_sasl_username
        conf["sasl.password"] = _secret(s.kafka_sasl_password)
    if s.kafka_security_protocol.endswith("SSL"):
        conf["ssl.endpoint.identification.algorithm"] = "https"  # the host name is checked
        if s.kafka_ssl_ca_file is not None:
            conf["ssl.ca.location"] = str(s.kafka_ssl_ca_file)
        if s.kafka_ssl_cert_file is not None:
            conf["ssl.certificate.location"] = str(s.kafka_ssl_cert_file)
            conf["ssl.key.location"] = str(s.kafka_ssl_key_file)
        if s.kafka_ssl_key_password is not None:
            conf["ssl.key.password"] = _secret(s.kafka_ssl_key_password)
    return conf


def librdkafka_conf(settings: Settings, **extra: Any) -> dict[str, Any]:
    """A confluent-kafka client's configuration: the brokers, the security keys, ``extra``.

    librdkafka's own log lines go through Python's logging (logger ``librdkafka``), so
    they come out in the process's one format (``config/logs.py``), not raw on stderr.
    """
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "logger": LIBRDKAFKA_LOG,
        **librdkafka_security(settings),
        **extra,
    }


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of a Python client (aiokafka), or None when the protocol has no TLS:
    certificates checked against ``KAFKA_SSL_CA_FILE`` (else the system's CAs), host names
    checked, the client's own certificate when one is set."""
    s = settings
    if not s.kafka_security_protocol.endswith("SSL"):
        return None
    ca = str(s.kafka_ssl_ca_file) if s.kafka_ssl_ca_file is not None else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if s.kafka_ssl_cert_file is not None:
        context.load_cert_chain(
            str(s.kafka_ssl_cert_file),
            str(s.kafka_ssl_key_file),
            password=_secret(s.kafka_ssl_key_password),
        )
    return context


def faust_broker_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` (for its aiokafka consumer, producer and topic
    admin), or None for ``PLAINTEXT``."""
    import faust

    s = settings
    context = ssl_context(s)
    if s.kafka_security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=s.kafka_sasl_username,
            password=_secret(s.kafka_sasl_password),
            mechanism=s.kafka_sasl_mechanism,
            ssl_context=context,  # SASL_SSL with a context, SASL_PLAINTEXT without
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def kafka_python_security(settings: Settings) -> dict[str, Any]:
    """The ``security_protocol``, ``sasl_*`` and ``ssl_*`` arguments of a kafka-python client."""
    s = settings
    conf: dict[str, Any] = {"security_protocol": s.kafka_security_protocol}
    if s.kafka_security_protocol.startswith("SASL_"):
        conf["sasl_mechanism"] = s.kafka_sasl_mechanism
        conf["sasl_plain_username"] = s.kafka_sasl_username
        conf["sasl_plain_password"] = _secret(s.kafka_sasl_password)
    if s.kafka_security_protocol.endswith("SSL"):
        conf["ssl_check_hostname"] = True
        if s.kafka_ssl_ca_file is not None:
            conf["ssl_cafile"] = str(s.kafka_ssl_ca_file)
        if s.kafka_ssl_cert_file is not None:
            conf["ssl_certfile"] = str(s.kafka_ssl_cert_file)
            conf["ssl_keyfile"] = str(s.kafka_ssl_key_file)
        if s.kafka_ssl_key_password is not None:
            conf["ssl_password"] = _secret(s.kafka_ssl_key_password)
    return conf


def make_producer(settings: Settings, **extra: Any) -> Any:
    """An idempotent producer that partitions keys as Java clients and Faust do (murmur2).

    librdkafka's default partitioner (CRC32) would put a player's events and bets in
    different partitions than Faust expects, breaking co-partitioning.
    """
    from confluent_kafka import Producer

    conf = librdkafka_conf(
        settings,
        **{
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            **extra,
        },
    )
    return Producer(conf)


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes


def consume_until(
    settings: Settings,
    topics: Sequence[str],
    *,
    want: Callable[[list[Record]], bool],
    timeout: float,
) -> list[Record]:
    """Read ``topics`` from the start until ``want(records)`` holds or ``timeout`` passes."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            **librdkafka_conf(settings),
            "group.id": f"croupier-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe(list(topics))
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    try:
        # ``want`` runs once per fetched batch, not per record: a predicate that looks at
        # every record would otherwise make reading a long topic quadratic.
        while time.monotonic() < deadline and not want(records):
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error():
                    continue
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                if topic is None or partition is None or offset is None:
                    continue
                key = msg.key()
                records.append(
                    Record(
                        topic, partition, offset, key.decode() if key else "", msg.value() or b""
                    )
                )
    finally:
        consumer.close()
    return records
