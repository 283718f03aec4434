"""One frozen settings model for every Croupier process, read from the environment.

Environment variables (documented once, here and in the README):

==============================  ==================================================
``KAFKA_BOOTSTRAP_SERVERS``     Kafka brokers, ``host:port[,host:port]``
``KAFKA_SECURITY_PROTOCOL``     ``PLAINTEXT`` (the default), ``SSL``, ``SASL_PLAINTEXT`` or
                                ``SASL_SSL``: how every Kafka client (Faust, confluent-kafka,
                                the regulator's kafka-python reader) talks to the brokers
``KAFKA_SASL_MECHANISM``        ``PLAIN`` (the default), ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``
``KAFKA_SASL_USERNAME``         the SASL user (needed by, and only by, the ``SASL_*`` protocols)
``KAFKA_SASL_PASSWORD``         its password (never printed)
``KAFKA_SSL_CA_FILE``           PEM file of the CAs that sign the brokers' certificates
                                (default: the system's trust store); host names are checked
``KAFKA_SSL_CERT_FILE``         the client's own certificate (PEM), for brokers that ask for
                                one (mutual TLS); with ``KAFKA_SSL_KEY_FILE``
``KAFKA_SSL_KEY_FILE``          its private key (PEM)
``KAFKA_SSL_KEY_PASSWORD``      the key's password, if it is encrypted (never printed)
``CROUPIER_PG_DSN``             PostgreSQL connection string (libpq URI or key=value), as
                                the application's login (a member of ``croupier_app``);
                                the embedded stack writes it, password included, to
                                ``.stack/env``
``CROUPIER_PG_ADMIN_DSN``       the schema owner's connection string, for migrations and
                                scratch schemas (default: ``CROUPIER_PG_DSN``)
``CROUPIER_PG_SCHEMA``          schema holding Croupier's tables (default ``croupier``)
``CROUPIER_CLICKHOUSE_URL``     ClickHouse HTTP URL (``http://user:password@host:8123``),
                                served by a ClickHouse server or by the embedded chdb
                                engine, as the writer (the analytics sink, its schema)
``CROUPIER_CLICKHOUSE_ANALYST_URL``  the same ClickHouse as the read-only ``analyst``
                                (``readonly=2``); ``make up`` writes both, with passwords
                                it made, into ``.stack/env`` (mode 0600)
``CROUPIER_APP_ID``             Faust app id = consumer group (default ``croupier``)
``CROUPIER_WORKER_NAME``        this worker's name (``croupier worker --name``): in its log
                                lines and its Kafka client ids (default: none)
``CROUPIER_TOPIC_PREFIX``       prefix on every topic name (default empty; tests use it)
``CROUPIER_TOPIC_PARTITIONS``   partitions per topic when creating topics (default 6)
``CROUPIER_TOPIC_REPLICATION``  replication factor when creating topics (default 1)
``CROUPIER_BATCH_MAX``          most events a flow handles in one batch (default 1000)
``CROUPIER_BATCH_WITHIN``       seconds a flow waits after a batch's first event for more
                                (default 0.001)
``CROUPIER_ODDS_BATCH_WITHIN``  the same for the odds flow (default 0.05: a feed's changes
                                are one transaction a batch, not one each; a bet stop waits
                                at most this long, far inside any in-play bet delay)
``CROUPIER_WEB_PORT``           worker's Faust web port on 127.0.0.1; 0 disables it
``CROUPIER_METRICS_PORT``       the process's Prometheus endpoint (``/metrics``) on
                                127.0.0.1; 0 (the default) disables it
``CROUPIER_METRICS_BIND``       the endpoint's address (default 127.0.0.1; 0.0.0.0 only
                                inside a container, for a scraper on its network)
``CROUPIER_DATA_DIR``           where a worker keeps Faust's local state (default
                                ``.stack/faust``; tables are rebuilt from changelogs)
``CROUPIER_SESSION_TIMEOUT``    seconds before a silent worker's partitions move to
                                another (default 10; a killed worker's are held that long)
``CROUPIER_FEED_TIMEOUT``       seconds without an ``alive`` heartbeat after which a
                                producer's markets are suspended (default 20)
``CROUPIER_CLOCK_SKEW_SECONDS``  how far a producer's time may be from the server's clock
                                before the message is refused (``clock_skew``): a bet's
                                ``placed_at`` either way, any time ahead on the feed and
                                the players topic (default 300; ``rules/clock.py``)
``CROUPIER_POLICY_DIR``         directory of jurisdiction policy files, ``<J>.toml``
                                (default: the ``policies/`` shipped with Croupier)
``CROUPIER_GAMES_CATALOGUE``    the casino game registry, a TOML file (default: the
                                ``games/catalogue.toml`` shipped with Croupier)
``CROUPIER_AUDIT_KEY``          the Ed25519 private key (PEM, mode 0600) that signs audit
                                checkpoints (default ``.stack/audit/ed25519.pem``; made by
                                ``make up`` or ``croupier audit keygen``, never on use)
``CROUPIER_AUDIT_PUBLIC_KEY``   the audit key's pinned public key, which ``audit verify``
                                trusts and the auditor alerts on: 64 hex digits, base64,
                                the fingerprint, or a file holding one (``make up`` sets
                                ``.stack/audit/ed25519.pub``; ``sinks/signing.py``)
``CROUPIER_REPORT_SIGNING_KEY``  the Ed25519 private key that signs the regulators' files
                                (SCI batches, SAFE tamper tokens) and every record of
                                the ``reports.<J>`` streams; not the audit key (default
                                ``.stack/reports/ed25519.pem``; made by ``make up`` or
                                ``croupier audit keygen --reports``, never on use)
``CROUPIER_REPORT_PUBLIC_KEY``  its public key, pinned for ``reports verify`` and
                                ``regulator follow``: 64 hex digits, base64, the
                                fingerprint (the stream only) or a file holding one
                                (``reports``' default: the public half of
                                ``CROUPIER_REPORT_SIGNING_KEY``; ``regulator follow``
                                has no default; ``make up`` writes the ``.pub`` file)
``CROUPIER_AUDIT_RELAY_INTERVAL``  seconds between passes of the relay that publishes
                                committed audit records to ``audit`` (default 0.5; 0: off)
``CROUPIER_GGR_REFRESH_SECONDS``  how often the auditor's metrics read GGR today, a scan of
                                the day's transactions (default 60; the other platform
                                signals every 5)
``CROUPIER_REPORT_INTERVAL``    seconds between the reporter's passes (audit records to
                                ``reports.<J>``; default 1; 0: off)
``CROUPIER_AUDIT_CHECKPOINT_INTERVAL``  seconds between signed checkpoints of the audit
                                trail's chain heads, when a chain moved (one worker signs;
                                default 60; 0 turns the timer off)
``CROUPIER_SESSION_WATCH_INTERVAL``  seconds between passes over open sessions (reality
                                checks, session-time limits; one worker's pass at a
                                time; default 1)
``CROUPIER_CLICKHOUSE_DATABASE``  the ClickHouse database of the analytics tables and
                                views (default ``croupier``)
``CROUPIER_ANALYTICS_BATCH_MAX``  most audit records the analytics sink inserts at once
                                (default 50000)
``CROUPIER_ANALYTICS_BATCH_WAIT``  seconds the analytics sink waits to fill a batch
                                (default 0.25)
``CROUPIER_ANALYTICS_RETRY_MAX``  longest pause, in seconds, between the analytics sink's
                                attempts to insert while ClickHouse is away (default 5)
==============================  ==================================================
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.games import DEFAULT_CATALOGUE
from config.policies import DEFAULT_POLICY_DIR
from config.priority import BACKGROUND_NICE
from rules.clock import DEFAULT_CLOCK_SKEW

POLICY_DIR = DEFAULT_POLICY_DIR  # the jurisdiction policies shipped with Croupier

KafkaProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class Settings(BaseSettings):
    """Where the real parts are and how the pipeline is shaped."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    # How every Kafka client connects; config/kafka.py turns these into each client's
    # configuration, in one place.
    kafka_security_protocol: KafkaProtocol = Field(
        default="PLAINTEXT", validation_alias="KAFKA_SECURITY_PROTOCOL"
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        default="PLAIN", validation_alias="KAFKA_SASL_MECHANISM"
    )
    kafka_sasl_username: str | None = Field(default=None, validation_alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr | None = Field(
        default=None, validation_alias="KAFKA_SASL_PASSWORD"
    )
    kafka_ssl_ca_file: Path | None = Field(default=None, validation_alias="KAFKA_SSL_CA_FILE")
    kafka_ssl_cert_file: Path | None = Field(default=None, validation_alias="KAFKA_SSL_CERT_FILE")
    kafka_ssl_key_file: Path | None = Field(default=None, validation_alias="KAFKA_SSL_KEY_FILE")
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None, validation_alias="KAFKA_SSL_KEY_PASSWORD"
    )
    # The application's role (a member of croupier_app: writes the ledger, the audit trail,
    # decisions and reports only through their functions, no UPDATE on logs, no DELETE);
    # migrations and scratch schemas need the owner's, CROUPIER_PG_ADMIN_DSN.
    pg_dsn: SecretStr = Field(
        default=SecretStr("postgresql://croupier@127.0.0.1:55432/croupier"),
        validation_alias="CROUPIER_PG_DSN",
    )
    pg_admin_dsn: SecretStr | None = Field(default=None, validation_alias="CROUPIER_PG_ADMIN_DSN")
    pg_schema: str = Field(default="croupier", validation_alias="CROUPIER_PG_SCHEMA")
    clickhouse_url: str = Field(
        default="http://127.0.0.1:8123", validation_alias="CROUPIER_CLICKHOUSE_URL"
    )
    clickhouse_analyst_url: str | None = Field(
        default=None, validation_alias="CROUPIER_CLICKHOUSE_ANALYST_URL"
    )
    app_id: str = Field(default="croupier", validation_alias="CROUPIER_APP_ID")
    worker_name: str | None = Field(
        default=None, max_length=100, pattern=r"^[A-Za-z0-9._:@-]+$",
        validation_alias="CROUPIER_WORKER_NAME",
    )  # fmt: skip
    topic_prefix: str = Field(default="", validation_alias="CROUPIER_TOPIC_PREFIX")
    topic_partitions: int = Field(default=6, ge=1, validation_alias="CROUPIER_TOPIC_PARTITIONS")
    topic_replication: int = Field(default=1, ge=1, validation_alias="CROUPIER_TOPIC_REPLICATION")
    batch_max: int = Field(default=1000, ge=1, validation_alias="CROUPIER_BATCH_MAX")
    batch_within: float = Field(default=0.001, gt=0, validation_alias="CROUPIER_BATCH_WITHIN")
    odds_batch_within: float = Field(
        default=0.05, gt=0, validation_alias="CROUPIER_ODDS_BATCH_WITHIN"
    )
    web_port: int = Field(default=0, ge=0, le=65535, validation_alias="CROUPIER_WEB_PORT")
    metrics_port: int = Field(default=0, ge=0, le=65535, validation_alias="CROUPIER_METRICS_PORT")
    metrics_bind: str = Field(default="127.0.0.1", validation_alias="CROUPIER_METRICS_BIND")
    data_dir: Path = Field(default=Path(".stack/faust"), validation_alias="CROUPIER_DATA_DIR")
    session_timeout: float = Field(default=10.0, ge=6, validation_alias="CROUPIER_SESSION_TIMEOUT")
    feed_timeout: float = Field(default=20.0, gt=0, validation_alias="CROUPIER_FEED_TIMEOUT")
    clock_skew_seconds: float = Field(
        default=DEFAULT_CLOCK_SKEW.total_seconds(), gt=0, le=366 * 86_400,
        validation_alias="CROUPIER_CLOCK_SKEW_SECONDS",
    )  # fmt: skip
    policy_dir: Path = Field(default=POLICY_DIR, validation_alias="CROUPIER_POLICY_DIR")
    games_catalogue: Path = Field(
        default=DEFAULT_CATALOGUE, validation_alias="CROUPIER_GAMES_CATALOGUE"
    )
    audit_key: Path = Field(
        default=Path(".stack/audit/ed25519.pem"), validation_alias="CROUPIER_AUDIT_KEY"
    )
    audit_public_key: str | None = Field(default=None, validation_alias="CROUPIER_AUDIT_PUBLIC_KEY")
    report_signing_key: Path = Field(
        default=Path(".stack/reports/ed25519.pem"), validation_alias="CROUPIER_REPORT_SIGNING_KEY"
    )
    report_public_key: str | None = Field(
        default=None, validation_alias="CROUPIER_REPORT_PUBLIC_KEY"
    )
    audit_relay_interval: float = Field(
        default=0.5, ge=0, validation_alias="CROUPIER_AUDIT_RELAY_INTERVAL"
    )
    report_interval: float = Field(default=1.0, ge=0, validation_alias="CROUPIER_REPORT_INTERVAL")
    # How far the background processes (the auditor, the analytics sink, the dashboard)
    # step back for the ones on a decision's path (the workers, the gateway, PostgreSQL,
    # Kafka): their nice value, 0 (equal) to 19 (only idle time). See config/priority.py.
    background_nice: int = Field(
        default=BACKGROUND_NICE, ge=0, le=19, validation_alias="CROUPIER_BACKGROUND_NICE"
    )
    # The auditor's passes yield to the decisions while the CPU is saturated, for at most
    # a minute at a time (streams/pacing.py); 0 turns that off.
    audit_yield: bool = Field(default=True, validation_alias="CROUPIER_AUDIT_YIELD")
    ggr_refresh: float = Field(
        default=60.0, gt=0, le=86_400, validation_alias="CROUPIER_GGR_REFRESH_SECONDS"
    )
    audit_checkpoint_interval: float = Field(
        default=60.0, ge=0, validation_alias="CROUPIER_AUDIT_CHECKPOINT_INTERVAL"
    )
    session_watch_interval: float = Field(
        default=1.0, gt=0, validation_alias="CROUPIER_SESSION_WATCH_INTERVAL"
    )
    clickhouse_database: str = Field(
        default="croupier", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        validation_alias="CROUPIER_CLICKHOUSE_DATABASE",
    )  # fmt: skip
    analytics_batch_max: int = Field(
        default=50_000, ge=1, validation_alias="CROUPIER_ANALYTICS_BATCH_MAX"
    )
    analytics_batch_wait: float = Field(
        default=0.25, gt=0, validation_alias="CROUPIER_ANALYTICS_BATCH_WAIT"
    )
    analytics_retry_max: float = Field(
        default=5.0, gt=0, validation_alias="CROUPIER_ANALYTICS_RETRY_MAX"
    )

    @field_validator("policy_dir", mode="before")
    @classmethod
    def _shipped_policies_when_empty(cls, value: object) -> object:
        return POLICY_DIR if value == "" else value

    @field_validator("games_catalogue", mode="before")
    @classmethod
    def _shipped_catalogue_when_empty(cls, value: object) -> object:
        return DEFAULT_CATALOGUE if value == "" else value

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator(
        "kafka_sasl_username", "kafka_sasl_password", "kafka_ssl_ca_file", "kafka_ssl_cert_file",
        "kafka_ssl_key_file", "kafka_ssl_key_password", mode="before",
    )  # fmt: skip
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _kafka_security_consistent(self) -> Self:
        """Refuse settings a client would misread: credentials that no protocol sends (a
        forgotten ``KAFKA_SECURITY_PROTOCOL`` would connect without them), SASL without a
        user, TLS files on a protocol without TLS, a certificate without its key."""
        protocol = self.kafka_security_protocol
        sasl = (self.kafka_sasl_username, self.kafka_sasl_password)
        if protocol.startswith("SASL_"):
            if None in sasl:
                msg = f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and PASSWORD"
                raise ValueError(msg)
        elif sasl != (None, None):
            msg = (
                f"KAFKA_SASL_USERNAME/PASSWORD are set but KAFKA_SECURITY_PROTOCOL={protocol} "
                "does not use them (SASL_SSL or SASL_PLAINTEXT does)"
            )
            raise ValueError(msg)
        files = (self.kafka_ssl_ca_file, self.kafka_ssl_cert_file, self.kafka_ssl_key_file)
        if not protocol.endswith("SSL") and files != (None, None, None):
            msg = (
                f"KAFKA_SSL_* files are set but KAFKA_SECURITY_PROTOCOL={protocol} does not "
                "use TLS (SSL or SASL_SSL does)"
            )
            raise ValueError(msg)
        if (self.kafka_ssl_cert_file is None) != (self.kafka_ssl_key_file is None):
            msg = "KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together"
            raise ValueError(msg)
        return self

    @field_validator("pg_schema", "app_id")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not value.replace("_", "").replace("-", "").isalnum():
            msg = f"{value!r} must be letters, digits, '_' or '-'"
            raise ValueError(msg)
        return value

    def as_env(self) -> dict[str, str]:
        """These settings as the environment variables that make a child process see them."""
        env: dict[str, str] = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[str(info.validation_alias)] = str(value)
        return env

    @property
    def migration_dsn(self) -> str:
        """The schema owner's DSN (migrations, scratch schemas); the application's if unset."""
        return (self.pg_admin_dsn or self.pg_dsn).get_secret_value()

    def topic(self, name: str) -> str:
        """The real topic name for a contract topic name."""
        return f"{self.topic_prefix}{name}"

    @property
    def clock_skew(self) -> timedelta:
        """How far a producer's time may be from the server's (``CROUPIER_CLOCK_SKEW_SECONDS``)."""
        return timedelta(seconds=self.clock_skew_seconds)

    @property
    def bootstrap_list(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap_servers.split(",") if s.strip()]
