"""Who may run what on the embedded ClickHouse front: users, readonly levels, denied SQL.

chdb is clickhouse-local: it has no users, grants or settings profiles, and no
``user_files_path`` jail, so ``file()`` reads any file the process can. The front therefore
decides before the engine runs anything, with the engine's own parser: ``formatQuery``
parses the text as one statement (refusing ``a; b`` as ClickHouse does, code 62) and
``EXPLAIN AST`` of its canonical form gives the tree this module walks. Comments, case,
backquotes and nesting are gone by then; nothing here reads SQL text with a pattern.

The rules, the same for every user unless said:

* readonly 1 (ClickHouse's meaning): statements that only read (SELECT, SHOW, DESCRIBE,
  EXISTS, EXPLAIN, USE); no setting changed, in the URL or in a SETTINGS clause.
* readonly 2 (what a GET implies): the same statements, and, as ClickHouse allows,
  ``CREATE TEMPORARY TABLE`` (engine Memory), ``INSERT`` into one and ``DROP TEMPORARY
  TABLE``; settings (URL or a session's ``SET``) may change within the user's limits
  (``max_execution_time`` and the other caps never rise: a higher value, or 0, runs at
  the cap).
* everyone: no table function outside ``SAFE_TABLE_FUNCTIONS``, no function that reaches
  files, hosts or programs (``DENIED_FUNCTIONS``, anywhere in the tree), no table engine
  outside the local ones, no dictionary source, no ``INTO OUTFILE``, no ``FROM INFILE``,
  no ``SYSTEM``, ``ATTACH``, ``BACKUP``/``RESTORE``, no SETTINGS clause on an INSERT, no
  table SETTINGS (they may name a disk at any path or URL).

``SET`` and ``KILL QUERY`` never reach ``check_statement``: the server handles them itself
(``sinks.clickhouse.sessions``), SET's values through ``effective_settings``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

# Table functions that only compute or read this engine's own tables.
SAFE_TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generaterandom", "values", "view",
     "null", "generate_series", "generateseries", "format", "input", "merge"}
)  # fmt: skip

# Functions (table or scalar) that reach files, other hosts or programs. Refused wherever
# they appear: FROM, INSERT INTO FUNCTION, a scalar ``file('/etc/passwd')``, a lambda.
DENIED_FUNCTIONS = frozenset(
    {"file", "filecluster", "url", "urlcluster", "s3", "s3cluster", "gcs", "oss", "cosn",
     "azureblobstorage", "azureblobstoragecluster", "hdfs", "hdfscluster", "postgresql",
     "mysql", "mongodb", "redis", "sqlite", "jdbc", "odbc", "remote", "remotesecure",
     "cluster", "clusterallreplicas", "executable", "python", "iceberg", "icebergs3",
     "icebergazure", "iceberghdfs", "iceberglocal", "deltalake", "deltalakeazure", "hudi",
     "arrowflight", "ytsaurus", "paimon", "dictionary", "catboostevaluate"}
)  # fmt: skip

# Table engines that keep data in this engine's own directory.
_LOCAL_ENGINES = frozenset(
    {"memory", "null", "log", "tinylog", "stripelog", "set", "join", "atomic", "ordinary"}
)

# The root nodes of statements that only read.
_READ_ROOTS = (
    "SelectWithUnionQuery", "SelectIntersectExceptQuery", "ShowTables", "DescribeQuery",
    "ExistsTableQuery", "ExistsDatabaseQuery", "ExistsDictionaryQuery", "ExistsViewQuery",
    "ShowCreate", "Explain", "ShowProcesslistQuery", "UseQuery",
)  # fmt: skip
_DENIED_ROOTS = ("SYSTEM", "SystemQuery", "AttachQuery", "BackupQuery", "RestoreQuery")


class Refused(Exception):
    """A request the front refuses: ClickHouse's code and name, and the words after them."""

    def __init__(self, code: int, name: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.name = name
        self.detail = detail


def _access_denied(user: str, what: str) -> Refused:
    return Refused(497, "ACCESS_DENIED", f"{user}: Not enough privileges: {what}")


def _readonly(user: str) -> Refused:
    return Refused(164, "READONLY", f"{user}: Cannot execute query in readonly mode")


@dataclass(frozen=True)
class Node:
    """One line of ``EXPLAIN AST``: its depth, its kind, and the name after the kind."""

    depth: int
    kind: str
    name: str


def parse_ast(text: str) -> list[Node]:
    """The nodes of an ``EXPLAIN AST`` answer, in order (a node's children follow it)."""
    nodes: list[Node] = []
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped:
            continue
        kind, _, rest = stripped.partition(" ")
        # "Function file (alias f) (children 1)": the name never holds " (" unless quoted
        # weirdly, and then it names no function this module allows.
        name = rest.split(" (", 1)[0].strip()
        nodes.append(Node(len(line) - len(stripped), kind, name))
    return nodes


def _children(nodes: list[Node], index: int) -> Iterator[Node]:
    depth = nodes[index].depth
    for node in nodes[index + 1 :]:
        if node.depth <= depth:
            return
        if node.depth == depth + 1:
            yield node


def _within(nodes: list[Node], index: int, kind: str) -> bool:
    """True when node ``index`` sits directly under a node of ``kind``."""
    depth = nodes[index].depth
    for node in reversed(nodes[:index]):
        if node.depth < depth:
            return node.kind == kind
    return False


def check_statement(
    ast: str,
    *,
    user: str,
    readonly: int,
    canonical: str = "",
    is_temporary: Callable[[str], bool] | None = None,
) -> None:
    """Raise ``Refused`` unless ``user`` at ``readonly`` may run the statement of ``ast``.

    ``canonical`` is the statement as ``formatQuery`` gives it back, and ``is_temporary``
    says whether a name is a temporary table of the connection: both let readonly 2 work
    with temporary tables.
    """
    nodes = parse_ast(ast)
    if not nodes:
        raise Refused(62, "SYNTAX_ERROR", "Empty query")
    root = nodes[0]
    if root.kind.startswith(_DENIED_ROOTS) or root.kind == "Set":
        raise _access_denied(user, f"{root.kind} statements are not allowed on this server")
    if (
        readonly
        and not root.kind.startswith(_READ_ROOTS)
        and (readonly == 1 or not _temporary_work(nodes, canonical, is_temporary))
    ):
        raise _readonly(user)
    for i, node in enumerate(nodes):
        if node.kind == "Function":
            name = node.name.strip('`"').lower()
            if name in DENIED_FUNCTIONS:
                raise _access_denied(user, f"function {node.name} reaches outside the server")
            if _within(nodes, i, "TableExpression") and name not in SAFE_TABLE_FUNCTIONS:
                raise _access_denied(user, f"table function {node.name} is not allowed")
        elif node.kind == "Storage":
            # ENGINE is the first function of a storage definition; PARTITION BY, ORDER BY
            # and TTL expressions follow it. With no ENGINE there is none to check: the
            # default engines are forced (``FORCED``).
            engine = next((c for c in _children(nodes, i) if c.kind == "Function"), None)
            if engine is not None:
                name = engine.name.strip('`"').lower()
                if not (name.endswith("mergetree") or name in _LOCAL_ENGINES):
                    raise _access_denied(user, f"engine {engine.name} is not allowed")
        elif node.kind.startswith(("FunctionWithKeyValueArg", "Dictionary")):
            raise _access_denied(user, "dictionaries are not allowed on this server")
        elif node.kind in ("SelectWithUnionQuery", "InsertQuery"):
            for child in _children(nodes, i):
                if child.kind == "Literal":  # the file of INTO OUTFILE / FROM INFILE
                    if node.kind == "InsertQuery":
                        raise Refused(
                            7, "UNKNOWN_TYPE_OF_QUERY",
                            "Query has infile and was send directly to server",
                        )  # fmt: skip
                    raise Refused(564, "INTO_OUTFILE_NOT_ALLOWED", "INTO OUTFILE is not allowed")
                if child.kind == "Set" and (readonly or node.kind == "InsertQuery"):
                    raise Refused(
                        164, "READONLY",
                        f"{user}: Cannot modify settings in a SETTINGS clause here; "
                        "pass them as URL parameters",
                    )  # fmt: skip
        elif node.kind == "Set" and readonly:
            raise Refused(164, "READONLY", f"{user}: Cannot modify settings in readonly mode")
        elif node.kind == "Set" and (
            _within(nodes, i, "Storage") or _within(nodes, i, "AlterCommand")
        ):
            # A table's SETTINGS may name a disk anywhere (``disk = disk(type = web,
            # endpoint = ...)``); a statement's own SETTINGS are the writer's to set.
            raise _access_denied(user, "table SETTINGS are not allowed on this server")


def statement_target(nodes: list[Node]) -> str | None:
    """The one unqualified table an INSERT, CREATE or DROP names (``db.t``, a function: None)."""
    if not nodes or nodes[0].kind not in ("InsertQuery", "CreateQuery", "DropQuery"):
        return None
    children = list(_children(nodes, 0))
    names = [n for n in children if n.kind == "Identifier"]
    if nodes[0].kind == "InsertQuery":
        if len(names) != 1 or any(n.kind == "Function" for n in children):
            return None
    elif not names or nodes[0].name != names[0].name:
        return None
    return names[0].name


def _temporary_work(
    nodes: list[Node], canonical: str, is_temporary: Callable[[str], bool] | None
) -> bool:
    """True for what readonly 2 may do to temporary tables (ClickHouse lets it create them).

    The AST of ``CREATE TEMPORARY TABLE`` is that of ``CREATE TABLE``; the keyword survives
    in the canonical text ``formatQuery`` gives back, which always starts with it.
    """
    kind = nodes[0].kind
    target = statement_target(nodes)
    if target is None:
        return False
    if kind == "CreateQuery" and canonical.startswith("CREATE TEMPORARY TABLE "):
        storage = next((i for i, n in enumerate(nodes) if n.kind == "Storage"), None)
        if storage is None:
            return True  # default_temporary_table_engine is forced to Memory
        engine = next((c for c in _children(nodes, storage) if c.kind == "Function"), None)
        return engine is None or engine.name.strip('`"').lower() == "memory"
    if kind == "DropQuery":
        return canonical.startswith("DROP TEMPORARY TABLE ")
    return kind == "InsertQuery" and is_temporary is not None and is_temporary(target)


# -- users ------------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    """A user of the front: a SHA-256 of the password, as ClickHouse's ``password_sha256_hex``."""

    name: str
    password_sha256_hex: str
    readonly: int = 0  # 0, 1 or 2, ClickHouse's meaning

    def password_ok(self, password: str) -> bool:
        digest = hashlib.sha256(password.encode()).hexdigest()
        return hmac.compare_digest(digest, self.password_sha256_hex.lower())


def load_users(path: Path) -> dict[str, User]:
    """``{"users": {"name": {"password_sha256_hex": "...", "readonly": 0}}}`` from ``path``."""
    data = json.loads(path.read_text())
    users: dict[str, User] = {}
    for name, spec in data["users"].items():
        readonly = int(spec.get("readonly", 0))
        if readonly not in (0, 1, 2):
            msg = f"user {name}: readonly must be 0, 1 or 2, not {readonly}"
            raise ValueError(msg)
        users[name] = User(name, str(spec["password_sha256_hex"]), readonly)
    return users


def users_document(passwords: Mapping[str, tuple[str, int]]) -> str:
    """The users file for ``{name: (password, readonly)}``, with hashes, never passwords."""
    users = {
        name: {"password_sha256_hex": hashlib.sha256(pw.encode()).hexdigest(), "readonly": ro}
        for name, (pw, ro) in passwords.items()
    }
    return json.dumps({"users": users}, indent=2) + "\n"


def strictest(*levels: int) -> int:
    """The strictest of readonly levels: 1 (no settings) over 2 (settings) over 0."""
    if 1 in levels:
        return 1
    return 2 if 2 in levels else 0


# -- settings ---------------------------------------------------------------------------

# Settings no request may change: they decide how the statement is parsed, which engine a
# table without ENGINE gets, or let an INSERT's VALUES run expressions (``file(...)``).
FORCED = {
    "dialect": "clickhouse",
    "default_table_engine": "MergeTree",
    "default_temporary_table_engine": "Memory",
    "input_format_values_interpret_expressions": "0",
    "input_format_values_deduce_templates_of_expressions": "0",
}


@dataclass(frozen=True)
class Limits:
    """What a request may use. ``readonly_caps`` bind readonly users; writers get defaults."""

    max_body_bytes: int = 64 << 20
    max_decompressed_bytes: int = 256 << 20
    max_result_bytes: int = 256 << 20
    max_connections: int = 32
    readonly_max_execution_time: int = 30
    readonly_max_memory_usage: int = 2 << 30
    writer_max_execution_time: int = 600
    max_sessions: int = 64  # open session_ids at once
    session_temporary_bytes: int = 256 << 20  # data in one session's temporary tables
    max_concurrent_queries: int = 1  # statements the engine runs at once; the rest wait

    def caps(self) -> dict[str, int]:
        """The settings a readonly user may lower but never raise (0 means no limit)."""
        return {
            "max_execution_time": self.readonly_max_execution_time,
            "max_memory_usage": self.readonly_max_memory_usage,
            "max_result_bytes": self.max_result_bytes,
        }


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def effective_settings(
    requested: Mapping[str, str],
    *,
    user: str,
    readonly: int,
    limits: Limits,
    defaults: Mapping[str, str],
) -> dict[str, str]:
    """The settings a request runs with, or ``Refused`` for one it may not change.

    readonly 1 refuses any setting whose value differs from the server's (ClickHouse lets
    an unchanged value through); readonly 2 takes them within the caps; the forced settings
    and the caps are added last.
    """
    for name, value in requested.items():
        if name in FORCED and value.strip().lower() != FORCED[name].lower():
            raise Refused(452, "SETTING_CONSTRAINT_VIOLATION",
                          f"Setting {name} should not be changed")  # fmt: skip
    caps = limits.caps()
    settings = dict(requested)
    if readonly and requested.get("readonly", str(readonly)) != str(readonly):
        detail = f"{user}: Cannot modify 'readonly' setting in readonly mode"
        raise Refused(164, "READONLY", detail)
    if readonly == 1:
        for name, value in requested.items():
            if (
                name not in FORCED
                and name != "readonly"
                and value != defaults.get(name, value + "\0")
            ):
                detail = f"{user}: Cannot modify '{name}' setting in readonly mode"
                raise Refused(164, "READONLY", detail)
    if readonly:
        # The caps are ceilings: a value above one, or 0 (no limit), runs at the cap. Tools
        # send their own timeouts (clickhouse-go, so Grafana, sends max_execution_time =
        # its query timeout, 60 s by default) and must still connect; what is not a
        # positive number is refused.
        for name, cap in caps.items():
            asked = _number(settings.get(name, str(cap)))
            if asked is None or asked < 0 or asked != asked:  # NaN too
                raise Refused(452, "SETTING_CONSTRAINT_VIOLATION",
                              f"Setting {name} should be a number from 1 to {cap}")  # fmt: skip
            if asked == 0 or asked > cap or name not in settings:
                settings[name] = str(cap)
    else:
        settings.setdefault("max_execution_time", str(limits.writer_max_execution_time))
        settings.setdefault("max_result_bytes", str(limits.max_result_bytes))
    settings.setdefault("timeout_overflow_mode", "throw")
    settings.setdefault("result_overflow_mode", "throw")
    settings.update(FORCED)
    return settings
