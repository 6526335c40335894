"""ptrace_traceme: PTRACE_TRACEME names the parent that becomes the tracer; a rule can deny it, in a VM."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.support.metrics import metric
from tests.vm.conftest import RunningDaemon, message_id, run_workload
from tests.vm.test_policy import Reloader

pytestmark = pytest.mark.vm
MESSAGE_ID = message_id("ptrace_traceme")
TRACER = "krsid-tracer"
TRACEE = "krsid-tracee"


def traceme(tracee_comm: str = TRACEE) -> dict[str, Any]:
    return run_workload("traceme_workload", TRACER, tracee_comm)


def traceme_events(daemon: RunningDaemon, child: int) -> list[dict[str, Any]]:
    return daemon.wait_events(lambda o: o["hook"] == "ptrace_traceme" and o["tgid"] == child)


@pytest.fixture
def policy(daemon: RunningDaemon, hook_enabled: Callable[[str], None]) -> Iterator[Reloader]:
    hook_enabled("ptrace_traceme")
    with Reloader(daemon) as r:
        yield r


def test_traceme_names_the_parent_that_becomes_the_tracer(
    daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("ptrace_traceme")
    w = traceme()
    assert w["errno"] == 0, w
    events = traceme_events(daemon, w["child"])
    assert len(events) == 1, events
    o = events[0]
    assert (o["pid"], o["tgid"], o["ppid"], o["comm"], o["uid"]) == (w["child"], w["child"], w["pid"], TRACEE, 0)
    assert (o["tracer_pid"], o["tracer_tgid"], o["tracer_comm"], o["tracer_uid"]) == (w["pid"], w["pid"], TRACER, 0)
    assert (o["action"], o["verdict"], o["rule"]) == ("audit", "0", "")
    assert "pad0" not in o

    j = journal.wait_for(lambda e: True, "KRSID_HOOK=ptrace_traceme", f"KRSID_TGID={w['child']}")
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID and e["PRIORITY"] == "5"
    assert (e["KRSID_TRACER_TGID"], e["KRSID_TRACER_COMM"]) == (str(w["pid"]), TRACER)
    expected = f"ptrace TRACEME: {TRACEE}[{w['child']}] asks to be traced by its parent {TRACER}[{w['pid']}] uid=0"
    assert e["MESSAGE"] == expected


def test_would_deny_then_deny_traceme_for_one_command(daemon: RunningDaemon, policy: Reloader) -> None:
    def rule(name: str, action: str) -> dict[str, Any]:
        return {
            "name": name,
            "hook": "ptrace_traceme",
            "action": action,
            "match": {"comm": TRACEE, "fields": {"tracer_uid": 0}},
        }

    policy.apply(policy.with_rules(rule("traceme-watch", "would_deny")))
    w = traceme()
    assert w["errno"] == 0, w
    (o,) = traceme_events(daemon, w["child"])
    assert (o["action"], o["rule"], o["verdict"]) == ("would_deny", "traceme-watch", "0")
    assert metric(daemon.scrape(), "krsid_would_deny_total", hook="ptrace_traceme", rule="traceme-watch") == 1

    policy.apply(policy.with_rules(rule("traceme-block", "deny")))
    w = traceme()
    assert w["errno"] == errno.EPERM, w
    (o,) = traceme_events(daemon, w["child"])
    assert (o["action"], o["rule"], o["verdict"]) == ("deny", "traceme-block", "-EPERM")
    assert (o["tracer_tgid"], o["tracer_comm"]) == (w["pid"], TRACER)
    other = traceme("krsid-other")  # another command is not matched by the rule
    assert other["errno"] == 0, other
    (o,) = traceme_events(daemon, other["child"])
    assert (o["action"], o["rule"]) == ("audit", "")
    assert metric(daemon.scrape(), "krsid_denied_total", hook="ptrace_traceme", rule="traceme-block") == 1
