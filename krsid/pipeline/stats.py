"""Counters the user-space pipeline keeps; the Prometheus collector reads them.

Plain dict increments, not prometheus_client Counters: the hot path runs once per
event and a Counter takes a lock per inc().
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

# Stages at which an event can be lost, as the `stage` label of krsid_events_lost_total.
STAGE_RINGBUF = "ringbuf"  # counted in the kernel: the ring buffer was full
STAGE_DECODE = "decode"  # a record that could not be decoded
STAGE_PERFBUF = "perfbuf"  # counted by the perf buffer's lost callback (kernels < 5.8)


def sink_stage(sink_name: str) -> str:
    """The sink's destination was down or a write failed."""
    return f"sink_{sink_name}"


def queue_stage(sink_name: str) -> str:
    """The sink's backlog was full: its destination is slower than the events."""
    return f"queue_{sink_name}"


def gap_stages(sink_name: str) -> tuple[str, ...]:
    """The stages whose losses leave a gap in this sink's seq numbers: those before
    the sinks (every sink misses the event) and this sink's own."""
    return (STAGE_RINGBUF, STAGE_PERFBUF, STAGE_DECODE, queue_stage(sink_name), sink_stage(sink_name))


@dataclass
class PipelineStats:
    events: Counter[str] = field(default_factory=Counter)  # hook -> events decoded
    lost: Counter[tuple[str, str]] = field(default_factory=Counter)  # (hook, stage) -> events
    sink_errors: Counter[str] = field(default_factory=Counter)  # sink -> failed writes
    enrich_errors: int = 0  # events delivered without user-space context
    backlog: dict[str, tuple[int, int]] = field(default_factory=dict)  # sink -> (entries, bytes) waiting


class KernelCounters(Protocol):
    """What the loader exposes to metrics: counters kept inside the BPF programs."""

    def hook_counters(self) -> Mapping[str, Mapping[str, int]]:
        """hook -> {"invocations", "emitted", "lost_ringbuf", "filtered"} summed over CPUs."""
        ...

    def attached(self) -> Mapping[str, bool]:
        """hook -> whether its program is attached now."""
        ...
