"""inode_file_setattr (6.17+) and its fallback file_ioctl (older kernels): chattr +i/-i
and +a/-a are reported with the file's identity, other flag changes are dropped in the
kernel, and a rule can deny making a file immutable. In a VM.

The session daemon enables inode_file_setattr; on a kernel without the hook it is
served by file_ioctl, whose events carry hook=file_ioctl and the command: every test
here runs on whichever program serves it, and checks the fields both have. Files
live on the test's own tmpfs (tmpfs_dir), which keeps immutable, append-only, nodump
and noatime flags since 6.0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.support.metrics import metric
from tests.vm.conftest import RunningDaemon, message_id, run_workload
from tests.vm.test_policy import Reloader

pytestmark = pytest.mark.vm
HOOK = "inode_file_setattr"
FALLBACK = "file_ioctl"
CHATTR = shutil.which("chattr") or "/usr/bin/chattr"
FS_XFLAG_APPEND = 0x10  # struct fsxattr's fsx_xflags: append-only


@pytest.fixture
def served(daemon: RunningDaemon) -> str:
    """The program serving inode_file_setattr in this session: the hook, or before 6.17
    its fallback (exactly one of them is attached when the hook is enabled)."""
    if HOOK not in daemon.hooks:
        pytest.skip(f"{HOOK} is not in this session's KRSID_TEST_HOOKS")
    attached = [p for p in (HOOK, FALLBACK) if p in daemon.attached]
    assert len(attached) == 1, (daemon.attached, daemon.log.read_text())
    return attached[0]


def target_file(tmpfs_dir: Path, name: str) -> Path:
    """A file one directory below the tmpfs root (so `dir` is a real name)."""
    d = tmpfs_dir / "etc"
    d.mkdir(exist_ok=True)
    f = d / name
    f.write_text("* * * * * root /tmp/.x/miner\n")
    return f


def chattr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHATTR, *args], capture_output=True, text=True, timeout=60)


def file_events(daemon: RunningDaemon, program: str, path: Path, count: int) -> list[dict[str, Any]]:
    """The program's events about this file (each test's tmpfs is a new device)."""
    st = path.stat()
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino, path.name)
    return daemon.wait_events(
        lambda o: o["hook"] == program and (o["dev_major"], o["dev_minor"], o["ino"], o["file"]) == want, count
    )


def test_immutable_and_append_only_changes_are_reported_and_other_flags_are_not(
    daemon: RunningDaemon, journal: Journal, served: str, tmpfs_dir: Path
) -> None:
    f = target_file(tmpfs_dir, "planted")
    filtered_before = metric(daemon.scrape(), "krsid_events_filtered_total", hook=served)
    # nodump and noatime first (filtered), then +i, -i, +a, -a: the last event marks
    # that the filtered ones would have arrived by then.
    for change in ("+d", "+A", "+i", "-i", "+a", "-a"):
        p = chattr(change, str(f))
        assert p.returncode == 0, (change, p.stderr)
    events = file_events(daemon, served, f, 4)
    assert [(o["immutable"], o["append_only"], o["flags"]) for o in events] == [
        ("ADDED", "UNCHANGED", "IMMUTABLE|NODUMP|NOATIME"),
        ("REMOVED", "UNCHANGED", "NODUMP|NOATIME"),
        ("UNCHANGED", "ADDED", "APPEND|NODUMP|NOATIME"),
        ("UNCHANGED", "REMOVED", "NODUMP|NOATIME"),
    ], events
    st = f.stat()
    for o in events:
        assert (o["file"], o["dir"], o["ino"]) == ("planted", "etc", st.st_ino)
        assert (o["dev_major"], o["dev_minor"]) == (os.major(st.st_dev), os.minor(st.st_dev))
        assert (o["comm"], o["ppid"], o["uid"], o["action"]) == ("chattr", os.getpid(), 0, "audit")
        if served == FALLBACK:
            assert o["cmd"] == "SETFLAGS", o
    filtered = metric(daemon.scrape(), "krsid_events_filtered_total", hook=served) - filtered_before
    assert filtered >= 2, filtered  # +d and +A (the fallback also counts every other ioctl)

    (e,) = journal.wait_for(lambda e: True, f"KRSID_HOOK={served}", f"KRSID_TGID={events[0]['tgid']}")
    assert e["MESSAGE_ID"] == message_id(served) and e["PRIORITY"] == "4"
    assert (e["KRSID_IMMUTABLE"], e["KRSID_APPEND_ONLY"], e["KRSID_FILE"]) == ("ADDED", "UNCHANGED", "planted")


def test_fssetxattr_is_reported_like_chattr(daemon: RunningDaemon, served: str, tmpfs_dir: Path) -> None:
    """xfs_io's interface: struct fsxattr, whose append bit has another value."""
    f = target_file(tmpfs_dir, "log")
    w = run_workload("fileattr_workload", f"fsx-add:{f}:{FS_XFLAG_APPEND}")
    assert w["results"] == [{"op": "fsx-add", "errno": 0}], w
    (o,) = daemon.wait_events(lambda o: o["hook"] == served and o["tgid"] == w["pid"])
    assert (o["immutable"], o["append_only"], o["flags"], o["file"]) == ("UNCHANGED", "ADDED", "APPEND", "log")
    if served == FALLBACK:
        assert o["cmd"] == "FSSETXATTR", o
    p = chattr("-a", str(f))  # the test's tmpfs goes away, but leave nothing locked
    assert p.returncode == 0, p.stderr


def test_would_deny_then_deny_making_a_file_immutable_below_a_directory(
    daemon: RunningDaemon, policy: Reloader, served: str, tmpfs_dir: Path
) -> None:
    f = target_file(tmpfs_dir, "authorized_keys")

    def rule(action: str) -> dict[str, Any]:
        match = {"path_prefix": str(tmpfs_dir), "fields": {"immutable": "ADDED"}}
        return {"name": f"chattr-{action}", "hook": HOOK, "action": action, "match": match}

    policy.apply(policy.with_rules(rule("would_deny")))
    assert chattr("+i", str(f)).returncode == 0
    assert chattr("-i", str(f)).returncode == 0
    policy.apply(policy.with_rules(rule("deny")))
    p = chattr("+i", str(f))
    assert p.returncode != 0 and "Operation not permitted" in p.stderr, (p.returncode, p.stderr)
    assert "i" not in subprocess.run(["lsattr", str(f)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert chattr("+a", str(f)).returncode == 0  # append-only is not matched by the rule
    assert chattr("-a", str(f)).returncode == 0
    events = file_events(daemon, served, f, 5)
    assert [(o["action"], o["rule"], o["verdict"], o["immutable"], o["append_only"]) for o in events] == [
        ("would_deny", "chattr-would_deny", "0", "ADDED", "UNCHANGED"),
        ("audit", "", "0", "REMOVED", "UNCHANGED"),
        ("deny", "chattr-deny", "-EPERM", "ADDED", "UNCHANGED"),
        ("audit", "", "0", "UNCHANGED", "ADDED"),
        ("audit", "", "0", "UNCHANGED", "REMOVED"),
    ], events
    scrape = daemon.scrape()
    assert metric(scrape, "krsid_denied_total", hook=served, rule="chattr-deny") == 1
    assert metric(scrape, "krsid_would_deny_total", hook=served, rule="chattr-would_deny") == 1
