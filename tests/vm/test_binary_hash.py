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
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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
