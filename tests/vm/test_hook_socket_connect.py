"""socket_connect: connect() to TCP/UDP/AF_UNIX destinations, in a VM.

The session enables AF_UNIX too (tests/vm/options/socket_connect.yaml: families =
UNIX | INET | INET6); AF_NETLINK stays filtered and serves as the dropped case.
Listeners are the test's own, on loopback.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.vm.conftest import RunningDaemon, message_id, run_workload
from tests.vm.test_e2e import metric

pytestmark = pytest.mark.vm
MESSAGE_ID = message_id("socket_connect")


def connect(*dests: str) -> dict[str, Any]:
    return run_workload("connect_workload", *dests)


def connect_events(daemon: RunningDaemon, pid: int, count: int = 1) -> list[dict[str, Any]]:
    return daemon.wait_events(lambda o: o["hook"] == "socket_connect" and o["tgid"] == pid, count)


@pytest.fixture
def tcp4_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


@pytest.fixture
def tcp6_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def test_tcp4_connect_is_reported_with_address_and_port(
    daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None], tcp4_port: int
) -> None:
    hook_enabled("socket_connect")
    w = connect(f"tcp4:127.0.0.1:{tcp4_port}")
    assert w["results"][0]["errno"] == 0, w
    events = connect_events(daemon, w["pid"])
    assert len(events) == 1, events
    o = events[0]
    assert (o["family"], o["type"], o["protocol"]) == ("INET", "STREAM", "TCP")
    assert (o["addr4"], o["port"], o["addrlen"]) == ("127.0.0.1", tcp4_port, 16)
    assert (o["addr6"], o["unix_path"]) == ("::", "")
    assert (o["pid"], o["uid"]) == (w["pid"], 0)

    j = journal.wait_for(lambda e: True, "KRSID_HOOK=socket_connect", f"KRSID_TGID={w['pid']}")
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID and e["PRIORITY"] == "6"
    assert (e["KRSID_FAMILY"], e["KRSID_PORT"], e["KRSID_ADDR4"]) == ("INET", str(tcp4_port), "127.0.0.1")
    expected = f"connect INET STREAM proto=TCP addr4=127.0.0.1 addr6=:: port={tcp4_port} path=- by "
    assert e["MESSAGE"].startswith(expected), e["MESSAGE"]


def test_tcp6_connect_is_reported_with_address_and_port(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None], tcp6_port: int
) -> None:
    hook_enabled("socket_connect")
    w = connect(f"tcp6:::1:{tcp6_port}")
    assert w["results"][0]["errno"] == 0, w
    events = connect_events(daemon, w["pid"])
    assert len(events) == 1, events
    o = events[0]
    assert (o["family"], o["type"], o["protocol"]) == ("INET6", "STREAM", "TCP")
    assert (o["addr6"], o["port"], o["addrlen"], o["addr4"]) == ("::1", tcp6_port, 28, "0.0.0.0")


def test_udp_connect_is_reported(daemon: RunningDaemon, hook_enabled: Callable[[str], None]) -> None:
    hook_enabled("socket_connect")
    w = connect("udp4:127.0.0.2:5353")  # a UDP connect needs no peer
    events = connect_events(daemon, w["pid"])
    assert len(events) == 1, events
    o = events[0]
    assert (o["family"], o["type"], o["protocol"]) == ("INET", "DGRAM", "UDP")
    assert (o["addr4"], o["port"]) == ("127.0.0.2", 5353)


def test_unix_connects_show_path_and_abstract_name(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None], tmp_path: Path
) -> None:
    hook_enabled("socket_connect")
    path = tmp_path / "s.sock"
    abstract = f"krsid-{uuid.uuid4().hex[:12]}"
    with socket.socket(socket.AF_UNIX) as a, socket.socket(socket.AF_UNIX) as b:
        a.bind(str(path))
        a.listen(1)
        b.bind("\0" + abstract)
        b.listen(1)
        w = connect(f"unix:{path}", f"unixabs:{abstract}")
    assert [r["errno"] for r in w["results"]] == [0, 0], w
    events = connect_events(daemon, w["pid"], 2)
    assert [(o["family"], o["unix_path"], o["abstract"]) for o in events] == [
        ("UNIX", str(path), False),
        ("UNIX", f"@{abstract}", True),
    ]
    assert all((o["type"], o["protocol"], o["port"]) == ("STREAM", "IP", 0) for o in events)


def test_unlisted_family_is_dropped_in_kernel(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None], tcp4_port: int
) -> None:
    hook_enabled("socket_connect")
    before = daemon.scrape()
    # AF_NETLINK (not in families) first, then a TCP connect as a marker that the
    # pipeline has caught up: when it arrives, the netlink connect is not there.
    w = connect("netlink", f"tcp4:127.0.0.1:{tcp4_port}")
    assert [r["errno"] for r in w["results"]] == [0, 0], w
    events = connect_events(daemon, w["pid"])
    assert [(o["family"], o["port"]) for o in events] == [("INET", tcp4_port)]
    after = daemon.scrape()
    assert metric(after, "krsid_events_filtered_total", hook="socket_connect") >= (
        metric(before, "krsid_events_filtered_total", hook="socket_connect") + 1
    )
