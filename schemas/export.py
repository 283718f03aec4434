"""Write the JSON Schema of every topic under ``schemas/json/``, or check it is current.

    python -m schemas.export           # (re)write the files
    python -m schemas.export --check   # exit 1 and list the files that are missing or stale

Upstream producers build against these files, so they are generated from the models and
a test fails when they drift. Inbound topics get the schema of what Croupier accepts
(validation mode), outbound topics the schema of what it writes (serialization mode).

The evolution policy (README) shapes them: inbound schemas are closed (unknown fields are
refused, as the models refuse them) and as strict as the models, down to an amount's
places per currency; outbound schemas are open (``additionalProperties: true``, the
reason codes an open string with the known codes as ``examples``), because Croupier may
add fields and reason codes and its consumers must let them through.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter

from schemas.money import DEFAULT_MINOR_UNITS, MINOR_UNITS
from schemas.reports import ReportEnvelope
from schemas.topics import INBOUND_TOPICS, TOPICS

SCHEMA_DIR = Path(__file__).resolve().parent / "json"
ID_BASE = "https://croupier.dev/schemas/"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
SUFFIX = ".schema.json"


# Topics with a schema file beside the contract's: ``reports`` is every ``reports.<J>``.
EXPORTED: dict[str, TypeAdapter[Any]] = {**TOPICS, "reports": TypeAdapter(ReportEnvelope)}
TITLES = {"reports": "Croupier outbound topics 'reports.<JURISDICTION>'"}
# The description pydantic gives every amount tied to its message's currency.
_PER_CURRENCY = "the currency's minor units"
REASON_CODE_DEF = "ReasonCode"


def schema_for(topic: str) -> dict[str, Any]:
    """The JSON Schema document of ``topic``'s messages."""
    inbound = topic in INBOUND_TOPICS
    mode: Literal["validation", "serialization"] = "validation" if inbound else "serialization"
    direction = "inbound" if inbound else "outbound"
    schema = EXPORTED[topic].json_schema(mode=mode)
    if inbound:
        _places_per_currency(schema)
    else:
        _open(schema)
    return {
        **schema,
        "$schema": DIALECT,
        "$id": f"{ID_BASE}{topic}{SUFFIX}",
        "title": TITLES.get(topic, f"Croupier {direction} topic {topic!r}"),
    }


def _objects(node: Any) -> list[dict[str, Any]]:
    """Every object schema in ``node``, nested ones included."""
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append(node)
        for value in node.values():
            found.extend(_objects(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_objects(value))
    return found


def _amounts(properties: dict[str, Any]) -> list[str]:
    """The properties that are amounts in their message's currency."""
    return sorted(name for name, prop in properties.items() if _PER_CURRENCY in json.dumps(prop))


def _places_per_currency(schema: dict[str, Any]) -> None:
    """Add to every object with a ``currency`` the models' rule that its amounts have at
    most the currency's minor units (0 for JPY, 3 for KWD, 2 for the rest)."""
    by_places: dict[int, list[str]] = {}
    for code, places in MINOR_UNITS.items():
        by_places.setdefault(places, []).append(code)
    for obj in _objects(schema):
        props = obj.get("properties", {})
        amounts = _amounts(props)
        if "currency" not in props or not amounts:
            continue
        rules = []
        for places in sorted(by_places):
            codes = sorted(by_places[places])
            if places == DEFAULT_MINOR_UNITS:
                others = sorted(c for p, cs in by_places.items() if p != places for c in cs)
                when: dict[str, Any] = {"not": {"enum": others}}
            else:
                when = {"enum": codes}
            fraction = rf"(\.[0-9]{{1,{places}}})?" if places else ""
            shape = {"pattern": rf"^-?[0-9]+{fraction}$"}
            rules.append(
                {
                    "if": {"properties": {"currency": when}, "required": ["currency"]},
                    "then": {"properties": dict.fromkeys(amounts, shape)},
                }
            )
        obj["allOf"] = [*obj.get("allOf", []), *rules]


def _open(schema: dict[str, Any]) -> None:
    """Make an outbound schema forward compatible: unknown fields and reason codes pass."""
    for obj in _objects(schema):
        if obj.get("additionalProperties") is False:
            obj["additionalProperties"] = True
    reasons = schema.get("$defs", {}).get(REASON_CODE_DEF)
    if reasons is not None:
        known = reasons.pop("enum")
        reasons.update(
            type="string",
            pattern="^[a-z][a-z0-9_]*$",
            examples=known,
            description=(
                "Why an input was refused: an open set. The codes known today are the "
                "examples; a consumer treats a code it does not know as a refusal."
            ),
        )


def render(topic: str) -> str:
    """The exact text of ``topic``'s schema file (stable: sorted keys, two-space indent)."""
    return json.dumps(schema_for(topic), indent=2, sort_keys=True) + "\n"


def expected_files() -> dict[str, str]:
    """File name to content, for every topic."""
    return {f"{topic}{SUFFIX}": render(topic) for topic in EXPORTED}


def check(directory: Path = SCHEMA_DIR) -> list[str]:
    """What is out of date under ``directory``: one line per missing, stale or extra file."""
    problems = []
    wanted = expected_files()
    for name, text in wanted.items():
        path = directory / name
        if not path.exists():
            problems.append(f"missing: {path}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"differs: {path}")
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        if path.name not in wanted:
            problems.append(f"unexpected (no such topic): {path}")
    return problems


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every topic's schema under ``directory`` and drop files of retired topics."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = expected_files()
    written = []
    for name, text in wanted.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    for path in directory.glob(f"*{SUFFIX}"):
        if path.name not in wanted:
            path.unlink()
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the schema files, or with ``--check`` report drift."""
    parser = argparse.ArgumentParser(prog="python -m schemas.export", description=__doc__)
    parser.add_argument("--check", action="store_true", help="report drift, write nothing")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.dir)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("run: python -m schemas.export", file=sys.stderr)
        return 1 if problems else 0
    for path in write(args.dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
