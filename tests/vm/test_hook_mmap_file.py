"""mmap_file: executable mappings of files and of anonymous memory, in a VM.

The workload makes its mmap() calls from a thread of its own; the events are picked
by that thread id, apart from the interpreter's own library mappings.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.vm.conftest import RunningDaemon, message_id, run_workload
from tests.vm.test_e2e import metric

pytestmark = pytest.mark.vm
HOOK = "mmap_file"
MESSAGE_ID = message_id("mmap_file")


@pytest.fixture
def mapped_file(tmpfs_dir: Path) -> Path:
    f = tmpfs_dir / f"krsid-mapped-{uuid.uuid4().hex[:8]}.bin"
    f.write_bytes(b"\xc3" * 2 * 4096)
    return f


def mmaps(*steps: str) -> dict[str, Any]:
    result = run_workload("mmap_workload", *steps)
    assert [c["errno"] for c in result["calls"]] == [0] * len(steps), result  # audit only
    assert result["tid"] != result["pid"]
    return result


def mmap_events(daemon: RunningDaemon, w: dict[str, Any], count: int = 1) -> list[dict[str, Any]]:
    found = daemon.wait_events(lambda o: o["hook"] == HOOK and o["pid"] == w["tid"], count)
    return sorted(found, key=lambda o: int(o["seq"]))


def test_exec_mapping_of_a_file_has_its_full_path(
    daemon: RunningDaemon, journal: Journal, mapped_file: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled(HOOK)
    w = mmaps(f"file:{mapped_file}:READ|EXEC:PRIVATE")
    events = mmap_events(daemon, w)
    assert len(events) == 1, events
    o = events[0]
    assert o["tgid"] == w["pid"]
    assert o["path"] == str(mapped_file)  # bpf_d_path: the full path, not just the name
    assert o["reqprot"] == "READ|EXEC" and o["prot"] == "READ|EXEC"
    assert o["flags"] == "PRIVATE"
    assert o["anonymous"] is False and o["path_unavailable"] is False

    j = journal.wait_for(lambda e: True, f"KRSID_HOOK={HOOK}", f"KRSID_PID={w['tid']}")
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID and e["PRIORITY"] == "5"
    assert (e["KRSID_PATH"], e["KRSID_REQPROT"], e["KRSID_FLAGS"]) == (str(mapped_file), "READ|EXEC", "PRIVATE")
    assert e["KRSID_ANONYMOUS"] == "0" and e["KRSID_TGID"] == str(w["pid"])
    assert f"mmap READ|EXEC PRIVATE of {mapped_file} by " in e["MESSAGE"]


def test_shared_exec_mapping_flags(
    daemon: RunningDaemon, mapped_file: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled(HOOK)
    w = mmaps(f"file:{mapped_file}:READ|WRITE|EXEC:SHARED|POPULATE")
    o = mmap_events(daemon, w)[0]
    assert o["flags"] == "SHARED|POPULATE"
    assert o["reqprot"] == "READ|WRITE|EXEC"  # writable and executable at once
    assert o["path"] == str(mapped_file)


def test_too_long_path_falls_back_to_the_name(
    daemon: RunningDaemon, tmpfs_dir: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled(HOOK)
    deep = tmpfs_dir
    for i in range(6):
        deep = deep / f"{i}-{'d' * 50}"
    deep.mkdir(parents=True)
    f = deep / f"krsid-deep-{uuid.uuid4().hex[:8]}.bin"
    f.write_bytes(b"\xc3" * 4096)
    assert len(str(f)) > 255
    w = mmaps(f"file:{f}:READ|EXEC:PRIVATE")
    o = mmap_events(daemon, w)[0]
    assert (o["path"], o["path_unavailable"], o["anonymous"]) == (f.name, True, False)


def test_anonymous_exec_mapping(daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None]) -> None:
    hook_enabled(HOOK)
    w = mmaps("anon:READ|WRITE|EXEC:PRIVATE|NORESERVE")
    events = mmap_events(daemon, w)
    assert len(events) == 1, events
    o = events[0]
    assert o["anonymous"] is True and o["path"] == "" and o["path_unavailable"] is False, o
    assert o["flags"] == "PRIVATE|ANONYMOUS|NORESERVE"
    assert o["reqprot"] == "READ|WRITE|EXEC"
    j = journal.wait_for(lambda e: True, f"KRSID_HOOK={HOOK}", f"KRSID_PID={w['tid']}")
    assert len(j) == 1 and "of anonymous memory by" in j[0]["MESSAGE"], j


def test_non_exec_mappings_are_filtered_in_kernel(
    daemon: RunningDaemon, mapped_file: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled(HOOK)
    hook = {"hook": HOOK}
    before = metric(daemon.scrape(), "krsid_events_filtered_total", **hook)
    # Two non-exec mappings (dropped in the kernel), then an exec one as the marker:
    # when the marker has arrived, the others would have too.
    w = mmaps(
        f"file:{mapped_file}:READ:PRIVATE",
        "anon:READ|WRITE:PRIVATE",
        f"file:{mapped_file}:READ|EXEC:PRIVATE",
    )
    events = mmap_events(daemon, w)
    assert [(e["reqprot"], e["path"]) for e in events] == [("READ|EXEC", str(mapped_file))]
    after = metric(daemon.scrape(), "krsid_events_filtered_total", **hook)
    assert after >= before + 2
