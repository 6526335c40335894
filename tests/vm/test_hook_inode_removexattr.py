"""inode_removexattr: `setcap -r` (security.capability removed) is reported with the
file's identity; user.* is dropped in the kernel; a rule can deny it. In a VM."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.support.metrics import metric
from tests.vm.conftest import RunningDaemon, message_id, run_workload
from tests.vm.test_hook_inode_setxattr import assert_identity, file_events, setcap, target_file
from tests.vm.test_policy import Reloader

pytestmark = pytest.mark.vm
MESSAGE_ID = message_id("inode_removexattr")


def capped_file(tmpfs_dir: Path, name: str) -> Path:
    f = target_file(tmpfs_dir, name)
    p = setcap("cap_net_raw+ep", str(f))
    assert p.returncode == 0, p.stderr
    return f


def test_setcap_remove_is_reported_with_name_and_file(
    daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None], tmpfs_dir: Path
) -> None:
    hook_enabled("inode_removexattr")
    f = capped_file(tmpfs_dir, "krsid-cap-removed")
    p = setcap("-r", str(f))
    assert p.returncode == 0, p.stderr
    assert "security.capability" not in os.listxattr(f)
    events = file_events(daemon, "inode_removexattr", f)
    assert len(events) == 1, events
    o = events[0]
    assert (o["name"], o["namespace"]) == ("security.capability", "SECURITY")
    assert_identity(o, f)
    assert (o["comm"], o["ppid"], o["uid"], o["action"]) == ("setcap", os.getpid(), 0, "audit")

    j = journal.wait_for(lambda e: True, "KRSID_HOOK=inode_removexattr", f"KRSID_TGID={o['tgid']}")
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID and e["PRIORITY"] == "4"
    st = f.stat()
    assert e["MESSAGE"] == (
        f"removexattr security.capability on bin/{f.name} "
        f"(inode {st.st_ino} on {os.major(st.st_dev)}:{os.minor(st.st_dev)}) by setcap[{o['tgid']}] uid=0"
    )


def test_trusted_removal_is_reported_and_user_namespace_dropped_in_kernel(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None], tmpfs_dir: Path
) -> None:
    hook_enabled("inode_removexattr")
    f = target_file(tmpfs_dir, "krsid-xattr-removed")
    before = metric(daemon.scrape(), "krsid_events_filtered_total", hook="inode_removexattr")
    w = run_workload(
        "xattr_workload",
        f"set:{f}:user.krsid:hello",
        f"set:{f}:trusted.overlay.krsid:y",
        f"set:{f}:trusted.krsid-test:v",
        f"remove:{f}:user.krsid",
        f"remove:{f}:trusted.overlay.krsid",  # overlayfs' own namespace: off by default
        f"remove:{f}:trusted.krsid-test",
    )
    errnos = [r["errno"] for r in w["results"]]
    # tmpfs has user.* attributes from 6.6 (EOPNOTSUPP before, e.g. 6.1).
    user_ok = errnos[0] == 0
    assert errnos[0] in (0, errno.EOPNOTSUPP) and errnos[3] == (0 if user_ok else errno.EOPNOTSUPP), w
    assert errnos[1:3] + errnos[4:] == [0, 0, 0, 0], w
    events = daemon.wait_events(lambda o: o["hook"] == "inode_removexattr" and o["tgid"] == w["pid"])
    assert [(o["name"], o["namespace"]) for o in events] == [("trusted.krsid-test", "TRUSTED")]
    assert_identity(events[0], f)
    after = metric(daemon.scrape(), "krsid_events_filtered_total", hook="inode_removexattr")
    assert after >= before + (2 if user_ok else 1)


def test_would_deny_then_deny_capability_removal_below_a_directory(
    daemon: RunningDaemon, policy: Reloader, hook_enabled: Callable[[str], None], tmpfs_dir: Path
) -> None:
    hook_enabled("inode_removexattr")
    watched = capped_file(tmpfs_dir, "krsid-cap-watched")
    kept = capped_file(tmpfs_dir, "krsid-cap-kept")

    def rule(name: str, action: str) -> dict[str, Any]:
        match = {"path_prefix": str(tmpfs_dir), "fields": {"namespace": "SECURITY"}}
        return {"name": name, "hook": "inode_removexattr", "action": action, "match": match}

    policy.apply(policy.with_rules(rule("unsetcap-watch", "would_deny")))
    assert setcap("-r", str(watched)).returncode == 0
    (o,) = file_events(daemon, "inode_removexattr", watched)
    assert (o["action"], o["rule"], o["verdict"]) == ("would_deny", "unsetcap-watch", "0")

    policy.apply(policy.with_rules(rule("unsetcap-block", "deny")))
    p = setcap("-r", str(kept))
    assert p.returncode != 0, p.stderr
    assert "security.capability" in os.listxattr(kept)  # still there
    (o,) = file_events(daemon, "inode_removexattr", kept)
    assert (o["action"], o["rule"], o["verdict"]) == ("deny", "unsetcap-block", "-EPERM")
    scrape = daemon.scrape()
    assert metric(scrape, "krsid_denied_total", hook="inode_removexattr", rule="unsetcap-block") == 1
    assert metric(scrape, "krsid_would_deny_total", hook="inode_removexattr", rule="unsetcap-watch") == 1
