"""Priority lane under a bulk flood, on the host (raw-tracepoint load generator).

One driver floods the bulk lane as fast as it can (unpaced: far more than the
daemon drains) while a second one emits marked records into the priority lane at a
low rate, through krsid_event_begin_lane of krsid.h, as the priority hooks do. A
correctness check, not a timed one: the flood is checked to offer at least 10x the
drain rate (what the daemon delivers into JSON lines under an unpaced flood, measured
once per module as bench/run.py throughput does), and then
- with lanes (fair sharing off, so the bulk lane overflows): every priority record
  is delivered, none is lost, while the bulk lane loses records (counted);
- with lanes and fair sharing on (the shipped defaults): the same, and the flood is
  folded into summaries that add up;
- the control, one lane for both (krsid before lanes): the same flood does cost
  priority records, so the checks above can fail.
bench/run.py flood measures the same at 1x, 10x and 100x the drain rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from krsid.catalog.contract import CNT_SUPPRESSED_FLOOD
from krsid.pipeline.transport import LANE_BULK, LANE_PRIORITY
from tests.support import loadgen

pytestmark = pytest.mark.skipif(loadgen.environ_ok() is not None, reason=str(loadgen.environ_ok()))

SECONDS = 2.0
PRIORITY_RATE = 50  # events/s: below the priority lane's per-process share (100/s), so none is folded
FLOOD_MULTIPLE = 10  # the flood offers at least this many times what the daemon drains
SHIPPED_FAIR_SHARE: Mapping[str, Any] = {}  # the config's defaults


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return loadgen.build_driver(tmp_path_factory.mktemp("loadgen"))


@pytest.fixture(scope="module")
def drain_rate(tmp_path_factory: pytest.TempPathFactory, driver: Path) -> float:
    """Events/s the daemon delivers into JSON lines when it cannot keep up."""
    r = loadgen.run_load(tmp_path_factory.mktemp("drain"), driver, events_per_s=0, seconds=SECONDS)
    assert r.lost["ringbuf"] > 0, f"the daemon kept up with an unpaced driver: no drain rate measured: {r}"
    return r.rate("jsonl")


def flood(
    tmp_path: Path, driver: Path, drain_rate: float, *, priority_lane: str, fair_share: Mapping[str, Any]
) -> loadgen.LoadResult:
    r = loadgen.run_load(
        tmp_path,
        driver,
        events_per_s=0,  # unpaced
        seconds=SECONDS,
        priority_per_s=PRIORITY_RATE,
        priority_lane=priority_lane,
        fair_share=fair_share,
    )
    offered = r.targets[loadgen.FLOOD]["calls"] / SECONDS
    print(f"flood {offered:.0f}/s, drain rate {drain_rate:.0f}/s; targets {r.targets}; lanes {r.lanes}")
    assert offered >= FLOOD_MULTIPLE * drain_rate, (
        f"not a {FLOOD_MULTIPLE}x flood: {offered:.0f}/s vs {drain_rate:.0f}/s"
    )
    assert r.balanced("jsonl"), r
    return r


def assert_priority_delivered_in_full(r: loadgen.LoadResult) -> None:
    offered = r.priority_calls
    prio = r.targets[loadgen.PRIORITY]
    assert offered >= PRIORITY_RATE * SECONDS * 0.9, f"the priority driver made too few calls: {offered}"
    assert prio["calls"] == offered, f"the kernel saw {prio['calls']} of the driver's {offered} calls"
    assert prio["lost"] == 0 and prio["suppressed"] == 0, prio
    assert prio["emitted"] == offered, prio
    assert r.arrived[loadgen.PRIORITY] == offered, f"{r.arrived[loadgen.PRIORITY]} of {offered} delivered"
    assert r.lanes[LANE_PRIORITY]["lost"] == 0, r.lanes
    assert r.lane_records[LANE_PRIORITY] == r.lanes[LANE_PRIORITY]["emitted"], (r.lane_records, r.lanes)


def test_priority_lane_loses_nothing_while_the_bulk_lane_overflows(
    tmp_path: Path, driver: Path, drain_rate: float
) -> None:
    r = flood(tmp_path, driver, drain_rate, priority_lane=LANE_PRIORITY, fair_share=loadgen.FAIR_SHARE_OFF)
    assert r.targets[loadgen.FLOOD]["lost"] > 0 and r.lanes[LANE_BULK]["lost"] > 0, f"the bulk lane kept up: {r}"
    assert r.targets[loadgen.FLOOD]["suppressed"] == 0 and not r.flood_summaries
    assert_priority_delivered_in_full(r)


def test_priority_lane_loses_nothing_with_fair_sharing_folding_the_flood(
    tmp_path: Path, driver: Path, drain_rate: float
) -> None:
    r = flood(tmp_path, driver, drain_rate, priority_lane=LANE_PRIORITY, fair_share=SHIPPED_FAIR_SHARE)
    folded = r.targets[loadgen.FLOOD]["suppressed"]
    assert folded > r.targets[loadgen.FLOOD]["calls"] // 2, r.targets
    assert r.kernel[CNT_SUPPRESSED_FLOOD] == folded
    assert r.flood_summaries and sum(s["folded"] for s in r.flood_summaries) == folded
    assert all(s["flood_uid"] == 0 and s["flooded_hook"] == loadgen.HOOK for s in r.flood_summaries)
    assert_priority_delivered_in_full(r)


def test_one_lane_for_both_loses_priority_records_under_the_same_flood(
    tmp_path: Path, driver: Path, drain_rate: float
) -> None:
    """The control: krsid before lanes. Proves the flood above is one that costs
    priority records when nothing keeps it apart (every loss counted, none hidden)."""
    r = flood(tmp_path, driver, drain_rate, priority_lane=LANE_BULK, fair_share=loadgen.FAIR_SHARE_OFF)
    prio = r.targets[loadgen.PRIORITY]
    assert prio["lost"] > 0, f"one lane lost no priority record: not a flood that tests anything: {r.targets}"
    assert r.arrived[loadgen.PRIORITY] == prio["emitted"] == r.priority_calls - prio["lost"], (r.arrived, prio)
    assert r.lanes[LANE_PRIORITY]["emitted"] == 0, r.lanes
