"""task_fix_setuid: a uid change is reported, a no-op setuid is filtered, in a VM."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.vm.conftest import RunningDaemon, message_id, run_workload
from tests.vm.test_e2e import metric

pytestmark = pytest.mark.vm
MESSAGE_ID = message_id("task_fix_setuid")
NOBODY = 65534


def drop_to(uid: int) -> dict[str, Any]:
    result = run_workload("setuid_workload", str(uid))
    assert result["calls"] == {"setuid_noop": 0, "setresuid": 0}, result
    assert result["before"] == [0, 0, 0] and result["after"] == [uid, uid, uid]
    return result


def test_setresuid_is_reported_and_noop_setuid_filtered(
    daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("task_fix_setuid")
    hook = {"hook": "task_fix_setuid"}
    before = metric(daemon.scrape(), "krsid_events_filtered_total", **hook)
    # setuid(0) as root first (changes nothing: filtered in the kernel), then the
    # setresuid as the marker: when it has arrived, the no-op would have too.
    w = drop_to(NOBODY)
    events = daemon.wait_events(lambda o: o["hook"] == "task_fix_setuid" and o["tgid"] == w["pid"])
    assert len(events) == 1, events
    o = events[0]
    assert o["flags"] == "RES"
    assert (o["old_uid"], o["old_euid"], o["old_suid"], o["old_fsuid"]) == (0, 0, 0, 0)
    assert (o["new_uid"], o["new_euid"], o["new_suid"], o["new_fsuid"]) == (NOBODY, NOBODY, NOBODY, NOBODY)
    assert o["changed"] == "UID|EUID|SUID|FSUID"
    assert (o["uid"], o["euid"]) == (0, 0)  # the header: credentials before the change
    after = metric(daemon.scrape(), "krsid_events_filtered_total", **hook)
    assert after >= before + 1

    j = journal.wait_for(lambda e: True, "KRSID_HOOK=task_fix_setuid", f"KRSID_TGID={w['pid']}")
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID and e["PRIORITY"] == "5"
    assert (e["KRSID_OLD_UID"], e["KRSID_NEW_UID"], e["KRSID_FLAGS"]) == ("0", str(NOBODY), "RES")
    assert f"uid 0->{NOBODY}" in e["MESSAGE"]
