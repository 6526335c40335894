"""Counters the user-space pipeline keeps; the Prometheus collector reads them.

Plain dict increments, not prometheus_client Counters: the hot path runs once per
event and a Counter takes a lock per inc().
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
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


# The hook label of losses that cannot be attributed to a hook: a record whose hook id
# does not decode, and the perf buffer's lost callback (it only gets a count).
UNKNOWN_HOOK = "unknown"


def loss_series(hooks: Iterable[str], sinks: Iterable[str], *, perf_buffer: bool) -> list[tuple[str, str]]:
    """Every (hook, stage) at which this pipeline can count a loss: exported at 0 from the
    start, so that the first loss is an increase (a series that appears already at 1 is
    no increase to Prometheus, and an alert on increase() would never fire)."""
    sinks = list(sinks)
    per_hook = (STAGE_RINGBUF, STAGE_DECODE, *(s for sink in sinks for s in (queue_stage(sink), sink_stage(sink))))
    out = [(hook, stage) for hook in hooks for stage in per_hook]
    out.append((UNKNOWN_HOOK, STAGE_DECODE))
    if perf_buffer:
        out.append((UNKNOWN_HOOK, STAGE_PERFBUF))
    return out


@dataclass
class PipelineStats:
    events: Counter[str] = field(default_factory=Counter)  # hook -> events decoded
    lane_records: Counter[str] = field(default_factory=Counter)  # lane -> records read from its buffer
    flood_summaries_written: Counter[str] = field(default_factory=Counter)  # hook -> summaries the daemon wrote
    lost: Counter[tuple[str, str]] = field(default_factory=Counter)  # (hook, stage) -> events
    sink_errors: Counter[str] = field(default_factory=Counter)  # sink -> failed writes
    enrich_errors: int = 0  # events delivered without user-space context
    poll_wakeups: int = 0  # times the poll loop woke up (records, a sink's room, a timer)
    backlog: dict[str, tuple[int, int]] = field(default_factory=dict)  # sink -> (entries, bytes) waiting
    sink_names: list[str] = field(default_factory=list)  # the configured sinks (set by the Dispatcher)
    perf_buffer: bool = False  # events come through a perf buffer (its losses are counted as hook "unknown")


class KernelCounters(Protocol):
    """What the loader exposes to metrics: counters kept inside the BPF programs."""

    def lane_counters(self) -> Mapping[str, Mapping[str, int]]:
        """lane -> {"emitted": records written, "lost": records with no room}, over CPUs."""
        ...

    def hook_counters(self) -> Mapping[str, Mapping[str, int]]:
        """hook -> {counter: value} summed over CPUs; the counters are krsid.catalog.contract's
        COUNTER_NAMES (CNT_EMITTED, CNT_LOST_RINGBUF, ...), the slots of enum krsid_counter."""
        ...

    def attached(self) -> Mapping[str, bool]:
        """hook -> whether its program is attached now."""
        ...
