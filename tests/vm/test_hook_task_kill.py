"""task_kill: signals to krsid itself and to listed agents are reported with their
sender, others are not; a rule can deny them (self-protection), in a VM.

The "agents" are copies of sleep(1) named after entries of the shipped comms list, and
the senders are copies of kill(1) under names of the test's own, so that the rules
only ever cover the test's processes.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.support.metrics import metric
from tests.vm.conftest import RunningDaemon, message_id
from tests.vm.test_policy import Reloader

pytestmark = pytest.mark.vm
MESSAGE_ID = message_id("task_kill")
AGENT = "auditd"  # in the shipped comms list
KILLER = "krsid-killer"


@pytest.fixture
def programs(tmp_path: Path, hook_enabled: Callable[[str], None]) -> Path:
    """tmp_path with `auditd`, `plain` (copies of sleep) and KILLER (a copy of kill)."""
    hook_enabled("task_kill")
    for name, source in ((AGENT, "sleep"), ("plain", "sleep"), (KILLER, "kill")):
        found = shutil.which(source)
        assert found, f"no {source} in PATH"
        shutil.copy(found, tmp_path / name)
    return tmp_path


@pytest.fixture
def agent(programs: Path) -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen([str(programs / AGENT), "600"])
    yield p
    p.kill()
    p.wait()


def send(programs: Path, sig: int | str, target: int) -> tuple[int, int]:
    """KILLER -sig target; returns (the sender's pid, its exit status)."""
    p = subprocess.Popen([str(programs / KILLER), f"-{sig}", str(target)], stderr=subprocess.DEVNULL)
    return p.pid, p.wait(timeout=60)


def events_of(daemon: RunningDaemon, sender: int) -> list[dict[str, Any]]:
    return daemon.wait_events(lambda o: o["hook"] == "task_kill" and o["tgid"] == sender)


@pytest.fixture
def policy(daemon: RunningDaemon) -> Iterator[Reloader]:
    with Reloader(daemon) as r:
        yield r


def test_a_signal_to_a_listed_agent_is_reported_and_others_are_not(
    daemon: RunningDaemon, journal: Journal, programs: Path, agent: subprocess.Popen[bytes]
) -> None:
    plain = subprocess.Popen([str(programs / "plain"), "600"])
    probe, status = send(programs, 0, agent.pid)  # signal 0: nothing is delivered
    assert status == 0
    other, status = send(programs, "TERM", plain.pid)
    assert status == 0 and plain.wait(timeout=60) == -signal.SIGTERM
    sender, status = send(programs, "TERM", agent.pid)
    assert status == 0 and agent.wait(timeout=60) == -signal.SIGTERM

    (o,) = events_of(daemon, sender)
    assert (o["sig"], o["protected"], o["target_pid"], o["target_tgid"], o["target_uid"], o["target_comm"]) == (
        "TERM",
        "LISTED",
        agent.pid,
        agent.pid,
        0,
        AGENT,
    )
    assert (o["comm"], o["uid"], o["action"], o["verdict"], o["rule"]) == (KILLER, 0, "audit", "0", "")
    assert "pad0" not in o
    # Same lane, in order: by now the probe's and the plain kill's events would have arrived.
    assert daemon.events(lambda e: e["hook"] == "task_kill" and e["tgid"] in (probe, other)) == []

    (j,) = journal.wait_for(lambda e: True, "KRSID_HOOK=task_kill", f"KRSID_TGID={sender}")
    assert (j["MESSAGE_ID"], j["PRIORITY"]) == (MESSAGE_ID, "4")
    assert (j["KRSID_SIG"], j["KRSID_PROTECTED"], j["KRSID_TARGET_COMM"]) == ("TERM", "LISTED", AGENT)
    expected = f"signal TERM to {AGENT}[{agent.pid}] uid=0 (protected LISTED) by {KILLER}[{sender}] uid=0"
    assert j["MESSAGE"] == expected


def test_a_signal_to_krsid_itself_is_reported(daemon: RunningDaemon, programs: Path) -> None:
    sender, status = send(programs, "CONT", daemon.proc.pid)  # CONT: the daemon runs on
    assert status == 0
    (o,) = events_of(daemon, sender)
    assert (o["sig"], o["protected"], o["target_tgid"], o["target_uid"]) == ("CONT", "DAEMON", daemon.proc.pid, 0)
    assert (o["comm"], o["action"]) == (KILLER, "audit")


def test_would_deny_then_deny_signals_to_a_listed_agent(
    daemon: RunningDaemon, policy: Reloader, programs: Path, agent: subprocess.Popen[bytes]
) -> None:
    def rule(name: str, action: str) -> dict[str, Any]:
        return {
            "name": name,
            "hook": "task_kill",
            "action": action,
            "match": {"comm": KILLER, "fields": {"protected": "LISTED", "sig": "STOP"}},
        }

    policy.apply(policy.with_rules(rule("agent-stop-watch", "would_deny")))
    sender, status = send(programs, "STOP", agent.pid)
    assert status == 0  # would_deny: delivered
    (o,) = events_of(daemon, sender)
    assert (o["action"], o["rule"], o["verdict"], o["sig"], o["target_tgid"]) == (
        "would_deny",
        "agent-stop-watch",
        "0",
        "STOP",
        agent.pid,
    )
    assert metric(daemon.scrape(), "krsid_would_deny_total", hook="task_kill", rule="agent-stop-watch") == 1
    _, status = send(programs, "CONT", agent.pid)
    assert status == 0

    policy.apply(policy.with_rules(rule("agent-stop-block", "deny")))
    sender, status = send(programs, "STOP", agent.pid)
    assert status != 0  # kill(1): "Operation not permitted"
    (o,) = events_of(daemon, sender)
    assert (o["action"], o["rule"], o["verdict"], o["protected"]) == ("deny", "agent-stop-block", "-EPERM", "LISTED")
    state = Path(f"/proc/{agent.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    assert state == "S", f"the agent was stopped after all (state {state})"
    other, status = send(programs, "TERM", agent.pid)  # another signal is not matched by the rule
    assert status == 0 and agent.wait(timeout=60) == -signal.SIGTERM
    (o,) = events_of(daemon, other)
    assert (o["action"], o["rule"], o["sig"]) == ("audit", "", "TERM")
    assert metric(daemon.scrape(), "krsid_denied_total", hook="task_kill", rule="agent-stop-block") == 1


def test_a_rule_denies_sigkill_of_krsid_itself(daemon: RunningDaemon, policy: Reloader, programs: Path) -> None:
    """Self-protection (README: Policies): a deny rule on protected DAEMON refuses the
    SIGKILL, and the daemon lives on to report it. Scoped to the test's KILLER."""
    policy.apply(
        policy.with_rules(
            {
                "name": "krsid-self-protection",
                "hook": "task_kill",
                "action": "deny",
                "match": {"comm": KILLER, "fields": {"protected": "DAEMON"}},
            }
        )
    )
    sender, status = send(programs, "KILL", daemon.proc.pid)
    assert status != 0
    (o,) = events_of(daemon, sender)
    assert (o["action"], o["rule"], o["verdict"], o["sig"], o["protected"], o["target_tgid"]) == (
        "deny",
        "krsid-self-protection",
        "-EPERM",
        "KILL",
        "DAEMON",
        daemon.proc.pid,
    )
    assert daemon.proc.poll() is None
    assert metric(daemon.scrape(), "krsid_denied_total", hook="task_kill", rule="krsid-self-protection") == 1
