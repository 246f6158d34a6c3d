"""The alert rules pass ``promtool check rules`` and their unit tests under a real ``promtool``.

``promtool`` comes from Debian's ``prometheus`` package (``.ci/install-servers.sh``); without it
these tests skip on a developer's machine and fail on CI.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from configurable_agents.observe.metrics import alerts
from configurable_agents.observe.metrics.alerts import AlertThresholds, rules_text, write_rules
from servers import skip_unless_ci

UNIT_TESTS = Path(__file__).resolve().parent / "prometheus" / "rules_test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        skip_unless_ci("promtool not found (Debian package 'prometheus': .ci/install-servers.sh)")
    return path


def run_promtool(promtool: str, *args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=300, cwd=cwd, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def load_yaml(text: str) -> dict:
    return YAML(typ="safe").load(text)


def test_packaged_rules_pass_promtool_check(promtool, tmp_path):
    path = write_rules(tmp_path / "rules.yml")
    output = run_promtool(promtool, "check", "rules", str(path))
    assert "SUCCESS: 17 rules found" in output


def test_rule_unit_tests_pass(promtool):
    output = run_promtool(promtool, "test", "rules", str(UNIT_TESTS), cwd=UNIT_TESTS.parent)
    assert "SUCCESS" in output


def test_unit_tests_show_every_alert_firing_and_staying_quiet():
    suite = load_yaml(UNIT_TESTS.read_text(encoding="utf-8"))
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in suite["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fired == quiet == set(alerts.ALERTS)


def test_rules_have_the_three_alerts_with_severity_and_annotations():
    doc = load_yaml(rules_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    by_alert = {rule["alert"]: rule for rule in rules if "alert" in rule}
    assert set(by_alert) == set(alerts.ALERTS)
    for rule in by_alert.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule["for"]
    records = {rule["record"] for rule in rules if "record" in rule}
    assert {
        "workflow:duration_seconds:p95_5m",
        "workflow:error_ratio:rate5m",
        "llm:cost_usd:rate1h",
    } <= records


def test_default_thresholds_are_the_values_in_the_file():
    doc = load_yaml(rules_text())
    exprs = {
        rule["record"]: rule["expr"]
        for g in doc["groups"]
        for rule in g["rules"]
        if "record" in rule
    }
    defaults = AlertThresholds()
    for name, record in alerts.THRESHOLD_RECORDS.items():
        assert exprs[record] == f"vector({alerts._number(getattr(defaults, name))})"
    assert rules_text(AlertThresholds()) == rules_text()


def test_thresholds_are_validated():
    with pytest.raises(ValueError, match="error_ratio"):
        AlertThresholds(error_ratio=5)
    with pytest.raises(ValueError, match="latency_p95_seconds"):
        AlertThresholds(latency_p95_seconds=-1)


CUSTOM_TEST = """\
rule_files: [rules.yml]
evaluation_interval: 1m
group_eval_order:
  - configurable-agents-thresholds
  - configurable-agents-recording
  - configurable-agents-alerts
tests:
  - interval: 1m
    input_series:
      # Every run takes between 30 and 60 s: p95 58.5 s.
      - series: 'workflow_duration_seconds_bucket{{workflow="w", le="30"}}'
        values: '0x30'
      - series: 'workflow_duration_seconds_bucket{{workflow="w", le="60"}}'
        values: '0+10x30'
      - series: 'workflow_duration_seconds_bucket{{workflow="w", le="+Inf"}}'
        values: '0+10x30'
    alert_rule_test:
      - alertname: HighLatency
        eval_time: 20m
        exp_alerts: {expected}
"""


@pytest.mark.parametrize(
    ("threshold", "fires", "shown"), [(90, False, None), (45, True, "45s"), (30, True, "30s")]
)
def test_custom_thresholds_change_when_alerts_fire(promtool, tmp_path, threshold, fires, shown):
    rules = write_rules(tmp_path / "rules.yml", AlertThresholds(latency_p95_seconds=threshold))
    run_promtool(promtool, "check", "rules", str(rules))
    description = (
        "The 95th percentile of the run wall time of workflow w over the last 5 minutes is "
        f"58.5s, above the threshold of {shown}, and has been for 10 minutes. The per-node "
        "latency dashboard shows which node is slow."
    )
    expected = (
        "\n"
        + textwrap.indent(
            "- exp_labels: {severity: warning, workflow: w}\n"
            "  exp_annotations:\n"
            '    summary: "Workflow w is slow: p95 run time 58.5s"\n'
            f'    description: "{description}"\n',
            " " * 10,
        )
        if fires
        else "[]"
    )
    (tmp_path / "test.yml").write_text(CUSTOM_TEST.format(expected=expected), encoding="utf-8")
    run_promtool(promtool, "test", "rules", "test.yml", cwd=tmp_path)


def test_custom_thresholds_keep_the_rest_of_the_file():
    custom = rules_text(AlertThresholds(error_ratio=0.1, cost_usd_per_hour=20))
    changed = [
        (a, b)
        for a, b in zip(rules_text().splitlines(), custom.splitlines(), strict=True)
        if a != b
    ]
    assert [b.strip() for _, b in changed] == ["expr: vector(0.1)", "expr: vector(20)"]
