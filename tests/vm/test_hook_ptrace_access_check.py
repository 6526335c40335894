"""ptrace_access_check: PTRACE_ATTACH is reported, READ-mode checks are filtered, in a VM."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.vm.conftest import RunningDaemon, message_id, run_workload
from tests.vm.test_e2e import metric

pytestmark = pytest.mark.vm
MESSAGE_ID = message_id("ptrace_access_check")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process to trace: a sibling of the workload, started and ended by the test."""
    p = subprocess.Popen(["sleep", "120"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def trace(pid: int) -> dict[str, Any]:
    result = run_workload("ptrace_workload", str(pid))
    assert result["steps"] == {"read_environ": 0, "attach": 0, "detach": 0}, result
    return result


def test_ptrace_attach_is_reported_and_read_checks_are_filtered(
    daemon: RunningDaemon,
    journal: Journal,
    sleeper: subprocess.Popen[bytes],
    hook_enabled: Callable[[str], None],
) -> None:
    hook_enabled("ptrace_access_check")
    hook = {"hook": "ptrace_access_check"}
    before = metric(daemon.scrape(), "krsid_events_filtered_total", **hook)
    # The workload reads /proc/PID/environ first (a READ check: filtered with
    # attach_only), then attaches: the ATTACH event is the marker that the READ
    # check, had it been emitted, would be there too.
    w = trace(sleeper.pid)
    events = daemon.wait_events(lambda o: o["hook"] == "ptrace_access_check" and o["tgid"] == w["pid"])
    assert len(events) == 1, events
    o = events[0]
    assert o["mode"] == "ATTACH|REALCREDS"  # PTRACE_MODE_ATTACH_REALCREDS, as ptrace_attach asks
    assert (o["target_pid"], o["target_tgid"], o["target_comm"], o["target_uid"]) == (
        sleeper.pid,
        sleeper.pid,
        "sleep",
        0,
    )
    assert o["pid"] == w["pid"] and o["uid"] == 0
    after = metric(daemon.scrape(), "krsid_events_filtered_total", **hook)
    assert after >= before + 1

    j = journal.wait_for(lambda e: True, "KRSID_HOOK=ptrace_access_check", f"KRSID_TGID={w['pid']}")
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID and e["PRIORITY"] == "5"
    assert e["KRSID_TARGET_PID"] == str(sleeper.pid) and e["KRSID_TARGET_COMM"] == "sleep"
    assert e["KRSID_MODE"] == "ATTACH|REALCREDS"
    assert f"sleep[{sleeper.pid}]" in e["MESSAGE"]


def test_proc_mem_open_is_an_attach_check(
    daemon: RunningDaemon, sleeper: subprocess.Popen[bytes], hook_enabled: Callable[[str], None]
) -> None:
    """Opening another process's /proc/PID/mem asks for ATTACH access (with fs creds)."""
    hook_enabled("ptrace_access_check")
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import os; os.close(os.open('/proc/{sleeper.pid}/mem', os.O_RDONLY)); print(os.getpid())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pid = int(p.stdout)
    events = daemon.wait_events(lambda o: o["hook"] == "ptrace_access_check" and o["tgid"] == pid)
    assert [(o["mode"], o["target_pid"]) for o in events] == [("ATTACH|FSCREDS", sleeper.pid)]
