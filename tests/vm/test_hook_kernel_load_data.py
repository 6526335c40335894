"""kernel_load_data: init_module() of a module image from memory, in a VM.

The image is junk: the hook runs before the kernel parses it, then the kernel
refuses it; nothing is ever loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.journald import Journal
from tests.vm.conftest import RunningDaemon, message_id, run_workload

pytestmark = pytest.mark.vm
MESSAGE_ID = message_id("kernel_load_data")


def test_init_module_from_memory_is_reported(
    daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("kernel_load_data")
    w = run_workload("module_workload", "init:4096", "init:8192")
    assert all(r["errno"] != 0 for r in w["results"]), w  # refused after the hook: not a module
    events = daemon.wait_events(lambda o: o["hook"] == "kernel_load_data" and o["tgid"] == w["pid"], 2)
    assert len(events) == 2, events
    for o in events:
        assert (o["id"], o["contents"]) == ("MODULE", True)
        assert (o["pid"], o["uid"], o["euid"]) == (w["pid"], 0, 0)
    assert events[0]["seq"] < events[1]["seq"]

    j = journal.wait_for(lambda e: True, "KRSID_HOOK=kernel_load_data", f"KRSID_TGID={w['pid']}")
    assert len(j) == 2, j
    assert all(e["MESSAGE_ID"] == MESSAGE_ID and e["KRSID_ID"] == "MODULE" for e in j)
    assert j[0]["MESSAGE"].startswith("kernel loads MODULE from memory by ")


def test_finit_module_is_not_a_memory_load(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None], tmp_path: Path
) -> None:
    """A module file goes through kernel_read_file, not kernel_load_data: a file
    load then an init_module marker from the same process give exactly one event."""
    hook_enabled("kernel_load_data")
    junk = tmp_path / "junk.ko"
    junk.write_bytes(b"not a module\n" * 100)
    w = run_workload("module_workload", f"finit:{junk}", "init:4096")
    events = daemon.wait_events(lambda o: o["hook"] == "kernel_load_data" and o["tgid"] == w["pid"])
    assert len(events) == 1, events
