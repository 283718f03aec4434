"""The schema evolution policy, enforced: ``schemas.evolution`` against the last release."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from schemas import evolution
from schemas.evolution import Schemas, breaking_changes, check, read_dir
from schemas.export import SCHEMA_DIR, SUFFIX

BASELINE = read_dir(evolution.RELEASES / "0.1.0")


def test_this_tree_keeps_the_policy_against_the_last_release() -> None:
    # What `make test` enforces: no breaking change since the baseline without a bump.
    base = evolution.baseline()
    assert base is not None
    assert base.version <= evolution.project_version()
    assert check() == []


def test_the_first_baseline_is_a_snapshot_of_every_topic() -> None:
    assert set(BASELINE) == set(read_dir(SCHEMA_DIR))
    assert "reports" in BASELINE


def _set(path: list[str], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(schema: dict[str, Any]) -> None:
        node = schema
        for name in path[:-1]:
            node = node[name]
        node[path[-1]] = value

    return apply


def _drop(path: list[str]) -> Callable[[dict[str, Any]], None]:
    def apply(schema: dict[str, Any]) -> None:
        node = schema
        for name in path[:-1]:
            node = node[name]
        del node[path[-1]]

    return apply


def _require(path: list[str], name: str) -> Callable[[dict[str, Any]], None]:
    def apply(schema: dict[str, Any]) -> None:
        node = schema
        for step in path:
            node = node[step]
        node["properties"][name] = {"type": "string"}
        node["required"] = [*node.get("required", []), name]

    return apply


def _optional(path: list[str], name: str) -> Callable[[dict[str, Any]], None]:
    def apply(schema: dict[str, Any]) -> None:
        node = schema
        for step in path:
            node = node[step]
        node["properties"][name] = {"type": "string"}

    return apply


DEPOSIT = ["$defs", "Deposit"]
BREAKING: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    "inbound field now required": ("bets", _require([], "channel"), "now required"),
    "inbound field removed": ("payments", _drop([*DEPOSIT, "properties", "amount"]), "removed"),
    "inbound enum narrowed": (
        "bets", _set(["properties", "odds_change", "enum"], ["none", "any"]), "lost ['\"higher\"']"
    ),
    "inbound bound tightened": ("bets", _set(["properties", "bet_id", "maxLength"], 64), "128"),
    "inbound pattern changed": (
        "payments", _set([*DEPOSIT, "properties", "currency", "pattern"], "^[A-Z]{2}$"), "pattern"
    ),
    "inbound message type removed": ("payments", _drop(["$defs", "WithdrawalFailed"]), "removed"),
    "outbound field no longer written": (
        "bet-decisions", _set(["required"], ["bet_id", "player_id", "status"]), "no longer"
    ),
    "outbound status gains a value": (
        "bet-decisions",
        _set(["properties", "status", "enum"], ["accepted", "rejected", "pending"]),
        "gained",
    ),
    "outbound field changes type": (
        "payment-decisions", _set(["properties", "payment_id"], {"type": "integer"}), "gained"
    ),
    "topic removed": ("casino", lambda s: s.clear(), "removed"),
}  # fmt: skip


def _mutated(topic: str, change: Callable[[dict[str, Any]], None]) -> Schemas:
    new = copy.deepcopy(BASELINE)
    change(new[topic])
    if not new[topic]:
        del new[topic]
    return new


@pytest.mark.parametrize("case", list(BREAKING))
def test_a_breaking_change_is_caught(case: str) -> None:
    topic, change, said = BREAKING[case]
    problems = breaking_changes(BASELINE, _mutated(topic, change))
    assert problems, case
    assert all(p.startswith(topic) for p in problems), problems
    assert any(said in p for p in problems), problems


COMPATIBLE: dict[str, tuple[str, Callable[[dict[str, Any]], None]]] = {
    "inbound optional field": ("bets", _optional([], "channel")),
    "inbound enum widened": (
        "bets", _set(["properties", "odds_change", "enum"], ["none", "higher", "any", "lower"])
    ),
    "inbound bound loosened": ("bets", _set(["properties", "bet_id", "maxLength"], 256)),
    "outbound new field": ("bet-decisions", _optional([], "channel")),
    "outbound new reason code": (
        "bet-decisions",
        _set(["$defs", "ReasonCode", "examples"],
             [*BASELINE["bet-decisions"]["$defs"]["ReasonCode"]["examples"], "kyc_pending"]),
    ),
    "outbound description reworded": (
        "settlements", _set(["properties", "bet_id", "description"], "the bet")
    ),
}  # fmt: skip


def test_an_inbound_schema_that_closes_to_unknown_fields_breaks() -> None:
    was_open = copy.deepcopy(BASELINE)
    was_open["bets"]["additionalProperties"] = True
    problems = breaking_changes(was_open, BASELINE)
    assert problems == ["bets (inbound) <message>: unknown fields were allowed and are now refused"]


@pytest.mark.parametrize("case", list(COMPATIBLE))
def test_a_compatible_change_passes(case: str) -> None:
    topic, change = COMPATIBLE[case]
    assert breaking_changes(BASELINE, _mutated(topic, change)) == []
    new_topic = {**BASELINE, "bonus": {"type": "object"}}
    assert breaking_changes(BASELINE, new_topic) == []


def _tree(tmp_path: Path, version: str, schemas: Schemas) -> tuple[Path, Path, Path]:
    root, releases, current = tmp_path / "tree", tmp_path / "releases", tmp_path / "current"
    root.mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "croupier"\nversion = "{version}"\n')
    shutil.rmtree(current, ignore_errors=True)
    current.mkdir()
    for topic, schema in schemas.items():
        (current / f"{topic}{SUFFIX}").write_text(json.dumps(schema))
    if not releases.exists():
        shutil.copytree(evolution.RELEASES, releases)
    return root, releases, current


def test_the_check_fails_a_breaking_fixture_until_the_version_is_bumped(tmp_path: Path) -> None:
    topic, change, _ = BREAKING["inbound field now required"]
    broken = _mutated(topic, change)
    problems = check(*_tree(tmp_path, "0.1.0", broken))
    assert problems[-1].startswith("breaking changes since schemas/releases/0.1.0: bump")
    assert any("channel: now required" in p for p in problems)
    assert check(*_tree(tmp_path, "0.1.1", broken)) != []  # a patch release may not break
    assert check(*_tree(tmp_path, "0.2.0", broken)) == []
    assert check(*_tree(tmp_path, "0.0.9", BASELINE))[0].startswith("version 0.0.9 is older")


def test_a_git_tag_is_the_baseline_when_it_is_the_newest_release(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "schemas" / "json").mkdir(parents=True)
    broken = _mutated(*BREAKING["outbound status gains a value"][:2])
    for topic, schema in broken.items():
        (root / "schemas" / "json" / f"{topic}{SUFFIX}").write_text(json.dumps(schema))
    (root / "pyproject.toml").write_text('[project]\nname = "croupier"\nversion = "0.2.0"\n')

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)

    git("init", "-q")
    git(
        "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "r", "--allow-empty"
    )
    git("add", "-A")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "release")
    git("tag", "v0.2.0")
    base = evolution.baseline(root, evolution.RELEASES)
    assert base is not None and base.source == "git tag v0.2.0" and base.version == (0, 2, 0)
    assert base.schemas["bet-decisions"]["properties"]["status"]["enum"][-1] == "pending"
    # Against that tag, today's schemas drop "pending" from what is written: compatible.
    assert check(root, evolution.RELEASES, SCHEMA_DIR) == []


def test_an_outbound_message_with_new_fields_and_reason_codes_fits_the_schema() -> None:
    schema = json.loads((SCHEMA_DIR / f"bet-decisions{SUFFIX}").read_text())
    future = {
        "bet_id": "b-1", "player_id": "p-1", "status": "rejected", "reason": "kyc_pending",
        "odds": None, "decided_at": "2026-11-24T19:01:00Z", "schema_version": 1,
        "channel": "mobile", "limits": {"remaining": "5.00"},
    }  # fmt: skip
    assert set(schema["required"]) <= set(future)
    validator = jsonschema.Draft202012Validator(schema)
    assert [e.message for e in validator.iter_errors(future)] == []
    # What stays closed: a status outside the set is still refused.
    assert list(validator.iter_errors({**future, "status": "pending"}))
