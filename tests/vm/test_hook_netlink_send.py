"""netlink_send: audit configuration changes (auditctl rule add/delete, AUDIT_SET) are
reported with the request's fields; audit queries and other netlink traffic are dropped
in the kernel; a rule can deny disabling audit. In a VM (its audit state is thrown away
with it; the tests restore what they change anyway)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.support.metrics import metric
from tests.vm.conftest import RunningDaemon, message_id, run_workload
from tests.vm.test_policy import Reloader

pytestmark = pytest.mark.vm
MESSAGE_ID = message_id("netlink_send")
COMM = "krsid-audit"
AUDITCTL = shutil.which("auditctl") or "/usr/sbin/auditctl"
RULE = ["always,exit", "-F", "arch=b64", "-S", "ptrace", "-k", "krsid-test"]
STATUS_ENABLED, STATUS_BACKLOG_LIMIT = 0x1, 0x10
KERNEL_BACKLOG_LIMIT = 64  # the kernel's default (audit_backlog_limit)


def audit(*ops: str, comm: str = COMM) -> dict[str, Any]:
    return run_workload("audit_workload", comm, *ops)


def audit_set(mask: int, enabled: int = 0, backlog_limit: int = 0) -> str:
    return f"set:{mask}:{enabled}:0:0:0:{backlog_limit}"


def netlink_events(daemon: RunningDaemon, pid: int, count: int = 1) -> list[dict[str, Any]]:
    return daemon.wait_events(lambda o: o["hook"] == "netlink_send" and o["tgid"] == pid, count)


@pytest.fixture
def policy(daemon: RunningDaemon, hook_enabled: Callable[[str], None]) -> Iterator[Reloader]:
    hook_enabled("netlink_send")
    with Reloader(daemon) as r:
        yield r


def test_auditctl_rule_add_and_delete_are_reported(
    daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("netlink_send")
    if not os.path.exists(AUDITCTL):
        pytest.fail("auditctl is missing: .ci/install-deps installs auditd for the VM tests")
    for flag in ("-a", "-d"):
        p = subprocess.run([AUDITCTL, flag, *RULE], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
    events = daemon.wait_events(
        lambda o: o["hook"] == "netlink_send" and o["comm"] == "auditctl" and o["ppid"] == os.getpid(), 2
    )
    assert [(o["protocol"], o["msg_type"], o["rule_list"], o["rule_action"]) for o in events] == [
        ("AUDIT", "ADD_RULE", "EXIT", "ALWAYS"),
        ("AUDIT", "DEL_RULE", "EXIT", "ALWAYS"),
    ]
    # -F arch=b64 and -k are fields (-S is the rule's syscall mask); struct
    # audit_rule_data is 1040 bytes, then the key, after the 16-byte netlink header;
    # libaudit sends NLMSG_SPACE() of that: rounded up to 4 bytes.
    rule_len = (16 + 1040 + len("krsid-test") + 3) & ~3
    assert [(o["rule_fields"], o["msg_len"]) for o in events] == [(2, rule_len)] * 2
    assert all((o["status_mask"], o["enabled"], o["backlog_limit"]) == ("NONE", 0, 0) for o in events)

    j = journal.wait_for(lambda e: True, "KRSID_HOOK=netlink_send", f"KRSID_TGID={events[0]['tgid']}")
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID and e["PRIORITY"] == "4"
    assert (e["KRSID_MSG_TYPE"], e["KRSID_RULE_LIST"], e["KRSID_RULE_FIELDS"]) == ("ADD_RULE", "EXIT", "2")
    assert e["MESSAGE"].startswith(f"netlink AUDIT ADD_RULE ({rule_len} bytes) status_mask=NONE enabled=0 ")
    assert e["MESSAGE"].endswith(f" rule=EXIT/ALWAYS/2 fields by auditctl[{events[0]['tgid']}] uid=0")


def test_audit_set_is_reported_and_queries_and_route_are_dropped(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("netlink_send")
    before = metric(daemon.scrape(), "krsid_events_filtered_total", hook="netlink_send")
    w = audit(
        "get",
        "route",
        audit_set(STATUS_BACKLOG_LIMIT, backlog_limit=8192),
        audit_set(STATUS_BACKLOG_LIMIT, backlog_limit=KERNEL_BACKLOG_LIMIT),
    )
    assert [(r["errno"], r["ack"]) for r in w["results"]] == [(0, 0), (0, None), (0, 0), (0, 0)], w
    events = netlink_events(daemon, w["pid"], 2)
    assert [(o["msg_type"], o["status_mask"], o["backlog_limit"]) for o in events] == [
        ("SET", "BACKLOG_LIMIT", 8192),
        ("SET", "BACKLOG_LIMIT", KERNEL_BACKLOG_LIMIT),
    ]
    o = events[0]
    assert (o["protocol"], o["msg_len"], o["size"], o["msg_flags"]) == ("AUDIT", 60, 60, "0x5")
    assert (o["enabled"], o["failure"], o["audit_pid"], o["rate_limit"]) == (0, 0, 0, 0)
    assert (o["rule_list"], o["rule_action"], o["rule_fields"]) == ("USER", "NEVER", 0)
    assert (o["comm"], o["uid"], o["action"]) == (COMM, 0, "audit")
    after = metric(daemon.scrape(), "krsid_events_filtered_total", hook="netlink_send")
    assert after >= before + 2  # AUDIT_GET and the route dump


def test_would_deny_then_deny_disabling_audit(daemon: RunningDaemon, policy: Reloader) -> None:
    def rule(name: str, action: str) -> dict[str, Any]:
        fields = {"protocol": "AUDIT", "msg_type": "SET", "status_mask": {"any": ["ENABLED"]}, "enabled": 0}
        return {"name": name, "hook": "netlink_send", "action": action, "match": {"comm": COMM, "fields": fields}}

    disable = audit_set(STATUS_ENABLED, enabled=0)
    policy.apply(policy.with_rules(rule("audit-off-watch", "would_deny")))
    w = audit(disable)
    assert (w["results"][0]["errno"], w["results"][0]["ack"]) == (0, 0), w
    (o,) = netlink_events(daemon, w["pid"])
    assert (o["action"], o["rule"], o["verdict"]) == ("would_deny", "audit-off-watch", "0")
    assert (o["msg_type"], o["status_mask"], o["enabled"]) == ("SET", "ENABLED", 0)

    policy.apply(policy.with_rules(rule("audit-off-block", "deny")))
    w = audit(disable, audit_set(STATUS_BACKLOG_LIMIT, backlog_limit=KERNEL_BACKLOG_LIMIT))
    assert [r["errno"] for r in w["results"]] == [errno.EPERM, 0], w
    events = netlink_events(daemon, w["pid"], 2)
    assert [(o["action"], o["rule"], o["verdict"], o["status_mask"]) for o in events] == [
        ("deny", "audit-off-block", "-EPERM", "ENABLED"),
        ("audit", "", "0", "BACKLOG_LIMIT"),
    ]
    scrape = daemon.scrape()
    assert metric(scrape, "krsid_denied_total", hook="netlink_send", rule="audit-off-block") == 1
    assert metric(scrape, "krsid_would_deny_total", hook="netlink_send", rule="audit-off-watch") == 1
