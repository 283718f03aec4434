"""Kafka over TLS with SASL/SCRAM: a broker with a SASL_SSL listener refuses plaintext,
untrusted and wrongly authenticated clients of all three kinds, and the pipeline (Faust
and the confluent-kafka flows in a worker, the regulator's kafka-python reader) runs on it.

The broker is a second embedded one, started for this module with a private CA and a
SCRAM-SHA-512 user: the session's shared broker stays plaintext for every other test.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from config.kafka import (
    consume_until,
    faust_broker_credentials,
    kafka_python_security,
    librdkafka_conf,
)
from config.settings import Settings
from croupier.stack.kafka import KafkaBroker, TlsFiles, make_tls
from croupier.stack.process import StackError
from sinks.postgres.migrate import migrate
from sinks.signing import fingerprint, generate, public_bytes
from tests.conftest import ROOT, Services, StartWorker, free_ports, settings_env
from tests.integration.helpers import (
    bet,
    done,
    joined,
    odds_change,
    payment,
    produce,
    query,
    wait_for,
)
from topologies.topics import create_topics

pytestmark = pytest.mark.integration

USER = "croupier-app"


@dataclass(frozen=True)
class SecureBroker:
    broker: KafkaBroker
    tls: TlsFiles
    password: str

    def settings(self, *, password: str | None = None, **env: Any) -> Settings:
        """Settings that reach the SASL_SSL listener as ``USER``, with ``env`` on top."""
        values: dict[str, Any] = {
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.sasl_ssl_bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": USER,
            "KAFKA_SASL_PASSWORD": self.password if password is None else password,
            "KAFKA_SSL_CA_FILE": str(self.tls.ca_cert),
            **env,
        }
        return Settings(**values)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    root = tmp_path_factory.mktemp("kafka-tls")
    tls = make_tls(root / "tls")
    for attempt in (1, 2):
        port, controller, sasl_ssl = free_ports(3)
        broker = KafkaBroker(
            home=root / f"home-{attempt}", cache=ROOT / ".stack" / "cache", logs=root / "logs",
            port=port, controller_port=controller, heap="512m", sasl_ssl_port=sasl_ssl, tls=tls,
        )  # fmt: skip
        try:
            broker.start()
            break
        except StackError:  # a port found free was taken before the broker bound it
            broker.stop()
            if attempt == 2:
                raise
    try:
        password = secrets.token_urlsafe(24)
        broker.add_scram_user(USER, password)
        yield SecureBroker(broker, tls, password)
    finally:
        broker.stop()


def librdkafka_refusal(conf: dict[str, Any], *, why: int | None = None) -> list[KafkaError]:
    """The errors of a confluent-kafka admin client with ``conf`` that asks for metadata
    (none: it got it): the first failure, or with ``why``, until the client reports an
    error with that code (10 s at most)."""
    errors: list[KafkaError] = []
    full: dict[str, Any] = {**conf, "error_cb": errors.append, "log_level": 0}
    admin = AdminClient(full)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1)
            return []
        except KafkaException as exc:
            errors.append(exc.args[0])
        admin.poll(0.1)  # serves error_cb
        if why is None or any(e.code() == why for e in errors):
            break
    return errors


def test_plaintext_untrusted_and_wrong_credentials_are_refused(secure: SecureBroker) -> None:
    good = secure.settings()
    wrong = secure.settings(password=secure.password + "x")

    # confluent-kafka: the settings' configuration gets metadata; a plaintext client, a TLS
    # client without SASL, one that does not trust the broker's CA, and a wrong password
    # do not.
    assert librdkafka_refusal(librdkafka_conf(good)) == []
    listener = {"bootstrap.servers": secure.broker.sasl_ssl_bootstrap}
    assert librdkafka_refusal({**listener, "security.protocol": "PLAINTEXT"})
    assert librdkafka_refusal(
        {**listener, "security.protocol": "SSL", "ssl.ca.location": str(secure.tls.ca_cert)}
    )
    untrusted = {k: v for k, v in librdkafka_conf(good).items() if k != "ssl.ca.location"}
    unverified = librdkafka_refusal(untrusted, why=KafkaError._SSL)
    assert any(e.code() == KafkaError._SSL for e in unverified), unverified
    refused = librdkafka_refusal(librdkafka_conf(wrong), why=KafkaError._AUTHENTICATION)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in refused), refused

    # Faust (aiokafka): the credentials Faust is given, as Faust hands them to aiokafka.
    assert aiokafka_connects(good) is None
    assert aiokafka_connects(wrong) is not None

    # kafka-python (the regulator's reader).
    assert kafka_python_connects(good) is None
    assert kafka_python_connects(wrong) is not None
    assert kafka_python_connects(good, security_protocol="PLAINTEXT") is not None


def aiokafka_connects(s: Settings) -> Exception | None:
    """None if an aiokafka producer with Faust's ``broker_credentials`` for ``s`` starts."""
    from aiokafka import AIOKafkaProducer
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = credentials_to_aiokafka_auth(faust_broker_credentials(s))
    assert auth["security_protocol"] == "SASL_SSL"

    async def start() -> Exception | None:
        producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap_servers, request_timeout_ms=5000, **auth
        )
        try:
            await producer.start()
        except Exception as exc:
            return exc
        finally:
            await producer.stop()
        return None

    return asyncio.run(start())


def kafka_python_connects(s: Settings, **override: Any) -> Exception | None:
    """None if a kafka-python consumer with ``s``'s arguments reads the topic list."""
    from kafka import KafkaConsumer

    try:
        consumer = KafkaConsumer(
            bootstrap_servers=s.bootstrap_list, bootstrap_timeout_ms=3000,
            **{**kafka_python_security(s), **override},
        )  # fmt: skip
    except Exception as exc:
        return exc
    try:
        consumer.topics()
    finally:
        consumer.close()
    return None


def test_the_pipeline_runs_over_sasl_ssl(
    secure: SecureBroker, services: Services, worker_factory: StartWorker, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:10]
    report_key = generate(tmp_path / "report.pem")  # signs reports.<J>, as `make up` makes it
    s = secure.settings(
        CROUPIER_PG_DSN=services.pg_dsn, CROUPIER_PG_ADMIN_DSN=services.pg_admin_dsn,
        CROUPIER_CLICKHOUSE_URL=services.clickhouse_url, CROUPIER_PG_SCHEMA=f"t_{tag}",
        CROUPIER_APP_ID=f"croupier-t{tag}", CROUPIER_TOPIC_PREFIX=f"t{tag}.",
        CROUPIER_TOPIC_PARTITIONS=2, CROUPIER_AUDIT_CHECKPOINT_INTERVAL=0,
        CROUPIER_CLOCK_SKEW_SECONDS=86_400, CROUPIER_REPORT_INTERVAL=0.5,
        CROUPIER_REPORT_SIGNING_KEY=str(tmp_path / "report.pem"),
        CROUPIER_AUDIT_KEY=str(tmp_path / "ed25519.pem"),
    )  # fmt: skip
    create_topics(s)  # the admin client over SASL_SSL
    migrate(s.migration_dsn, s.pg_schema)
    worker = worker_factory(s)  # Faust and the flows see only the SASL_SSL listener
    worker.wait_ready()

    produce(s, "players", joined("p-1"))
    wait_for(lambda: done(s, "players") == 2, timeout=60, what="the registration")
    produce(s, "payments", [("p-1", payment("deposit", "pay-1", "p-1", "50.00"))])
    produce(s, "odds", [("m-1", odds_change("m-1", {"1x2": {"home": "2.10", "away": "3.60"}}))])
    wait_for(lambda: done(s, "odds") == 1 and done(s, "payments") == 1, timeout=60,
             what="the deposit and the odds")  # fmt: skip
    produce(s, "bets", [
        ("p-1", bet("b-1", "p-1", "10.00", [("m-1", "1x2", "home", "2.10")])),
        ("p-1", bet("b-2", "p-1", "10.00", [("m-1", "1x2", "home", "2.00")])),  # price moved
    ])  # fmt: skip
    records = consume_until(s, [s.topic("bet-decisions")], want=lambda rs: len(rs) >= 2,
                            timeout=60)  # fmt: skip
    decisions = [json.loads(r.value) for r in records]
    decided = {d["bet_id"]: (d["status"], d["reason"]) for d in decisions}
    assert decided == {"b-1": ("accepted", None), "b-2": ("rejected", "odds_changed")}, decisions

    # The regulator's reader (kafka-python) follows the UK stream over TLS and verifies it:
    # the registration, the session, the deposit and the accepted bet at least.
    env = {**os.environ, **settings_env(s)}
    reported = "SELECT count(*) FROM report_records WHERE jurisdiction = 'UK'"
    wait_for(lambda: query(s, reported)[0][0] >= 3, timeout=30, what="UK reports")
    run = subprocess.run(
        [sys.executable, "-m", "croupier", "regulator", "follow", "--jurisdiction", "UK",
         "--idle-timeout", "4", "--json", "--count", "3", "--public-key",
         fingerprint(public_bytes(report_key))],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    seqs = [json.loads(line)["seq"] for line in run.stdout.splitlines()]
    assert seqs == [1, 2, 3]
    assert worker.proc.poll() is None, worker.problems()
