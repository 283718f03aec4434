"""The real parts do what Croupier relies on: Kafka transactions and compaction, PostgreSQL."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from config.settings import Settings
from sinks.postgres.migrate import MigrationError, migrate
from tests.conftest import Services
from tests.integration.helpers import query

pytestmark = pytest.mark.integration


def _new_topic(services: Services, **config: str) -> str:
    name = f"svc-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": services.kafka})
    admin.create_topics([NewTopic(name, 1, 1, config=config)])[name].result(30)
    return name


def _read_all(services: Services, topic: str, isolation: str) -> list[tuple[bytes, bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": services.kafka,
            "group.id": uuid.uuid4().hex,
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    out: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 20
    position = 0
    while position < high and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            position = max(position, consumer.position([TopicPartition(topic, 0)])[0].offset)
            continue
        out.append((msg.key() or b"", msg.value() or b""))
        position = (msg.offset() or 0) + 1
    consumer.close()
    return out


def test_kafka_transactions_commit_and_abort(services: Services) -> None:
    topic = _new_topic(services)
    producer = Producer(
        {"bootstrap.servers": services.kafka, "transactional.id": f"tx-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"committed")
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"aborted")
    producer.flush(10)
    producer.abort_transaction(30)
    assert _read_all(services, topic, "read_committed") == [(b"k", b"committed")]
    assert (b"k", b"aborted") in _read_all(services, topic, "read_uncommitted")


def test_kafka_compacts_a_compacted_topic(services: Services) -> None:
    topic = _new_topic(
        services,
        **{
            "cleanup.policy": "compact",
            "segment.ms": "100",
            "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": "100",
        },
    )
    producer = Producer({"bootstrap.servers": services.kafka})
    for version in range(50):
        producer.produce(topic, key=b"player", value=str(version).encode())
    producer.flush(10)
    deadline = time.monotonic() + 60

    def player_records() -> list[bytes]:
        return [v for k, v in _read_all(services, topic, "read_committed") if k == b"player"]

    latest = player_records()
    while len(latest) > 1 and time.monotonic() < deadline:
        # A segment rolls (and becomes cleanable) only when a later record arrives.
        time.sleep(0.5)
        producer.produce(topic, key=b"tick", value=b"")
        producer.flush(10)
        latest = player_records()
    assert latest == [b"49"], f"not compacted: {len(latest)} versions of the key left"


def test_kafka_listens_on_loopback(services: Services) -> None:
    admin = AdminClient({"bootstrap.servers": services.kafka})
    meta = admin.list_topics(timeout=10)
    assert {b.host for b in meta.brokers.values()} == {"127.0.0.1"}
    broker = ConfigResource(ConfigResource.Type.BROKER, str(next(iter(meta.brokers))))
    configs = admin.describe_configs([broker])[broker].result(30)
    assert "127.0.0.1" in configs["listeners"].value
    assert configs["transaction.state.log.replication.factor"].value == "1"


def test_postgres_is_real_recent_and_on_loopback(services: Services) -> None:
    with psycopg.connect(services.pg_dsn) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
        listen = conn.execute("SHOW listen_addresses").fetchone()
    assert version is not None and int(version[0]) >= 140000
    assert listen is not None and listen[0] in ("127.0.0.1", "localhost", "*")


def test_migrations_apply_once_and_refuse_an_edited_one(settings: Settings) -> None:
    dsn, schema = settings.migration_dsn, settings.pg_schema
    assert migrate(dsn, schema) == []  # the fixture applied them already
    with psycopg.connect(dsn, options=f"-c search_path={schema}") as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited'")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(dsn, schema)


def test_player_events_and_dead_letters_are_append_only(settings: Settings) -> None:
    query(
        settings,
        """INSERT INTO dead_letters (source_topic, source_partition, source_offset, key, value,
                                     reason, error, dead_lettered_at)
           VALUES ('players', 0, 0, NULL, 'x', 'invalid', 'bad', now()) RETURNING 1""",
    )
    for statement in ("UPDATE dead_letters SET reason = 'ok'", "DELETE FROM dead_letters"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            query(settings, statement + " RETURNING 1")


APPEND_ONLY = (
    "audit_records", "audit_checkpoints", "report_records", "ledger_entries",
    "ledger_transactions", "dead_letters", "player_events", "settlements", "payment_events",
    "casino_transactions", "casino_calls", "market_messages", "bet_duplicates",
    "payment_decisions",
)  # fmt: skip


def test_the_application_role_cannot_change_or_remove_what_is_append_only(
    settings: Settings,
) -> None:
    """Workers log in as a member of croupier_app: the privilege is gone, not only refused by
    a trigger the owner could drop."""
    app_dsn = settings.pg_dsn.get_secret_value()
    assert app_dsn != settings.migration_dsn
    options = f"-c search_path={settings.pg_schema}"
    with psycopg.connect(app_dsn, options=options, autocommit=True) as conn:
        role = conn.execute("SELECT rolsuper, rolcreaterole, rolbypassrls FROM pg_roles "
                            "WHERE rolname = current_user").fetchone()  # fmt: skip
        assert role == (False, False, False)
        member = conn.execute("SELECT pg_has_role(current_user, 'croupier_app', 'MEMBER')")
        assert member.fetchone() == (True,)
        for table in APPEND_ONLY:
            for statement in (f"UPDATE {table} SET {_a_column(conn, table)} = NULL",
                              f"DELETE FROM {table}", f"TRUNCATE {table}",
                              f"ALTER TABLE {table} DISABLE TRIGGER ALL",
                              f"DROP TABLE {table}"):  # fmt: skip
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement.encode())
            conn.execute(f"SELECT count(*) FROM {table}".encode())  # reading is allowed
        # What moves forward moves only through its owner's functions (test_least_privilege):
        # a balance (ledger_post), a chain's head (audit_append).
        for table, column in (("ledger_accounts", "balance"), ("audit_heads", "seq")):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"UPDATE {table} SET {column} = {column} WHERE false".encode())
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(b"DELETE FROM audit_heads")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(b"UPDATE schema_migrations SET checksum = checksum")
    # The triggers still refuse the owner: see the append-only tests above and test_ledger.


def _a_column(conn: psycopg.Connection[tuple[object, ...]], table: str) -> str:
    row = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
        "AND table_schema = current_schema() ORDER BY ordinal_position LIMIT 1",
        (table,),
    ).fetchone()
    assert row is not None, table
    return str(row[0])
