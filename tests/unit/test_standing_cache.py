"""Parsed standings are reused only for the exact same stored JSON, and stay bounded; the
placement's protection rows become what ``guard`` gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from rules.policy import Policies
from schemas.players import PlayerLimit, PlayerState
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


def standing(version: int, pid: str, *limits: PlayerLimit) -> str:
    return PlayerState(
        player_id=pid, jurisdiction="UK", currency="EUR", birth_date="1990-05-01",
        registered_at=NOW, version=version, last_event="registered", updated_at=NOW,
        source_partition=0, source_offset=version, limits=limits,
    ).model_dump_json()  # fmt: skip


def test_guarded_from_bets_load_rows() -> None:
    """``bets_load``'s rows (migration 0029) give what ``guard`` gives: the standing read
    under the lock wins, and only players with a limit of that kind in force have their
    activity (exact amounts) or sessions counted."""
    loss = PlayerLimit(kind="loss", period="day", amount=Decimal("50"), currency="EUR",
                       set_at=NOW - timedelta(days=2))  # fmt: skip
    session = PlayerLimit(kind="session", period="day", minutes=60, set_at=NOW - timedelta(days=2))
    earlier = NOW - timedelta(hours=1)
    out = protection.guarded_from(
        Policies(),
        NOW,
        [("p-1", standing(1, "p-1")), ("p-2", standing(1, "p-2")), ("p-3", standing(1, "p-3"))],
        [("p-1", standing(2, "p-1", loss)), ("p-3", standing(2, "p-3", session))],
        [("p-1", earlier.isoformat(), "10.10", None), ("p-1", earlier.isoformat(), None, "5"),
         ("p-2", earlier.isoformat(), "7", None)],
        [("p-1", earlier.isoformat(), None), ("p-3", earlier.isoformat(), NOW.isoformat())],
    )  # fmt: skip
    assert {p: s.version for p, s in out.standings.items()} == {"p-1": 2, "p-2": 1, "p-3": 2}
    assert out.usage["p-1"].loss == [(earlier, Decimal("10.10"))]
    assert out.usage["p-1"].deposits == [(earlier, Decimal("5"))]
    assert out.usage["p-1"].sessions == []  # no session limit: its sessions are not counted
    assert "p-2" not in out.usage  # no limit at all: its activity is not counted
    assert out.usage["p-3"].sessions == [(earlier, NOW)]
    assert out.usage["p-3"].loss == []
