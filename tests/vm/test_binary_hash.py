"""exe_sha256 on real events (issue 12, item 3), in a VM: the hash names the image the
process runs, also after its file was replaced on disk.

The process is a copy of bash on the test's tmpfs that connects to 127.0.0.1:9 (a
socket_connect event of its own, no fork: a redirection on the `:` builtin) for each
line it reads. The exec event is read before its file is hashed, so it says
"pending" (or, if the worker was quicker, already the hash); the process's later
events carry the hash.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from krsid.identity.binary_hash import superblock_dev
from tests.vm.conftest import RunningDaemon

pytestmark = pytest.mark.vm
EXEC = "bprm_check_security"
CONNECT = "socket_connect"
LOOP = "while read line; do : <>/dev/tcp/127.0.0.1/9; done 2>/dev/null"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def connect_with_hash(daemon: RunningDaemon, proc: subprocess.Popen[str], seen: int) -> dict[str, Any]:
    """Ask the process for connects until one of its events carries a hash (or says why not)."""
    assert proc.stdin is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        found = daemon.wait_events(lambda o: o["hook"] == CONNECT and o["tgid"] == proc.pid, seen + 1, timeout=10)
        assert len(found) > seen, f"no new {CONNECT} event of pid {proc.pid}"
        last = max(found, key=lambda o: int(o["seq"]))
        seen = len(found)
        if last["hash_unavailable"] != "pending":
            return last
        time.sleep(0.2)
    raise AssertionError("every event of the process still says pending")


def test_hash_names_the_running_image_also_after_the_file_is_replaced(
    daemon: RunningDaemon, tmpfs_dir: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled(EXEC)
    hook_enabled(CONNECT)
    exe = tmpfs_dir / f"krsid-hash-{uuid.uuid4().hex[:12]}"
    shutil.copy2("/bin/bash", exe)
    running = sha256_of(exe)
    proc = subprocess.Popen([str(exe), "-c", LOOP], stdin=subprocess.PIPE, text=True)
    try:
        found = daemon.wait_events(lambda o: o["hook"] == EXEC and o["path"] == str(exe))
        assert found, f"no {EXEC} event for {exe}"
        (exec_ev,) = found
        assert exec_ev["tgid"] == proc.pid
        # The exec event: the new image's hash, or "pending" (hashed after the event is read).
        assert (exec_ev["exe_sha256"], exec_ev["hash_unavailable"]) in ((running, ""), ("", "pending")), exec_ev

        first = connect_with_hash(daemon, proc, 0)
        assert first["exe"] == str(exe)
        assert (first["exe_sha256"], first["hash_unavailable"]) == (running, ""), first

        # Replace the file while the process runs it: another binary renamed over the path.
        other = tmpfs_dir / "other"
        shutil.copy2("/bin/true", other)
        replacement = sha256_of(other)
        assert replacement != running
        other.rename(exe)
        assert sha256_of(exe) == replacement
        seen = len(daemon.events(lambda o: o["hook"] == CONNECT and o["tgid"] == proc.pid))
        after = connect_with_hash(daemon, proc, seen)
        assert (after["exe_sha256"], after["hash_unavailable"]) == (running, ""), after
    finally:
        proc.kill()
        proc.wait()
    metrics = daemon.scrape()
    assert "krsid_binary_hash_files_total" in metrics


def exec_events_of(daemon: RunningDaemon, path: Path) -> list[dict[str, Any]]:
    return sorted(daemon.events(lambda o: o["hook"] == EXEC and o["path"] == str(path)), key=lambda o: int(o["seq"]))


def run_until_an_exec_event_carries_a_hash(daemon: RunningDaemon, argv: list[str], path: Path) -> list[dict[str, Any]]:
    """Run argv (a process that exits at once) until one of its new exec events for
    path carries a hash, then twice more; all exec events of path, oldest first."""
    before = len(exec_events_of(daemon, path))
    runs = 0

    def of_path(o: dict[str, Any]) -> bool:
        return bool(o["hook"] == EXEC and o["path"] == str(path))

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        subprocess.run(argv, check=True)
        runs += 1
        found = daemon.wait_events(of_path, before + runs, timeout=20)
        assert len(found) >= before + runs, f"{len(found)} exec events of {path} after {before}+{runs} runs"
        if any(o["exe_sha256"] for o in exec_events_of(daemon, path)[before:]):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"no exec event of {path} carried a hash: {exec_events_of(daemon, path)}")
    for _ in range(2):
        subprocess.run(argv, check=True)
        runs += 1
    found = daemon.wait_events(of_path, before + runs, timeout=20)
    assert len(found) == before + runs, found
    return exec_events_of(daemon, path)


@pytest.mark.parametrize("where", ["tmpfs", "overlayfs"])
def test_a_binary_run_before_carries_its_hash_on_the_exec_event(
    daemon: RunningDaemon,
    where: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    hook_enabled: Callable[[str], None],
) -> None:
    """Processes that exit at once (no later event to carry a hash): the exec event
    names the file's identity (dev, ino, size, mtime, ctime, read in the kernel), the
    first exec's file is hashed through its path while it is still that file, and
    every later exec of it carries the hash on the exec event itself. On overlayfs
    (the guest's /tmp, as in containers) stat shows the upper layer's device where
    the kernel names the overlay's: the worker checks the file's mount instead."""
    hook_enabled(EXEC)
    directory = request.getfixturevalue("tmpfs_dir") if where == "tmpfs" else tmp_path
    fs_type = subprocess.run(["stat", "-f", "-c", "%T", str(directory)], capture_output=True, text=True).stdout
    assert fs_type.strip() == where, fs_type
    exe = directory / f"krsid-true-{uuid.uuid4().hex[:12]}"
    shutil.copy2("/bin/true", exe)
    want = sha256_of(exe)
    st = exe.stat()
    events = run_until_an_exec_event_carries_a_hash(daemon, [str(exe)], exe)
    first = events[0]
    assert (first["exe_sha256"], first["hash_unavailable"]) in ((want, ""), ("", "pending")), first
    identity = [first[k] for k in ("ino", "size", "mtime_ns", "ctime_ns")]
    assert identity == [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns], first
    # The device of the file's superblock (mountinfo's): stat's own on tmpfs; on
    # overlayfs stat shows the layer's instead.
    fd = os.open(exe, os.O_RDONLY)
    try:
        sb_dev = superblock_dev(fd, "/proc/self/mountinfo")
    finally:
        os.close(fd)
    assert sb_dev is not None and (first["dev_major"], first["dev_minor"]) == (os.major(sb_dev), os.minor(sb_dev))
    assert (sb_dev == st.st_dev) == (where == "tmpfs"), (first, st.st_dev)
    hashed = next(i for i, o in enumerate(events) if o["exe_sha256"])
    # From the first hashed one on, every exec event carries the hash (the cache answers).
    assert [(o["exe_sha256"], o["hash_unavailable"]) for o in events[hashed:]] == [(want, "")] * (
        len(events) - hashed
    ), events

    # The file changed in place: a new identity, so no exec event carries the old hash.
    with open(exe, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    changed = sha256_of(exe)
    before = len(events)
    events = run_until_an_exec_event_carries_a_hash(daemon, [str(exe)], exe)
    assert {o["exe_sha256"] for o in events[before:]} <= {changed, ""}, events[before:]
    assert events[-1]["exe_sha256"] == changed
    assert events[-1]["ctime_ns"] > first["ctime_ns"]


def test_a_scripts_own_exec_event_carries_the_scripts_hash(
    daemon: RunningDaemon, tmpfs_dir: Path, hook_enabled: Callable[[str], None]
) -> None:
    """A script's first exec event names the script; its process then runs the
    interpreter, so /proc/PID/exe never names the script: the script is hashed
    through its path (verified by its identity), and its later runs carry that hash."""
    hook_enabled(EXEC)
    script = tmpfs_dir / f"krsid-script-{uuid.uuid4().hex[:12]}.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    events = run_until_an_exec_event_carries_a_hash(daemon, [str(script)], script)
    want = sha256_of(script)
    hashed = next(i for i, o in enumerate(events) if o["exe_sha256"])
    assert {o["exe_sha256"] for o in events[hashed:]} == {want}, events
