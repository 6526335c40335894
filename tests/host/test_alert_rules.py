"""etc/prometheus/krsid-rules.yml under `promtool test rules`: each alert fires on its
trigger (a single lost event fires KrsidEventsLost), on series shaped like krsid's own."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from krsid.metrics import make_registry
from tests.host.test_dashboards import RULES
from tests.support.collector import full_collector
from tests.support.metrics import metric_families

HERE = Path(__file__).resolve().parent
RULE_TESTS = HERE / "krsid-rules.test.yml"

pytestmark = pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed (package prometheus)")


def promtool_test(tests: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", "test", "rules", str(tests)], capture_output=True, text=True, timeout=120)


def alerts_in(rules: Path) -> set[str]:
    return {r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"] if "alert" in r}


def test_every_alert_fires_in_its_unit_test() -> None:
    p = promtool_test(RULE_TESTS)
    assert p.returncode == 0 and "SUCCESS" in p.stdout, p.stdout + p.stderr


def test_every_alert_has_a_test_where_it_fires() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    fired = {case["alertname"] for t in doc["tests"] for case in t.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert alerts_in(RULES) - fired == set(), "alerts no test sees fire"


def test_the_rule_tests_catch_an_alert_that_misses_a_single_loss(tmp_path: Path) -> None:
    """The tests above can fail: a KrsidEventsLost that needs two lost events is caught."""
    rules = RULES.read_text()
    broken = rules.replace("(increase(krsid_events_lost_total[5m])) > 0", "(increase(krsid_events_lost_total[5m])) > 1")
    assert broken != rules
    (tmp_path / "etc" / "prometheus").mkdir(parents=True)
    (tmp_path / "etc" / "prometheus" / RULES.name).write_text(broken)
    (tmp_path / "tests" / "host").mkdir(parents=True)
    copy = tmp_path / "tests" / "host" / RULE_TESTS.name
    copy.write_text(RULE_TESTS.read_text())
    p = promtool_test(copy)
    assert p.returncode != 0 and "KrsidEventsLost" in p.stdout + p.stderr, p.stdout + p.stderr


def test_the_test_series_are_shaped_like_what_krsid_exports() -> None:
    """Each input series names a metric krsid exports, with its label names (plus the
    job and instance labels Prometheus adds), so the tests exercise real series."""
    text = generate_latest(make_registry(full_collector())).decode()
    exported: dict[str, set[str]] = {}
    for family in metric_families(text):
        for sample in family.samples:
            exported[sample.name] = set(sample.labels)
    doc = yaml.safe_load(RULE_TESTS.read_text())
    for t in doc["tests"]:
        for series in t["input_series"]:
            m = re.fullmatch(r"(\w+)\{(.*)\}", series["series"])
            assert m, series
            name, labels = m.group(1), {kv.split("=", 1)[0].strip() for kv in m.group(2).split(",")}
            if name == "up":  # Prometheus's own
                continue
            assert name in exported, f"{name} is not exported by krsid"
            assert labels - {"job", "instance"} == exported[name], (name, labels)
