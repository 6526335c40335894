"""`make run`, the README's first command, the way a newcomer runs it: from the
checkout, on the shipped config, with whatever python3 comes first on PATH.

On a kernel that refuses BPF-LSM (these machines), `make run` runs the daemon in the
test VM with a demo workload; this test gives the demo a time limit and checks that
events come out, in the JSON lines the shipped config writes, without a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.cli import run_krsid
from tests.support.records import PROGRAMS

ROOT = PROGRAMS.parent
DEMO_SECONDS = 12
MAKE_RUN_TIMEOUT = 1200  # VM boot + a TCG compile of every default hook + the demo


def test_make_run_shows_events_from_the_shipped_config() -> None:
    if os.geteuid() != 0:
        pytest.skip("make run needs root (apt, the VM)")
    if run_krsid("doctor", "--require-lsm-load", timeout=120).returncode == 0:
        pytest.skip("this kernel loads BPF-LSM: make run would run the daemon on this host in the foreground")
    env = dict(os.environ, KRSID_DEMO_SECONDS=str(DEMO_SECONDS))
    p = subprocess.run(
        ["make", "-s", "run"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=MAKE_RUN_TIMEOUT,
        check=False,
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    assert "Traceback" not in out, out[-6000:]
    assert "ended inside the BPF compiler" not in out, out[-6000:]
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    hooks = {e.get("hook") for e in events}
    assert {"bprm_check_security", "file_mprotect"} <= hooks, out[-6000:]
    execs = [e for e in events if e.get("hook") == "bprm_check_security"]
    assert any(str(e.get("filename", "")).endswith("/demo-true") for e in execs), execs[-3:]
    # The journald side of the same events (the demo prints the last entries).
    assert "KRSID_HOOK=" in p.stdout, out[-6000:]
