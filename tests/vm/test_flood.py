"""An unprivileged flood must not blind krsid (lanes and fair sharing, krsid.h).

One daemon on the SHIPPED config (etc/krsid.yaml: only paths, the port and one scoped
deny rule changed; fair sharing as shipped) while
unprivileged accounts flood every high-volume hook it has on (file_mprotect W^X
flips, file_open /proc/self/mem write-opens), a priority hook (exec, userns
creation, setuid-bit chmod), from single processes and from a fork of many.
Meanwhile root performs a sequence of high-priority actions.
Then:
- every one of root's actions is delivered (none lost, none folded);
- each flood is visible as flood summaries naming its uid and hook;
- per hook, the summaries' folded counts add up to the kernel's suppressed_flood
  counter, and invocations = emitted + filtered + suppressed + lost;
- per lane, what the kernel wrote was all read, and the priority lane lost nothing;
- a deny rule keeps denying under the flood (the verdict comes before any event).

The kernel-headers tier runs it with the shipped buffer sizes, the BTF tier with
buffer.pages at its minimum (1 page for the bulk lane).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.metrics import metric
from tests.support.procs import as_uid
from tests.vm.conftest import ROOT, RunningDaemon, free_port, remaining_krsid_programs, start_daemon

pytestmark = pytest.mark.vm

# The daemon runs at the shipped unit's Nice= (auditd's priority_boost, for the same reason).
UNIT_NICE = int(
    next(
        line.split("=", 1)[1]
        for line in (ROOT / "systemd" / "krsid.service").read_text().splitlines()
        if line.startswith("Nice=")
    )
)
NOBODY = 65534
FLOOD_UID = 4242  # floods too, and is denied userns creation by the test's rule
FORK_UID = 4343  # a fork of many flooding processes
FLOOD_SECONDS = 10
ROOT_EXECS = 10
FORK_FLOODERS = 4


@pytest.fixture(scope="module")
def flood_dir() -> Iterator[Path]:
    """A directory every uid can reach (the test's tmp_path is root's only), in the
    guest's own tmpfs: the flooders' binary and the files they chmod."""
    d = Path(tempfile.mkdtemp(prefix="krsid-flood-", dir="/dev/shm"))
    try:
        d.chmod(0o755)
        subprocess.run(["gcc", "-O2", "-o", str(d / "loops"), str(ROOT / "bench" / "loops.c")], check=True)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def shipped_daemon(
    journal: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[RunningDaemon]:
    tmp = tmp_path_factory.mktemp("krsid-flood")
    headers = str(request.config.getoption("--headers"))
    port = free_port()
    body = yaml.safe_load((ROOT / "etc" / "krsid.yaml").read_text())
    body.update(headers=headers, cache_dir=str(tmp / "cache"), state_dir=str(tmp / "state"))
    body["sinks"]["jsonl"].update(enabled=True, path=str(tmp / "events.jsonl"))
    body["sinks"]["prometheus"].update(enabled=True, listen=f"127.0.0.1:{port}")
    if headers == "btf":
        body.setdefault("buffer", {})["pages"] = 1  # the bulk lane at its minimum
    rule = {"name": "flood-no-userns", "hook": "userns_create", "action": "deny", "match": {"uid": FLOOD_UID}}
    body.setdefault("policy", {}).setdefault("rules", []).append(rule)
    assert "fair_share" not in body or body["fair_share"], "the shipped config must keep fair sharing on"
    cfg = tmp / "krsid.yaml"
    cfg.write_text(yaml.safe_dump(body))
    hooks = sorted(h for h, settings in body["hooks"].items() if (settings or {}).get("enabled", True))
    with start_daemon(tmp, cfg, port, headers, hooks, others=set(remaining_krsid_programs()), nice=UNIT_NICE) as d:
        yield d


def flooders(loops: Path, chmod_target: Path) -> list[list[str]]:
    """Each runs until killed (N is far more than FLOOD_SECONDS allow)."""
    many = str(10**9)
    out = [
        as_uid(NOBODY, str(loops), "mprotect", many),
        as_uid(NOBODY, str(loops), "mprotect", many),
        as_uid(NOBODY, str(loops), "procmem", many),
        as_uid(NOBODY, str(loops), "exec", many),
        as_uid(NOBODY, str(loops), "unshare", many),
        as_uid(NOBODY, str(loops), "chmod", many, str(chmod_target)),
        as_uid(FLOOD_UID, str(loops), "mprotect", many),
        as_uid(FLOOD_UID, str(loops), "unshare", many),  # every call denied by the rule
    ]
    out += [as_uid(FORK_UID, str(loops), "mprotect", many) for _ in range(FORK_FLOODERS)]
    return out


@contextlib.contextmanager
def flooding(commands: list[list[str]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [
        subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True) for c in commands
    ]
    try:
        yield procs
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, 9)
        for p in procs:
            p.wait(30)


@contextlib.contextmanager
def cpu_priority(nice: int) -> Iterator[None]:
    """Root's actions (this thread and what it starts) at `nice` while the floods run.
    What is tested is that krsid delivers them, not how the scheduler shares one vCPU
    among twelve busy loops: at nice 0 each action took ~15 s under TCG."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    try:
        yield
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)


def kernel_counters(text: str, hook: str) -> dict[str, float]:
    return {
        "invocations": metric(text, "krsid_hook_invocations_total", hook=hook),
        "emitted": metric(text, "krsid_events_emitted_total", hook=hook),
        "filtered": metric(text, "krsid_events_filtered_total", hook=hook),
        "suppressed": metric(text, "krsid_events_suppressed_total", hook=hook),
        "flood": metric(text, "krsid_events_suppressed_total", hook=hook, reason="flood"),
        "lost_ringbuf": metric(text, "krsid_events_lost_total", hook=hook, stage="ringbuf"),
    }


def settled(daemon: RunningDaemon, timeout: float = 300.0) -> str:
    """The exposition once the lanes are drained (every record the kernel wrote was read)."""
    deadline = time.monotonic() + timeout
    while True:
        text = daemon.scrape()
        drained = all(
            metric(text, "krsid_lane_events_emitted_total", lane=lane)
            == metric(text, "krsid_lane_events_read_total", lane=lane)
            for lane in ("priority", "bulk")
        )
        if drained or time.monotonic() > deadline:
            return text
        time.sleep(1)


def peak_rates(records: list[dict[str, Any]], key: str) -> dict[str, int]:
    """hook -> the most events one `key` (tgid or uid) had in any one second."""
    per: Counter[tuple[str, int, int]] = Counter()
    for r in records:
        if r["hook"] != "flood":
            per[(r["hook"], r[key], r["ktime_ns"] // 1_000_000_000)] += 1
    out: dict[str, int] = {}
    for (hook, _who, _second), n in per.items():
        out[hook] = max(out.get(hook, 0), n)
    return out


def test_busy_benign_work_is_never_summarized(
    shipped_daemon: RunningDaemon, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The defaults must leave normal busy work alone: a parallel C build (execs of
    make, gcc, cc1, as, ld), byte-compiling Python, and a JIT-like burst of W^X flips
    produce events, and not one flood summary. Prints the peak rates per process and
    per uid it measured (README: Lanes and fair sharing)."""
    if request.config.getoption("--headers") == "btf":
        # Measured: with a 1-page bulk lane congestion pricing folds the burst (984 of
        # its 1,000 records), as it should for a lane that small.
        pytest.skip("the BTF tier runs this module with a 1-page bulk lane, not the shipped sizes this checks")
    daemon = shipped_daemon
    before = len(daemon.records())
    src = tmp_path / "build"
    src.mkdir()
    for i in range(60):
        (src / f"f{i}.c").write_text(f"int f{i}(int x) {{ return x * {i}; }}\n")
    (src / "main.c").write_text("int main(void) { return 0; }\n")
    objs = " ".join(f"f{i}.o" for i in range(60))
    (src / "Makefile").write_text(f"all: prog\nprog: main.o {objs}\n\tgcc -o $@ $^\n%.o: %.c\n\tgcc -O1 -c $<\n")
    t0 = time.monotonic()
    subprocess.run(["make", "-s", "-j4", "-C", str(src)], check=True)
    subprocess.run(
        ["python3", "-m", "compileall", "-q", "-f", "-d", "x", str(ROOT / "krsid")],
        check=True,
        env=dict(os.environ, PYTHONPYCACHEPREFIX=str(tmp_path / "pyc")),
    )
    loops = tmp_path / "loops"
    subprocess.run(["gcc", "-O2", "-o", str(loops), str(ROOT / "bench" / "loops.c")], check=True)
    # A JIT warming up: a burst that fits half the shipped bulk lane (congestion pricing
    # starts there; README: Lanes and fair sharing).
    subprocess.run([str(loops), "mprotect", "1000"], check=True, stdout=subprocess.DEVNULL)
    elapsed = time.monotonic() - t0
    time.sleep(3)  # two summary periods
    settled(daemon)
    records = daemon.records()[before:]
    execs = [r for r in records if r["hook"] == "bprm_check_security"]
    assert len(execs) >= 120, f"the build ran too few execs to mean anything: {len(execs)}"
    floods = [r for r in records if r["hook"] == "flood"]
    print(
        f"\nbenign work: {len(records)} events in {elapsed:.1f}s; peak per process and second "
        f"{peak_rates(records, 'tgid')}; per uid and second {peak_rates(records, 'uid')}"
    )
    assert not floods, f"benign work was summarized as a flood: {floods}"


def test_an_unprivileged_flood_loses_no_high_priority_event(shipped_daemon: RunningDaemon, flood_dir: Path) -> None:
    daemon = shipped_daemon
    for hook in ("bprm_check_security", "file_mprotect", "file_open", "userns_create", "task_fix_setuid"):
        assert hook in daemon.attached, f"{hook} is not attached on the shipped config:\n{daemon.log.read_text()}"
    loops = flood_dir / "loops"
    chmod_target = flood_dir / "nobody-file"
    shutil.copy("/bin/true", chmod_target)
    os.chown(chmod_target, NOBODY, NOBODY)
    binaries = []
    for i in range(ROOT_EXECS):
        b = flood_dir / f"krsid-prio-{i:02d}"
        shutil.copy("/bin/true", b)
        binaries.append(b)

    phases: dict[str, float] = {}
    t0 = time.monotonic()
    with flooding(flooders(loops, chmod_target)) as procs, cpu_priority(UNIT_NICE):
        time.sleep(3)  # the floods are at full speed before root starts
        for b in binaries:
            subprocess.run([str(b)], check=True)
            time.sleep(FLOOD_SECONDS / ROOT_EXECS)
        phases["root's execs"] = time.monotonic() - t0
        root_userns = [subprocess.run(["unshare", "-U", "true"], check=True) for _ in range(3)]
        phases["+ userns"] = time.monotonic() - t0
        setuid = [subprocess.run(as_uid(4545, "true"), check=True) for _ in range(3)]
        phases["+ setuid"] = time.monotonic() - t0
        denied_userns = subprocess.run(
            as_uid(FLOOD_UID, str(loops), "unshare", "50"), capture_output=True, text=True, check=True
        )
        for p in procs:
            assert p.poll() is None, f"a flooder ended early: {p.args!r}: {p.stderr.read() if p.stderr else b''!r}"
        phases["flood (root's actions)"] = time.monotonic() - t0
    assert len(root_userns) == 3 and len(setuid) == 3
    # The verdict is decided before any event: the flood never turns a deny into an allow.
    assert "failed=50" in denied_userns.stderr, denied_userns.stderr

    time.sleep(3)  # two summary periods: the daemon writes the summaries of floods gone quiet
    t1 = time.monotonic()
    text = settled(daemon)
    phases["drain after the flood"] = time.monotonic() - t1
    records = daemon.records()
    print(f"\nflood test phases (s): {phases}; {len(records)} records")
    assert daemon.proc.poll() is None, "the daemon died under the flood"

    # 1. Every high-priority action of root's was delivered.
    floods = [r for r in records if r["hook"] == "flood"]
    execs = {r["path"] for r in records if r["hook"] == "bprm_check_security" and r["uid"] == 0}
    missing = [str(b) for b in binaries if str(b) not in execs]
    lanes = {
        (lane, what): metric(text, f"krsid_lane_events_{what}_total", lane=lane)
        for lane in ("priority", "bulk")
        for what in ("emitted", "lost", "read")
    }
    root_folded = [r for r in floods if r["flood_uid"] == 0]
    assert not missing, f"root's execs lost under the flood: {missing}; lanes {lanes}; root folded {root_folded}"
    userns_root = [r for r in records if r["hook"] == "userns_create" and r["uid"] == 0 and r["comm"] == "unshare"]
    assert len(userns_root) >= 3, f"root's userns creations: {len(userns_root)} of 3"
    setuids = [r for r in records if r["hook"] == "task_fix_setuid" and r.get("new_uid") == 4545]
    assert len(setuids) >= 3, f"setuid to 4545: {len(setuids)} of 3"
    denies = [r for r in records if r["hook"] == "userns_create" and r["action"] == "deny"]
    assert denies and all(r["uid"] == FLOOD_UID for r in denies)

    # 2. The floods are visible as summaries naming who flooded which hook.
    seen = {(r["flooded_hook"], r["flood_uid"]) for r in floods}
    for wanted in [
        ("file_mprotect", NOBODY),
        ("file_mprotect", FLOOD_UID),
        ("file_mprotect", FORK_UID),
        ("file_open", NOBODY),
        ("userns_create", NOBODY),
    ]:
        assert wanted in seen, f"no flood summary for {wanted}; summaries: {sorted(seen)}"
    assert all(r["folded"] > 0 and r["first_ns"] <= r["last_ns"] for r in floods)

    # 3. Per hook, the books balance and the summaries add up.
    for hook in ("file_mprotect", "file_open", "userns_create", "bprm_check_security"):
        k = kernel_counters(text, hook)
        assert k["invocations"] == k["emitted"] + k["filtered"] + k["suppressed"] + k["lost_ringbuf"], (hook, k)
        folded = sum(r["folded"] for r in floods if r["flooded_hook"] == hook)
        assert folded == k["flood"], f"{hook}: summaries fold {folded}, the kernel suppressed {k['flood']}"
    assert kernel_counters(text, "file_mprotect")["flood"] > 0

    # 4. Per lane: all written was read; the priority lane lost nothing.
    for lane in ("priority", "bulk"):
        written = metric(text, "krsid_lane_events_emitted_total", lane=lane)
        assert written == metric(text, "krsid_lane_events_read_total", lane=lane), lane
    assert metric(text, "krsid_lane_events_lost_total", lane="priority") == 0
