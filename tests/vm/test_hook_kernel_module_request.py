"""kernel_module_request: request_module() autoloading, in a VM.

Two triggers whose module never exists: a socket of address family 13 (no
protocol ever registers it: the kernel asks for "net-pf-13"), and `ip link add
... type KIND` with a made-up KIND ("rtnl-link-KIND", unique per test). modprobe
runs and finds nothing: nothing is loaded.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.vm.conftest import RunningDaemon, message_id

pytestmark = pytest.mark.vm
WORKLOAD = Path(__file__).parent / "workloads" / "module_workload.py"
MESSAGE_ID = message_id("kernel_module_request")
UNUSED_FAMILY = 13  # AF_NETBEUI's old number: nothing registers it


def request_events(daemon: RunningDaemon, pid: int, count: int = 1) -> list[dict[str, Any]]:
    return daemon.wait_events(lambda o: o["hook"] == "kernel_module_request" and o["tgid"] == pid, count)


def test_socket_of_unregistered_family_requests_its_module(
    daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("kernel_module_request")
    out = subprocess.run(
        [sys.executable, str(WORKLOAD), f"socket:{UNUSED_FAMILY}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    w = json.loads(out.stdout)
    assert w["results"][0]["errno"] == errno.EAFNOSUPPORT
    events = request_events(daemon, w["pid"])
    assert len(events) == 1, events
    o = events[0]
    assert o["kmod_name"] == f"net-pf-{UNUSED_FAMILY}" and o["truncated"] is False
    assert (o["pid"], o["uid"]) == (w["pid"], 0)

    j = journal.wait_for(lambda e: True, "KRSID_HOOK=kernel_module_request", f"KRSID_TGID={w['pid']}")
    assert len(j) == 1, j
    assert j[0]["MESSAGE_ID"] == MESSAGE_ID and j[0]["KRSID_KMOD_NAME"] == f"net-pf-{UNUSED_FAMILY}"
    assert j[0]["MESSAGE"].startswith(f"module autoload request net-pf-{UNUSED_FAMILY} by ")


def test_ip_link_add_of_unknown_kind_requests_rtnl_link_module(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("kernel_module_request")
    kind = f"krsid{uuid.uuid4().hex[:10]}"
    p = subprocess.Popen(
        ["ip", "link", "add", f"kt{uuid.uuid4().hex[:8]}", "type", kind],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0, err  # no such link kind: nothing created
    events = request_events(daemon, p.pid)
    assert [(o["kmod_name"], o["comm"]) for o in events] == [(f"rtnl-link-{kind}", "ip")]
