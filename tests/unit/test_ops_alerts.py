"""The alert rules and the Grafana dashboard, checked by promtool and against each other.

promtool comes from Debian's prometheus package (``make promtool``, a step of ``make
test``, unpacks it under .stack/tools); a missing promtool fails these tests.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
RULES = OPS / "prometheus" / "alerts.yml"
RULE_TESTS = OPS / "prometheus" / "alerts_test.yml"
WANTED = {"CroupierFeedDown", "CroupierLagGrowing", "CroupierDeadLettersRising",
          "CroupierCheckpointTooOld", "CroupierAuditRelayStuck", "CroupierNotReady"}  # fmt: skip


def promtool() -> str:
    found = shutil.which("promtool")
    local = ROOT / ".stack" / "tools" / "prometheus" / "usr" / "bin" / "promtool"
    if found is None and local.exists():
        found = str(local)
    assert found, "promtool is missing: run `make promtool` (make test does)"
    return found


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


def alerts(path: Path = RULES) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_rules_and_config_pass_promtool_check() -> None:
    checked = run("check", "rules", RULES.name, cwd=RULES.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in checked.stdout
    # The compose Prometheus's config, its rule file path made local.
    config = (OPS / "prometheus" / "prometheus.yml").read_text()
    local = RULES.parent / ".prometheus-check.yml"
    local.write_text(config.replace("/etc/prometheus/alerts.yml", RULES.name))
    try:
        checked = run("check", "config", local.name, cwd=RULES.parent)
    finally:
        local.unlink()
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_is_there_and_unit_tested() -> None:
    names = {rule["alert"] for rule in alerts()}
    assert names >= WANTED
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    }
    assert tested == names
    passed = run("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "SUCCESS" in passed.stdout


@pytest.mark.parametrize(
    ("alert", "broken"),
    [
        ("CroupierFeedDown", "croupier_feed_up == 1"),  # fires on healthy feeds
        ("CroupierCheckpointTooOld", "time() - croupier_audit_last_checkpoint_timestamp_seconds"
                                     " > 90000"),  # never fires
        ("CroupierAuditRelayStuck", "max(croupier_audit_relay_backlog_records) > 0"),  # no rate
    ],
)  # fmt: skip
def test_the_rule_tests_catch_a_broken_rule(alert: str, broken: str, tmp_path: Path) -> None:
    """The rule tests are not vacuous: the same tests against a wrong rule fail."""
    data = yaml.safe_load(RULES.read_text())
    for rule in data["groups"][0]["rules"]:
        if rule["alert"] == alert:
            rule["expr"] = broken
    (tmp_path / RULES.name).write_text(yaml.safe_dump(data))
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    failed = run("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert failed.returncode != 0
    assert f"alertname: {alert}" in failed.stdout + failed.stderr


def test_the_dashboard_is_what_its_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location(
        "grafana_generate", OPS / "grafana" / "generate.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (OPS / "grafana" / "croupier.json").read_text()
    assert committed == module.render()
    board = json.loads(committed)
    assert board["uid"] == "croupier" and len(board["panels"]) >= 10
    datasource = yaml.safe_load(
        (OPS / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"]


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses each panel's PromQL (as a recording rule of its own)."""
    board = json.loads((OPS / "grafana" / "croupier.json").read_text())
    rules = [
        {"record": f"croupier:panel{panel['id']}:{target['refId']}", "expr": target["expr"]}
        for panel in board["panels"]
        for target in panel["targets"]
    ]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    checked = run("check", "rules", path.name, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout


def test_every_alert_is_explained_in_the_readme_and_the_runbook() -> None:
    readme = (ROOT / "README.md").read_text()
    runbook = (ROOT / "docs" / "operators.md").read_text()
    for name in (rule["alert"] for rule in alerts()):
        assert f"| `{name}` |" in readme, name
        assert f"### {name}" in runbook, name
