"""bpf: the bpf() syscall (program loads, map creation), in a VM.

The workload issues raw bpf() syscalls through ctypes: a socket filter "r0 = 0;
exit" and an array map, each with a name unique to the test; it closes the fds
before exiting, so nothing stays loaded.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.vm.conftest import RunningDaemon, message_id, run_workload
from tests.vm.test_e2e import metric

pytestmark = pytest.mark.vm
MESSAGE_ID = message_id("bpf")


def bpf_events(daemon: RunningDaemon, pid: int, count: int = 1) -> list[dict[str, Any]]:
    return daemon.wait_events(lambda o: o["hook"] == "bpf" and o["tgid"] == pid, count)


def unique_name() -> str:
    return f"krsid_{uuid.uuid4().hex[:8]}"  # BPF object names hold 15 bytes


def test_prog_load_is_reported_with_type_and_name(
    daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("bpf")
    name = unique_name()
    w = run_workload("bpf_workload", f"prog:{name}")
    assert w["results"][0]["rc"] >= 0, w  # audit only: the load succeeded
    events = bpf_events(daemon, w["pid"])
    assert len(events) == 1, events
    o = events[0]
    assert (o["cmd"], o["prog_type"], o["name"]) == ("PROG_LOAD", "SOCKET_FILTER", name)
    assert (o["insn_cnt"], o["size"], o["map_type"]) == (2, 128, "UNSPEC")
    assert (o["pid"], o["uid"]) == (w["pid"], 0)

    j = journal.wait_for(lambda e: True, "KRSID_HOOK=bpf", f"KRSID_TGID={w['pid']}")
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID and e["PRIORITY"] == "5"
    assert (e["KRSID_CMD"], e["KRSID_PROG_TYPE"], e["KRSID_NAME"]) == ("PROG_LOAD", "SOCKET_FILTER", name)
    assert e["MESSAGE"].startswith(f"bpf PROG_LOAD prog_type=SOCKET_FILTER map_type=UNSPEC name={name} by ")


def test_map_create_is_reported_with_type_and_name(daemon: RunningDaemon, hook_enabled: Callable[[str], None]) -> None:
    hook_enabled("bpf")
    name = unique_name()
    w = run_workload("bpf_workload", f"map:{name}")
    assert w["results"][0]["rc"] >= 0, w
    events = bpf_events(daemon, w["pid"])
    assert len(events) == 1, events
    o = events[0]
    assert (o["cmd"], o["map_type"], o["name"], o["max_entries"]) == ("MAP_CREATE", "ARRAY", name, 3)
    assert o["prog_type"] == "UNSPEC"


def test_other_commands_are_dropped_in_kernel(daemon: RunningDaemon, hook_enabled: Callable[[str], None]) -> None:
    hook_enabled("bpf")
    before = daemon.scrape()
    name = unique_name()
    # PROG_GET_NEXT_ID first (dropped by the default filter), then a PROG_LOAD as a
    # marker that the pipeline has caught up: when it arrives, the first is not there.
    w = run_workload("bpf_workload", "nextid", "nextid", f"prog:{name}")
    events = bpf_events(daemon, w["pid"])
    assert [(o["cmd"], o["name"]) for o in events] == [("PROG_LOAD", name)]
    after = daemon.scrape()
    assert metric(after, "krsid_events_filtered_total", hook="bpf") >= (
        metric(before, "krsid_events_filtered_total", hook="bpf") + 2
    )


def test_the_daemons_own_bpf_calls_are_not_reported(daemon: RunningDaemon, hook_enabled: Callable[[str], None]) -> None:
    """krsid loads and attaches its other programs after this one is attached, and
    reads its maps at every scrape: its daemon_tgid option ignore_tgid drops them."""
    hook_enabled("bpf")
    daemon.scrape()
    marker = unique_name()
    w = run_workload("bpf_workload", f"prog:{marker}")
    assert bpf_events(daemon, w["pid"])  # the pipeline has caught up
    own = daemon.events(lambda o: o["hook"] == "bpf" and o["tgid"] == daemon.proc.pid)
    assert own == []
