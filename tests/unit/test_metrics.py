from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from krsid.pipeline.stats import PipelineStats
from krsid.sinks.prometheus import KrsidCollector, make_registry


class FakeKernel:
    def hook_counters(self) -> dict[str, dict[str, int]]:
        return {"file_mprotect": {"invocations": 10, "emitted": 4, "lost_ringbuf": 1, "filtered": 5}}

    def attached(self) -> dict[str, bool]:
        return {"file_mprotect": True, "bprm_check_security": False}


def exposition() -> bytes:
    stats = PipelineStats()
    stats.events["file_mprotect"] += 4
    stats.lost[("file_mprotect", "sink_journald")] += 2
    stats.sink_errors["journald"] += 2
    stats.lost[("file_mprotect", "queue_jsonl")] += 3
    stats.backlog["jsonl"] = (7, 2048)
    stats.enrich_errors = 5
    reg = make_registry(KrsidCollector(stats, FakeKernel(), ["bprm_check_security", "file_mprotect"]))
    return generate_latest(reg)


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(exposition().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metric_values() -> None:
    s = samples()
    assert s[("krsid_events_total", (("hook", "file_mprotect"),))] == 4
    assert s[("krsid_hook_invocations_total", (("hook", "file_mprotect"),))] == 10
    assert s[("krsid_events_lost_total", (("hook", "file_mprotect"), ("stage", "ringbuf")))] == 1
    assert s[("krsid_events_lost_total", (("hook", "file_mprotect"), ("stage", "sink_journald")))] == 2
    assert s[("krsid_program_attached", (("hook", "bprm_check_security"),))] == 0
    assert s[("krsid_program_attached", (("hook", "file_mprotect"),))] == 1
    assert s[("krsid_events_total", (("hook", "bprm_check_security"),))] == 0  # present from the start
    assert s[("krsid_events_lost_total", (("hook", "file_mprotect"), ("stage", "queue_jsonl")))] == 3
    assert s[("krsid_sink_backlog_entries", (("sink", "jsonl"),))] == 7
    assert s[("krsid_sink_backlog_bytes", (("sink", "jsonl"),))] == 2048
    assert s[("krsid_enrich_errors_total", ())] == 5
    assert ("krsid_build_info", (("version", __import__("krsid").__version__),)) in s


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed (Debian package prometheus)")
def test_promtool_check_metrics_is_clean() -> None:
    p = subprocess.run(["promtool", "check", "metrics"], input=exposition(), capture_output=True, timeout=30)
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), p.stdout + p.stderr
