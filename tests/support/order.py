"""The delivery-order check the VM tests make on a daemon's events (README: Lanes)."""

from __future__ import annotations

from collections.abc import Sequence

# How far back a record may arrive in its lane on a machine with more than one CPU:
# a record takes its seq just before it reserves ring room, so a record made at the
# same moment on another CPU can reserve first and arrive first (seen in a 6.12 VM
# with 2 vCPUs: 1688 before 1687). seq is global over both lanes, and a CPU held up
# between the two steps (an interrupt, a host that deschedules a vCPU) lets the other
# CPUs take several numbers meanwhile: a few per other CPU, never hundreds.
LATE_SEQS_PER_OTHER_CPU = 16


def lane_order_violations(seqs: Sequence[int], cpus: int) -> list[tuple[int, int]]:
    """The (late seq, highest seq delivered before it) pairs that break one lane's order.

    On one CPU every record arrives in seq order. On N CPUs a record may arrive after
    records up to LATE_SEQS_PER_OTHER_CPU * (N - 1) numbers above it, not later."""
    window = LATE_SEQS_PER_OTHER_CPU * max(cpus - 1, 0)
    violations: list[tuple[int, int]] = []
    highest: int | None = None
    for seq in seqs:
        if highest is not None and highest - seq > window:
            violations.append((seq, highest))
        if highest is None or seq > highest:
            highest = seq
    return violations
