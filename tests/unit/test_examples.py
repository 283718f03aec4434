"""The example messages of ``schemas/examples`` against three validators that must agree.

Every ``<topic>/valid/*.json`` (inbound, and outbound as Croupier writes it) is accepted,
and every ``<topic>/invalid/*.json`` refused with the reason its ``.expect.json`` names,
by the models (the decoder the workers run), by python-jsonschema and by ajv (npm) over
the exported schemas. An invalid example the schemas cannot refuse says so
(``"schema": false``) and why.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from schemas import export
from schemas.decode import DecodeFailure, decode
from schemas.topics import INBOUND_TOPICS, TOPICS
from tests.clients.build import ajv

EXAMPLES = Path(export.__file__).resolve().parent / "examples"
EXPECT = ".expect.json"


@dataclass(frozen=True)
class Example:
    topic: str
    path: Path
    valid: bool
    expect: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.topic}/{self.path.parent.name}/{self.path.stem}"


def examples() -> list[Example]:
    found = []
    for path in sorted(EXAMPLES.glob("*/*/*.json")):
        if path.name.endswith(EXPECT):
            continue
        topic, kind = path.parent.parent.name, path.parent.name
        assert kind in ("valid", "invalid"), path
        sidecar = path.with_name(path.stem + EXPECT)
        expect = json.loads(sidecar.read_text()) if kind == "invalid" else {}
        found.append(Example(topic, path, kind == "valid", expect))
    return found


ALL = examples()


def test_every_inbound_topic_has_valid_and_invalid_examples_with_their_reasons() -> None:
    for topic in INBOUND_TOPICS:
        kinds = {(e.valid) for e in ALL if e.topic == topic}
        assert kinds == {True, False}, topic
    # What Croupier writes, as a consumer sees it.
    for topic in ("bet-decisions", "payment-decisions", "settlements", "casino-results"):
        assert any(e.valid for e in ALL if e.topic == topic), topic
    for e in ALL:
        if not e.valid:
            assert e.expect["reason"] in {"invalid", "malformed_json", "too_large"}, e.id
            assert e.expect["error"], e.id
            assert e.expect.get("schema", True) or e.expect.get("why"), e.id
    sidecars = {p.name.removesuffix(EXPECT) for p in EXAMPLES.glob(f"*/*/*{EXPECT}")}
    assert sidecars == {e.path.stem for e in ALL if not e.valid}  # none stray, none missing


@pytest.mark.parametrize("example", ALL, ids=[e.id for e in ALL])
def test_the_models_decide_as_the_example_says(example: Example) -> None:
    result = decode(TOPICS[example.topic], example.path.read_bytes())
    if example.valid:
        assert not isinstance(result, DecodeFailure), result
    else:
        assert isinstance(result, DecodeFailure), "the models accept an invalid example"
        assert result.reason == example.expect["reason"]
        assert example.expect["error"] in result.error


def schema(topic: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((export.SCHEMA_DIR / f"{topic}{export.SUFFIX}").read_text())
    return loaded


def schema_must_refuse(example: Example) -> bool:
    return not example.valid and example.expect.get("schema", True)


@pytest.mark.parametrize("example", ALL, ids=[e.id for e in ALL])
def test_python_jsonschema_decides_as_the_example_says(example: Example) -> None:
    validator = jsonschema.Draft202012Validator(
        schema(example.topic), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    try:
        value = json.loads(example.path.read_bytes())
    except ValueError:
        assert example.expect.get("reason") == "malformed_json", example.id
        return
    errors = list(validator.iter_errors(value))
    if schema_must_refuse(example):
        assert errors, "the schema accepts an example the models refuse"
    else:
        assert errors == [], [e.message for e in errors]


def test_ajv_decides_as_every_example_says() -> None:
    program = ajv()
    payload = {
        "schemas": {t: schema(t) for t in {e.topic for e in ALL}},
        "cases": [[e.topic, e.path.read_text()] for e in ALL],
    }
    done = subprocess.run(
        [*program.argv], input=json.dumps(payload), capture_output=True, text=True,
        env=program.env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    wrong = [
        (e.id, r["errors"])
        for e, r in zip(ALL, results, strict=True)
        if r["valid"] == schema_must_refuse(e)
    ]
    assert wrong == []
