"""Reading krsid's Prometheus exposition in tests."""

from __future__ import annotations


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include all of `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
