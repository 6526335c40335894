"""inode_setattr: chmod u+s, chown and timestomping (touch -d) are reported with exact
values; touch, truncate and plain chmods are dropped in the kernel; a rule can deny
adding a setuid bit. In a VM, on the test's own tmpfs (the guest's /tmp is an overlay,
where the hook runs for both layers)."""

from __future__ import annotations

import calendar
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.support.metrics import metric
from tests.vm.conftest import RunningDaemon, message_id, run_workload
from tests.vm.test_policy import Reloader

pytestmark = pytest.mark.vm
MESSAGE_ID = message_id("inode_setattr")
RWXR_XR_X = "RUSR|WUSR|XUSR|RGRP|XGRP|ROTH|XOTH"  # 0755
RW_R__R__ = "RUSR|WUSR|RGRP|ROTH"  # 0644
STOMPED = "2001-02-03 04:05:06 UTC"
STOMPED_EPOCH = calendar.timegm((2001, 2, 3, 4, 5, 6))


def new_file(tmpfs_dir: Path, name: str, mode: int) -> Path:
    d = tmpfs_dir / "bin"
    d.mkdir(exist_ok=True)
    f = d / name
    f.write_bytes(b"#!/bin/sh\n")
    f.chmod(mode)
    return f


def sh(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)


def file_id(path: Path) -> tuple[int, int, int, str]:
    """(major, minor, inode, name): each test mounts a new tmpfs, which may get the
    device number of the previous one and reuses inode numbers; the names differ."""
    st = path.stat()
    return os.major(st.st_dev), os.minor(st.st_dev), st.st_ino, path.name


def setattr_events(daemon: RunningDaemon, path: Path, count: int = 1) -> list[dict[str, Any]]:
    want = file_id(path)
    return daemon.wait_events(
        lambda o: o["hook"] == "inode_setattr" and (o["dev_major"], o["dev_minor"], o["ino"], o["file"]) == want,
        count,
    )


def assert_identity(o: dict[str, Any], path: Path) -> None:
    st = path.stat()
    assert (o["file"], o["dir"], o["ino"]) == (path.name, path.parent.name, st.st_ino)
    assert (o["dev_major"], o["dev_minor"]) == (os.major(st.st_dev), os.minor(st.st_dev))


def test_chmod_setuid_is_reported_with_old_and_new_mode(
    daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None], tmpfs_dir: Path
) -> None:
    hook_enabled("inode_setattr")
    f = new_file(tmpfs_dir, "krsid-suid", 0o755)
    old_mtime = int(f.stat().st_mtime)
    p = sh("chmod", "u+s", str(f))
    assert p.returncode == 0, p.stderr
    (o,) = setattr_events(daemon, f)
    assert (o["changes"], o["valid"]) == ("MODE_BITS", "MODE|CTIME")
    assert (o["old_mode"], o["mode"], o["added"]) == (RWXR_XR_X, "SUID|" + RWXR_XR_X, "SUID")
    assert (o["old_uid"], o["new_uid"], o["old_gid"], o["new_gid"]) == (0, 0, 0, 0)
    assert (o["atime"], o["mtime"], o["old_mtime"], o["size"], o["old_size"]) == (0, 0, old_mtime, 0, 10)
    assert_identity(o, f)
    assert (o["comm"], o["ppid"], o["action"]) == ("chmod", os.getpid(), "audit")

    j = journal.wait_for(lambda e: True, "KRSID_HOOK=inode_setattr", f"KRSID_TGID={o['tgid']}")
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID and e["PRIORITY"] == "4"
    assert (e["KRSID_ADDED"], e["KRSID_CHANGES"]) == ("SUID", "MODE_BITS")
    assert e["MESSAGE"].startswith(f"setattr MODE_BITS on bin/{f.name}: valid=MODE|CTIME mode {RWXR_XR_X}->SUID|")


def test_chown_is_reported_with_old_and_new_owner(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None], tmpfs_dir: Path
) -> None:
    hook_enabled("inode_setattr")
    f = new_file(tmpfs_dir, "krsid-chown", 0o644)
    p = sh("chown", "4242:4243", str(f))
    assert p.returncode == 0, p.stderr
    (o,) = setattr_events(daemon, f)
    assert o["changes"] == "OWNER"
    # chown asks the kernel to drop the setuid bit and file capabilities on the way (with
    # none to drop, notify_change() clears KILL_PRIV before the hook); the setgid bit
    # only where the file has one since setattr_should_drop_sgid (6.2, and backported
    # to stable kernels such as Debian's 6.1), always before.
    assert o["valid"] in ("UID|GID|CTIME|KILL_SUID", "UID|GID|CTIME|KILL_SUID|KILL_SGID"), o["valid"]
    assert (o["old_uid"], o["new_uid"], o["old_gid"], o["new_gid"]) == (0, 4242, 0, 4243)
    assert (o["old_mode"], o["mode"], o["added"]) == (RW_R__R__, RW_R__R__, "NONE")
    assert_identity(o, f)
    assert o["comm"] == "chown"


def test_timestomp_is_reported_with_explicit_times(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None], tmpfs_dir: Path
) -> None:
    hook_enabled("inode_setattr")
    f = new_file(tmpfs_dir, "krsid-stomped", 0o644)
    old_mtime = int(f.stat().st_mtime)
    p = sh("touch", "-d", STOMPED, str(f))
    assert p.returncode == 0, p.stderr
    assert int(f.stat().st_mtime) == STOMPED_EPOCH
    (o,) = setattr_events(daemon, f)
    assert o["changes"] == "TIMES_SET"
    assert o["valid"] == "ATIME|MTIME|CTIME|ATIME_SET|MTIME_SET|TIMES_SET"
    assert (o["atime"], o["mtime"], o["old_mtime"]) == (STOMPED_EPOCH, STOMPED_EPOCH, old_mtime)
    assert (o["mode"], o["added"], o["new_uid"]) == (RW_R__R__, "NONE", 0)
    assert o["comm"] == "touch"


def test_touch_truncate_and_plain_chmod_are_dropped_in_kernel(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None], tmpfs_dir: Path
) -> None:
    hook_enabled("inode_setattr")
    f = new_file(tmpfs_dir, "krsid-quiet", 0o644)
    before = metric(daemon.scrape(), "krsid_events_filtered_total", hook="inode_setattr")
    # Four changes the default leaves out, then a setgid chmod as the marker: once it
    # arrived, the others would have too.
    w = run_workload(
        "setattr_workload", f"touch:{f}", f"truncate:{f}:0", f"chmod:{f}:600", f"chown:{f}:0:0", f"chmod:{f}:2755"
    )
    assert [r["errno"] for r in w["results"]] == [0] * 5, w
    events = daemon.wait_events(lambda o: o["hook"] == "inode_setattr" and o["tgid"] == w["pid"])
    assert [(o["changes"], o["old_mode"], o["mode"], o["added"]) for o in events] == [
        ("MODE_BITS", "RUSR|WUSR", "SGID|" + RWXR_XR_X, "SGID|XUSR|RGRP|XGRP|ROTH|XOTH")
    ]
    assert (events[0]["old_size"], events[0]["valid"]) == (0, "MODE|CTIME")
    after = metric(daemon.scrape(), "krsid_events_filtered_total", hook="inode_setattr")
    assert after >= before + 4


def test_would_deny_then_deny_setuid_below_a_directory(
    daemon: RunningDaemon, policy: Reloader, hook_enabled: Callable[[str], None], tmpfs_dir: Path
) -> None:
    hook_enabled("inode_setattr")
    watched = new_file(tmpfs_dir, "krsid-suid-watched", 0o755)
    blocked = new_file(tmpfs_dir, "krsid-suid-blocked", 0o755)

    def rule(name: str, action: str) -> dict[str, Any]:
        match = {"path_prefix": str(tmpfs_dir), "fields": {"added": {"any": ["SUID", "SGID"]}}}
        return {"name": name, "hook": "inode_setattr", "action": action, "match": match}

    policy.apply(policy.with_rules(rule("suid-watch", "would_deny")))
    assert sh("chmod", "u+s", str(watched)).returncode == 0
    (o,) = setattr_events(daemon, watched)
    assert (o["action"], o["rule"], o["verdict"], o["added"]) == ("would_deny", "suid-watch", "0", "SUID")

    policy.apply(policy.with_rules(rule("suid-block", "deny")))
    p = sh("chmod", "u+s", str(blocked))
    assert p.returncode != 0 and "Operation not permitted" in p.stderr, (p.returncode, p.stderr)
    assert blocked.stat().st_mode & 0o7777 == 0o755
    assert sh("chmod", "0700", str(blocked)).returncode == 0  # adds no special bit: allowed
    (o,) = setattr_events(daemon, blocked)
    assert (o["action"], o["rule"], o["verdict"], o["added"]) == ("deny", "suid-block", "-EPERM", "SUID")
    scrape = daemon.scrape()
    assert metric(scrape, "krsid_denied_total", hook="inode_setattr", rule="suid-block") == 1
    assert metric(scrape, "krsid_would_deny_total", hook="inode_setattr", rule="suid-watch") == 1
