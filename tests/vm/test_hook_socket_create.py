"""socket_create: AF_PACKET, IP raw, AF_ALG and NETLINK_XFRM sockets are reported;
TCP, UDP, AF_UNIX and other netlink sockets (ROUTE, AUDIT) are dropped in the kernel; a rule can deny
AF_ALG. In a VM."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.support.metrics import metric
from tests.vm.conftest import RunningDaemon, message_id, run_workload
from tests.vm.test_policy import Reloader

pytestmark = pytest.mark.vm
MESSAGE_ID = message_id("socket_create")
COMM = "krsid-sock-test"
AF_ALG = 38
NETLINK_ROUTE, NETLINK_XFRM, NETLINK_AUDIT = 0, 6, 9
ETH_P_ALL_BE = socket.htons(0x0003)  # 768: what sniffers pass, in network byte order


def sockets(*ops: str, comm: str = COMM) -> dict[str, Any]:
    return run_workload("socket_workload", comm, *ops)


def create(family: int, type_: int, proto: int) -> str:
    return f"create:{family}:{type_}:{proto}"


def create_events(daemon: RunningDaemon, pid: int, count: int) -> list[dict[str, Any]]:
    return daemon.wait_events(lambda o: o["hook"] == "socket_create" and o["tgid"] == pid, count)


@pytest.fixture
def policy(daemon: RunningDaemon, hook_enabled: Callable[[str], None]) -> Iterator[Reloader]:
    hook_enabled("socket_create")
    with Reloader(daemon) as r:
        yield r


def test_packet_raw_alg_and_xfrm_sockets_are_reported(
    daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("socket_create")
    w = sockets(
        create(socket.AF_PACKET, socket.SOCK_RAW, ETH_P_ALL_BE),
        create(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        create(AF_ALG, socket.SOCK_SEQPACKET, 0),
        create(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM),
    )
    # AF_ALG may be missing from the kernel (its module): the hook runs before the family is looked up.
    assert [r["errno"] for r in w["results"]][:2] == [0, 0], w
    events = create_events(daemon, w["pid"], 4)
    assert [(o["family"], o["type"], o["protocol"], o["kern"]) for o in events] == [
        ("PACKET", "RAW", 768, False),
        ("INET", "RAW", 1, False),
        ("ALG", "SEQPACKET", 0, False),
        ("NETLINK", "RAW", 6, False),
    ]
    assert all((o["comm"], o["uid"], o["action"]) == (COMM, 0, "audit") for o in events), events

    j = journal.wait_for(
        lambda e: e.get("KRSID_FAMILY") == "PACKET", "KRSID_HOOK=socket_create", f"KRSID_TGID={w['pid']}"
    )
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID and e["PRIORITY"] == "5"
    assert (e["KRSID_FAMILY"], e["KRSID_TYPE"], e["KRSID_PROTOCOL"]) == ("PACKET", "RAW", "768")
    assert e["MESSAGE"] == f"socket PACKET RAW protocol=768 kern=no by {COMM}[{w['pid']}] uid=0"


def test_ordinary_sockets_are_dropped_in_kernel(daemon: RunningDaemon, hook_enabled: Callable[[str], None]) -> None:
    hook_enabled("socket_create")
    before = metric(daemon.scrape(), "krsid_events_filtered_total", hook="socket_create")
    # TCP, UDP, AF_UNIX, a NETLINK_ROUTE socket (SOCK_RAW, as ip(8) makes) and a
    # NETLINK_AUDIT one (as PAM makes), then AF_PACKET as the marker: once it arrived,
    # the others would have too.
    w = sockets(
        create(socket.AF_INET, socket.SOCK_STREAM, 0),
        create(socket.AF_INET6, socket.SOCK_DGRAM, 0),
        create(socket.AF_UNIX, socket.SOCK_STREAM, 0),
        create(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE),
        create(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT),
        create(socket.AF_PACKET, socket.SOCK_DGRAM, ETH_P_ALL_BE),
    )
    assert [r["errno"] for r in w["results"]] == [0] * 6, w
    events = create_events(daemon, w["pid"], 1)
    assert [(o["family"], o["type"]) for o in events] == [("PACKET", "DGRAM")]
    after = metric(daemon.scrape(), "krsid_events_filtered_total", hook="socket_create")
    assert after >= before + 5


def test_would_deny_then_deny_af_alg_for_one_command(daemon: RunningDaemon, policy: Reloader) -> None:
    def rule(name: str, action: str) -> dict[str, Any]:
        return {
            "name": name,
            "hook": "socket_create",
            "action": action,
            "match": {"comm": COMM, "fields": {"family": {"eq": "ALG"}, "kern": False}},
        }

    alg = create(AF_ALG, socket.SOCK_SEQPACKET, 0)
    policy.apply(policy.with_rules(rule("alg-watch", "would_deny")))
    w = sockets(alg)
    assert w["results"][0]["errno"] != errno.EPERM, w
    (o,) = create_events(daemon, w["pid"], 1)
    assert (o["action"], o["rule"], o["verdict"], o["family"]) == ("would_deny", "alg-watch", "0", "ALG")

    policy.apply(policy.with_rules(rule("alg-block", "deny")))
    w = sockets(alg, create(socket.AF_INET, socket.SOCK_STREAM, 0))
    assert [r["errno"] for r in w["results"]] == [errno.EPERM, 0], w
    (o,) = create_events(daemon, w["pid"], 1)
    assert (o["action"], o["rule"], o["verdict"], o["family"]) == ("deny", "alg-block", "-EPERM", "ALG")
    other = sockets(alg, comm="krsid-other")  # another command is not matched
    assert other["results"][0]["errno"] != errno.EPERM, other
    scrape = daemon.scrape()
    assert metric(scrape, "krsid_denied_total", hook="socket_create", rule="alg-block") == 1
    assert metric(scrape, "krsid_would_deny_total", hook="socket_create", rule="alg-watch") == 1
