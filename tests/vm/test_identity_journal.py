"""`journalctl -u UNIT` lists krsid's events about the unit's processes (issue 12, item 4).

Under real systemd (the nspawn container of test_systemd_nspawn, booted again for this
module): a transient service runs a probe binary; the exec event krsid writes carries
OBJECT_SYSTEMD_UNIT=<that service> (from the kernel's cgroup id at the hook), which
journalctl -u matches on entries from uid-0 senders, next to the service's own lines.
"""

from __future__ import annotations

import shutil
import time
import uuid
from typing import Any

import pytest

from tests.vm.nspawn_container import Container
from tests.vm.test_systemd_nspawn import EXEC_MESSAGE_ID, container, started  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.vm


def test_journalctl_u_shows_the_event_next_to_the_units_own_lines(started: Container) -> None:  # noqa: F811
    c = started
    name = f"krsid-unit-probe-{uuid.uuid4().hex[:8]}"
    shutil.copy2("/bin/true", c.probe_dir / name)
    path = f"/srv/krsid-probe/{name}"
    unit = f"{name}.service"
    marker = f"own-line-{uuid.uuid4().hex[:8]}"
    # sleep 2: the enricher finds a new cgroup by a rescan at most once a second.
    p = c.run(
        "systemd-run",
        f"--unit={unit}",
        "--property=RuntimeMaxSec=90",
        "/bin/sh",
        "-c",
        f"echo {marker}; sleep 2 && {path} && exec sleep 60",
    )
    assert p.returncode == 0, p.stderr
    try:
        deadline = time.monotonic() + 60
        event: list[dict[str, Any]] = []
        while not event and time.monotonic() < deadline:
            entries = c.journal("-u", unit)
            event = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "krsid" and e.get("KRSID_PATH") == path]
            if not event:
                time.sleep(1)
    finally:
        c.run("systemctl", "stop", unit)
    assert event, f"journalctl -u {unit} has no krsid event for {path}:\n{c.unit_log()}"
    e = event[0]
    assert e["MESSAGE_ID"] == EXEC_MESSAGE_ID and e["_UID"] == "0"
    assert e["_SYSTEMD_UNIT"] == "krsid.service"  # sent by krsid ...
    assert e["OBJECT_SYSTEMD_UNIT"] == unit  # ... about a process of the probe unit
    assert e["KRSID_UNIT"] == unit
    assert e["KRSID_PROCESS_ID"] and e["KRSID_PARENT_PROCESS_ID"], e
    own = [x for x in entries if x.get("MESSAGE") == marker]
    assert own and own[0]["_SYSTEMD_UNIT"] == unit, "the unit's own line is missing from journalctl -u"
