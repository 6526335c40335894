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

from tests.vm.conftest import ROOT, RunningDaemon

pytestmark = pytest.mark.vm
WORKLOAD = Path(__file__).parent / "workloads" / "mprotect_workload.py"
COMM = "krsid-wx-test"


def mprotect_as(comm: str) -> dict[str, Any]:
    return many_mprotects(comm, "READ|EXEC")


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Reloader:
    def __init__(self, daemon: RunningDaemon) -> None:
        self.daemon = daemon
        self.original = daemon.config.read_text()

    def apply(self, text: str, *, expect_ok: bool = True) -> None:
        before = self.daemon.log.read_text().count("reload")
        self.daemon.config.write_text(text)
        p = subprocess.run(
            [sys.executable, "-m", "krsid", "reload", "--config", str(self.daemon.config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        if not expect_ok:
            # `krsid reload` validates first and refuses; send SIGHUP directly to test the daemon's side.
            assert p.returncode == 2, p.stdout + p.stderr
            pid = int((Path(yaml.safe_load(self.original)["state_dir"]) / "krsid.pid").read_text())
            os.kill(pid, 1)
        else:
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
    r = Reloader(daemon)
    try:
        yield r
    finally:
        r.apply(r.original)


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
    seqs = [e["seq"] for e in daemon.events()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
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

    user = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "unshare", "-U", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
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
