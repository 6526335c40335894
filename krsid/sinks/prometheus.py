"""Prometheus metrics: one collector that reads pipeline stats and BPF maps at scrape time.

Nothing is pushed on the event path: the collector builds every family when
scraped, from PipelineStats (user space) and KernelCounters (per-CPU BPF maps).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from krsid import __version__
from krsid.pipeline.stats import STAGE_RINGBUF, KernelCounters, PipelineStats


class KrsidCollector(Collector):
    def __init__(self, stats: PipelineStats, kernel: KernelCounters, hooks: Iterable[str]) -> None:
        self._stats = stats
        self._kernel = kernel
        self._hooks = list(hooks)

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily("krsid_build_info", "krsid version; always 1", labels=["version"])
        build.add_metric([__version__], 1)
        yield build

        kernel = self._kernel.hook_counters()
        attached = self._kernel.attached()

        events = CounterMetricFamily("krsid_events", "Events decoded and handed to the sinks", labels=["hook"])
        invocations = CounterMetricFamily(
            "krsid_hook_invocations", "Calls of the hook's BPF program, counted in the kernel", labels=["hook"]
        )
        filtered = CounterMetricFamily(
            "krsid_events_filtered", "Hook calls dropped by an in-kernel filter", labels=["hook"]
        )
        emitted = CounterMetricFamily(
            "krsid_events_emitted", "Events the BPF programs wrote to the ring buffer", labels=["hook"]
        )
        lost = CounterMetricFamily(
            "krsid_events_lost", "Events lost, by the stage that lost them", labels=["hook", "stage"]
        )
        prog = GaugeMetricFamily("krsid_program_attached", "1 while the hook's program is attached", labels=["hook"])
        for hook in self._hooks:
            k = kernel.get(hook, {})
            events.add_metric([hook], self._stats.events.get(hook, 0))
            invocations.add_metric([hook], k.get("invocations", 0))
            filtered.add_metric([hook], k.get("filtered", 0))
            emitted.add_metric([hook], k.get("emitted", 0))
            lost.add_metric([hook, STAGE_RINGBUF], k.get("lost_ringbuf", 0))
            prog.add_metric([hook], 1 if attached.get(hook) else 0)
        for (hook, stage), n in sorted(self._stats.lost.items()):
            lost.add_metric([hook, stage], n)
        yield from (events, invocations, filtered, emitted, lost, prog)

        sink_errors = CounterMetricFamily("krsid_sink_errors", "Failed writes by sink", labels=["sink"])
        for sink, n in sorted(self._stats.sink_errors.items()):
            sink_errors.add_metric([sink], n)
        yield sink_errors


def make_registry(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def serve(registry: CollectorRegistry, host: str, port: int) -> object:
    """Start the /metrics HTTP server in a daemon thread; returns the server."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
