"""Fair sharing in the kernel, on the host: krsid.h's token buckets and flood summaries
run for real in the load generator's program (a raw tracepoint emitting through
krsid_event_begin), which the host kernel loads where it refuses LSM programs.

One process (the driver) makes far more calls than its share allows. Then:
- what it emitted is bounded by its share (burst + rate x time);
- every call over the share is counted (suppressed_flood) and none is lost uncounted:
  invocations = emitted + suppressed_flood (the generator has no filter);
- the flood summaries fold exactly the suppressed calls: the kernel writes them
  during the flood, the daemon the last one (at stop, here), and they name the
  process, its uid and the hook;
- the books of seq numbers still balance (summaries take seq numbers like events).
The VM test (tests/vm/test_flood.py) proves the same on real hooks and uids.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from krsid.catalog.contract import CNT_EMITTED, CNT_FLOOD_SUMMARIES, CNT_INVOCATIONS, CNT_SUPPRESSED_FLOOD
from tests.support import loadgen

pytestmark = pytest.mark.skipif(loadgen.environ_ok() is not None, reason=str(loadgen.environ_ok()))

SECONDS = 2.0


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return loadgen.build_driver(tmp_path_factory.mktemp("loadgen"))


@pytest.mark.parametrize(
    ("scope", "share"),
    [
        ("process", {"process_rate": 500, "process_burst": 100, "uid_rate": 0}),
        ("uid", {"process_rate": 0, "uid_rate": 500, "uid_burst": 100}),
    ],
)
def test_a_flooding_process_is_held_to_its_share_and_summarized(
    tmp_path: Path, driver: Path, scope: str, share: dict[str, int]
) -> None:
    # The generator's records are file_mprotect's: the bulk lane. The priority lane's
    # shares are off, so what is folded is the bulk lane's doing.
    fair_share = {"bulk": share, "priority": {"process_rate": 0, "uid_rate": 0}, "summary_interval_ms": 300}
    r = loadgen.run_load(tmp_path, driver, events_per_s=20_000, seconds=SECONDS, fair_share=fair_share)
    k = r.kernel
    assert r.calls > 10_000, f"the driver made too few calls to flood: {r.calls}"
    emitted, folded_in_kernel = k[CNT_EMITTED], k[CNT_SUPPRESSED_FLOOD]
    assert k[CNT_INVOCATIONS] == emitted + folded_in_kernel, k
    rate, burst = share[f"{scope}_rate"], share[f"{scope}_burst"]
    # The run lasts SECONDS plus the drain; allow the start-up and one second of slack.
    assert emitted <= burst + rate * (SECONDS + 1), f"{emitted} emitted over a share of {rate}/s: {k}"
    assert folded_in_kernel > r.calls // 2, k

    summaries = r.flood_summaries
    assert summaries, "no flood summary"
    assert sum(s["folded"] for s in summaries) == folded_in_kernel
    assert {s["scope"] for s in summaries} == {scope}
    assert {s["flooded_hook"] for s in summaries} == {loadgen.HOOK}
    assert {s["flood_uid"] for s in summaries} == {os.getuid()}
    assert {s["origin"] for s in summaries} <= {"kernel", "daemon"}
    kernel_written = [s for s in summaries if s["origin"] == "kernel"]
    # At 20k calls/s for 2 s with 0.3 s periods, the kernel writes several during the flood.
    assert len(kernel_written) == k[CNT_FLOOD_SUMMARIES] >= 3
    assert all(s["first_ns"] <= s["last_ns"] for s in summaries)
    assert all(s["seq"] > 0 for s in kernel_written)
    assert all(s["seq"] == 0 for s in summaries if s["origin"] == "daemon")
    assert r.balanced("jsonl"), r


def test_fair_sharing_off_folds_nothing(tmp_path: Path, driver: Path) -> None:
    """The control: the same flood with both shares off is emitted in full."""
    r = loadgen.run_load(tmp_path, driver, events_per_s=5_000, seconds=1.0)
    assert r.kernel[CNT_SUPPRESSED_FLOOD] == 0 and not r.flood_summaries
    assert r.kernel[CNT_INVOCATIONS] == r.kernel[CNT_EMITTED] + r.kernel.get("lost_ringbuf", 0)
    assert r.balanced("jsonl"), r


def test_congestion_pricing_keeps_a_flood_inside_the_ring(tmp_path: Path, driver: Path) -> None:
    """Shares far above what the daemon drains (10M events/s nominal) still hold an
    unpaced flood: as the lane's ring backs up, each event's price rises (krsid.h,
    krsid_congestion_shift) until the flood is folded down to the drain rate, so the
    ring never overflows and nothing is lost. The control is the same flood with
    fair sharing off, which overflows the ring (counted losses)."""
    nominal = {"process_rate": 10_000_000, "process_burst": 1_000_000, "uid_rate": 10_000_000, "uid_burst": 1_000_000}
    fair_share = {"bulk": nominal, "priority": {"process_rate": 0, "uid_rate": 0}}
    (tmp_path / "off").mkdir()
    (tmp_path / "priced").mkdir()
    control = loadgen.run_load(tmp_path / "off", driver, events_per_s=0, seconds=SECONDS)
    assert control.lost["ringbuf"] > 0, f"the daemon kept up with an unpaced flood: nothing to price: {control}"
    r = loadgen.run_load(tmp_path / "priced", driver, events_per_s=0, seconds=SECONDS, fair_share=fair_share)
    k = r.kernel
    print(f"control: {control.kernel}; priced: {k}; lanes {r.lanes}")
    assert k[CNT_INVOCATIONS] == k[CNT_EMITTED] + k[CNT_SUPPRESSED_FLOOD], k
    assert k[CNT_SUPPRESSED_FLOOD] > 0, f"nothing was priced out: {k}"
    assert r.lost["ringbuf"] == 0 and r.lanes["bulk"]["lost"] == 0, (r.lost, r.lanes)
    # The flood is held near the drain rate, not starved: it still emits a good share.
    assert k[CNT_EMITTED] >= control.kernel[CNT_EMITTED] // 4, (k, control.kernel)
    assert r.balanced("jsonl"), r
