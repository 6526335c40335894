"""A KrsidCollector with every optional part present: policy rules that deny and
would_deny, reloads, and kernel bpf_stats, so that every metric family krsid can
export is in its output (the dashboard and alert-rule tests check names against it)."""

from __future__ import annotations

from krsid.metrics import KrsidCollector
from krsid.pipeline.stats import PipelineStats


class NoKernel:
    def hook_counters(self) -> dict[str, dict[str, int]]:
        return {}

    def lane_counters(self) -> dict[str, dict[str, int]]:
        return {}

    def attached(self) -> dict[str, bool]:
        return {}


class FakeDaemon:
    """The daemon's PolicyView with a deny and a would_deny rule and bpf_stats on."""

    def __init__(self) -> None:
        self.reloads = {"success": 1, "failure": 0}
        self.last_reload_success = 1.0
        self.policy_refreshes = 0
        self.policy_stale = False

    def rule_hits(self) -> dict[tuple[str, str, str], int]:
        return {("file_open", "no-shadow", "deny"): 0, ("file_open", "audit-shadow", "would_deny"): 0}

    def program_costs(self) -> dict[str, tuple[int, int]]:
        return {"file_open": (0, 0)}


def full_collector(
    hooks: tuple[str, ...] = ("file_open",), sinks: tuple[str, ...] = ("journald", "jsonl")
) -> KrsidCollector:
    stats = PipelineStats()
    stats.sink_names = list(sinks)
    return KrsidCollector(stats, NoKernel(), hooks, FakeDaemon())
