"""sb_mount: mount(2) and a remount are reported with source, type, target, in a VM."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.vm.conftest import RunningDaemon, message_id, run_workload

pytestmark = pytest.mark.vm
MESSAGE_ID = message_id("sb_mount")


def mount_tmpfs(source: str, target: Path) -> dict[str, Any]:
    """Mount, remount read-only and unmount; the workload undoes its own mount, and
    runs in the tests' private mount namespace."""
    result = run_workload("mount_workload", source, str(target))
    assert result["calls"] == {"mount": 0, "remount": 0, "umount": 0}, result
    return result


def test_tmpfs_mount_and_remount_are_reported(
    daemon: RunningDaemon, journal: Journal, tmp_path: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("sb_mount")
    target = tmp_path / "mnt"
    target.mkdir()
    source = f"krsid-mnt-{uuid.uuid4().hex[:12]}"
    w = mount_tmpfs(source, target)
    events = daemon.wait_events(lambda o: o["hook"] == "sb_mount" and o["tgid"] == w["pid"], 2)
    assert len(events) == 2, events
    m, r = events
    assert (m["dev_name"], m["fstype"], m["target"]) == (source, "tmpfs", str(target))
    assert m["flags"] == "NOSUID|NODEV|NOEXEC" and m["truncated"] == "NONE"
    assert (r["dev_name"], r["fstype"], r["target"]) == ("", "", str(target))  # NULL source and type
    assert r["flags"] == "RDONLY|NOSUID|NODEV|NOEXEC|REMOUNT"
    assert m["uid"] == 0 and m["pid"] == w["pid"]

    j = journal.wait_for(lambda e: True, "KRSID_HOOK=sb_mount", f"KRSID_TGID={w['pid']}", f"KRSID_DEV_NAME={source}")
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID and e["PRIORITY"] == "5"
    assert (e["KRSID_FSTYPE"], e["KRSID_TARGET"], e["KRSID_FLAGS"]) == ("tmpfs", str(target), "NOSUID|NODEV|NOEXEC")
    assert f"mount {source} on {target} type tmpfs" in e["MESSAGE"]
