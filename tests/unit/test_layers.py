"""The import graph: arrows point down, and no module imports itself round a circle.

The layers, top to bottom: the front door (``croupier``: the CLI, the stack, the demo),
``topologies`` (the app that wires the flows), ``streams`` (the flows), ``sinks``
(PostgreSQL, ClickHouse, Kafka, report files), ``config`` (the settings, each Kafka
client's configuration, the log format, the shipped policies and catalogue), ``rules``
(pure decisions), and at the bottom ``schemas`` (the wire) beside ``rng`` (the certified
generator). A module may import
its own layer and the layers below it, never one above; an import inside a function counts
the same (it only moves the circle to run time). Imports under ``TYPE_CHECKING`` do not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("croupier", "topologies", "streams", "sinks", "config", "rules", "schemas")
BESIDE = {"rng": "schemas"}  # a package on the same level as another
PACKAGES = (*LAYERS, *BESIDE)


def rank(module: str) -> int:
    top = module.split(".")[0]
    return LAYERS.index(BESIDE.get(top, top))


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(tree: ast.AST) -> Iterator[ast.AST]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            yield from (n for child in node.orelse for n in [child, *_nodes(child)])
            continue
        yield node
        yield from _nodes(node)


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules ``name`` imports (a package's submodule when it names one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _nodes(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]  # fmt: skip
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_arrow_points_down() -> None:
    upward = sorted(f"{a} imports {b}" for a, targets in graph().items() for b in targets
                    if rank(b) < rank(a))  # fmt: skip
    assert upward == []


def test_no_module_imports_itself_round_a_circle() -> None:
    assert circles(graph()) == []


def test_the_checks_see_what_they_must() -> None:
    """The graph is read, not assumed: known arrows are in it, and a circle is found."""
    edges = graph()
    assert "config.settings" in edges["streams.flow"]
    assert "schemas.records" in edges["sinks.postgres.audit"]
    assert "sinks.chain" in edges["sinks.audit_bundle"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert rank("rng.generator") == rank("schemas.base") > rank("rules.ledger")
