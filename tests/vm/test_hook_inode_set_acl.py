"""inode_set_acl (6.2+): a POSIX ACL granting a named user write is reported with its
entries, a read-only one is dropped in the kernel, and a rule can deny it; before 6.2
the same ACL reaches inode_setxattr, which reports it by name. In a VM.

ACLs are written as setfacl writes them (setxattr of system.posix_acl_access, built by
tests/vm/workloads/xattr_workload.py: no acl package needed). Files live on the test's
own tmpfs (tmpfs_dir; Debian's tmpfs has POSIX ACLs).
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.journald import Journal
from tests.support.metrics import metric
from tests.vm.conftest import RunningDaemon, message_id, run_workload
from tests.vm.test_policy import Reloader

pytestmark = pytest.mark.vm
HOOK = "inode_set_acl"
PROBE_UID = 4242
RW, R = 6, 4


def target_file(tmpfs_dir: Path, name: str) -> Path:
    d = tmpfs_dir / "etc"
    d.mkdir(exist_ok=True)
    f = d / name
    f.write_text("root:x:0:0::/root:/bin/sh\n")
    return f


def set_acl(path: Path, named: str) -> dict[str, Any]:
    """One ACL on path; the workload's pid and errno."""
    w = run_workload("xattr_workload", f"acl:{path}:access:{named}")
    return {"pid": w["pid"], "errno": w["results"][0]["errno"]}


def has_the_hook(daemon: RunningDaemon) -> bool:
    if HOOK not in daemon.hooks:
        pytest.skip(f"{HOOK} is not in this session's KRSID_TEST_HOOKS")
    return HOOK in daemon.attached


def test_an_acl_granting_write_is_reported_with_its_entries_and_a_read_only_one_is_not(
    daemon: RunningDaemon, journal: Journal, tmpfs_dir: Path
) -> None:
    if not has_the_hook(daemon):
        pytest.skip(f"this kernel has no {HOOK} (before 6.2): see the inode_setxattr test below")
    f = target_file(tmpfs_dir, "shadow")
    before = metric(daemon.scrape(), "krsid_events_filtered_total", hook=HOOK)
    quiet = set_acl(f, f"g{PROBE_UID}={R}")  # read-only: what journald and tmpfiles do
    loud = set_acl(f, f"u{PROBE_UID}={RW},g{PROBE_UID + 1}={R}")
    assert quiet["errno"] == 0 and loud["errno"] == 0, (quiet, loud)
    (o,) = daemon.wait_events(lambda o: o["hook"] == HOOK and o["tgid"] == loud["pid"])
    st = f.stat()
    assert (o["type"], o["entries"], o["named_users"], o["named_groups"]) == ("ACCESS", 6, 1, 1), o
    assert (o["named_perms"], o["mask_perms"]) == ("WRITE|READ", "WRITE|READ"), o
    assert (o["first_named"], o["first_named_id"], o["first_named_perms"]) == ("USER", PROBE_UID, "WRITE|READ"), o
    assert (o["file"], o["dir"], o["ino"], o["watch"]) == ("shadow", "etc", st.st_ino, ""), o
    assert (o["dev_major"], o["dev_minor"]) == (os.major(st.st_dev), os.minor(st.st_dev))
    assert (o["ppid"], o["uid"], o["action"]) == (os.getpid(), 0, "audit"), o
    assert daemon.events(lambda o: o["hook"] == HOOK and o["tgid"] == quiet["pid"]) == []
    assert metric(daemon.scrape(), "krsid_events_filtered_total", hook=HOOK) >= before + 1

    (e,) = journal.wait_for(lambda e: True, f"KRSID_HOOK={HOOK}", f"KRSID_TGID={loud['pid']}")
    assert e["MESSAGE_ID"] == message_id(HOOK) and e["PRIORITY"] == "4"
    assert (e["KRSID_NAMED_PERMS"], e["KRSID_FIRST_NAMED_ID"]) == ("WRITE|READ", str(PROBE_UID)), e


def test_any_acl_on_a_watched_file_is_reported(daemon: RunningDaemon) -> None:
    """Read access is enough to steal /etc/shadow: on a watched file every ACL counts."""
    if not has_the_hook(daemon):
        pytest.skip(f"this kernel has no {HOOK} (before 6.2)")
    watched_dir = Path(yaml.safe_load(daemon.config.read_text())["watch"]["paths"][-2])
    assert watched_dir.name == "dir", watched_dir  # the session's watched directory (conftest)
    f = watched_dir / f"acl-{uuid.uuid4().hex[:10]}"
    f.write_text("secret\n")
    try:
        w = set_acl(f, f"g{PROBE_UID}={R}")
        assert w["errno"] == 0, w
        (o,) = daemon.wait_events(lambda o: o["hook"] == HOOK and o["tgid"] == w["pid"])
    finally:
        f.unlink()
    assert (o["watch"], o["watch_level"], o["named_perms"], o["first_named"]) == (
        str(watched_dir),
        1,
        "READ",
        "GROUP",
    ), o


def test_would_deny_then_deny_write_grants_below_a_directory(
    daemon: RunningDaemon, policy: Reloader, tmpfs_dir: Path
) -> None:
    if not has_the_hook(daemon):
        pytest.skip(f"this kernel has no {HOOK} (before 6.2)")
    f = target_file(tmpfs_dir, "sudoers")

    def rule(action: str) -> dict[str, Any]:
        match = {"path_prefix": str(tmpfs_dir), "fields": {"named_perms": {"any": ["WRITE"]}}}
        return {"name": f"acl-{action}", "hook": HOOK, "action": action, "match": match}

    policy.apply(policy.with_rules(rule("would_deny")))
    first = set_acl(f, f"u{PROBE_UID}={RW}")
    policy.apply(policy.with_rules(rule("deny")))
    denied = set_acl(f, f"u{PROBE_UID + 1}={RW}")
    allowed = set_acl(f, f"u{PROBE_UID + 1}={R}")  # read-only: not matched, not reported
    assert (first["errno"], denied["errno"], allowed["errno"]) == (0, errno.EPERM, 0)
    events = daemon.wait_events(lambda o: o["hook"] == HOOK and o["tgid"] in (first["pid"], denied["pid"]), 2)
    assert [(o["action"], o["rule"], o["verdict"], o["first_named_id"]) for o in events] == [
        ("would_deny", "acl-would_deny", "0", PROBE_UID),
        ("deny", "acl-deny", "-EPERM", PROBE_UID + 1),
    ], events
    scrape = daemon.scrape()
    assert metric(scrape, "krsid_denied_total", hook=HOOK, rule="acl-deny") == 1
    assert metric(scrape, "krsid_would_deny_total", hook=HOOK, rule="acl-would_deny") == 1


def test_before_6_2_an_acl_is_reported_by_inode_setxattr(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None], tmpfs_dir: Path
) -> None:
    hook_enabled("inode_setxattr")
    if HOOK in daemon.attached:
        pytest.skip(f"this kernel has {HOOK}: ACLs no longer reach inode_setxattr")
    f = target_file(tmpfs_dir, "shadow")
    w = set_acl(f, f"u{PROBE_UID}={RW}")
    assert w["errno"] == 0, w
    (o,) = daemon.wait_events(lambda o: o["hook"] == "inode_setxattr" and o["tgid"] == w["pid"])
    assert (o["name"], o["namespace"], o["size"], o["file"]) == ("system.posix_acl_access", "SYSTEM", 44, "shadow"), o
