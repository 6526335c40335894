"""BPF-LSM end to end: real programs attached, real journald, real metrics endpoint.

Run inside tests/vm/run (make test-vm runs this file twice: real headers, BTF headers).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.journald import Journal
from tests.vm.conftest import ROOT, RunningDaemon, message_id, serving_program

pytestmark = pytest.mark.vm
WORKLOAD = Path(__file__).parent / "workloads" / "mprotect_workload.py"
EXEC_MESSAGE_ID = message_id("bprm_check_security")
MPROTECT_MESSAGE_ID = message_id("file_mprotect")


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name:
            got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
            if got == want:
                return float(m.group(3))
    raise KeyError(f"{name}{{{want}}} not in scrape")


def run_unique_true(tmp_path: Path) -> tuple[Path, int]:
    exe = tmp_path / f"krsid-true-{uuid.uuid4().hex[:12]}"
    shutil.copy2("/bin/true", exe)
    p = subprocess.Popen([str(exe)])
    assert p.wait(30) == 0
    return exe, p.pid


def own_comm() -> str:
    return Path("/proc/self/comm").read_text().strip()


def test_ready_reports_every_enabled_hook_attached(daemon: RunningDaemon) -> None:
    """Each enabled hook attached: its own program, or where the kernel lacks the hook
    its fallback (file_ioctl before 6.17); a hook with neither is skipped."""
    from krsid.plan import kernel_hooks

    assert "READY=1" in daemon.ready_status
    available = kernel_hooks()
    programs = [p for p in (serving_program(h, available) for h in daemon.hooks) if p is not None]
    n = len(programs)
    assert f"STATUS=attached {n}/{n} hooks: " in daemon.ready_status, daemon.ready_status
    assert sorted(daemon.attached) == sorted(programs), daemon.ready_status
    log = daemon.log.read_text()
    expected = "header tree generated from" if daemon.headers == "btf" else "kernel headers in"
    if daemon.headers != "auto":
        assert expected in log, log


def test_daemon_memory_is_not_backed_by_transparent_huge_pages(daemon: RunningDaemon) -> None:
    """Debian's kernels have THP "always": khugepaged would fold the compile's trimmed
    free chunks back into resident 2 MB pages (RSS +24 MB over 1,000 exec events,
    measured). The daemon turns THP off for itself; the kernel shows it per process."""
    status = Path(f"/proc/{daemon.proc.pid}/status").read_text()
    assert "krsid" in Path(f"/proc/{daemon.proc.pid}/cmdline").read_text()
    assert "THP_enabled:\t0" in status, status


def test_exec_reaches_journald_and_jsonl(
    daemon: RunningDaemon, journal: Journal, tmp_path: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("bprm_check_security")
    exe, pid = run_unique_true(tmp_path)
    entries = journal.wait_for(lambda e: True, f"KRSID_FILENAME={exe}")
    assert len(entries) == 1, entries
    e = entries[0]
    assert e["KRSID_HOOK"] == "bprm_check_security"
    assert e["MESSAGE_ID"] == EXEC_MESSAGE_ID
    assert e["SYSLOG_IDENTIFIER"] == "krsid"
    assert e["PRIORITY"] == "6"
    assert e["KRSID_PID"] == str(pid) and e["KRSID_TGID"] == str(pid)
    assert e["KRSID_COMM"] == own_comm()  # comm changes only after the exec succeeds
    assert e["KRSID_INTERP"] == str(exe)
    assert e["KRSID_PATH"] == str(exe)
    assert e["KRSID_PPID"] == str(__import__("os").getpid())
    assert e["KRSID_UID"] == "0" and e["KRSID_GID"] == "0"
    assert int(e["KRSID_SEQ"]) > 0
    assert str(exe) in e["MESSAGE"]

    lines = daemon.wait_events(lambda o: o["hook"] == "bprm_check_security" and o["filename"] == str(exe))
    assert len(lines) == 1
    o = lines[0]
    assert (o["pid"], o["tgid"], o["comm"], o["seq"]) == (pid, pid, own_comm(), int(e["KRSID_SEQ"]))
    assert o["schema_version"] == 2


def workload(kind: str, path: str, *prots: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(WORKLOAD), kind, path, *prots],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def mprotect_events(daemon: RunningDaemon, pid: int, count: int = 1) -> list[dict[str, Any]]:
    return daemon.wait_events(lambda o: o["hook"] == "file_mprotect" and o["tgid"] == pid, count)


def test_mprotect_exec_on_anonymous_memory(
    daemon: RunningDaemon, journal: Journal, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("file_mprotect")
    w = workload("anon", "-", "READ|EXEC")
    call = w["calls"][0]
    assert call["errno"] == 0  # audit only: nothing denied
    events = mprotect_events(daemon, w["pid"])
    assert len(events) == 1, events
    o = events[0]
    assert (o["vm_start"], o["vm_end"]) == (call["before"]["start"], call["before"]["end"])
    assert o["reqprot"] == "READ|EXEC" and "EXEC" in o["prot"]
    assert o["anonymous"] is True and o["file"] == ""
    assert o["vm_flags"].startswith("READ|WRITE")  # the mapping was rw- before
    j = journal.wait_for(lambda e: True, f"KRSID_TGID={w['pid']}", f"MESSAGE_ID={MPROTECT_MESSAGE_ID}")
    assert len(j) == 1
    assert j[0]["KRSID_VM_START"] == call["before"]["start"] and j[0]["KRSID_PROT"] == o["prot"]
    assert j[0]["KRSID_REQPROT"] == "READ|EXEC" and j[0]["KRSID_FILE"] == ""
    assert "anonymous" in j[0]["MESSAGE"]


def test_mprotect_exec_on_file_mapping(
    daemon: RunningDaemon, tmpfs_dir: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("file_mprotect")
    f = tmpfs_dir / f"mapped-{uuid.uuid4().hex[:8]}.bin"
    f.write_bytes(b"\xc3" * 3 * 4096)
    w = workload("file", str(f), "READ|EXEC")
    call = w["calls"][0]
    assert call["before"]["path"] == str(f)
    events = mprotect_events(daemon, w["pid"])
    assert len(events) == 1, events
    o = events[0]
    assert (o["vm_start"], o["vm_end"]) == (call["before"]["start"], call["before"]["end"])
    assert o["file"] == f.name and o["anonymous"] is False
    assert o["reqprot"] == "READ|EXEC"


def test_exec_only_filter_drops_non_exec_in_kernel(daemon: RunningDaemon, hook_enabled: Callable[[str], None]) -> None:
    hook_enabled("file_mprotect")
    before = daemon.scrape()
    # READ first (filtered in the kernel), then READ|EXEC as a marker that the
    # pipeline has caught up: when the marker arrives, the READ call is not there.
    w = workload("anon", "-", "READ", "READ|EXEC")
    events = mprotect_events(daemon, w["pid"])
    assert [e["reqprot"] for e in events] == ["READ|EXEC"]
    after = daemon.scrape()
    hook = {"hook": "file_mprotect"}
    assert (
        metric(after, "krsid_events_filtered_total", **hook)
        >= metric(before, "krsid_events_filtered_total", **hook) + 1
    )


def test_metrics_count_what_the_test_caused(
    daemon: RunningDaemon, tmp_path: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled("bprm_check_security")
    hook = {"hook": "bprm_check_security"}
    before = daemon.scrape()
    n = 5
    exes = [run_unique_true(tmp_path)[0] for _ in range(n)]
    names = {str(e) for e in exes}
    assert len(daemon.wait_events(lambda o: o.get("filename") in names, n)) == n
    deadline = time.monotonic() + 30
    while True:
        after = daemon.scrape()
        if metric(after, "krsid_events_total", **hook) >= metric(before, "krsid_events_total", **hook) + n:
            break
        assert time.monotonic() < deadline, after
        time.sleep(0.2)
    assert (
        metric(after, "krsid_hook_invocations_total", **hook)
        >= metric(before, "krsid_hook_invocations_total", **hook) + n
    )
    assert metric(after, "krsid_program_attached", **hook) == 1
    # bpf_stats is on in the session config: the kernel's run count of the program rises too.
    assert (
        metric(after, "krsid_hook_program_runs_total", **hook)
        >= metric(before, "krsid_hook_program_runs_total", **hook) + n
    )
    assert metric(after, "krsid_hook_program_seconds_total", **hook) > 0
    assert metric(after, "krsid_events_lost_total", hook="bprm_check_security", stage="ringbuf") == 0
    assert 'krsid_build_info{version="' in after
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=after.encode(), capture_output=True, timeout=30)
        assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), p.stdout + p.stderr


def lsm_program_ids() -> set[int]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True)
    return {p["id"] for p in json.loads(out.stdout) if p.get("type") == "lsm"}


@pytest.mark.parametrize(
    "bad",
    [
        "hooks:\n  nope: {}\n",
        "hooks:\n  file_mprotect:\n    exec_only: maybe\n",
        "hooks:\n  file_mprotect: {}\nsinks:\n  prometheus: {listen: nowhere}\n",
    ],
)
def test_bad_config_attaches_nothing(daemon: RunningDaemon, tmp_path: Path, bad: str) -> None:
    before = lsm_program_ids()
    assert before, "the session daemon's programs should be visible"
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(bad)
    p = subprocess.run(
        [sys.executable, "-m", "krsid", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert p.returncode == 2, p.stderr
    assert f"{cfg}:" in p.stderr and "Traceback" not in p.stderr
    assert lsm_program_ids() == before


def test_seq_numbers_are_unique_and_increasing_per_lane(daemon: RunningDaemon) -> None:
    assert daemon.assert_seq_order() > 0
