"""The schema evolution check: what may change in the wire contract between releases.

    python -m schemas.evolution              # exit 1 and list the breaking changes
    python -m schemas.evolution --snapshot   # keep today's schemas as this version's baseline

Inbound schemas change backward compatibly: the new schema accepts every message the old
one accepted (new optional fields only; nothing removed, made required or narrowed).
Outbound schemas change forward compatibly: every message the new schema allows is one
the old schema allowed, read openly (new fields are fine, the old schemas being open, and
so are new reason codes, an open set; nothing that was always written may go missing,
change type, or take a value outside the old set).

The baseline is the last release: the newest ``v<major>.<minor>.<patch>`` git tag, or the
newest snapshot under ``schemas/releases/<version>/`` (the first baseline, 0.1.0, is a
snapshot: no release had been tagged). A breaking change passes only with a version bump
past the baseline's: the major version, or the minor while the major is 0.

The comparison is structural and conservative: a change it cannot prove safe (a pattern,
a format, an alternative of a union) is reported, and a reviewer bumps the version or
shows the change is harmless by keeping it out.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.export import SCHEMA_DIR, SUFFIX
from schemas.topics import INBOUND_TOPICS

ROOT = Path(__file__).resolve().parents[1]
RELEASES = Path(__file__).resolve().parent / "releases"
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")
# Keywords that describe and do not constrain.
_ANNOTATIONS = frozenset({"title", "description", "examples", "default", "$comment"})
_UPPER = ("maxLength", "maximum", "exclusiveMaximum", "maxItems")
_LOWER = ("minLength", "minimum", "exclusiveMinimum", "minItems")

Schemas = dict[str, dict[str, Any]]  # topic to its schema document
Version = tuple[int, int, int]


@dataclass(frozen=True)
class Baseline:
    """The schemas of the last release, and where they came from."""

    version: Version
    source: str  # "git tag v0.2.0" or "schemas/releases/0.1.0"
    schemas: Schemas


def parse_version(text: str) -> Version:
    found = _VERSION.match(text.strip())
    if found is None:
        msg = f"{text!r} is not a version such as 0.1.0"
        raise ValueError(msg)
    major, minor, patch = (int(g) for g in found.groups())
    return major, minor, patch


def shown(version: Version) -> str:
    return ".".join(map(str, version))


def may_break(baseline: Version, current: Version) -> bool:
    """Whether ``current`` is bumped enough past ``baseline`` to break compatibility."""
    if baseline[0] == 0:
        return current[:2] > baseline[:2]
    return current[0] > baseline[0]


def project_version(root: Path = ROOT) -> Version:
    with (root / "pyproject.toml").open("rb") as f:
        return parse_version(tomllib.load(f)["project"]["version"])


def read_dir(directory: Path) -> Schemas:
    return {
        p.name.removesuffix(SUFFIX): json.loads(p.read_text(encoding="utf-8"))
        for p in sorted(directory.glob(f"*{SUFFIX}"))
    }


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60
        )
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


def _tagged(root: Path) -> list[tuple[Version, str]]:
    out = _git(root, "tag", "--list", "v*")
    found = []
    for tag in (out or "").split():
        if _VERSION.match(tag):
            found.append((parse_version(tag), tag))
    return found


def _from_tag(root: Path, tag: str) -> Schemas:
    rel = SCHEMA_DIR.relative_to(ROOT).as_posix()
    names = (_git(root, "ls-tree", "--name-only", f"{tag}:{rel}") or "").split()
    schemas = {}
    for name in names:
        if name.endswith(SUFFIX):
            text = _git(root, "show", f"{tag}:{rel}/{name}")
            if text is not None:
                schemas[name.removesuffix(SUFFIX)] = json.loads(text)
    return schemas


def baseline(root: Path = ROOT, releases: Path = RELEASES) -> Baseline | None:
    """The last release's schemas: the newest version among git tags and snapshots (a tag
    wins a tie: it is what was shipped)."""
    candidates: list[tuple[Version, int, str]] = [(v, 1, tag) for v, tag in _tagged(root)]
    if releases.is_dir():
        for d in releases.iterdir():
            if d.is_dir() and _VERSION.match(d.name):
                candidates.append((parse_version(d.name), 0, d.name))
    if not candidates:
        return None
    version, is_tag, name = max(candidates)
    if is_tag:
        return Baseline(version, f"git tag {name}", _from_tag(root, name))
    return Baseline(version, f"schemas/releases/{name}", read_dir(releases / name))


def breaking_changes(old: Schemas, new: Schemas) -> list[str]:
    """Every change from ``old`` to ``new`` that breaks a producer (inbound) or a consumer
    (outbound), one line each."""
    problems = []
    for topic in sorted(old):
        if topic not in new:
            problems.append(f"{topic}: the topic's schema was removed")
            continue
        inbound = topic in INBOUND_TOPICS
        problems.extend(_Compare(topic, old[topic], new[topic], inbound).run())
    return problems


class _Compare:
    """One topic's old and new schema, compared node by node."""

    def __init__(self, topic: str, old: dict[str, Any], new: dict[str, Any], inbound: bool):
        self.topic, self.old, self.new, self.inbound = topic, old, new, inbound
        self.problems: list[str] = []

    def run(self) -> list[str]:
        self.node("", _strip_defs(self.old), _strip_defs(self.new))
        old_defs, new_defs = self.old.get("$defs", {}), self.new.get("$defs", {})
        for name, old_def in old_defs.items():
            if name in new_defs:
                self.node(f"$defs.{name}", old_def, new_defs[name])
            elif self.inbound:
                self.report(f"$defs.{name}", "the definition was removed")
        return self.problems

    def report(self, path: str, what: str) -> None:
        direction = "inbound" if self.inbound else "outbound"
        self.problems.append(f"{self.topic} ({direction}) {path or '<message>'}: {what}")

    def node(self, path: str, old: Any, new: Any) -> None:
        if old == new:
            return
        if not (isinstance(old, dict) and isinstance(new, dict)):
            self.report(path, "changed")
            return
        keys = (set(old) | set(new)) - _ANNOTATIONS
        if "properties" in old or "properties" in new:
            self.properties(path, old, new)
            keys -= {"properties", "required", "additionalProperties"}
        for key in sorted(keys):
            self.keyword(path, key, old.get(key), new.get(key))

    def properties(self, path: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        old_req, new_req = set(old.get("required", [])), set(new.get("required", []))
        old_open = old.get("additionalProperties", True) is not False
        new_open = new.get("additionalProperties", True) is not False
        if self.inbound:
            if old_open and not new_open:
                self.report(path, "unknown fields were allowed and are now refused")
            for name in sorted(set(old_props) - set(new_props)):
                if not new_open:
                    self.report(f"{path}.{name}", "removed: producers that send it are refused")
            for name in sorted(new_req - old_req):
                self.report(f"{path}.{name}", "now required: producers that omit it are refused")
        else:
            for name in sorted(old_req - new_req):
                self.report(f"{path}.{name}", "no longer always written: consumers rely on it")
            if not old_open:
                for name in sorted(set(new_props) - set(old_props)):
                    self.report(f"{path}.{name}", "new field in a closed schema")
        for name in sorted(set(old_props) & set(new_props)):
            self.node(f"{path}.{name}", old_props[name], new_props[name])

    def keyword(self, path: str, key: str, old: Any, new: Any) -> None:
        if old == new:
            return
        where = f"{path}/{key}"
        # Inbound: the new schema must allow at least what the old allowed; outbound: at
        # most. ``wider`` is what the allowed direction requires of the new value.
        if key in ("enum", "type", "oneOf", "anyOf"):
            old_set, new_set = _members(old), _members(new)
            if key in ("oneOf", "anyOf") and old is not None and new is not None:
                self.alternatives(where, old, new)
                return
            lost = old_set - new_set if self.inbound else new_set - old_set
            if old is None or new is None:
                # A keyword appears (narrows) or goes (widens).
                narrows = new is not None
                if narrows == self.inbound:
                    self.report(where, "added" if narrows else "removed")
            elif lost:
                self.report(where, f"{'lost' if self.inbound else 'gained'} {sorted(lost)}")
        elif key == "const":
            self.report(where, f"{old!r} became {new!r}")
        elif key in _UPPER or key in _LOWER:
            self.bound(where, key in _UPPER, old, new)
        elif key == "items":
            self.node(where, old or {}, new or {})
        elif key == "discriminator":
            old_tags = set((old or {}).get("mapping", {}))
            new_tags = set((new or {}).get("mapping", {}))
            lost = old_tags - new_tags if self.inbound else new_tags - old_tags
            if lost:
                self.report(where, f"{'lost' if self.inbound else 'gained'} {sorted(lost)}")
        elif old is None or new is None:
            # Any other constraint (a pattern, a format, a rule): one that appears narrows
            # what is allowed, one that goes widens it.
            narrows = new is not None
            if narrows == self.inbound:
                self.report(where, f"{'added' if narrows else 'removed'}: {_short(old or new)}")
        else:
            self.report(where, f"changed from {_short(old)} to {_short(new)}")

    def alternatives(self, where: str, old: list[Any], new: list[Any]) -> None:
        old_set, new_set = _members(old), _members(new)
        if len(old) == len(new) and old_set != new_set:
            # The same alternatives in place, one changed inside: compare them pairwise.
            for i, (a, b) in enumerate(zip(old, new, strict=True)):
                self.node(f"{where}[{i}]", a, b)
            return
        lost = old_set - new_set if self.inbound else new_set - old_set
        if lost:
            self.report(where, f"{'lost' if self.inbound else 'gained'} {sorted(lost)}")

    def bound(self, where: str, upper: bool, old: Any, new: Any) -> None:
        if old is None:
            looser = False  # a bound appears
        elif new is None:
            looser = True  # a bound goes
        else:
            looser = new > old if upper else new < old
        if looser != self.inbound:
            self.report(where, f"{old} became {new}")


def _members(value: Any) -> set[str]:
    if value is None:
        return set()
    items = value if isinstance(value, list) else [value]
    return {json.dumps(i, sort_keys=True) for i in items}


def _strip_defs(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k not in ("$defs", "$id", "$schema")}


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def check(root: Path = ROOT, releases: Path = RELEASES, current: Path = SCHEMA_DIR) -> list[str]:
    """What stops this tree: breaking changes since the baseline without a version bump."""
    base = baseline(root, releases)
    if base is None:
        return ["no baseline: tag a release or run python -m schemas.evolution --snapshot"]
    version = project_version(root)
    if version < base.version:
        return [f"version {shown(version)} is older than the baseline {shown(base.version)}"]
    problems = breaking_changes(base.schemas, read_dir(current))
    if not problems or may_break(base.version, version):
        return []
    bump = "the major version" if base.version[0] else "the minor version (0.x)"
    return [
        *problems,
        f"breaking changes since {base.source}: bump {bump} past {shown(base.version)}, "
        "or keep the change compatible (see the README's schema evolution policy)",
    ]


def snapshot(root: Path = ROOT, releases: Path = RELEASES, current: Path = SCHEMA_DIR) -> Path:
    """Keep today's schemas as the baseline of this version."""
    target = releases / shown(project_version(root))
    if target.exists():
        msg = f"{target} exists: a released baseline is never rewritten; bump the version"
        raise FileExistsError(msg)
    target.mkdir(parents=True)
    for path in sorted(current.glob(f"*{SUFFIX}")):
        shutil.copy2(path, target / path.name)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: check the schemas against the baseline, or take a snapshot."""
    parser = argparse.ArgumentParser(prog="python -m schemas.evolution", description=__doc__)
    parser.add_argument("--snapshot", action="store_true", help="keep this version's baseline")
    args = parser.parse_args(argv)
    if args.snapshot:
        print(f"wrote {snapshot()}")
        return 0
    problems = check()
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
