"""``croupier simulate`` against a real stack with one worker: a short match day."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

import pytest

from config.kafka import consume_until
from config.settings import Settings
from croupier.cli import main
from croupier.sim.plan import DEAD, Options, make_plan
from tests.conftest import StartWorker

OPTIONS = Options(seed=5, players=8, matches=2, rate=6, duration=12, spike_factor=5)


def test_a_short_match_day(
    settings: Settings,
    worker_factory: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CROUPIER_STACK_DIR", str(tmp_path))
    worker_factory(settings).wait_ready()
    run_id = f"it{uuid.uuid4().hex[:6]}"
    out = tmp_path / "summary.json"
    o = OPTIONS
    status = main(["simulate", "--seed", str(o.seed), "--players", str(o.players),
                   "--matches", str(o.matches), "--rate", str(o.rate), "--duration",
                   str(o.duration), "--spike-factor", str(o.spike_factor), "--run-id", run_id,
                   "--progress", "off", "--timeout", "45", "--out", str(out),
                   "--json"])  # fmt: skip
    manifest = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == manifest  # --json: the one document on stdout
    assert status == 0, manifest["summary"]
    assert json.loads((tmp_path / "sim" / f"{run_id}.json").read_text()) == manifest

    # What the topics hold, read independently of the simulation's own reader.
    plan = make_plan(o, run_id)
    bet_ids = {s.ref for s in plan.steps if s.topic == "bets" and s.expect == "bet-decisions"}
    malformed = [s for s in plan.steps if s.expect == DEAD]
    topics = [settings.topic(t) for t in ("bet-decisions", "dead-letters", "settlements")]
    records = consume_until(
        settings, topics, timeout=30,
        want=lambda rs: bet_ids <= {json.loads(r.value).get("bet_id") for r in rs
                                    if r.topic == topics[0]},
    )  # fmt: skip
    ours = [r for r in records if r.key.startswith(f"{run_id}-")]
    decisions: dict[str, list[dict[str, object]]] = {}
    for r in ours:
        if r.topic == topics[0]:
            doc = json.loads(r.value)
            decisions.setdefault(str(doc["bet_id"]), []).append(doc)
    assert set(decisions) == bet_ids
    # Decided once: every copy of a bet's decision is the same, and a producer's retry is
    # answered with the first decision again.
    assert all(all(x == d[0] for x in d) for d in decisions.values()), "a bet decided twice"
    retried = {str(s.repeat_of) for s in plan.steps if s.repeat_of}
    assert retried and all(len(decisions[b]) == 2 for b in retried)
    assert all(len(d) == 1 for b, d in decisions.items() if b not in retried)
    reasons = Counter(str(d[0]["reason"] or d[0]["status"]) for d in decisions.values())
    for reason in ("accepted", "self_excluded", "market_suspended", "odds_changed",
                   "market_unknown"):  # fmt: skip
        assert reasons[reason] >= 1, (reason, reasons)
    letters = [json.loads(r.value) for r in ours if r.topic == topics[1]]
    assert len(letters) == len(malformed)
    assert {x["reason"] for x in letters} == {"malformed_json", "invalid"}
    settled = [json.loads(r.value) for r in ours if r.topic == topics[2]]
    rolled = {str(d["bet_id"]) for s in plan.steps if s.topic == "bets" and s.ref in decisions
              and [x["event_id"] for x in (s.doc or {})["selections"]] == [plan.rolled_back]
              for d in decisions[s.ref] if d["status"] == "accepted"}  # fmt: skip
    kinds = {(x["bet_id"], x["kind"]) for x in settled}
    # Singles: an accumulator is settled when its last leg is, maybe after the correction.
    assert rolled, "no single accepted on the rolled-back match"
    assert all((b, "rolled_back") in kinds and (b, "resettled") in kinds for b in rolled)
    summary = manifest["summary"]
    assert summary["missing"] == [] and summary["contradictory"] == []
    assert summary["deliberate"]["duplicates"] == len(retried)
    assert summary["bets"]["accepted"] == reasons["accepted"]
