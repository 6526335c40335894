"""Priority events under a flood, on the host (bench/run.py flood).

The raw-tracepoint load generator (tests/support/loadgen.py) runs the real daemon;
one driver process floods the bulk lane with file_mprotect records while a second
one, at a low fixed rate, emits marked records through krsid_event_begin_lane into
the priority lane: they stand in for exec, module loads, setuid... (the host
refuses LSM programs; the VM test tests/vm/test_flood.py uses the real hooks).

First the drain rate: what the daemon delivers into JSON lines with an unpaced
flood (as bench/run.py throughput measures it). Then floods of 1x, 10x and 100x
that rate, each in three configurations side by side:
  (a) one lane, fair sharing off: the priority driver's records share the bulk ring
      buffer with the flood, which is krsid before lanes;
  (b) lanes, fair sharing off: the priority records have their own ring buffer;
  (c) lanes + fair sharing, the shipped defaults: the flood is also folded into
      flood summaries (one process's share of a bulk hook is 200 events/s).
The priority driver runs at 50 events/s by default: under the priority lane's own
per-process share (100/s), so that fair sharing folds none of it; a faster one is
itself a flood in (c) and is folded (counted, summarized) as such.
Every count comes from the kernel (per driver: calls, records written, records
with no room, calls folded) or from the output (records that arrived); the books of
sequence numbers are checked per run as in the throughput bench. The drain rate
is measured with an unpaced driver taking one of the cores; a paced flood leaves the
daemon more CPU, so it drains faster then (the "daemon delivered" column).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from krsid.pipeline.transport import LANE_BULK, LANE_PRIORITY
from tests.support import loadgen

Row = list[str]
Table = Callable[[str, list[str], list[Row]], None]
SHIPPED_FAIR_SHARE: Mapping[str, Any] = {}  # the config's defaults (krsid/config.py FairShareConfig)


@dataclass(frozen=True)
class Setup:
    label: str
    priority_lane: str  # where the priority driver's records go
    fair_share: Mapping[str, Any]


SETUPS = (
    Setup("(a) one lane, fair sharing off", LANE_BULK, loadgen.FAIR_SHARE_OFF),
    Setup("(b) lanes, fair sharing off", LANE_PRIORITY, loadgen.FAIR_SHARE_OFF),
    Setup("(c) lanes + fair sharing (shipped)", LANE_PRIORITY, SHIPPED_FAIR_SHARE),
)


def _k(n: float) -> str:
    return f"{n / 1000:.0f}k" if n >= 10_000 else f"{n:.0f}"


def _row(flood: str, setup: Setup, r: loadgen.LoadResult, seconds: float) -> Row:
    f, p = r.targets[loadgen.FLOOD], r.targets[loadgen.PRIORITY]
    prio_offered, prio_delivered = r.priority_calls, r.arrived[loadgen.PRIORITY]
    prio_lost = prio_offered - prio_delivered
    lost_note = f" (folded {p['suppressed']})" if p["suppressed"] else ""
    folded = sum(int(s["folded"]) for s in r.flood_summaries)
    # Every call folded by fair sharing is in exactly one summary.
    summaries_add_up = folded == f["suppressed"] + p["suppressed"]
    summaries = f"{len(r.flood_summaries)} ({folded})" + ("" if summaries_add_up else " **≠ folded calls**")
    return [
        flood,
        setup.label,
        f"{f['calls']} ({_k(f['calls'] / seconds)}/s)",
        f"{r.arrived[loadgen.FLOOD]}",
        f"{f['lost']}",
        f"{f['suppressed']}",
        f"{_k(r.rate('jsonl'))}/s",
        f"{prio_offered}",
        f"{prio_delivered}",
        ("0" if prio_lost == 0 else f"**{prio_lost}**") + lost_note,
        summaries if r.flood_summaries or f["suppressed"] else "0",
        "yes" if r.balanced("jsonl") else "**NO**",
    ]


def bench_flood(args: argparse.Namespace, table: Table) -> None:
    seconds: float = args.seconds
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        driver = loadgen.build_driver(tmp)
        drain = loadgen.run_load(tmp, driver, events_per_s=0, seconds=seconds)
        drain_rate = drain.rate("jsonl")
        driver_max = drain.targets[loadgen.FLOOD]["calls"] / seconds  # what one unpaced driver makes
        for multiple in args.multiples:
            wanted = multiple * drain_rate
            # Pacing cannot make more than the unpaced driver does: run that instead, and say so.
            paced = wanted < 0.9 * driver_max
            flood = f"{multiple:g}x ({_k(wanted)}/s)" + ("" if paced else ": unpaced, the driver's max")
            for setup in SETUPS:
                r = loadgen.run_load(
                    tmp,
                    driver,
                    events_per_s=wanted if paced else 0,
                    seconds=seconds,
                    priority_per_s=args.priority_rate,
                    priority_lane=setup.priority_lane,
                    fair_share=setup.fair_share,
                )
                rows.append(_row(flood, setup, r, seconds))
    table(
        f"Priority events under a bulk flood (host, load generator, one flooding process; drain rate "
        f"{drain_rate:.0f} events/s into JSON lines, unpaced driver {_k(driver_max)} calls/s; priority driver "
        f"{args.priority_rate:g}/s; {seconds:g} s per run; {os.cpu_count()} cores)",
        [
            "flood (x drain rate)",
            "configuration",
            "flood offered",
            "flood delivered",
            "flood lost (no room)",
            "flood folded (fair share)",
            "daemon delivered (all records)",
            "priority offered",
            "priority delivered",
            "priority lost",
            "flood summaries (folded calls)",
            "books balance",
        ],
        rows,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--multiples", type=float, nargs="+", default=[1, 10, 100], help="flood: x the drain rate")
    p.add_argument("--priority-rate", type=float, default=50, help="flood: priority events/s")
