"""Builds the client programs of ``tests/clients`` into ``.cache/clients`` (gitignored).

Each build is keyed by a hash of its sources and of the tool that builds it: a second run
with nothing changed costs nothing. Downloads stay inside the project too: Go's module
cache (``GOMODCACHE``), Maven's repository (``-Dmaven.repo.local``) and npm's cache all live
under ``.cache/clients``, so a fresh clone fetches them once from the Go module proxy,
Maven Central and the npm registry.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = ROOT / ".cache" / "clients"


class BuildError(Exception):
    """A client program could not be built; the message says which and why."""


@dataclass(frozen=True)
class Program:
    """A built client: the command line that runs it, without its own arguments."""

    argv: tuple[str, ...]
    env: dict[str, str]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not on PATH: the client matrix needs Go, Java 17 with Maven, and Node"
        raise BuildError(msg)
    return path


def _run(argv: list[str], cwd: Path, env: dict[str, str], what: str) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        msg = f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        raise BuildError(msg)
    return done.stdout


def _key(sources: list[Path], *extra: str) -> str:
    h = hashlib.sha256()
    for path in sorted(sources):
        h.update(str(path.relative_to(HERE)).encode() + b"\0" + path.read_bytes() + b"\0")
    for e in extra:
        h.update(e.encode() + b"\0")
    return h.hexdigest()


def _cached(out: Path, key: str) -> bool:
    stamp = out / ".built"
    return stamp.exists() and stamp.read_text() == key


def _stamp(out: Path, key: str) -> None:
    (out / ".built").write_text(key)


def _version(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return done.stdout + done.stderr


def go() -> Program:
    """clickhouse-go v2 over HTTP (``tests/clients/go``)."""
    tool = _tool("go")
    src, out = HERE / "go", CACHE / "go"
    env = {
        **os.environ,
        "GOPATH": str(out / "path"),
        "GOMODCACHE": str(out / "mod"),
        "GOCACHE": str(out / "build"),
        "GOFLAGS": "-mod=readonly -modcacherw",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
    }
    binary = out / "chclient"
    key = _key([src / "go.mod", src / "go.sum", *src.glob("*.go")], _version([tool, "version"]))
    if not (_cached(out, key) and binary.exists()):
        out.mkdir(parents=True, exist_ok=True)
        _run([tool, "build", "-trimpath", "-o", str(binary), "."], src, env, "go build")
        _stamp(out, key)
    return Program((str(binary),), dict(os.environ))


def java() -> Program:
    """The ClickHouse JDBC driver (``tests/clients/java``): jars from Maven Central, javac."""
    mvn, javac, java_bin = _tool("mvn"), _tool("javac"), _tool("java")
    src, out = HERE / "java", CACHE / "java"
    lib, classes = out / "lib", out / "classes"
    sources = sorted((src / "src").glob("*.java"))
    key = _key([src / "pom.xml", *sources], _version([javac, "-version"]))
    if not (_cached(out, key) and lib.exists() and classes.exists()):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        _run(
            [mvn, "-q", "-B", f"-Dmaven.repo.local={CACHE / 'm2'}",
             "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={lib}"],
            src, dict(os.environ), "mvn dependency:copy-dependencies",
        )  # fmt: skip
        _run(
            [javac, "--release", "17", "-d", str(classes), "-cp", f"{lib}/*",
             *map(str, sources)],
            src, dict(os.environ), "javac",
        )  # fmt: skip
        _stamp(out, key)
    # UTC, so a java.sql.Timestamp reads as ClickHouse's UTC columns mean it.
    argv = (java_bin, "-Duser.timezone=UTC", "-cp", f"{lib}/*{os.pathsep}{classes}", "Main")
    return Program(argv, dict(os.environ))


def node() -> Program:
    """@clickhouse/client (``tests/clients/node``), installed with ``npm ci`` from the lock."""
    return _npm("node", "client.mjs")


def ajv() -> Program:
    """ajv, a JSON Schema validator from npm (``tests/clients/ajv``), for the examples."""
    return _npm("ajv", "validate.mjs")


def _npm(name: str, script: str) -> Program:
    """The Node program ``tests/clients/<name>/<script>``, its packages installed with
    ``npm ci`` from the lock into ``.cache/clients/<name>``."""
    npm, node_bin = _tool("npm"), _tool("node")
    src, out = HERE / name, CACHE / name
    files = [src / "package.json", src / "package-lock.json", src / script]
    key = _key(files, _version([node_bin, "--version"]))
    if not (_cached(out, key) and (out / "node_modules").exists()):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for f in files:
            shutil.copy2(f, out / f.name)
        _run(
            [npm, "ci", "--no-audit", "--no-fund", "--cache", str(CACHE / "npm")],
            out, dict(os.environ), "npm ci",
        )  # fmt: skip
        _stamp(out, key)
    return Program((node_bin, str(out / script)), dict(os.environ))
