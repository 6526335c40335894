"""cred_prepare: the fallback for userns_create, forced with `fallback: always`, in a VM.

The VM's kernel has userns_create, so this module runs a daemon of its own with
`userns_create: {fallback: always}` and the shipped deny rule for userns_create,
scoped to a uid only this module uses. The session daemon (userns_create itself, no
rules) may run at the same time; the fallback denies first (prepare_creds comes
before create_user_ns), so there is no double deny.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.journald import Journal
from tests.support.metrics import metric
from tests.support.procs import run_as
from tests.vm.conftest import (
    ROOT,
    RunningDaemon,
    fallback_selected,
    free_port,
    message_id,
    remaining_krsid_programs,
    start_daemon,
    write_config,
)

pytestmark = pytest.mark.vm
MESSAGE_ID = message_id("cred_prepare")
NOBODY = 65534
DENIED_UID = 65533  # the shipped rule is scoped to this uid
WORKLOAD = Path(__file__).parent / "workloads" / "userns_workload.py"
SHIPPED = yaml.safe_load((ROOT / "etc" / "policies" / "deny-unprivileged-userns.yaml").read_text())
(SHIPPED_RULE,) = SHIPPED["policy"]["rules"]


@pytest.fixture(scope="module")
def fallback(
    journal: Journal, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[RunningDaemon]:
    if not fallback_selected("cred_prepare"):
        pytest.skip("cred_prepare is not in this session's KRSID_TEST_HOOKS")
    assert SHIPPED_RULE["hook"] == "userns_create" and SHIPPED_RULE["match"] == {"uid": {"not": 0}}
    tmp = tmp_path_factory.mktemp("krsid-fallback")
    port = free_port()
    headers = str(request.config.getoption("--headers"))
    cfg = write_config(
        tmp,
        headers,
        port,
        ["userns_create"],
        hook_settings={"userns_create": {"fallback": "always"}},
        policy={"rules": [{**SHIPPED_RULE, "match": {"uid": DENIED_UID}}]},
    )
    with start_daemon(tmp, cfg, port, headers, ["cred_prepare"], others=set(remaining_krsid_programs())) as d:
        assert d.attached == ["cred_prepare"], d.ready_status
        assert "hook userns_create: served by its fallback cred_prepare (fallback: always)" in d.log.read_text()
        yield d


def workload(*ops: str, uid: int | None = None) -> dict[str, dict[str, Any]]:
    """Run the workload (as uid, when given); op -> its result."""
    argv = ["/usr/bin/python3", str(WORKLOAD), *ops]
    if uid is not None:
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    return {c["op"]: c for c in json.loads(out.stdout)["calls"]}


def events_of(daemon: RunningDaemon, pid: int, count: int = 1) -> list[dict[str, Any]]:
    return daemon.wait_events(lambda o: o["hook"] == "cred_prepare" and o["tgid"] == pid, count)


def test_unprivileged_unshare_is_reported_with_userns_create_fields(fallback: RunningDaemon, journal: Journal) -> None:
    # setpriv and unshare exec: the pid stays the same through both.
    p = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "unshare", "--user", "true"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    events = events_of(fallback, p.pid)
    assert len(events) == 1, events  # setpriv's setresuid and the execs are filtered
    o = events[0]
    assert (o["cred_uid"], o["cred_euid"], o["cred_gid"], o["uid"], o["comm"]) == (
        NOBODY,
        NOBODY,
        NOBODY,
        NOBODY,
        "unshare",
    )
    assert o["unprivileged"] is True and o["cap_effective"] == "0x0" and o["cap_permitted"] == "0x0"
    assert (o["parent_level"], o["parent_inum"]) == (0, os.stat("/proc/self/ns/user").st_ino)
    assert (o["syscall"], o["clone_flags"], o["compat"]) == ("UNSHARE", "NEWUSER", False)
    assert (o["action"], o["verdict"], o["rule"]) == ("audit", "0", "")

    j = journal.wait_for(lambda e: True, "KRSID_HOOK=cred_prepare", f"KRSID_TGID={o['tgid']}")
    assert len(j) == 1, j
    assert j[0]["MESSAGE_ID"] == MESSAGE_ID and j[0]["KRSID_SYSCALL"] == "UNSHARE"
    assert j[0]["MESSAGE"] == (
        f"user namespace creation (UNSHARE NEWUSER) by unshare[{o['tgid']}] uid={NOBODY} euid={NOBODY} "
        "unprivileged=yes (parent level 0; fallback for userns_create)"
    )


def test_every_syscall_that_creates_a_user_namespace_is_seen(fallback: RunningDaemon) -> None:
    calls = workload("unshare", "clone", "clone3", "int80", "fork", uid=NOBODY)
    for op, syscall in (("unshare", "UNSHARE"), ("clone", "CLONE"), ("clone3", "CLONE3")):
        assert (calls[op]["ret"], calls[op]["errno"]) == (0, 0), calls[op]
        (e,) = events_of(fallback, calls[op]["pid"])
        assert (e["syscall"], e["clone_flags"], e["compat"], e["cred_uid"]) == (syscall, "NEWUSER", False, NOBODY)
    assert calls["fork"]["ret"] == 0 and not fallback.events(lambda o: o["tgid"] == calls["fork"]["pid"])
    int80 = calls["int80"]
    if int80["signal"] is not None or int80["errno"] == errno.ENOSYS:
        pytest.skip(f"this kernel runs no ia32 syscalls (int $0x80: {int80})")
    assert (int80["ret"], int80["errno"]) == (0, 0), int80
    (e,) = events_of(fallback, int80["pid"])
    assert (e["syscall"], e["clone_flags"], e["compat"]) == ("UNSHARE", "NEWUSER", True)


def test_exec_fork_and_setuid_are_filtered_in_the_kernel(fallback: RunningDaemon) -> None:
    """cred_prepare runs on every credential copy; only namespace creation may reach user space."""
    before = fallback.scrape()
    filtered = metric(before, "krsid_events_filtered_total", hook="cred_prepare")
    emitted = metric(before, "krsid_events_emitted_total", hook="cred_prepare")
    # setresuid, exec of sh, a fork and exec per command: ~7 credential copies.
    p = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "sh", "-c", "/bin/true; /bin/true"],
        timeout=60,
    )
    assert p.returncode == 0
    after = fallback.scrape()
    assert metric(after, "krsid_events_filtered_total", hook="cred_prepare") >= filtered + 5
    assert metric(after, "krsid_events_emitted_total", hook="cred_prepare") == emitted


def test_userns_create_deny_rule_applies_to_the_fallback(fallback: RunningDaemon) -> None:
    """The shipped rule (hook: userns_create), scoped to DENIED_UID: every way to create a
    user namespace fails for that uid - with ENOMEM, as prepare_creds() failing reads to
    the callers - and still works for root."""
    denied = workload("unshare", "clone", "clone3", "int80", uid=DENIED_UID)
    for op in ("unshare", "clone", "clone3"):
        assert (denied[op]["ret"], denied[op]["errno"]) == (-1, errno.ENOMEM), denied[op]
        (e,) = events_of(fallback, denied[op]["pid"])
        assert (e["action"], e["rule"], e["verdict"], e["cred_uid"]) == (
            "deny",
            SHIPPED_RULE["name"],
            "-EPERM",
            DENIED_UID,
        )
    if denied["int80"]["signal"] is None and denied["int80"]["errno"] != errno.ENOSYS:
        assert denied["int80"]["errno"] == errno.ENOMEM, denied["int80"]  # no way around it by the 32-bit ABI

    p = run_as(DENIED_UID, "unshare", "-U", "true")
    assert p.returncode != 0 and "Cannot allocate memory" in p.stderr, p.stderr

    root = workload("unshare", "clone", "clone3")
    for call in root.values():
        assert (call["ret"], call["errno"]) == (0, 0), call
        (e,) = events_of(fallback, call["pid"])
        assert (e["action"], e["verdict"], e["cred_uid"]) == ("audit", "0", 0)
    assert subprocess.run(["unshare", "-U", "true"], timeout=60).returncode == 0
    assert metric(fallback.scrape(), "krsid_denied_total", hook="cred_prepare", rule=SHIPPED_RULE["name"]) >= 4
