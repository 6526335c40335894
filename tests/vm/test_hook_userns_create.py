"""userns_create: creating user namespaces (unshare -U), in a VM."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.vm.conftest import RunningDaemon, message_id

pytestmark = pytest.mark.vm
MESSAGE_ID = message_id("userns_create")
NOBODY = 65534


def run(argv: list[str]) -> int:
    """Run argv to completion; its pid (setpriv and unshare exec, the pid stays)."""
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return p.pid


def userns_events(daemon: RunningDaemon, pid: int, count: int = 1) -> list[dict[str, Any]]:
    return daemon.wait_events(lambda o: o["hook"] == "userns_create" and o["tgid"] == pid, count)


def own_userns_inode() -> int:
    return os.stat("/proc/self/ns/user").st_ino


def own_cap_effective() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise AssertionError("no CapEff in /proc/self/status")


def test_unprivileged_user_namespace_is_reported(
    daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("userns_create")
    pid = run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "unshare", "--user", "true"])
    events = userns_events(daemon, pid)
    assert len(events) == 1, events
    o = events[0]
    assert (o["cred_uid"], o["cred_euid"], o["cred_gid"]) == (NOBODY, NOBODY, NOBODY)
    assert (o["uid"], o["euid"], o["comm"]) == (NOBODY, NOBODY, "unshare")
    assert o["unprivileged"] is True and o["cap_effective"] == "0x0" and o["cap_permitted"] == "0x0"
    assert (o["parent_level"], o["parent_inum"]) == (0, own_userns_inode())

    j = journal.wait_for(lambda e: True, "KRSID_HOOK=userns_create", f"KRSID_TGID={pid}")
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID and e["KRSID_CRED_UID"] == str(NOBODY) and e["KRSID_UNPRIVILEGED"] == "1"
    assert e["MESSAGE"] == (
        f"user namespace created by unshare[{pid}] uid={NOBODY} euid={NOBODY} unprivileged=yes (parent level 0)"
    )


def test_root_user_namespace_is_reported_with_its_capabilities(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("userns_create")
    pid = run(["unshare", "--user", "true"])
    events = userns_events(daemon, pid)
    assert len(events) == 1, events
    o = events[0]
    assert (o["cred_uid"], o["cred_euid"], o["uid"]) == (0, 0, 0)
    assert o["unprivileged"] is False
    assert o["cap_effective"] == hex(own_cap_effective())  # inherited from this (root) test
    assert (o["parent_level"], o["parent_inum"]) == (0, own_userns_inode())


def test_nested_user_namespace_has_its_parent_level(daemon: RunningDaemon, hook_enabled: Callable[[str], None]) -> None:
    """unshare -U -r execs a second unshare -U inside the new namespace (as its mapped
    root): two events from the same pid, the second one level deeper."""
    hook_enabled("userns_create")
    pid = run(["unshare", "--user", "--map-root-user", "unshare", "--user", "true"])
    events = userns_events(daemon, pid, 2)
    assert [o["parent_level"] for o in events] == [0, 1], events
    outer, inner = events
    assert outer["parent_inum"] == own_userns_inode() and inner["parent_inum"] != outer["parent_inum"]
    assert inner["cred_uid"] == 0  # kernel uid: root of the parent namespace maps to 0
    assert inner["unprivileged"] is False  # full capabilities inside the first namespace
