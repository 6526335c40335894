from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import generate_latest

from krsid.catalog import load_catalog
from krsid.catalog.contract import CNT_EMITTED, CNT_FILTERED, CNT_INVOCATIONS, CNT_LOST_RINGBUF
from krsid.metrics import KrsidCollector, make_registry
from krsid.pipeline.dispatch import Dispatcher
from krsid.pipeline.stats import PipelineStats
from tests.support.metrics import metric_families
from tests.support.records import PROGRAMS
from tests.support.sinks import StubSink


class FakeKernel:
    def hook_counters(self) -> dict[str, dict[str, int]]:
        return {"file_mprotect": {CNT_INVOCATIONS: 10, CNT_EMITTED: 4, CNT_LOST_RINGBUF: 1, CNT_FILTERED: 5}}

    def attached(self) -> dict[str, bool]:
        return {"file_mprotect": True, "bprm_check_security": False}

    def lane_counters(self) -> dict[str, dict[str, int]]:
        return {"priority": {"emitted": 3, "lost": 0}, "bulk": {"emitted": 4, "lost": 1}}


def exposition() -> bytes:
    stats = PipelineStats()
    stats.events["file_mprotect"] += 4
    stats.lost[("file_mprotect", "sink_journald")] += 2
    stats.sink_errors["journald"] += 2
    stats.lost[("file_mprotect", "queue_jsonl")] += 3
    stats.backlog["jsonl"] = (7, 2048)
    stats.enrich_errors = 5
    stats.poll_wakeups = 11
    reg = make_registry(KrsidCollector(stats, FakeKernel(), ["bprm_check_security", "file_mprotect"]))
    return generate_latest(reg)


def samples(text: bytes | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in metric_families((text if text is not None else exposition()).decode()):
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
    assert s[("krsid_poll_wakeups_total", ())] == 11
    assert ("krsid_build_info", (("version", __import__("krsid").__version__),)) in s


def test_every_kernel_counter_of_the_contract_reaches_a_metric() -> None:
    """Each slot of enum krsid_counter, under the name the contract gives it, shows in
    some per-hook metric: none is read under another name (and so as 0)."""
    counters = load_catalog(PROGRAMS).contract.counters
    values = {name: 1000 + i for i, name in enumerate(counters)}

    class Kernel(FakeKernel):
        def hook_counters(self) -> dict[str, dict[str, int]]:
            return {"file_mprotect": dict(values)}

    text = generate_latest(make_registry(KrsidCollector(PipelineStats(), Kernel(), ["file_mprotect"])))
    shown = {v for (_, labels), v in samples(text).items() if ("hook", "file_mprotect") in labels}
    assert {n: v for n, v in values.items() if v not in shown} == {}


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed (Debian package prometheus)")
def test_promtool_check_metrics_is_clean() -> None:
    p = subprocess.run(["promtool", "check", "metrics"], input=exposition(), capture_output=True, timeout=30)
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), p.stdout + p.stderr


def fresh_exposition(*, perf_buffer: bool = False) -> bytes:
    """A daemon that just started: its sinks configured, nothing lost or failed yet."""
    stats = PipelineStats(perf_buffer=perf_buffer)
    # Configured sinks that never failed: only their names matter to the collector.
    Dispatcher([StubSink("journald"), StubSink("jsonl")], stats)
    return generate_latest(make_registry(KrsidCollector(stats, FakeKernel(), ["bprm_check_security", "file_mprotect"])))


def test_every_loss_and_sink_error_series_exists_at_zero_from_the_start() -> None:
    """A series that first appears at 1 is no increase to Prometheus: the alerts on
    increase() would miss a single burst. So every one exists at 0 before any loss."""
    s = samples(fresh_exposition())
    stages = ["ringbuf", "decode", "queue_journald", "sink_journald", "queue_jsonl", "sink_jsonl"]
    for hook in ("bprm_check_security", "file_mprotect"):
        for stage in stages:
            key = ("krsid_events_lost_total", (("hook", hook), ("stage", stage)))
            assert key in s, f"no {stage} loss series for {hook}"
            assert s[key] == (1 if (hook, stage) == ("file_mprotect", "ringbuf") else 0)  # FakeKernel lost one
    assert s[("krsid_events_lost_total", (("hook", "unknown"), ("stage", "decode")))] == 0
    assert ("krsid_events_lost_total", (("hook", "unknown"), ("stage", "perfbuf"))) not in s  # a ring buffer
    for sink in ("journald", "jsonl"):
        assert s[("krsid_sink_errors_total", (("sink", sink),))] == 0
        assert s[("krsid_sink_backlog_entries", (("sink", sink),))] == 0
        assert s[("krsid_sink_backlog_bytes", (("sink", sink),))] == 0
    lost = [k for k in s if k[0] == "krsid_events_lost_total"]
    assert len(lost) == 2 * len(stages) + 1, lost


def test_perf_buffer_loss_series_exists_at_zero_with_a_perf_buffer() -> None:
    s = samples(fresh_exposition(perf_buffer=True))
    assert s[("krsid_events_lost_total", (("hook", "unknown"), ("stage", "perfbuf")))] == 0


def test_counted_losses_show_in_their_declared_series_once() -> None:
    stats = PipelineStats()
    Dispatcher([StubSink("jsonl")], stats)
    stats.lost[("file_mprotect", "queue_jsonl")] += 3
    stats.lost[("unknown", "decode")] += 2
    stats.lost[("not_attached", "decode")] += 1  # a hook the collector was not told about
    stats.sink_errors["jsonl"] += 4
    text = generate_latest(make_registry(KrsidCollector(stats, FakeKernel(), ["file_mprotect"])))
    s = samples(text)
    assert s[("krsid_events_lost_total", (("hook", "file_mprotect"), ("stage", "queue_jsonl")))] == 3
    assert s[("krsid_events_lost_total", (("hook", "unknown"), ("stage", "decode")))] == 2
    assert s[("krsid_events_lost_total", (("hook", "not_attached"), ("stage", "decode")))] == 1
    assert s[("krsid_sink_errors_total", (("sink", "jsonl"),))] == 4
    lines = [x for x in text.decode().splitlines() if x.startswith("krsid_events_lost_total{")]
    assert len(lines) == len({x.rsplit(" ", 1)[0] for x in lines}), "a loss series exported twice"
