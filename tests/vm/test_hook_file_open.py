"""file_open: write opens of /proc/PID/mem and opens of sensitive paths, in a VM.

The session config (tests/vm/options/file_open.yaml) lists the default sensitive
paths plus SECRET, a file on a tmpfs this module mounts for itself.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from krsid.kernel.btf import Btf
from tests.support.btf import mnt_namespace_ns_first
from tests.support.journald import Journal
from tests.vm.conftest import RunningDaemon, message_id, run_workload
from tests.vm.test_e2e import metric

pytestmark = pytest.mark.vm
MESSAGE_ID = message_id("file_open")
SECRET_DIR = Path("/tmp/krsid-test-file-open")  # listed in tests/vm/options/file_open.yaml
SECRET = SECRET_DIR / "secret"


def open_files(*actions: str) -> dict[str, Any]:
    """Run the workload as a child of this process (so {ppid} is the test's pid)."""
    result = run_workload("open_workload", *actions)
    assert all(o["errno"] == 0 for o in result["opens"]), result  # audit only: nothing denied
    return result


def open_events(daemon: RunningDaemon, pid: int, count: int = 1) -> list[dict[str, Any]]:
    return daemon.wait_events(lambda o: o["hook"] == "file_open" and o["tgid"] == pid, count)


@pytest.fixture
def secret_dir() -> Iterator[Path]:
    """SECRET_DIR as a tmpfs of this test's own (the mount stays in the tests' mount
    namespace), holding SECRET, an unlisted file and a same-named file elsewhere."""
    SECRET_DIR.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "krsid-test-file-open", str(SECRET_DIR)], check=True)
    try:
        SECRET.write_text("not really secret\n")
        (SECRET_DIR / "other").write_text("unlisted\n")
        (SECRET_DIR / "sub").mkdir()
        (SECRET_DIR / "sub" / "secret").write_text("same name, other directory\n")
        yield SECRET_DIR
    finally:
        subprocess.run(["umount", str(SECRET_DIR)], check=False)
        SECRET_DIR.rmdir()


def test_child_writing_parents_proc_mem_is_reported(
    daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("file_open")
    w = open_files("w:/proc/{ppid}/mem")
    me = os.getpid()
    assert w["ppid"] == me
    events = open_events(daemon, w["pid"])
    assert len(events) == 1, events
    o = events[0]
    assert o["reason"] == "PROC_MEM_WRITE"
    assert o["target_pid"] == me and o["target_self"] is False
    assert o["path"] == f"/proc/{me}/mem"
    assert o["access"] == "WRONLY" and o["mode"] == "WRITE"
    assert o["flags"].split("|")[0] == "WRONLY"
    assert (o["pid"], o["ppid"], o["uid"]) == (w["pid"], me, 0)

    j = journal.wait_for(lambda e: True, "KRSID_HOOK=file_open", f"KRSID_TGID={w['pid']}")
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID and e["PRIORITY"] == "4"
    assert e["KRSID_REASON"] == "PROC_MEM_WRITE" and e["KRSID_TARGET_PID"] == str(me)
    assert e["KRSID_TARGET_SELF"] == "0"
    assert e["KRSID_PATH"] == f"/proc/{me}/mem"
    assert f"/proc/{me}/mem" in e["MESSAGE"]


def test_read_open_of_proc_mem_is_filtered_in_kernel(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("file_open")
    hook = {"hook": "file_open"}
    before = metric(daemon.scrape(), "krsid_events_filtered_total", **hook)
    # Read-only first (filtered in the kernel), then a write open of its own memory as
    # the marker: when the marker has arrived, the read open would have too.
    w = open_files("r:/proc/self/mem", "r:/proc/{pid}/mem", "w:/proc/self/mem")
    events = open_events(daemon, w["pid"])
    assert len(events) == 1, events
    o = events[0]
    assert o["reason"] == "PROC_MEM_WRITE" and o["mode"] == "WRITE"
    assert o["target_pid"] == w["pid"] and o["target_self"] is True
    assert o["path"] == f"/proc/{w['pid']}/mem"  # /proc/self resolved
    after = metric(daemon.scrape(), "krsid_events_filtered_total", **hook)
    assert after >= before + 2


def test_sensitive_path_open_is_reported(
    daemon: RunningDaemon, journal: Journal, secret_dir: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("file_open")
    w = open_files(f"r:{SECRET}", f"wa:{SECRET}", f"wct:{SECRET}")
    events = open_events(daemon, w["pid"], 3)
    assert len(events) == 3, events
    r, wa, wct = events
    assert r["reason"] == wa["reason"] == wct["reason"] == "SENSITIVE_PATH"
    assert r["path"] == wa["path"] == wct["path"] == str(SECRET)
    assert r["access"] == "RDONLY" and r["mode"] == "READ"
    assert "WRONLY" not in r["flags"] and "RDWR" not in r["flags"]
    assert wa["access"] == "WRONLY" and wa["mode"] == "WRITE"
    assert {"WRONLY", "APPEND"} <= set(wa["flags"].split("|"))
    assert {"WRONLY", "CREAT", "TRUNC"} <= set(wct["flags"].split("|"))  # not yet stripped at this hook
    assert r["target_pid"] == 0 and r["target_self"] is False

    j = journal.wait_for(lambda e: True, "KRSID_HOOK=file_open", f"KRSID_TGID={w['pid']}", f"KRSID_PATH={SECRET}")
    assert len(j) == 3, j
    assert sorted(e["KRSID_ACCESS"] for e in j) == ["RDONLY", "WRONLY", "WRONLY"]
    assert all(e["KRSID_REASON"] == "SENSITIVE_PATH" for e in j)


def test_default_sensitive_paths_are_reported(daemon: RunningDaemon, hook_enabled: Callable[[str], None]) -> None:
    hook_enabled("file_open")
    w = open_files("r:/etc/shadow", "r:/etc/gshadow")
    events = open_events(daemon, w["pid"], 2)
    assert [(o["reason"], o["path"], o["access"]) for o in events] == [
        ("SENSITIVE_PATH", "/etc/shadow", "RDONLY"),
        ("SENSITIVE_PATH", "/etc/gshadow", "RDONLY"),
    ], events


def test_overlayfs_backing_open_is_not_reported(
    daemon: RunningDaemon, secret_dir: Path, hook_enabled: Callable[[str], None]
) -> None:
    """overlayfs opens the real file underneath a second time (a "backing file"), whose
    path is relative to the lower layer's root. With a lower layer that holds
    tmp/krsid-test-file-open/secret, that inner open's path is SECRET: it must not be
    reported (the user's open, of merged/..., is not listed)."""
    hook_enabled("file_open")
    lower = secret_dir / "lower"
    inner = lower / SECRET.relative_to("/")
    inner.parent.mkdir(parents=True)
    inner.write_text("in the lower layer\n")
    for d in ("upper", "work", "merged"):
        (secret_dir / d).mkdir()
    merged = secret_dir / "merged"
    opts = f"lowerdir={lower},upperdir={secret_dir / 'upper'},workdir={secret_dir / 'work'}"
    subprocess.run(["mount", "-t", "overlay", "krsid-test-overlay", "-o", opts, str(merged)], check=True)
    try:
        seen = merged / SECRET.relative_to("/")
        w = open_files(f"r:{seen}", f"r:{SECRET}")  # the second open is the marker
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    events = open_events(daemon, w["pid"])
    assert [o["path"] for o in events] == [str(SECRET)], events


def test_unlisted_files_are_filtered_in_kernel(
    daemon: RunningDaemon, secret_dir: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("file_open")
    hook = {"hook": "file_open"}
    before = metric(daemon.scrape(), "krsid_events_filtered_total", **hook)
    # An unlisted name (dropped at the basename lookup), the listed name in another
    # directory (dropped at the full-path lookup), then the listed file as the marker.
    w = open_files(f"r:{secret_dir / 'other'}", f"r:{secret_dir / 'sub' / 'secret'}", f"r:{SECRET}")
    events = open_events(daemon, w["pid"])
    assert [o["path"] for o in events] == [str(SECRET)]
    after = metric(daemon.scrape(), "krsid_events_filtered_total", **hook)
    assert after >= before + 2


# The inode numbers of the initial namespaces (include/linux/proc_ns.h, PROC_*_INIT_INO).
INIT_NS = {"ipc": 0xEFFFFFFF, "uts": 0xEFFFFFFE, "cgroup": 0xEFFFFFFB}


def test_entering_the_hosts_namespaces_from_outside_them_is_reported(
    daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None]
) -> None:
    """`nsenter -t 1` from new uts, ipc and cgroup namespaces (a container's) opens the
    host's /proc/1/ns files first: file_open NS_ENTER, one per namespace, named by the
    namespace (d_path of a namespace file). The same nsenter from the host's own
    namespaces enters nothing new and is not reported."""
    hook_enabled("file_open")
    kinds = ("--uts", "--ipc", "--cgroup")
    at_home = subprocess.run(["nsenter", "-t", "1", *kinds, "true"], capture_output=True, text=True)
    assert at_home.returncode == 0, at_home.stderr
    p = subprocess.Popen(["unshare", *kinds, "--", "nsenter", "-t", "1", *kinds, "true"], stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    events = open_events(daemon, p.pid, 3)
    assert sorted((o["reason"], o["path"], o["access"]) for o in events) == sorted(
        ("NS_ENTER", f"{kind}:[{ino}]", "RDONLY") for kind, ino in INIT_NS.items()
    ), events
    assert all(o["comm"] == "nsenter" and o["watch"] == "" for o in events), events
    # Same lane, in order: the nsenter from the host's namespaces ran first.
    assert (
        daemon.events(
            lambda o: (
                o["hook"] == "file_open"
                and o.get("reason") == "NS_ENTER"
                and o["comm"] == "nsenter"
                and o["tgid"] != p.pid
            )
        )
        == []
    )

    (j,) = journal.wait_for(
        lambda e: e.get("KRSID_PATH") == f"uts:[{INIT_NS['uts']}]", "KRSID_HOOK=file_open", f"KRSID_TGID={p.pid}"
    )
    assert (j["MESSAGE_ID"], j["KRSID_REASON"]) == (MESSAGE_ID, "NS_ENTER")


def test_entering_the_hosts_pid_and_time_namespaces_is_judged_by_those_children_get(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None]
) -> None:
    """unshare(CLONE_NEWPID | CLONE_NEWTIME) changes only the namespaces the caller's
    children get; nsenter's setns(2) into the host's changes them back. So those are
    what file_open compares with (pid_ns_for_children, time_ns_for_children): without
    a fork, unshare's nsenter is still in the host's pid and time namespaces itself,
    and is reported. The user namespace has no such case (file_open.c: NS_ENTER)."""
    hook_enabled("file_open")
    kinds = ("--pid", "--time")
    p = subprocess.Popen(["unshare", *kinds, "--", "nsenter", "-t", "1", *kinds, "true"], stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    events = open_events(daemon, p.pid, 2)
    assert sorted((o["reason"], o["path"], o["comm"]) for o in events) == [
        ("NS_ENTER", "pid:[4026531836]", "nsenter"),
        ("NS_ENTER", "time:[4026531834]", "nsenter"),
    ], events


def test_entering_pid1s_mount_and_network_namespaces_is_reported(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None]
) -> None:
    """PID 1's mount and network namespaces have no fixed inode numbers: file_open.c
    finds PID 1 from the caller's pid and reads them. `nsenter -t 1 --mount --net`
    from new ones, the usual container escape, gives one NS_ENTER each. Run from PID
    1's own namespaces, nsenter enters nothing new and is not reported: a first
    nsenter takes the caller there (reported if the test runs outside them) and execs
    the second. Nor is entering a container's namespaces, whose inode numbers are
    above the initial ones. With kernel headers file_open.c assumes that struct
    mnt_namespace begins with its ns_common: checked here in this kernel's BTF."""
    hook_enabled("file_open")
    assert mnt_namespace_ns_first(Btf.load())
    kinds = ("--mount", "--net")
    pid1 = {kind: os.stat(f"/proc/1/ns/{kind}").st_ino for kind in ("mnt", "net")}
    p = subprocess.Popen(["unshare", *kinds, "--", "nsenter", "-t", "1", *kinds, "true"], stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    events = open_events(daemon, p.pid, 2)
    assert sorted((o["reason"], o["path"], o["comm"]) for o in events) == [
        ("NS_ENTER", f"{kind}:[{ino}]", "nsenter") for kind, ino in sorted(pid1.items())
    ], events

    home = subprocess.Popen(["nsenter", "-t", "1", *kinds, "--", "nsenter", "-t", "1", *kinds, "true"])
    assert home.wait(timeout=60) == 0
    outside = sorted(f"{k}:[{ino}]" for k, ino in pid1.items() if os.stat(f"/proc/self/ns/{k}").st_ino != ino)
    # Entering a container's namespaces (a runtime's exec) is not entering the host's.
    container = subprocess.Popen(["unshare", "--uts", *kinds, "--", "sleep", "60"])
    try:
        deadline = time.monotonic() + 30
        while os.stat(f"/proc/{container.pid}/ns/uts").st_ino == os.stat("/proc/self/ns/uts").st_ino:
            assert time.monotonic() < deadline, "unshare did not make its namespaces"
            time.sleep(0.05)
        runtime = subprocess.Popen(["nsenter", "-t", str(container.pid), "--uts", *kinds, "true"])
        assert runtime.wait(timeout=60) == 0
    finally:
        container.kill()
        container.wait()
    # Same lane, in order: a later marker's event means those before would have arrived.
    marker = subprocess.Popen(["unshare", "--net", "--", "nsenter", "-t", "1", "--net", "true"])
    assert marker.wait(timeout=60) == 0
    open_events(daemon, marker.pid, 1)
    seen = daemon.events(lambda o: o["hook"] == "file_open" and o["tgid"] == home.pid)
    assert sorted(o["path"] for o in seen) == outside, seen
    assert daemon.events(lambda o: o["hook"] == "file_open" and o["tgid"] == runtime.pid) == []
