"""Process instance ids and ancestry on real exec chains (issue 12, items 1-2), in a VM.

- bash -> python3 -> binary, every link gone before krsid reads /proc: the exec event
  names its caller's image, the chain up to this test process, and ids that
  /proc/PID/stat and the boot id give again;
- pid reuse: two processes get the same pid one after the other (ns_last_pid); the
  second is a new instance and does not inherit the first one's image;
- a daemon's child: a double-forked, setsid daemon (its parents gone, reparented to
  pid 1) runs a tool: the chain is the daemon, then pid 1, as the kernel has it;
- a container-like process: in a new PID and mount namespace and a cgroup named as
  docker names its scopes: the global pid, the cgroup, unit and container id, and
  the chain through unshare back to this test.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.vm.conftest import RunningDaemon

pytestmark = pytest.mark.vm
HOOK = "bprm_check_security"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
ID_RE = re.compile(r"^([0-9a-f]{32}):(\d+):(\d+)$")


def unique_copy(tmp_path: Path, src: str) -> Path:
    exe = tmp_path / f"krsid-id-{uuid.uuid4().hex[:12]}"
    shutil.copy2(src, exe)
    return exe


def exec_of(daemon: RunningDaemon, path: Path, count: int = 1) -> list[dict[str, Any]]:
    found = daemon.wait_events(lambda o: o["hook"] == HOOK and o["path"] == str(path), count)
    assert len(found) >= count, f"no {HOOK} event for {path}"
    return sorted(found, key=lambda o: int(o["seq"]))


def start_ticks(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_bytes()
    return int(text[text.rfind(b")") + 1 :].split()[19])


def test_chain_bash_python_binary_with_every_link_short_lived(
    daemon: RunningDaemon, tmp_path: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled(HOOK)
    tool = unique_copy(tmp_path, "/bin/true")
    python = os.path.realpath(sys.executable)
    code = "import subprocess, sys; subprocess.run([sys.argv[1], 'from-python'], check=True)"
    # "; exit $?": bash forks for python3 instead of exec'ing it (its last command).
    subprocess.run(["/bin/bash", "-c", f'{python} -c "{code}" {tool}; exit $?'], check=True, timeout=60)
    (o,) = exec_of(daemon, tool)

    m = ID_RE.match(o["process_id"])
    assert m and m.group(1) == BOOT_ID and int(m.group(3)) == o["tgid"], o["process_id"]
    assert int(m.group(2)) == o["start_ns"] // TICK_NS
    assert o["exe"] == python  # the caller, python's fork, still ran python at the hook
    assert o["args"] == [str(tool), "from-python"]
    anc = o["ancestors"]
    assert o["parent_process_id"] == anc[0]["process_id"] and o["ppid"] == anc[0]["pid"]
    assert anc[0]["exe"] == python and anc[0]["args"][:2] == [python, "-c"], anc[0]
    assert anc[1]["exe"] == "/usr/bin/bash" or anc[1]["exe"].endswith("/bash"), anc[1]
    assert anc[1]["args"][:2] == ["/bin/bash", "-c"], anc[1]
    # Then this test process, live: its id is what /proc says now.
    me = anc[2]
    assert me["pid"] == os.getpid() and me["exe"] == python
    assert me["process_id"] == f"{BOOT_ID}:{start_ticks(os.getpid())}:{os.getpid()}"
    assert me["uid"] == os.getuid()
    pids = [a["pid"] for a in anc]
    assert len(set(pids)) == len(pids) and (pids[-1] == 1 or len(anc) == 10), pids  # up to pid 1 (or the depth)


def spawn_with_pid(pid: int, argv: list[str]) -> bool:
    """Fork a child that gets `pid` (via ns_last_pid) and exec argv in it; False if another
    process took the pid first."""
    for _ in range(50):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        child = os.fork()
        if child == 0:
            try:
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        os.waitpid(child, 0)
        if child == pid:
            return True
    return False


def test_pid_reuse_gives_a_new_instance_without_the_old_image(
    daemon: RunningDaemon, tmp_path: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled(HOOK)
    first, second = unique_copy(tmp_path, "/bin/true"), unique_copy(tmp_path, "/bin/true")
    # A pid that is free now (the probe child is reaped at once).
    probe = subprocess.run(["/bin/sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    pid = int(probe.stdout) + 50
    assert spawn_with_pid(pid, [str(first)]), "could not get the pid for the first process"
    assert spawn_with_pid(pid, [str(second)]), "could not get the pid back for the second process"
    (a,) = exec_of(daemon, first)
    (b,) = exec_of(daemon, second)
    assert a["tgid"] == b["tgid"] == pid
    assert a["process_id"] != b["process_id"] and a["start_ns"] < b["start_ns"]
    # The old cache keyed by pid would have named `first` as the second process's image.
    python = os.path.realpath(sys.executable)
    assert a["exe"] == python and b["exe"] == python, (a["exe"], b["exe"])
    assert a["parent_process_id"] == b["parent_process_id"] == f"{BOOT_ID}:{start_ticks(os.getpid())}:{os.getpid()}"


def test_metrics_show_the_process_table(daemon: RunningDaemon) -> None:
    text = daemon.scrape()
    entries = re.search(r"^krsid_process_table_entries (\S+)$", text, re.M)
    assert entries and float(entries.group(1)) > 10, text[-2000:]
    assert re.search(r"^krsid_process_table_evictions_total \S+$", text, re.M)


DAEMON = """
import os, subprocess, sys, time
if os.fork():
    os._exit(0)
os.setsid()
if os.fork():
    os._exit(0)
deadline = time.monotonic() + 10
while os.getppid() != 1 and time.monotonic() < deadline:  # the session leader is gone: reparented
    time.sleep(0.01)
open(sys.argv[2], "w").write(str(os.getpid()))
subprocess.run([sys.argv[1], "from-daemon"], check=True)
time.sleep(60)  # alive while the test reads the event; killed by the test
"""


def test_chain_of_a_daemons_child(daemon: RunningDaemon, tmp_path: Path, hook_enabled: Callable[[str], None]) -> None:
    hook_enabled(HOOK)
    tool = unique_copy(tmp_path, "/bin/true")
    pid_file = tmp_path / "daemon.pid"
    python = os.path.realpath(sys.executable)
    subprocess.run([python, "-c", DAEMON, str(tool), str(pid_file)], check=True, timeout=60)
    try:
        (o,) = exec_of(daemon, tool)
        daemon_pid = int(pid_file.read_text())
        anc = o["ancestors"]
        assert o["ppid"] == daemon_pid and anc[0]["pid"] == daemon_pid, anc
        assert anc[0]["exe"] == python and anc[0]["args"][:2] == [python, "-c"], anc[0]
        assert anc[0]["process_id"] == f"{BOOT_ID}:{start_ticks(daemon_pid)}:{daemon_pid}"
        assert o["parent_process_id"] == anc[0]["process_id"]
        # The kernel's parent of a reparented daemon is pid 1: the chain ends there.
        assert [a["pid"] for a in anc] == [daemon_pid, 1], anc
        assert o["exe"] == python and o["args"] == [str(tool), "from-daemon"]
    finally:
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


CONTAINER_ID = "c0ffee" + "0" * 52 + "123456"  # 64 hex digits


def test_chain_of_a_container_like_process(
    daemon: RunningDaemon, tmp_path: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled(HOOK)
    tool = unique_copy(tmp_path, "/bin/true")
    group = Path("/sys/fs/cgroup/krsid-test.slice") / f"docker-{CONTAINER_ID}.scope"
    group.mkdir(parents=True)
    try:

        def enter() -> None:
            (group / "cgroup.procs").write_text(str(os.getpid()))

        # unshare forks the namespace's pid 1 (sh), which runs the tool as its child.
        subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", f"{tool} in-container; echo $$"],
            check=True,
            timeout=60,
            preexec_fn=enter,
            capture_output=True,
        )
        (o,) = exec_of(daemon, tool)
        cgroup = f"/krsid-test.slice/docker-{CONTAINER_ID}.scope"
        assert (o["cgroup"], o["unit"], o["container_id"]) == (cgroup, f"docker-{CONTAINER_ID}.scope", CONTAINER_ID)
        assert o["args"] == [str(tool), "in-container"]
        anc = o["ancestors"]
        # Global pids throughout: sh (pid 1 in its namespace), unshare, then this test.
        assert o["ppid"] == anc[0]["pid"] != 1 and anc[0]["exe"] in ("/usr/bin/dash", "/bin/dash"), anc[0]
        assert anc[1]["exe"] == "/usr/bin/unshare" and anc[1]["args"][:2] == ["unshare", "--pid"], anc[1]
        assert anc[2]["pid"] == os.getpid(), anc[2]
        assert o["tgid"] != 2 and o["process_id"].endswith(f":{o['tgid']}")
    finally:
        for d in (group, group.parent):
            for _ in range(50):  # the cgroup empties once its processes are reaped
                with contextlib.suppress(OSError):
                    d.rmdir()
                    break
                time.sleep(0.1)
