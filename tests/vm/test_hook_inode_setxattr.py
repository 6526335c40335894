"""inode_setxattr: setcap (security.capability) and trusted.* are reported with the
file's identity; user.* is dropped in the kernel; a rule can deny setcap. In a VM.

Files live on the test's own tmpfs (tmpfs_dir): on the guest's overlay /tmp the
hook would run twice (overlay, then its upper layer).
"""

from __future__ import annotations

import errno
import os
import shutil
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
MESSAGE_ID = message_id("inode_setxattr")
SETCAP = shutil.which("setcap") or "/usr/sbin/setcap"
CAP_V2_SIZE = 20  # struct vfs_cap_data, revision 2: what setcap writes outside a user namespace


def target_file(tmpfs_dir: Path, name: str = "krsid-cap-target") -> Path:
    """A regular file one directory below the tmpfs root (so `dir` is a real name)."""
    d = tmpfs_dir / "bin"
    d.mkdir(exist_ok=True)
    f = d / name
    f.write_bytes(b"\x7fELF not really")
    return f


def setcap(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SETCAP, *args], capture_output=True, text=True, timeout=60)


def file_events(daemon: RunningDaemon, hook: str, path: Path, count: int = 1) -> list[dict[str, Any]]:
    """The hook's events about this file: each test's tmpfs reuses inode numbers, its device is new."""
    st = path.stat()
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino, path.name)
    return daemon.wait_events(
        lambda o: o["hook"] == hook and (o["dev_major"], o["dev_minor"], o["ino"], o["file"]) == want, count
    )


def assert_identity(o: dict[str, Any], path: Path) -> None:
    st = path.stat()
    assert (o["file"], o["dir"], o["ino"]) == (path.name, path.parent.name, st.st_ino)
    assert (o["dev_major"], o["dev_minor"]) == (os.major(st.st_dev), os.minor(st.st_dev))


def test_setcap_is_reported_with_name_size_and_file(
    daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None], tmpfs_dir: Path
) -> None:
    hook_enabled("inode_setxattr")
    f = target_file(tmpfs_dir)
    p = setcap("cap_net_raw+ep", str(f))
    assert p.returncode == 0, p.stderr
    events = file_events(daemon, "inode_setxattr", f)
    assert len(events) == 1, events
    o = events[0]
    assert (o["name"], o["namespace"], o["size"], o["flags"]) == (
        "security.capability",
        "SECURITY",
        CAP_V2_SIZE,
        "NONE",
    )
    assert_identity(o, f)
    assert (o["comm"], o["ppid"], o["uid"], o["action"]) == ("setcap", os.getpid(), 0, "audit")

    j = journal.wait_for(lambda e: True, "KRSID_HOOK=inode_setxattr", f"KRSID_TGID={o['tgid']}")
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID and e["PRIORITY"] == "4"
    assert (e["KRSID_NAME"], e["KRSID_NAMESPACE"], e["KRSID_SIZE"]) == ("security.capability", "SECURITY", "20")
    st = f.stat()
    expected = (
        f"setxattr security.capability (20 bytes, NONE) on bin/{f.name} "
        f"(inode {st.st_ino} on {os.major(st.st_dev)}:{os.minor(st.st_dev)}) by setcap[{o['tgid']}] uid=0"
    )
    assert e["MESSAGE"] == expected


def test_trusted_is_reported_and_user_namespace_dropped_in_kernel(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None], tmpfs_dir: Path
) -> None:
    hook_enabled("inode_setxattr")
    f = target_file(tmpfs_dir, "krsid-xattr-target")
    before = metric(daemon.scrape(), "krsid_events_filtered_total", hook="inode_setxattr")
    # user.* and trusted.overlay.* first (filtered), then trusted.* as the marker:
    # once it arrived, the others would have too.
    value = "twelve-bytes"
    w = run_workload(
        "xattr_workload",
        f"set:{f}:user.krsid:hello",
        f"set:{f}:trusted.overlay.krsid:y",  # overlayfs' own namespace: off by default
        f"set:{f}:trusted.krsid-test:{value}",
    )
    errnos = [r["errno"] for r in w["results"]]
    # tmpfs has user.* attributes from 6.6 (EOPNOTSUPP before, e.g. 6.1).
    assert errnos[0] in (0, errno.EOPNOTSUPP) and errnos[1:] == [0, 0], w
    events = daemon.wait_events(lambda o: o["hook"] == "inode_setxattr" and o["tgid"] == w["pid"])
    assert [(o["name"], o["namespace"], o["size"]) for o in events] == [("trusted.krsid-test", "TRUSTED", len(value))]
    assert_identity(events[0], f)
    after = metric(daemon.scrape(), "krsid_events_filtered_total", hook="inode_setxattr")
    assert after >= before + (2 if errnos[0] == 0 else 1)


def test_would_deny_then_deny_setcap_below_a_directory(
    daemon: RunningDaemon, policy: Reloader, hook_enabled: Callable[[str], None], tmpfs_dir: Path
) -> None:
    hook_enabled("inode_setxattr")
    f = target_file(tmpfs_dir, "krsid-cap-denied")

    def rule(name: str, action: str) -> dict[str, Any]:
        match = {"path_prefix": str(tmpfs_dir), "fields": {"capability": True, "namespace": "SECURITY"}}
        return {"name": name, "hook": "inode_setxattr", "action": action, "match": match}

    policy.apply(policy.with_rules(rule("setcap-watch", "would_deny")))
    assert setcap("cap_net_raw+ep", str(f)).returncode == 0
    (o,) = file_events(daemon, "inode_setxattr", f)
    assert (o["action"], o["rule"], o["verdict"], o["name"]) == (
        "would_deny",
        "setcap-watch",
        "0",
        "security.capability",
    )

    policy.apply(policy.with_rules(rule("setcap-block", "deny")))
    p = setcap("cap_sys_admin+ep", str(f))
    assert p.returncode != 0 and "Operation not permitted" in p.stderr, (p.returncode, p.stderr)
    events = file_events(daemon, "inode_setxattr", f, 2)
    assert [(o["action"], o["rule"], o["verdict"]) for o in events] == [
        ("would_deny", "setcap-watch", "0"),
        ("deny", "setcap-block", "-EPERM"),
    ]
    # trusted.* on the same file is not matched by the rule (capability: false).
    w = run_workload("xattr_workload", f"set:{f}:trusted.krsid-test:x")
    assert w["results"][0]["errno"] == 0, w
    scrape = daemon.scrape()
    assert metric(scrape, "krsid_denied_total", hook="inode_setxattr", rule="setcap-block") == 1
    assert metric(scrape, "krsid_would_deny_total", hook="inode_setxattr", rule="setcap-watch") == 1
