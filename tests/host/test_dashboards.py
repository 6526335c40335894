"""etc/prometheus/krsid-rules.yml and etc/grafana/krsid.json: valid PromQL, real metric names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.collector import full_collector
from tests.support.records import PROGRAMS

ROOT = PROGRAMS.parent
RULES = ROOT / "etc" / "prometheus" / "krsid-rules.yml"
DASHBOARD = ROOT / "etc" / "grafana" / "krsid.json"
needs_promtool = pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed (package prometheus)")


def exported_names() -> set[str]:
    """Every metric name krsid can export: the collector with policy rules, reloads and
    bpf_stats present (families that only exist with them included)."""
    names = set()
    for family in full_collector().collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def dashboard_exprs() -> list[str]:
    def walk(node: Any) -> list[str]:
        if isinstance(node, dict):
            out = [node["expr"]] if isinstance(node.get("expr"), str) else []
            return out + [e for v in node.values() for e in walk(v)]
        if isinstance(node, list):
            return [e for v in node for e in walk(v)]
        return []

    return walk(json.loads(DASHBOARD.read_text()))


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables are not PromQL: substitute what Grafana would."""
    return expr.replace("$__rate_interval", "5m").replace("$instance", ".*")


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(krsid_[a-z_]+)\b", expr))


def test_every_metric_name_is_exported() -> None:
    exported = exported_names()
    assert {"krsid_events_total", "krsid_events_lost_total", "krsid_program_attached"} <= exported
    used = set().union(*(metric_names(e) for e in dashboard_exprs() + rule_exprs()))
    unknown = used - exported
    assert not unknown, f"dashboards/rules use metrics krsid does not export: {sorted(unknown)}"


def test_dashboard_shows_the_required_panels() -> None:
    exprs = " ".join(dashboard_exprs())
    for name in (
        "krsid_events_total",
        "krsid_events_lost_total",
        "krsid_program_attached",
        "krsid_denied_total",
        "krsid_would_deny_total",
        "krsid_hook_program_seconds_total",
    ):
        assert name in exprs, name


@needs_promtool
def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    p = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert {"KrsidDown", "KrsidProgramDetached", "KrsidEventsLost", "KrsidReloadFailed"} <= alerts


@needs_promtool
def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    # promtool parses PromQL only inside rule files: wrap each expression in a recording rule.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"krsid:dashboard_expr_{i}", "expr": grafana_to_promql(e)}
                    for i, e in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    f = tmp_path / "dashboard-rules.yml"
    f.write_text(yaml.safe_dump(rules))
    p = subprocess.run(["promtool", "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"SUCCESS: {len(dashboard_exprs())} rules found" in p.stdout


@needs_promtool
def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    """The check above can fail: a typo'd expression is refused."""
    f = tmp_path / "bad.yml"
    f.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "x",
                        "rules": [{"record": "krsid:bad", "expr": "sum by (hook (rate(krsid_events_total[5m]))"}],
                    }
                ]
            }
        )
    )
    p = subprocess.run(["promtool", "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
