"""Settings from the environment, and the topics every deployment gets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from config.settings import Settings
from topologies.app import broker_url
from topologies.topics import changelog_topic, topic_specs

CONTRACT = {
    "odds", "bets", "payments", "casino", "players", "bet-decisions", "settlements",
    "payment-decisions", "casino-results", "audit", "dead-letters",
}  # fmt: skip


def test_settings_read_the_documented_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092, k2:9092")
    monkeypatch.setenv("CROUPIER_PG_DSN", "postgresql://u:secret@db/croupier")
    monkeypatch.setenv("CROUPIER_TOPIC_PREFIX", "staging.")
    s = Settings()
    assert s.bootstrap_list == ["k1:9092", "k2:9092"]
    assert broker_url(s) == "kafka://k1:9092;kafka://k2:9092"
    assert s.topic("bets") == "staging.bets"
    assert "secret" not in repr(s)


def test_settings_pass_to_a_child_process_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(CROUPIER_PG_DSN="postgresql://u:secret@db/x", CROUPIER_FEED_TIMEOUT=15,
                 CROUPIER_TOPIC_PREFIX="t.", CROUPIER_BATCH_MAX=7)  # fmt: skip
    env = s.as_env()
    assert env["CROUPIER_PG_DSN"] == "postgresql://u:secret@db/x"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings() == s


def test_a_schema_name_that_is_not_an_identifier_is_refused() -> None:
    with pytest.raises(ValidationError, match="must be letters"):
        Settings(CROUPIER_PG_SCHEMA="x; DROP TABLE players")


def test_every_contract_topic_is_provisioned() -> None:
    s = Settings(CROUPIER_APP_ID="croupier")
    specs = {spec.name: spec for spec in topic_specs(s)}
    assert set(specs) >= CONTRACT
    assert {f"reports.{j}" for j in ("UK", "DK", "ES", "NJ")} <= set(specs)
    changelog = specs[changelog_topic(s, "players")]
    assert changelog.name == "croupier-players-changelog" and changelog.compacted
    assert dict(specs["audit"].config)["retention.ms"] == "-1"
    assert not specs["bets"].compacted
