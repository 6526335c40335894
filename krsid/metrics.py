"""Prometheus metrics: the collector that reads krsid's counters at scrape time, and its HTTP server.

Not a sink: events never reach it. Nothing is pushed on the event path: the
collector builds every family when scraped, from PipelineStats (user space),
KernelCounters (per-CPU BPF maps) and the daemon's PolicyView (rule hits,
reloads, bpf_stats), as prometheus_client's custom collectors do.

Every counter an alert watches exists from the first scrape, at 0: each (hook,
stage) of krsid_events_lost_total and each sink's krsid_sink_errors_total. A series
that first appears at 1 is no increase to Prometheus, so increase() would miss a
single burst of losses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from krsid import __version__
from krsid.catalog.contract import (
    CNT_EMITTED,
    CNT_FILTERED,
    CNT_FLOOD_SUMMARIES,
    CNT_INVOCATIONS,
    CNT_LOST_RINGBUF,
    CNT_SUPPRESSED_DEDUP,
    CNT_SUPPRESSED_FLOOD,
    CNT_SUPPRESSED_RATE,
)
from krsid.pipeline.stats import STAGE_RINGBUF, KernelCounters, PipelineStats, loss_series
from krsid.pipeline.transport import LANES


class PolicyView(Protocol):
    """What the daemon exposes about policy and reloads (see krsid.daemon.Daemon)."""

    @property
    def reloads(self) -> Mapping[str, int]: ...

    @property
    def last_reload_success(self) -> float: ...

    @property
    def policy_refreshes(self) -> int:
        """Times the rules were written again for a replaced file or cgroup (no reload)."""
        ...

    @property
    def policy_stale(self) -> bool:
        """A rule names a file or cgroup that is not there now (the last refresh could not compile)."""
        ...

    def rule_hits(self) -> Mapping[tuple[str, str, str], int]:
        """(hook, rule, action) -> hook calls the rule decided, over all reloads."""
        ...

    def program_costs(self) -> Mapping[str, tuple[int, int]]:
        """hook -> (runs, run time ns) from the kernel's BPF stats; empty when off."""
        ...


class ProcessTableView(Protocol):
    """The process table's numbers (krsid.identity.table.ProcessTable)."""

    evictions: int
    proc_reads: int
    max_entries: int

    def __len__(self) -> int: ...


class MetricSource(Protocol):
    """A component that exposes its own metric families (krsid.identity.binary_hash.BinaryHasher,
    krsid.watch.WatchState)."""

    def metric_families(self) -> Iterator[Metric]: ...


class KrsidCollector(Collector):
    def __init__(
        self,
        stats: PipelineStats,
        kernel: KernelCounters,
        hooks: Iterable[str],
        policy: PolicyView | None = None,
        processes: ProcessTableView | None = None,
        hasher: MetricSource | None = None,
        watch: MetricSource | None = None,
    ) -> None:
        self._stats = stats
        self._kernel = kernel
        self._hooks = list(hooks)
        self._policy = policy
        self._processes = processes
        self._hasher = hasher
        self._watch = watch

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
        suppressed = CounterMetricFamily(
            "krsid_events_suppressed",
            "Events not emitted by in-kernel noise control: reason rate (rate_limit), dedup (dedup_window_ms) "
            "or flood (over a process's or uid's fair_share; told in flood summaries)",
            labels=["hook", "reason"],
        )
        summaries = CounterMetricFamily(
            "krsid_flood_summaries",
            "Flood summaries written about the hook: origin kernel (the flooding key's next call) or daemon "
            "(the flood had gone quiet)",
            labels=["hook", "origin"],
        )
        prog = GaugeMetricFamily("krsid_program_attached", "1 while the hook's program is attached", labels=["hook"])
        for hook in self._hooks:
            k = kernel.get(hook, {})
            events.add_metric([hook], self._stats.events.get(hook, 0))
            invocations.add_metric([hook], k.get(CNT_INVOCATIONS, 0))
            filtered.add_metric([hook], k.get(CNT_FILTERED, 0))
            emitted.add_metric([hook], k.get(CNT_EMITTED, 0))
            suppressed.add_metric([hook, "rate"], k.get(CNT_SUPPRESSED_RATE, 0))
            suppressed.add_metric([hook, "dedup"], k.get(CNT_SUPPRESSED_DEDUP, 0))
            suppressed.add_metric([hook, "flood"], k.get(CNT_SUPPRESSED_FLOOD, 0))
            summaries.add_metric([hook, "kernel"], k.get(CNT_FLOOD_SUMMARIES, 0))
            summaries.add_metric([hook, "daemon"], self._stats.flood_summaries_written.get(hook, 0))
            prog.add_metric([hook], 1 if attached.get(hook) else 0)
        for kind in sorted(set(self._stats.events) - set(self._hooks)):  # flood summaries: events of no hook
            events.add_metric([kind], self._stats.events[kind])
        stats = self._stats
        declared = loss_series(self._hooks, stats.sink_names, perf_buffer=stats.perf_buffer)
        for hook, stage in declared:
            if stage == STAGE_RINGBUF:  # counted in the kernel
                lost.add_metric([hook, stage], kernel.get(hook, {}).get(CNT_LOST_RINGBUF, 0))
            else:
                lost.add_metric([hook, stage], stats.lost.get((hook, stage), 0))
        known = set(declared)
        for (hook, stage), n in sorted(stats.lost.items()):
            if (hook, stage) not in known:  # e.g. a hook the collector was not told about
                lost.add_metric([hook, stage], n)
        yield from (events, invocations, filtered, emitted, lost, suppressed, summaries, prog)
        yield from self._lane_metrics()

        if self._policy is not None:
            yield from _policy_metrics(self._policy)
            costs = self._policy.program_costs()
            if costs:
                runs = CounterMetricFamily(
                    "krsid_hook_program_runs", "Runs of the hook's BPF program (kernel bpf_stats)", labels=["hook"]
                )
                secs = CounterMetricFamily(
                    "krsid_hook_program_seconds",
                    "Time spent in the hook's BPF program (kernel bpf_stats)",
                    labels=["hook"],
                )
                for hook, (n, ns) in sorted(costs.items()):
                    runs.add_metric([hook], n)
                    secs.add_metric([hook], ns / 1e9)
                yield from (runs, secs)

        sink_errors = CounterMetricFamily(
            "krsid_sink_errors", "Failed writes (and failed reopens of the JSON lines file) by sink", labels=["sink"]
        )
        for sink in sorted(set(self._stats.sink_names) | set(self._stats.sink_errors)):
            sink_errors.add_metric([sink], self._stats.sink_errors.get(sink, 0))
        yield sink_errors
        entries = GaugeMetricFamily(
            "krsid_sink_backlog_entries", "Events encoded and waiting for a busy sink destination", labels=["sink"]
        )
        size = GaugeMetricFamily(
            "krsid_sink_backlog_bytes", "Bytes waiting for a busy sink destination", labels=["sink"]
        )
        for sink in sorted(set(self._stats.sink_names) | set(self._stats.backlog)):
            n, nbytes = self._stats.backlog.get(sink, (0, 0))
            entries.add_metric([sink], n)
            size.add_metric([sink], nbytes)
        yield from (entries, size)
        yield CounterMetricFamily(
            "krsid_enrich_errors",
            "Events delivered without some user-space context (exe, cgroup) because looking it up failed",
            value=self._stats.enrich_errors,
        )
        yield CounterMetricFamily(
            "krsid_poll_wakeups",
            "Times the poll loop woke up: for records, for room in a busy sink, or on its timer",
            value=self._stats.poll_wakeups,
        )
        if self._processes is not None:
            yield from _process_table_metrics(self._processes)
        if self._hasher is not None:
            yield from self._hasher.metric_families()
        if self._watch is not None:
            yield from self._watch.metric_families()

    def _lane_metrics(self) -> Iterator[Metric]:
        """Per lane (ring buffer): what the kernel wrote, what found no room, what was read.
        Per lane, emitted = read + still in the buffer; lost counts what never got in."""
        kernel = self._kernel.lane_counters()
        emitted = CounterMetricFamily(
            "krsid_lane_events_emitted", "Records the kernel wrote to the lane's ring buffer", labels=["lane"]
        )
        lost = CounterMetricFamily(
            "krsid_lane_events_lost", "Records that found no room in the lane's ring buffer", labels=["lane"]
        )
        read = CounterMetricFamily("krsid_lane_events_read", "Records read from the lane's buffer", labels=["lane"])
        for lane in LANES:
            k = kernel.get(lane, {})
            emitted.add_metric([lane], k.get("emitted", 0))
            lost.add_metric([lane], k.get("lost", 0))
            read.add_metric([lane], self._stats.lane_records.get(lane, 0))
        yield from (emitted, lost, read)


def make_registry(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def serve(registry: CollectorRegistry, host: str, port: int) -> object | None:
    """Start the /metrics HTTP server in a daemon thread; returns the server, or None
    with prometheus-client < 0.17 (Debian 12's python3-prometheus-client, which the
    .deb runs on, is 0.16: start_http_server returns nothing there; its server thread
    is a daemon thread and ends with the process)."""
    started = start_http_server(port, addr=host, registry=registry)
    return started[0] if started else None


def _policy_metrics(policy: PolicyView) -> Iterator[Metric]:
    denied = CounterMetricFamily("krsid_denied", "Hook calls denied (-EPERM) by a deny rule", labels=["hook", "rule"])
    would = CounterMetricFamily(
        "krsid_would_deny",
        "Hook calls a would_deny rule matched (audit-only deny: allowed)",
        labels=["hook", "rule"],
    )
    matched = CounterMetricFamily(
        "krsid_rule_matches", "Hook calls decided by a policy rule", labels=["hook", "rule", "action"]
    )
    for (hook, rule, action), n in sorted(policy.rule_hits().items()):
        matched.add_metric([hook, rule, action], n)
        if action == "deny":
            denied.add_metric([hook, rule], n)
        elif action == "would_deny":
            would.add_metric([hook, rule], n)
    reloads = CounterMetricFamily("krsid_config_reload", "Config reloads (SIGHUP, krsid reload)", labels=["result"])
    for result in ("success", "failure"):
        reloads.add_metric([result], policy.reloads.get(result, 0))
    last = GaugeMetricFamily(
        "krsid_config_last_reload_success_timestamp_seconds", "When the config last loaded successfully"
    )
    last.add_metric([], policy.last_reload_success)
    refreshes = CounterMetricFamily(
        "krsid_policy_refreshes",
        "Rules written again, without a reload, because a file or cgroup they name was replaced",
        value=policy.policy_refreshes,
    )
    stale = GaugeMetricFamily(
        "krsid_policy_stale",
        "1 while a policy rule names a file or cgroup that is not there now: the rule keeps matching the old one "
        "(a cgroup: nothing) until it is back",
        value=int(policy.policy_stale),
    )
    yield from (denied, would, matched, reloads, last, refreshes, stale)


def _process_table_metrics(table: ProcessTableView) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "krsid_process_table_entries", "Processes in krsid's process table (krsid.identity)", value=len(table)
    )
    yield GaugeMetricFamily(
        "krsid_process_table_capacity", "The process table's cap (identity.process_table_size)", value=table.max_entries
    )
    yield CounterMetricFamily(
        "krsid_process_table_evictions",
        "Processes dropped from the table to stay within its cap (least recently used first)",
        value=table.evictions,
    )
    yield CounterMetricFamily(
        "krsid_process_table_proc_reads",
        "Reads of /proc/PID for a process or ancestor the table did not know",
        value=table.proc_reads,
    )
