"""Every topic of the wire contract, and ``croupier topics create`` (idempotent)."""

from __future__ import annotations

from dataclasses import dataclass

from config.kafka import librdkafka_conf
from config.settings import Settings

INBOUND = ("odds", "bets", "payments", "casino", "players")
OUTBOUND = (
    "bet-decisions",
    "settlements",
    "payment-decisions",
    "casino-results",
    "player-notifications",
    "audit",
    "dead-letters",
)
# The tables each app keeps; Faust names their changelogs ``<app id>-<table>-changelog``.
# Partitioned tables follow their source topic; global tables have one partition.
TABLES = ("players",)
GLOBAL_TABLES = ("odds", "feed_health")
REPORT_JURISDICTIONS = ("UK", "DK", "ES", "NJ")
KEEP_FOREVER = -1


@dataclass(frozen=True)
class TopicSpec:
    """A topic to provision: name and the configs that matter."""

    name: str
    config: tuple[tuple[str, str], ...] = ()
    partitions: int | None = None  # None: the settings' topic_partitions

    @property
    def compacted(self) -> bool:
        return ("cleanup.policy", "compact") in self.config


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics Croupier needs, with their real (prefixed) names."""
    specs = [TopicSpec(settings.topic(t)) for t in INBOUND]
    for name in OUTBOUND:
        # The audit trail and dead letters are records a regulator may ask for: kept.
        keep = name in ("audit", "dead-letters")
        config = (("retention.ms", str(KEEP_FOREVER)),) if keep else ()
        specs.append(TopicSpec(settings.topic(name), config))
    specs += [
        TopicSpec(settings.topic(f"reports.{j}"), (("retention.ms", str(KEEP_FOREVER)),))
        for j in REPORT_JURISDICTIONS
    ]
    specs += [
        TopicSpec(changelog_topic(settings, t), (("cleanup.policy", "compact"),)) for t in TABLES
    ]
    specs += [
        TopicSpec(changelog_topic(settings, t), (("cleanup.policy", "compact"),), partitions=1)
        for t in GLOBAL_TABLES
    ]
    return specs


@dataclass(frozen=True)
class TopicOutcome:
    name: str
    status: str  # created | exists | mismatch
    detail: str = ""


def create_topics(settings: Settings, *, timeout: float = 30.0) -> list[TopicOutcome]:
    """Create every missing topic; report existing ones whose shape differs from the spec."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(librdkafka_conf(settings))
    specs = topic_specs(settings)
    existing = admin.list_topics(timeout=timeout).topics
    outcomes: list[TopicOutcome] = []
    wanted = []
    for spec in specs:
        meta = existing.get(spec.name)
        if meta is None:
            wanted.append(spec)
            continue
        have = len(meta.partitions)
        want = spec.partitions or settings.topic_partitions
        if have != want:
            detail = f"has {have} partitions, wanted {want}"
            outcomes.append(TopicOutcome(spec.name, "mismatch", detail))
        else:
            outcomes.append(TopicOutcome(spec.name, "exists"))
    if wanted:
        futures = admin.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions or settings.topic_partitions,
                    replication_factor=settings.topic_replication,
                    config=dict(s.config),
                )
                for s in wanted
            ],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result()
                outcomes.append(TopicOutcome(name, "created"))
            except KafkaException as exc:
                if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    outcomes.append(TopicOutcome(name, "exists"))  # a concurrent creator won
                else:
                    raise
    return sorted(outcomes, key=lambda o: o.name)
