"""Write the JSON Schema of every topic under ``schemas/json/``, or check it is current.

    python -m schemas.export           # (re)write the files
    python -m schemas.export --check   # exit 1 and list the files that are missing or stale

Upstream producers build against these files, so they are generated from the models and
a test fails when they drift. Inbound topics get the schema of what Croupier accepts
(validation mode), outbound topics the schema of what it writes (serialization mode).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from schemas.topics import INBOUND_TOPICS, TOPICS

SCHEMA_DIR = Path(__file__).resolve().parent / "json"
ID_BASE = "https://croupier.dev/schemas/"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
SUFFIX = ".schema.json"


def schema_for(topic: str) -> dict[str, Any]:
    """The JSON Schema document of ``topic``'s messages."""
    inbound = topic in INBOUND_TOPICS
    mode: Literal["validation", "serialization"] = "validation" if inbound else "serialization"
    direction = "inbound" if inbound else "outbound"
    schema = TOPICS[topic].json_schema(mode=mode)
    return {
        **schema,
        "$schema": DIALECT,
        "$id": f"{ID_BASE}{topic}{SUFFIX}",
        "title": f"Croupier {direction} topic {topic!r}",
    }


def render(topic: str) -> str:
    """The exact text of ``topic``'s schema file (stable: sorted keys, two-space indent)."""
    return json.dumps(schema_for(topic), indent=2, sort_keys=True) + "\n"


def expected_files() -> dict[str, str]:
    """File name to content, for every topic."""
    return {f"{topic}{SUFFIX}": render(topic) for topic in TOPICS}


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
