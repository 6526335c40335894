"""Policies on the live session daemon: would_deny -> deny -> bad reload -> ignore, via hot reload.

Every rule targets a command name only this test's workload uses (prctl PR_SET_NAME),
so nothing else in the VM is affected, and the last reload restores the config.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cli import run_krsid
from tests.support.metrics import metric
from tests.support.procs import run_as
from tests.vm.conftest import ROOT, RunningDaemon, catalog

pytestmark = pytest.mark.vm
WORKLOAD = Path(__file__).parent / "workloads" / "mprotect_workload.py"
COMM = "krsid-wx-test"


def mprotect_as(comm: str) -> dict[str, Any]:
    return many_mprotects(comm, "READ|EXEC")


class Reloader:
    """Reloads the session daemon with a changed config; as a context manager, the
    original config is reloaded on the way out (the session's later tests see it)."""

    def __init__(self, daemon: RunningDaemon) -> None:
        self.daemon = daemon
        self.original = daemon.config.read_text()

    def __enter__(self) -> Reloader:
        return self

    def __exit__(self, *exc: object) -> None:
        # Back to the config the daemon started with (valid): SIGHUP alone, as a
        # `krsid reload` process costs seconds under TCG and each test ran one.
        self.apply(self.original, signal_only=True)

    def apply(self, text: str, *, expect_ok: bool = True, signal_only: bool = False) -> None:
        before = self.daemon.log.read_text().count("reload")
        self.daemon.config.write_text(text)
        if signal_only or not expect_ok:
            if not expect_ok:
                # `krsid reload` validates first and refuses; SIGHUP directly tests the daemon's side.
                p = run_krsid("reload", "--config", str(self.daemon.config))
                assert p.returncode == 2, p.stdout + p.stderr
            pid = int((Path(yaml.safe_load(self.original)["state_dir"]) / "krsid.pid").read_text())
            os.kill(pid, 1)
        else:
            p = run_krsid("reload", "--config", str(self.daemon.config))
            assert p.returncode == 0, p.stdout + p.stderr
        deadline = time.monotonic() + 60
        while self.daemon.log.read_text().count("reload") <= before:
            assert time.monotonic() < deadline, "the daemon did not log the reload"
            time.sleep(0.2)
        last = [line for line in self.daemon.log.read_text().splitlines() if "reload" in line][-1]
        assert ("reload rejected" in last) != expect_ok, last

    def with_rules(self, *rules: dict[str, Any]) -> str:
        cfg = yaml.safe_load(self.original)
        cfg["policy"] = {"rules": list(rules)}
        return str(yaml.safe_dump(cfg))


@pytest.fixture
def reloader(daemon: RunningDaemon, hook_enabled: Callable[[str], None]) -> Iterator[Reloader]:
    hook_enabled("file_mprotect")
    with Reloader(daemon) as r:
        yield r


def rule(name: str, action: str) -> dict[str, Any]:
    return {
        "name": name,
        "hook": "file_mprotect",
        "action": action,
        "match": {"comm": COMM, "fields": {"reqprot": {"all": ["EXEC"]}}},
    }


def event_of(daemon: RunningDaemon, pid: int) -> dict[str, Any]:
    evs = daemon.wait_events(lambda o: o["hook"] == "file_mprotect" and o["tgid"] == pid)
    assert len(evs) == 1, evs
    return evs[0]


def test_would_deny_then_deny_then_bad_reload_then_ignore(daemon: RunningDaemon, reloader: Reloader) -> None:
    # 1. would_deny: allowed, emitted with the rule, counted.
    reloader.apply(reloader.with_rules(rule("wx-watch", "would_deny")))
    w = mprotect_as(COMM)
    assert w["calls"][0]["errno"] == 0
    e = event_of(daemon, w["pid"])
    assert (e["action"], e["rule"], e["verdict"]) == ("would_deny", "wx-watch", "0")
    assert metric(daemon.scrape(), "krsid_would_deny_total", hook="file_mprotect", rule="wx-watch") >= 1

    # 2. deny: EPERM for this comm only; the event names the rule.
    reloader.apply(reloader.with_rules(rule("wx-block", "deny")))
    w = mprotect_as(COMM)
    assert w["calls"][0]["errno"] == errno.EPERM
    e = event_of(daemon, w["pid"])
    assert (e["action"], e["rule"], e["verdict"]) == ("deny", "wx-block", "-EPERM")
    other = mprotect_as("krsid-other")
    assert other["calls"][0]["errno"] == 0
    scrape = daemon.scrape()
    assert metric(scrape, "krsid_denied_total", hook="file_mprotect", rule="wx-block") >= 1
    # The would_deny rule's count survives the reload (monotonic counters).
    assert metric(scrape, "krsid_would_deny_total", hook="file_mprotect", rule="wx-watch") >= 1

    # 3. a broken config is rejected; the deny stays in force.
    failures = metric(daemon.scrape(), "krsid_config_reload_total", result="failure")
    reloader.apply(reloader.with_rules(rule("wx-block", "deny")) + "\nhooks: [broken\n", expect_ok=False)
    assert mprotect_as(COMM)["calls"][0]["errno"] == errno.EPERM
    assert metric(daemon.scrape(), "krsid_config_reload_total", result="failure") == failures + 1

    # 4. ignore: allowed, not emitted, counted as filtered.
    reloader.apply(reloader.with_rules(rule("wx-quiet", "ignore")))
    w = mprotect_as(COMM)
    marker = mprotect_as("krsid-marker")
    assert w["calls"][0]["errno"] == 0
    event_of(daemon, marker["pid"])  # the pipeline caught up past the ignored call
    assert not daemon.events(lambda o: o["hook"] == "file_mprotect" and o["tgid"] == w["pid"])


def test_reload_under_an_exec_loop_loses_no_event(
    daemon: RunningDaemon, reloader: Reloader, tmp_path: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("bprm_check_security")
    exe = tmp_path / f"krsid-loop-{uuid.uuid4().hex[:8]}"
    shutil.copy2("/bin/true", exe)
    n = 150
    lost_before = metric(daemon.scrape(), "krsid_events_lost_total")  # earlier tests lose on purpose
    loop = threading.Thread(
        target=lambda: subprocess.run(
            ["sh", "-c", f'i=0; while [ $i -lt {n} ]; do "{exe}"; i=$((i+1)); done'], check=True
        )
    )
    loop.start()
    for i in range(3):
        reloader.apply(reloader.with_rules(rule(f"r{i}", "would_deny")))
    loop.join(300)
    events = daemon.wait_events(lambda o: o.get("filename") == str(exe), n, timeout=120)
    assert len(events) == n
    daemon.assert_seq_order()
    assert metric(daemon.scrape(), "krsid_events_lost_total") == lost_before
    assert re.search(r"reloaded .*: 1 policy rule", daemon.log.read_text())


def hook_cfg(reloader: Reloader, **settings: Any) -> str:
    cfg = yaml.safe_load(reloader.original)
    cfg["hooks"]["file_mprotect"] = {**(cfg["hooks"].get("file_mprotect") or {}), **settings}
    return str(yaml.safe_dump(cfg))


def many_mprotects(comm: str, *prots: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(WORKLOAD), "anon", "-", *prots],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=dict(os.environ, KRSID_WORKLOAD_COMM=comm),
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_rate_limit_caps_events_and_counts_the_rest(daemon: RunningDaemon, reloader: Reloader) -> None:
    reloader.apply(hook_cfg(reloader, rate_limit=5))
    before = metric(daemon.scrape(), "krsid_events_suppressed_total", hook="file_mprotect", reason="rate")
    w = many_mprotects("krsid-rate", *["READ|EXEC"] * 200)
    assert all(c["errno"] == 0 for c in w["calls"])  # noise control never blocks
    time.sleep(2)
    got = len(daemon.events(lambda o: o["hook"] == "file_mprotect" and o["tgid"] == w["pid"]))
    suppressed = metric(daemon.scrape(), "krsid_events_suppressed_total", hook="file_mprotect", reason="rate")
    assert 1 <= got <= 40, got  # a second's burst per CPU plus 5/s while it ran
    assert suppressed - before == 200 - got


def test_dedup_folds_identical_events_and_reports_the_count(daemon: RunningDaemon, reloader: Reloader) -> None:
    reloader.apply(hook_cfg(reloader, dedup_window_ms=1000))
    w = many_mprotects("krsid-dedup", *["READ|EXEC"] * 50, "SLEEP:1.5", "READ|EXEC")
    events = daemon.wait_events(lambda o: o["hook"] == "file_mprotect" and o["tgid"] == w["pid"], 2)
    assert [e["suppressed"] for e in events] == [0, 49], events
    assert metric(daemon.scrape(), "krsid_events_suppressed_total", hook="file_mprotect", reason="dedup") >= 49


def test_deny_user_namespaces_to_an_unprivileged_user(
    daemon: RunningDaemon, reloader: Reloader, hook_enabled: Callable[[str], None]
) -> None:
    """The seed case (Cloudflare's deny-unshare): the shipped example's rule, scoped to a
    uid only this test uses; root keeps unshare -U."""
    hook_enabled("userns_create")
    example = yaml.safe_load((ROOT / "etc" / "policies" / "deny-unprivileged-userns.yaml").read_text())
    (shipped,) = example["policy"]["rules"]
    assert shipped["action"] == "deny" and shipped["match"] == {"uid": {"not": 0}}
    uid = 65533
    cfg = yaml.safe_load(reloader.original)
    cfg["policy"] = {"rules": [{**shipped, "match": {"uid": uid}}]}
    reloader.apply(str(yaml.safe_dump(cfg)))

    user = run_as(uid, "unshare", "-U", "true")
    assert user.returncode != 0 and "Operation not permitted" in user.stderr, user.stderr
    root = subprocess.run(["unshare", "-U", "true"], capture_output=True, text=True, timeout=60)
    assert root.returncode == 0, root.stderr

    denied = daemon.wait_events(lambda o: o["hook"] == "userns_create" and o["cred_uid"] == uid)
    assert denied and all(
        (e["action"], e["rule"], e["verdict"]) == ("deny", shipped["name"], "-EPERM") for e in denied
    ), denied
    allowed = daemon.wait_events(lambda o: o["hook"] == "userns_create" and o["cred_uid"] == 0)
    assert allowed and allowed[-1]["action"] == "audit" and allowed[-1]["verdict"] == "0"
    assert metric(daemon.scrape(), "krsid_denied_total", hook="userns_create", rule=shipped["name"]) >= 1


# -- policy in every hook, exe / path matchers, many rules ------------------------------------
#
# Each rule below is scoped to what only the test does: a uid nobody else in the VM uses,
# a copy of a binary on the test's own tmpfs, a new uid only the test asks for.

TEST_UID = 65531  # the processes these tests run as (setpriv)


def as_user(uid: int, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *cmd],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def shared_tmpfs() -> Iterator[Path]:
    """A tmpfs other uids can reach (pytest's tmp_path is 0700 root): /tmp/krsid-policy-*."""
    d = Path("/tmp") / f"krsid-policy-{uuid.uuid4().hex[:8]}"
    d.mkdir(mode=0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "krsid-test", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)
        d.rmdir()


@pytest.fixture
def policy(daemon: RunningDaemon) -> Iterator[Reloader]:
    """Hot-reloads rules without requiring file_mprotect; restores the config after."""
    with Reloader(daemon) as r:
        yield r


def test_exe_and_exe_prefix_match_the_callers_binary(
    daemon: RunningDaemon, policy: Reloader, tmpfs_dir: Path, hook_enabled: Callable[[str], None]
) -> None:
    """exe (one inode) on userns_create, exe_prefix (a directory) on task_fix_setuid: copies
    of unshare/setpriv on the test's tmpfs are denied, the system's own binaries are not."""
    hook_enabled("userns_create")
    hook_enabled("task_fix_setuid")
    unshare = tmpfs_dir / "unshare"
    shutil.copy2(shutil.which("unshare") or "/usr/bin/unshare", unshare)
    tools = tmpfs_dir / "tools"
    tools.mkdir()
    setpriv = tools / "setpriv"
    shutil.copy2(shutil.which("setpriv") or "/usr/bin/setpriv", setpriv)
    new_uid = 65530
    policy.apply(
        policy.with_rules(
            {"name": "userns-by-copy", "hook": "userns_create", "action": "deny", "match": {"exe": str(unshare)}},
            {
                "name": "setuid-from-tools",
                "hook": "task_fix_setuid",
                "action": "deny",
                "match": {"exe_prefix": str(tmpfs_dir), "fields": {"new_uid": new_uid}},
            },
        )
    )
    denied = subprocess.run([str(unshare), "-U", "true"], capture_output=True, text=True, timeout=60)
    assert denied.returncode != 0 and "Operation not permitted" in denied.stderr, denied.stderr
    assert subprocess.run(["unshare", "-U", "true"], capture_output=True, timeout=60).returncode == 0

    denied = subprocess.run([str(setpriv), f"--reuid={new_uid}", "true"], capture_output=True, text=True, timeout=60)
    assert denied.returncode != 0, denied.stderr
    assert subprocess.run(["setpriv", f"--reuid={new_uid}", "true"], timeout=60).returncode == 0

    ns = daemon.wait_events(lambda o: o["hook"] == "userns_create" and o.get("rule") == "userns-by-copy")
    assert ns and ns[0]["action"] == "deny" and ns[0]["verdict"] == "-EPERM", ns
    su = daemon.wait_events(lambda o: o["hook"] == "task_fix_setuid" and o.get("rule") == "setuid-from-tools")
    assert su and su[0]["new_uid"] == new_uid and su[0]["action"] == "deny", su
    allowed = daemon.wait_events(
        lambda o: o["hook"] == "task_fix_setuid" and o["new_uid"] == new_uid and o["action"] == "audit"
    )
    assert allowed, "the system's setpriv was allowed and audited"


@pytest.fixture
def probe_cgroup() -> Iterator[Path]:
    """A cgroup of this test's own with a child cgroup, removed after (its processes have exited)."""
    from tests.vm.nspawn_container import CGROUP_ROOT, remove_cgroup

    assert (CGROUP_ROOT / "cgroup.controllers").exists(), "the VM's init mounts cgroup2 at /sys/fs/cgroup"
    top = CGROUP_ROOT / f"krsid-policy-{uuid.uuid4().hex[:8]}"
    (top / "inner").mkdir(parents=True)
    try:
        yield top
    finally:
        remove_cgroup(top)


def test_cgroup_rule_denies_in_its_subtree_only(
    daemon: RunningDaemon, policy: Reloader, probe_cgroup: Path, hook_enabled: Callable[[str], None]
) -> None:
    """cgroup: an exec in the named cgroup or below it is denied, one elsewhere is not; the
    cgroup made again under its path is followed without a reload."""
    hook_enabled("bprm_check_security")
    policy.apply(
        policy.with_rules(
            {
                "name": "deny-exec-in-probe-cgroup",
                "hook": "bprm_check_security",
                "action": "deny",
                "match": {"cgroup": f"/{probe_cgroup.name}"},
            }
        )
    )

    def exec_true_in(cgroup: Path | None) -> subprocess.CompletedProcess[str]:
        enter = f'echo $$ > "{cgroup}/cgroup.procs" && ' if cgroup else ""
        return subprocess.run(["sh", "-c", enter + "exec /bin/true"], capture_output=True, text=True, timeout=60)

    for where in (probe_cgroup, probe_cgroup / "inner"):
        denied = exec_true_in(where)
        assert denied.returncode != 0 and "Operation not permitted" in denied.stderr, (where, denied.stderr)
    assert exec_true_in(None).returncode == 0
    ids = {os.stat(probe_cgroup).st_ino, os.stat(probe_cgroup / "inner").st_ino}
    evs = daemon.wait_events(
        lambda o: o["hook"] == "bprm_check_security" and o.get("rule") == "deny-exec-in-probe-cgroup", count=2
    )
    assert {(o["cgroup_id"], o["filename"], o["action"], o["verdict"]) for o in evs} == {
        (i, "/bin/true", "deny", "-EPERM") for i in ids
    }, evs

    # The cgroup removed: the rule names what is not there (krsid_policy_stale). Made
    # again, as systemd does when a service restarts: the poll loop's policy refresh
    # finds the new cgroup within about a second, with no reload.
    refreshes = metric(daemon.scrape(), "krsid_policy_refreshes_total")
    (probe_cgroup / "inner").rmdir()
    probe_cgroup.rmdir()
    deadline = time.monotonic() + 30
    while metric(daemon.scrape(), "krsid_policy_stale") != 1:
        assert time.monotonic() < deadline, daemon.log.read_text()[-3000:]
        time.sleep(0.5)
    assert (
        f"policy: the rules stay as loaded, a file or cgroup they name is not there now: cgroup /{probe_cgroup.name}"
        in daemon.log.read_text()
    )
    probe_cgroup.mkdir()
    while (again := exec_true_in(probe_cgroup)).returncode == 0:
        assert time.monotonic() < deadline, daemon.log.read_text()[-3000:]
        time.sleep(0.5)
    assert "Operation not permitted" in again.stderr, again.stderr
    assert "policy: a file or cgroup a rule names was replaced" in daemon.log.read_text()
    scrape = daemon.scrape()
    assert metric(scrape, "krsid_policy_refreshes_total") > refreshes and metric(scrape, "krsid_policy_stale") == 0


def test_path_prefix_and_fields_on_file_open_exec_and_connect(
    daemon: RunningDaemon, policy: Reloader, shared_tmpfs: Path, hook_enabled: Callable[[str], None]
) -> None:
    """Rules run before each hook's own filter: a write open below a directory
    (file_open), an exec of a file below a directory (bprm_check_security), a UDP
    connect to one port (socket_connect), all for the test's uid only."""
    for hook in ("file_open", "bprm_check_security", "socket_connect"):
        hook_enabled(hook)
    data = shared_tmpfs / "data"
    data.mkdir(mode=0o777)
    bindir = shared_tmpfs / "bin"
    bindir.mkdir(mode=0o755)
    data.chmod(0o777)
    target = data / "f"
    target.write_text("x")
    target.chmod(0o666)
    true_copy = bindir / "true"
    shutil.copy2("/bin/true", true_copy)
    port = 4119
    policy.apply(
        policy.with_rules(
            {
                "name": "no-writes-below-data",
                "hook": "file_open",
                "action": "deny",
                "match": {"uid": TEST_UID, "path_prefix": str(data), "fields": {"flags": {"any": ["WRONLY", "RDWR"]}}},
            },
            {
                "name": "no-exec-below-bin",
                "hook": "bprm_check_security",
                "action": "deny",
                "match": {"uid": TEST_UID, "path_prefix": [str(bindir)]},
            },
            {
                "name": "no-port",
                "hook": "socket_connect",
                "action": "deny",
                "match": {"uid": TEST_UID, "fields": {"family": "INET", "port": port}},
            },
        )
    )
    write = as_user(TEST_UID, "sh", "-c", f"echo y > {target}")
    assert write.returncode != 0 and "Operation not permitted" in write.stderr, write.stderr  # EPERM
    assert as_user(TEST_UID, "cat", str(target)).stdout == "x"  # reads are not matched
    assert subprocess.run(["sh", "-c", f"echo z > {target}"], timeout=60).returncode == 0  # root is not matched

    ex = as_user(TEST_UID, str(true_copy))
    assert ex.returncode != 0, ex
    assert as_user(TEST_UID, "/bin/true").returncode == 0

    connect = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "try:\n s.connect(('127.0.0.1',int(sys.argv[1]))); print('ok')\n"
        "except PermissionError: print('EPERM')\n"
    )
    assert as_user(TEST_UID, sys.executable, "-c", connect, str(port)).stdout.strip() == "EPERM"
    assert as_user(TEST_UID, sys.executable, "-c", connect, str(port + 1)).stdout.strip() == "ok"

    opened = daemon.wait_events(lambda o: o["hook"] == "file_open" and o.get("rule") == "no-writes-below-data")
    assert opened and opened[0]["reason"] == "RULE" and opened[0]["path"] == str(target), opened
    assert opened[0]["verdict"] == "-EPERM"
    execs = daemon.wait_events(lambda o: o["hook"] == "bprm_check_security" and o.get("rule") == "no-exec-below-bin")
    assert execs and execs[0]["path"] == str(true_copy), execs
    conns = daemon.wait_events(lambda o: o["hook"] == "socket_connect" and o.get("rule") == "no-port")
    assert conns and conns[0]["port"] == port and conns[0]["action"] == "deny", conns


def test_the_128th_rule_is_reached_and_denies_even_when_rate_limited(
    daemon: RunningDaemon, policy: Reloader, hook_enabled: Callable[[str], None]
) -> None:
    """127 rules that do not match, then the deciding one in the last slot: the bounded
    rule loop goes all the way. With rate_limit 1/s the events are suppressed, the
    denies are not."""
    RULES_PER_HOOK = catalog().contract.rules_per_hook

    hook_enabled("task_fix_setuid")
    new_uid = 65529
    filler = [
        {"name": f"filler-{i}", "hook": "task_fix_setuid", "action": "deny", "match": {"fields": {"new_uid": 1000 + i}}}
        for i in range(RULES_PER_HOOK - 1)
    ]
    last = {"name": "last-slot", "hook": "task_fix_setuid", "action": "deny", "match": {"fields": {"new_uid": new_uid}}}
    cfg = yaml.safe_load(policy.with_rules(*filler, last))
    cfg["hooks"]["task_fix_setuid"] = {**(cfg["hooks"].get("task_fix_setuid") or {}), "rate_limit": 1}
    policy.apply(str(yaml.safe_dump(cfg)))
    results = [
        subprocess.run(["setpriv", f"--reuid={new_uid}", "true"], capture_output=True, timeout=60).returncode
        for _ in range(10)
    ]
    assert all(rc != 0 for rc in results), results
    scrape = daemon.scrape()
    assert metric(scrape, "krsid_denied_total", hook="task_fix_setuid", rule="last-slot") >= 10
    assert metric(scrape, "krsid_events_suppressed_total", hook="task_fix_setuid", reason="rate") >= 1
