"""Reading krsid's Prometheus exposition and loss counters in tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from krsid.pipeline.stats import STAGE_DECODE, STAGE_PERFBUF, STAGE_RINGBUF, queue_stage, sink_stage

# The exposition parser, typed: Debian's prometheus_client 0.16 (what a fresh venv
# with --system-site-packages uses) has no annotations on it, newer releases do.
metric_families = cast(Callable[[str], Iterable[Metric]], text_string_to_metric_families)


def gap_stages(sink_name: str) -> tuple[str, ...]:
    """The stages whose losses leave a gap in this sink's seq numbers: those before
    the sinks (every sink misses the event) and this sink's own."""
    return (STAGE_RINGBUF, STAGE_PERFBUF, STAGE_DECODE, queue_stage(sink_name), sink_stage(sink_name))


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include all of `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
