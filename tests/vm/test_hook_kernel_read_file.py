"""kernel_read_file: the kernel reading a module file (finit_module, insmod), in a VM.

The "modules" are junk files: the hook runs before the kernel parses the file,
which it then refuses (ENOEXEC): nothing is ever loaded.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.vm.conftest import RunningDaemon, message_id, run_workload

pytestmark = pytest.mark.vm
MESSAGE_ID = message_id("kernel_read_file")


def read_file_events(daemon: RunningDaemon, pid: int, count: int = 1) -> list[dict[str, Any]]:
    return daemon.wait_events(lambda o: o["hook"] == "kernel_read_file" and o["tgid"] == pid, count)


def junk_module(directory: Path) -> Path:
    path = directory / f"krsid-junk-{uuid.uuid4().hex[:12]}.ko"
    path.write_bytes(b"this is not an ELF kernel module\n" * 64)
    return path


def test_finit_module_of_a_junk_file_is_reported(
    daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None], tmp_path: Path
) -> None:
    hook_enabled("kernel_read_file")
    junk = junk_module(tmp_path)
    w = run_workload("module_workload", f"finit:{junk}")
    assert w["results"][0]["errno"] != 0  # refused after the hook: not a module
    events = read_file_events(daemon, w["pid"])
    assert len(events) == 1, events
    o = events[0]
    assert o["id"] == "MODULE"
    assert o["path"] == str(junk) and o["path_unresolved"] is False
    assert o["contents"] is True  # finit_module reads the whole file at once
    assert (o["pid"], o["uid"], o["euid"]) == (w["pid"], 0, 0)

    j = journal.wait_for(lambda e: True, "KRSID_HOOK=kernel_read_file", f"KRSID_TGID={w['pid']}")
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID and e["PRIORITY"] == "5"
    assert e["KRSID_ID"] == "MODULE" and e["KRSID_PATH"] == str(junk) and e["KRSID_CONTENTS"] == "1"
    assert e["MESSAGE"].startswith(f"kernel reads MODULE from {junk} by ")
    assert e["MESSAGE"].endswith(f"[{w['pid']}] uid=0")


def test_insmod_of_a_junk_file_is_reported(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None], tmp_path: Path
) -> None:
    hook_enabled("kernel_read_file")
    junk = junk_module(tmp_path)
    p = subprocess.Popen(["insmod", str(junk)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0, err  # kmod's insmod uses finit_module; the kernel refuses the file
    events = read_file_events(daemon, p.pid)
    assert len(events) == 1, events
    o = events[0]
    assert (o["id"], o["path"], o["comm"]) == ("MODULE", str(junk), "insmod")
