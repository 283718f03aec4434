"""Parsed standings are reused only for the exact same stored JSON, and stay bounded."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.players import PlayerState
from sinks.postgres import protection

NOW = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)


def text(version: int, pid: str = "p-1") -> str:
    return PlayerState(
        player_id=pid, jurisdiction="UK", currency="EUR", birth_date="1990-05-01",
        registered_at=NOW, version=version, last_event="registered", updated_at=NOW,
        source_partition=0, source_offset=version,
    ).model_dump_json()  # fmt: skip


def test_the_same_json_parses_once_and_a_new_version_parses_anew() -> None:
    first = protection.parse_standing(text(1))
    assert protection.parse_standing(text(1)) is first
    newer = protection.parse_standing(text(2))
    assert newer.version == 2 and first.version == 1
    assert newer == PlayerState.model_validate_json(text(2))


def test_the_cache_stays_bounded() -> None:
    for n in range(protection._PARSED_MAX + 10):
        protection.parse_standing(text(1, f"p-{n}"))
    assert len(protection._PARSED) == protection._PARSED_MAX
    assert text(1, "p-0") not in protection._PARSED  # the oldest went first
