"""inode_unlink: deleting a binary while it runs, in a VM.

A copy of /bin/sleep on a tmpfs of the test's own is started and then removed with
rm; an idle file removed by the same rm just before it is the case the in-kernel
filter drops (tests/vm/options/inode_unlink.yaml keeps the default all: false; the
assertions follow the session config either way).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.journald import Journal
from tests.vm.conftest import RunningDaemon, message_id
from tests.vm.test_e2e import metric

pytestmark = pytest.mark.vm
HOOK = "inode_unlink"
MESSAGE_ID = message_id("inode_unlink")


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait(30)


def all_unlinks(daemon: RunningDaemon) -> bool:
    cfg = yaml.safe_load(daemon.config.read_text())
    return bool((cfg["hooks"].get(HOOK) or {}).get("all", False))


def start_sleeper(exe: Path, procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    # Popen returns as the exec goes ahead (vfork: when the child leaves the parent's
    # memory), which can be just before /proc/PID/exe names the new image: wait for it.
    # From then on the file is write-denied.
    p = subprocess.Popen([str(exe), "30"])
    procs.append(p)
    deadline = time.monotonic() + 10
    while os.readlink(f"/proc/{p.pid}/exe") != str(exe) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.readlink(f"/proc/{p.pid}/exe") == str(exe)
    return p


def rm(*paths: Path) -> int:
    """rm unlinks its arguments in order; returns its pid (the events' tgid)."""
    p = subprocess.Popen(["rm", *map(str, paths)])
    assert p.wait(30) == 0
    return p.pid


def unlink_events(daemon: RunningDaemon, pid: int, count: int = 1) -> list[dict[str, Any]]:
    found = daemon.wait_events(lambda o: o["hook"] == HOOK and o["tgid"] == pid, count)
    return sorted(found, key=lambda o: int(o["seq"]))


def test_unlink_of_running_executable(
    daemon: RunningDaemon,
    journal: Journal,
    tmpfs_dir: Path,
    sleepers: list[subprocess.Popen[bytes]],
    hook_enabled: Callable[[str], None],
) -> None:
    hook_enabled(HOOK)
    exe = tmpfs_dir / f"krsid-sleep-{uuid.uuid4().hex[:12]}"
    shutil.copy2("/bin/sleep", exe)
    start_sleeper(exe, sleepers)
    st = exe.stat()
    pid = rm(exe)
    events = unlink_events(daemon, pid)
    assert len(events) == 1, events
    o = events[0]
    assert o["name"] == exe.name
    assert o["running"] is True and o["writecount"] == -1  # one process runs it
    assert (o["ino"], o["dev_major"], o["dev_minor"]) == (st.st_ino, os.major(st.st_dev), os.minor(st.st_dev))
    assert o["comm"] == "rm" and o["uid"] == 0

    j = journal.wait_for(lambda e: True, f"KRSID_HOOK={HOOK}", f"KRSID_TGID={pid}")
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID and e["PRIORITY"] == "4"
    assert (e["KRSID_NAME"], e["KRSID_RUNNING"], e["KRSID_INO"]) == (exe.name, "1", str(st.st_ino))
    assert f"unlink {exe.name} (running executable: yes;" in e["MESSAGE"]
    assert sleepers[0].poll() is None  # audit only: the unlink did not stop it


def test_writecount_counts_every_process_running_it(
    daemon: RunningDaemon, tmpfs_dir: Path, sleepers: list[subprocess.Popen[bytes]], hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled(HOOK)
    exe = tmpfs_dir / f"krsid-sleep-{uuid.uuid4().hex[:12]}"
    shutil.copy2("/bin/sleep", exe)
    start_sleeper(exe, sleepers)
    start_sleeper(exe, sleepers)
    o = unlink_events(daemon, rm(exe))[0]
    assert (o["name"], o["running"], o["writecount"]) == (exe.name, True, -2)


def test_unlink_of_idle_file_is_filtered_in_kernel(
    daemon: RunningDaemon, tmpfs_dir: Path, sleepers: list[subprocess.Popen[bytes]], hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled(HOOK)
    hook = {"hook": HOOK}
    idle = tmpfs_dir / f"krsid-idle-{uuid.uuid4().hex[:12]}"
    shutil.copy2("/bin/sleep", idle)  # executable, but nobody runs it
    exe = tmpfs_dir / f"krsid-sleep-{uuid.uuid4().hex[:12]}"
    shutil.copy2("/bin/sleep", exe)
    start_sleeper(exe, sleepers)
    before = metric(daemon.scrape(), "krsid_events_filtered_total", **hook)
    # The idle file first, the running one as the marker: when the marker has
    # arrived, an event for the idle file would have too.
    pid = rm(idle, exe)
    if all_unlinks(daemon):
        events = unlink_events(daemon, pid, 2)
        assert [(e["name"], e["running"]) for e in events] == [(idle.name, False), (exe.name, True)]
        assert events[0]["writecount"] == 0
        return
    events = unlink_events(daemon, pid)
    assert [e["name"] for e in events] == [exe.name]
    after = metric(daemon.scrape(), "krsid_events_filtered_total", **hook)
    assert after >= before + 1
