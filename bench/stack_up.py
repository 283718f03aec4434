"""How long ``croupier stack up`` takes: cold (nothing cached), warm (after down), idempotent.

Runs a private stack on free ports under a temporary directory, so it never touches the
stack ``make up`` runs. Cold uses an empty Maven repository, so the Kafka jars really come
from Maven Central. Prints the numbers and writes ``bench/results/stack_up.json``.

    .venv/bin/python bench/stack_up.py
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from croupier.stack.process import free_port  # noqa: E402


def timed(env: dict[str, str], *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "croupier", *args], env=env, cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="croupier-bench-"))
    tmp.chmod(0o755)  # PostgreSQL runs as its own user and must reach its data dir
    ports = {free_port() for _ in range(8)}
    kafka, controller, pg, ch = sorted(ports)[:4]
    services = ("KAFKA_BOOTSTRAP_SERVERS", "CROUPIER_PG_DSN", "CROUPIER_CLICKHOUSE_URL")
    env = {k: v for k, v in os.environ.items() if k not in services}
    env |= {
        "CROUPIER_STACK_DIR": str(tmp / "stack"),
        "CROUPIER_CACHE_DIR": str(tmp / "cache"),
        "CROUPIER_MAVEN_REPO": str(tmp / "m2"),
        "CROUPIER_KAFKA_PORT": str(kafka),
        "CROUPIER_KAFKA_CONTROLLER_PORT": str(controller),
        "CROUPIER_PG_PORT": str(pg),
        "CROUPIER_CLICKHOUSE_PORT": str(ch),
        "CROUPIER_WORKERS": "1",
        "CROUPIER_GATEWAY_PORT": str(sorted(ports)[4]),
    }
    results: dict[str, object] = {"machine": f"{platform.node()} {os.cpu_count()} cores"}
    try:
        results["cold_up_s"] = round(timed(env, "stack", "up"), 2)
        results["idempotent_up_s"] = round(timed(env, "stack", "up"), 2)
        results["down_s"] = round(timed(env, "stack", "down"), 2)
        results["warm_up_s"] = round(timed(env, "stack", "up"), 2)
    finally:
        subprocess.run([sys.executable, "-m", "croupier", "stack", "down"], env=env, cwd=ROOT,
                       check=False, stdout=subprocess.DEVNULL)  # fmt: skip
        shutil.rmtree(tmp, ignore_errors=True)
    out = ROOT / "bench" / "results" / "stack_up.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    for key, value in results.items():
        print(f"{key:>16}: {value}")


if __name__ == "__main__":
    main()
