"""Policy cost (issue 4), in the test VM: `bench/run.py policy` (see bench/run.py).

    tests/vm/run -- .venv/bin/python bench/run.py policy [--headers kernel] [--repeat 3]

One daemon (userns_create + file_mprotect) is started once; its policy is then
switched by hot reload (no recompile), so every variant below runs side by side in
this one invocation, each loop the median of --repeat runs:

(a) unshare(CLONE_NEWUSER), ns per call (bench/loops.c `unshare`: one call per forked
    child, only the call timed), as root and as uid 65534: without krsid, with krsid
    and no rules (every call emits an audit event), with the shipped
    deny-unprivileged-userns rule (uid != 0 -> deny: root's calls evaluate it, pass and
    are audited; uid 65534's are denied), and with one `ignore` rule matching every
    call (the policy's cost without an event).
(b) mprotect R <-> R+W (no PROT_EXEC: file_mprotect's exec_only filter drops it), ns
    per call: without krsid, krsid with 0 rules, krsid with 100 rules on file_mprotect
    that do not match (every call walks all 100).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from bench.common import ROOT, build_loops, krsid_running, table

NOBODY = 65534
UNSHARE_CALLS = 2000
MPROTECT_CALLS = 20000
FILLER_RULES = 100


def _loop(exe: Path, kind: str, n: int, repeat: int, uid: int = 0) -> tuple[float, int]:
    """Median ns per call of a bench/loops.c loop, and the failed calls of the last run."""
    cmd = [str(exe), kind, str(n)]
    if uid:
        cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *cmd]
    times, failed = [], 0
    for _ in range(repeat):
        p = subprocess.run(cmd, capture_output=True, text=True, check=True)
        times.append(float(p.stdout))
        failed = int(p.stderr.split("failed=")[1]) if "failed=" in p.stderr else 0
    return statistics.median(times), failed


def _rules(n_filler: int, userns_deny: bool) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {
            "name": f"filler-{i}",
            "hook": "file_mprotect",
            "action": "deny",
            "match": {"uid": 60000 + i, "comm": f"nomatch-{i}", "fields": {"reqprot": {"all": ["EXEC"]}}},
        }
        for i in range(n_filler)
    ]
    if userns_deny:
        shipped = yaml.safe_load((ROOT / "etc" / "policies" / "deny-unprivileged-userns.yaml").read_text())
        rules += shipped["policy"]["rules"]
    return rules


class Daemon:
    def __init__(self, tmp: Path, headers: str) -> None:
        self.cfg_path = tmp / "policy-bench.yaml"
        self.log = tmp / "policy-bench.log"
        self.base: dict[str, Any] = {
            "headers": headers,
            "cache_dir": str(tmp / "cache"),
            "state_dir": str(tmp / "state"),
            "hooks": {"userns_create": {}, "file_mprotect": {}},
            "sinks": {
                "journald": {"enabled": False},
                "jsonl": {"path": str(tmp / "events.jsonl")},
                "prometheus": {"enabled": False},
            },
        }
        self.notify_path = tmp / "notify"

    def write(self, rules: list[dict[str, Any]]) -> None:
        self.cfg_path.write_text(yaml.safe_dump({**self.base, "policy": {"rules": rules}}))

    @contextmanager
    def running(self) -> Iterator[Daemon]:
        self.write([])
        with (
            self.log.open("wb") as logf,
            krsid_running(self.cfg_path, self.notify_path, stdout=logf, stderr=subprocess.STDOUT) as proc,
        ):
            self.proc = proc
            yield self

    def reload(self, rules: list[dict[str, Any]]) -> None:
        before = self.log.read_text().count("reloaded ")
        self.write(rules)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 120
        while self.log.read_text().count("reloaded ") <= before:
            if "reload rejected" in self.log.read_text() or time.monotonic() > deadline:
                sys.exit(f"policy bench: reload failed:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.2)


def bench_policy(args: argparse.Namespace) -> None:
    if os.environ.get("KRSID_IN_VM") != "1":
        sys.exit("bench/run.py policy: run it in the test VM: tests/vm/run -- .venv/bin/python bench/run.py policy")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        tmp.chmod(0o755)  # uid 65534 runs the loops binary from here
        exe = build_loops(tmp)
        r = args.repeat

        def unshare_both() -> dict[str, tuple[float, int]]:
            return {
                "root": _loop(exe, "unshare", UNSHARE_CALLS, r),
                "nobody": _loop(exe, "unshare", UNSHARE_CALLS, r, NOBODY),
            }

        un: dict[str, dict[str, tuple[float, int]]] = {"no krsid": unshare_both()}
        mp: dict[str, float] = {"no krsid": _loop(exe, "mprotect_rw", MPROTECT_CALLS, r)[0]}
        daemon = Daemon(tmp, args.headers)
        with daemon.running():
            un["krsid, no rules"] = unshare_both()
            mp["krsid, 0 rules"] = _loop(exe, "mprotect_rw", MPROTECT_CALLS, r)[0]
            daemon.reload(_rules(0, userns_deny=True))
            un["krsid, deny-unprivileged-userns"] = unshare_both()
            daemon.reload([{"name": "quiet", "hook": "userns_create", "action": "ignore", "match": {}}])
            un["krsid, one ignore rule (no event)"] = unshare_both()
            daemon.reload(_rules(FILLER_RULES, userns_deny=False))
            mp[f"krsid, {FILLER_RULES} rules (none match)"] = _loop(exe, "mprotect_rw", MPROTECT_CALLS, r)[0]

    base = un["no krsid"]
    rows = []
    for variant, res in un.items():
        cells = [variant]
        for who in ("root", "nobody"):
            ns, failed = res[who]
            denied = f", {failed}/{UNSHARE_CALLS} denied" if failed else ""
            cells.append(f"{ns:.0f} ({ns / base[who][0]:.2f}x{denied})")
        rows.append(cells)
    table(
        f"unshare(CLONE_NEWUSER) per call, ns (ratio to no krsid); VM/TCG, median of {r}",
        ["variant", "as root", f"as uid {NOBODY}"],
        rows,
    )
    mbase = mp["no krsid"]
    table(
        f"mprotect R<->R+W (filtered: no PROT_EXEC) per call, ns; VM/TCG, median of {r}",
        ["variant", "ns/call", "ratio to no krsid", "ratio to krsid, 0 rules"],
        [[v, f"{ns:.0f}", f"{ns / mbase:.2f}x", f"{ns / mp['krsid, 0 rules']:.2f}x"] for v, ns in mp.items()],
    )
