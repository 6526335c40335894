"""socket_listen: TCP listeners (bound, and unbound: port 0, the kernel picks one after
the hook) are reported with address and port; AF_UNIX listeners are dropped in the kernel; a
rule can deny listening on one port (a bind shell). In a VM."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.support.metrics import metric
from tests.vm.conftest import RunningDaemon, free_port, message_id, run_workload
from tests.vm.test_policy import Reloader

pytestmark = pytest.mark.vm
MESSAGE_ID = message_id("socket_listen")
COMM = "krsid-listen"


def listen(*ops: str, comm: str = COMM) -> dict[str, Any]:
    return run_workload("socket_workload", comm, *ops)


def listen_events(daemon: RunningDaemon, pid: int, count: int = 1) -> list[dict[str, Any]]:
    return daemon.wait_events(lambda o: o["hook"] == "socket_listen" and o["tgid"] == pid, count)


@pytest.fixture
def policy(daemon: RunningDaemon, hook_enabled: Callable[[str], None]) -> Iterator[Reloader]:
    hook_enabled("socket_listen")
    with Reloader(daemon) as r:
        yield r


def test_tcp_listeners_are_reported_with_address_and_port(
    daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("socket_listen")
    w = listen("listen:tcp4:127.0.0.1:0", "listen:tcp6:::1:0", "listen:tcp4-unbound")
    assert [r["errno"] for r in w["results"]] == [0, 0, 0], w
    ports = [r["port"] for r in w["results"]]
    assert all(ports), w
    events = listen_events(daemon, w["pid"], 3)
    assert [(o["family"], o["addr4"], o["addr6"], o["port"]) for o in events] == [
        ("INET", "127.0.0.1", "::", ports[0]),
        ("INET6", "0.0.0.0", "::1", ports[1]),
        ("INET", "0.0.0.0", "::", 0),  # never bound: the kernel picks the port after the hook
    ]
    assert all((o["type"], o["protocol"], o["backlog"], o["comm"]) == ("STREAM", "TCP", 5, COMM) for o in events)

    j = journal.wait_for(
        lambda e: e.get("KRSID_PORT") == str(ports[0]), "KRSID_HOOK=socket_listen", f"KRSID_TGID={w['pid']}"
    )
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID and e["PRIORITY"] == "5"
    assert e["MESSAGE"] == (
        f"listen INET STREAM proto=TCP addr4=127.0.0.1 addr6=:: port={ports[0]} backlog=5 by {COMM}[{w['pid']}] uid=0"
    )


def test_unix_listener_is_dropped_in_kernel(
    daemon: RunningDaemon, hook_enabled: Callable[[str], None], tmp_path: Path
) -> None:
    hook_enabled("socket_listen")
    before = metric(daemon.scrape(), "krsid_events_filtered_total", hook="socket_listen")
    w = listen(f"listen:unix:{tmp_path / 'l.sock'}", "listen:tcp4:127.0.0.1:0")  # the TCP one is the marker
    assert [r["errno"] for r in w["results"]] == [0, 0], w
    events = listen_events(daemon, w["pid"])
    assert [(o["family"], o["port"]) for o in events] == [("INET", w["results"][1]["port"])]
    after = metric(daemon.scrape(), "krsid_events_filtered_total", hook="socket_listen")
    assert after >= before + 1


def test_would_deny_then_deny_a_bind_shell_port(daemon: RunningDaemon, policy: Reloader) -> None:
    port = free_port()

    def rule(name: str, action: str) -> dict[str, Any]:
        match = {"comm": COMM, "fields": {"port": port, "family": "INET", "type": "STREAM"}}
        return {"name": name, "hook": "socket_listen", "action": action, "match": match}

    policy.apply(policy.with_rules(rule("bindshell-watch", "would_deny")))
    w = listen(f"listen:tcp4:0.0.0.0:{port}")
    assert w["results"][0]["errno"] == 0, w
    (o,) = listen_events(daemon, w["pid"])
    assert (o["action"], o["rule"], o["verdict"], o["port"]) == ("would_deny", "bindshell-watch", "0", port)

    policy.apply(policy.with_rules(rule("bindshell-block", "deny")))
    w = listen(f"listen:tcp4:0.0.0.0:{port}", "listen:tcp4:127.0.0.1:0")
    assert [r["errno"] for r in w["results"]] == [errno.EPERM, 0], w
    events = listen_events(daemon, w["pid"], 2)
    assert [(o["action"], o["rule"], o["verdict"], o["port"]) for o in events] == [
        ("deny", "bindshell-block", "-EPERM", port),
        ("audit", "", "0", w["results"][1]["port"]),
    ]
    scrape = daemon.scrape()
    assert metric(scrape, "krsid_denied_total", hook="socket_listen", rule="bindshell-block") == 1
    assert metric(scrape, "krsid_would_deny_total", hook="socket_listen", rule="bindshell-watch") == 1
