"""The Faust app factory: one app per process, collaborators injected for tests."""

from __future__ import annotations

from typing import Any

import faust

from config.games import load_catalogue
from config.kafka import faust_broker_credentials
from config.policies import load_policies
from config.settings import Settings
from rules.games import Catalogue
from rules.policy import Policies
from sinks.postgres.casino import CasinoSink
from sinks.postgres.payments import PaymentsSink
from sinks.postgres.players import PostgresPlayerSink
from sinks.postgres.protection import SessionSink
from sinks.postgres.relay import AuditRelay
from sinks.postgres.reports import ReportSink
from sinks.postgres.sportsbook import SportsbookSink
from streams import audit, bets, casino, metrics, odds, payments, players, protection, reports
from streams.view import GlobalView
from topologies.topics import changelog_topic


def broker_url(settings: Settings) -> str:
    """Faust's broker URL for ``KAFKA_BOOTSTRAP_SERVERS``."""
    return ";".join(f"kafka://{server}" for server in settings.bootstrap_list)


def create_app(
    settings: Settings,
    *,
    player_sink: players.PlayerStore | None = None,
    policies: Policies | None = None,
    catalogue: Catalogue | None = None,
) -> Any:
    """A Faust app with every Croupier flow declared.

    ``policies`` defaults to the jurisdiction policy files of ``settings.policy_dir``,
    loaded (and validated) here, at start; ``catalogue`` the game registry of
    ``settings.games_catalogue``, likewise.
    """
    policies = policies if policies is not None else load_policies(settings.policy_dir)
    catalogue = catalogue if catalogue is not None else load_catalogue(settings.games_catalogue)
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = faust.App(
        settings.app_id,
        broker=broker_url(settings),
        broker_credentials=faust_broker_credentials(settings),
        store="memory://",
        datadir=str(settings.data_dir / "{conf.name}"),
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # A SIGKILLed worker never leaves its group; the broker notices after this long.
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        web_enabled=settings.web_port > 0,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        web_port=settings.web_port or 6066,
    )
    # Faust's consumer reads nothing: every flow has its own (streams/kafka.py) and the global
    # tables are views with their own readers (streams/view.py).
    app.boot_strategy = faust.app.BootStrategy(app, enable_kafka_consumer=False)
    dsn, schema, group = settings.pg_dsn.get_secret_value(), settings.pg_schema, settings.app_id
    sink = player_sink or PostgresPlayerSink(dsn, schema, consumer_group=group)
    players.register(app, settings, sink=sink, policies=policies)
    protection.register(
        app, settings, sink=SessionSink(dsn, schema, consumer_group=group, max_connections=1),
        policies=policies,
    )  # fmt: skip
    # Global: every worker holds every market (see streams/odds.py and streams/view.py).
    odds_table = GlobalView(settings, changelog_topic(settings, "odds"))
    health_table = GlobalView(settings, changelog_topic(settings, "feed_health"))
    odds.register(
        app, settings, odds=odds_table, health=health_table,
        sink=SportsbookSink(dsn, schema, consumer_group=group),
    )  # fmt: skip
    bets.register(
        app, settings, odds=odds_table, health=health_table,
        sink=SportsbookSink(dsn, schema, consumer_group=group, policies=policies),
    )  # fmt: skip
    payments.register(
        app, settings, sink=PaymentsSink(dsn, schema, consumer_group=group, policies=policies)
    )
    casino.register(
        app, settings, sink=CasinoSink(dsn, schema, consumer_group=group, policies=policies,
                                       catalogue=catalogue),
    )  # fmt: skip
    audit.register(
        app, settings, relay=AuditRelay(dsn, schema, consumer_group=group, max_connections=1)
    )
    reports.register(
        app, settings, sink=ReportSink(dsn, schema, consumer_group=group, max_connections=1),
        policies=policies,
    )  # fmt: skip
    metrics.add_check("postgres", metrics.pg_reachable(dsn))
    if settings.metrics_port > 0:

        @app.task  # type: ignore[untyped-decorator]  # app is Any
        async def serve_metrics() -> None:
            """The worker's /metrics endpoint, once the worker starts."""
            metrics.serve(settings.metrics_port, "worker", settings.metrics_bind)

    return app
