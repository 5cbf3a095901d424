"""Prometheus config and rules: promtool validates them and runs their unit tests
(deploy/prometheus/tests/*.yml); every alerting and recording rule must be covered by a test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "rules.yml"
UNIT_TESTS = sorted((PROM / "tests").glob("*.yml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        message = "promtool not found: install the Debian package `prometheus` (scripts/setup.sh)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=PROM, check=False, timeout=120)


def _rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_config_is_valid(promtool: str) -> None:
    done = _run(promtool, "check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_are_valid(promtool: str) -> None:
    done = _run(promtool, "check", "rules", "rules.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_rule_unit_tests_pass(promtool: str) -> None:
    assert UNIT_TESTS, "no promtool unit tests in deploy/prometheus/tests"
    done = _run(promtool, "test", "rules", *(str(p.relative_to(PROM)) for p in UNIT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_wrong_expectation_makes_promtool_fail(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: the same test with a wrong expected value is reported."""
    source = (PROM / "tests" / "recording_test.yml").read_text(encoding="utf-8")
    broken = source.replace("../rules.yml", str(RULES)).replace("value: 0.04975", "value: 0.05", 1)
    assert broken != source
    path = tmp_path / "broken_test.yml"
    path.write_text(broken, encoding="utf-8")
    done = _run(promtool, "test", "rules", str(path))
    assert done.returncode != 0
    assert "4.975E-02" in done.stdout + done.stderr


def test_every_rule_is_unit_tested() -> None:
    """Each alert is asserted by name and each recording rule is queried in some unit test."""
    tested_alerts: set[str] = set()
    tested_exprs: list[str] = []
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            tested_alerts.update(t["alertname"] for t in case.get("alert_rule_test", []))
            tested_exprs.extend(t["expr"] for t in case.get("promql_expr_test", []))
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    records = {rule["record"] for rule in _rules() if "record" in rule}
    assert alerts - tested_alerts == set()
    assert {r for r in records if not any(r in expr for expr in tested_exprs)} == set()


def test_every_alert_is_written_for_people() -> None:
    """Alerts carry a severity, a summary, and a description and runbook hint worth reading."""
    for rule in _rules():
        if "alert" not in rule:
            continue
        name, annotations = rule["alert"], rule["annotations"]
        assert rule["labels"].get("severity") in {"warning", "critical"}, name
        assert annotations.get("summary", "").strip(), name
        assert len(annotations.get("description", "")) > 60, name
        assert len(annotations.get("runbook", "")) > 60, name


def test_each_stopped_pipeline_rule_has_its_own_reason() -> None:
    reasons = [
        rule["labels"]["reason"]
        for rule in _rules()
        if rule.get("alert") == "TrackwatchPipelineStopped"
    ]
    assert sorted(reasons) == ["no_worker", "nothing_processed", "stage_stale"]
