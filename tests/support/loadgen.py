"""Drive krsid's real user-space pipeline at native speed, with exact loss accounting.

The hosts refuse LSM programs but load raw tracepoints. ``LoadgenDaemon`` is the
real Daemon (same module build, maps, poll loop, decoder, enricher, dispatcher and
sinks) except that it attaches loadgen.bpf.c to the sys_enter raw tracepoint
instead of the LSM hooks: every getppid() of the driver process emits one
file_mprotect record into krsid's ring buffer.

``run_load`` then proves the books balance per sink, from sequence numbers:
    produced (seq numbers taken in the kernel)
      = delivered (distinct seqs found in the sink's output)
      + lost in the ring buffer (kernel counter) + lost decoding
      + lost in the sink's queue + lost writing to the sink (daemon counters)
and that every missing seq is one of those counted losses, with no duplicates.

With ``priority_per_s``, a second driver process stands in for the events that
matter most: each of its getppid() calls emits one marked record
(``PRIORITY_FILE``) into the lane ``priority_lane`` names, while the first driver
floods the bulk lane. The BPF side counts, per driver, the calls, the records
written, those lost for want of room and those suppressed (``LoadResult.targets``);
the output says how many of each driver's records arrived (``LoadResult.arrived``).
"""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from krsid.catalog.contract import CNT_LOST_RINGBUF
from krsid.config import load_config
from krsid.daemon import Daemon
from krsid.event import Event
from krsid.pipeline.enrich import Enricher
from krsid.pipeline.stats import STAGE_DECODE
from krsid.pipeline.transport import LANE_BULK, LANE_PRIORITY
from tests.support.metrics import gap_stages
from tests.support.sinks import complete_jsonl

if TYPE_CHECKING:
    from krsid.pipeline.load import HookStatus, LoadedPrograms

HERE = Path(__file__).resolve().parent
BPF_SOURCE = HERE / "loadgen.bpf.c"
DRIVER_SOURCE = HERE / "loadgen_driver.c"
HOOK = "file_mprotect"  # the records the generator emits; the only hook compiled
# The drivers, as loadgen.bpf.c numbers them (loadgen_counts), and how their records
# are told apart in the output (the `file` field).
FLOOD, PRIORITY = "flood", "priority"
TARGET_FILES = {FLOOD: "libloadgen-jit-cache.so", PRIORITY: "libloadgen-priority.so"}
PRIORITY_FILE = TARGET_FILES[PRIORITY]
# loadgen_counts' slots per driver (LOADGEN_CALLS ... LOADGEN_SUPPRESSED).
OUTCOMES = ("calls", "emitted", "lost", "suppressed")
LANE_NUMBERS = {LANE_PRIORITY: 0, LANE_BULK: 1}  # KRSID_LANE_* in krsid.h


def build_driver(workdir: Path) -> Path:
    exe = workdir / "loadgen-driver"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(DRIVER_SOURCE)], check=True)
    return exe


def getppid_number(driver: Path) -> int:
    """getppid's syscall number on this architecture (the driver is C: it knows)."""
    return int(subprocess.run([str(driver), "--getppid-nr"], capture_output=True, text=True, check=True).stdout)


class WithoutIdentityEnricher(Enricher):
    """What krsid added to an event before process identity (issue 12): exe (cached per
    pid) and the cgroup context; no process table, ancestry, instance ids or hashes.
    The throughput bench's baseline for what identity costs."""

    def enrich(self, event: Event) -> None:
        event.values.pop("start_ns", None)  # without a start time the table is not used
        super().enrich(event)


class LoadgenDaemon(Daemon):
    """The daemon with the load generator attached in place of the LSM hooks."""

    extra_source = "#define LOADGEN_HOOK_ID 0\n" + BPF_SOURCE.read_text()

    def _attach(self, programs: LoadedPrograms) -> dict[str, HookStatus]:
        from krsid.pipeline.load import HookStatus

        # The generator's records claim hook id 0: that must be file_mprotect here.
        assert programs.hook_ids == {HOOK: 0}, programs.hook_ids
        programs.attach_raw_tracepoint("sys_enter", "raw_tracepoint__sys_enter")
        programs.status[HOOK] = HookStatus(HOOK, True)
        return dict(programs.status)

    def set_target(self, tgid: int) -> None:
        import ctypes as ct

        assert self.programs is not None
        ctl: Any = self.programs.table("loadgen_ctl")
        ctl[ct.c_int(0)] = ct.c_uint64(tgid)

    def set_priority_target(self, tgid: int, *, lane: str = LANE_PRIORITY, getppid_nr: int = 0) -> None:
        """Make tgid's getppid() calls emit marked records into `lane` (tgid 0: off)."""
        import ctypes as ct

        assert self.programs is not None
        ctl: Any = self.programs.table("loadgen_ctl")
        ctl[ct.c_int(3)] = ct.c_uint64(getppid_nr)
        ctl[ct.c_int(2)] = ct.c_uint64(LANE_NUMBERS[lane])
        ctl[ct.c_int(1)] = ct.c_uint64(tgid)

    def target_counts(self) -> dict[str, dict[str, int]]:
        """driver -> {calls, emitted, lost, suppressed}, summed over CPUs."""
        import ctypes as ct

        assert self.programs is not None
        counts: Any = self.programs.table("loadgen_counts")
        return {
            target: {
                outcome: int(counts.sum(ct.c_int(target_no * len(OUTCOMES) + slot)).value)
                for slot, outcome in enumerate(OUTCOMES)
            }
            for target_no, target in enumerate((FLOOD, PRIORITY))
        }


# One driver process makes every call: fair sharing would fold nearly all of it. The
# load tests measure the pipeline, so it is off unless a test turns it on.
FAIR_SHARE_OFF: Mapping[str, Any] = {lane: {"process_rate": 0, "uid_rate": 0} for lane in ("priority", "bulk")}


def write_config(
    workdir: Path,
    *,
    sinks: tuple[str, ...],
    ringbuf_pages: int,
    backlog_mb: int,
    jsonl_path: str,
    fair_share: Mapping[str, Any] = FAIR_SHARE_OFF,
    priority_pages: int | None = None,
) -> Path:
    buffer: dict[str, object] = {"kind": "ringbuf", "pages": ringbuf_pages}
    if priority_pages is not None:
        buffer["priority_pages"] = priority_pages
    cfg = workdir / "krsid-load.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "headers": "auto",
                "cache_dir": str(workdir / "cache"),
                "state_dir": str(workdir / "state"),
                "buffer": buffer,
                "hooks": {HOOK: {"exec_only": True}},
                "fair_share": dict(fair_share),
                "sinks": {
                    "journald": {"enabled": "journald" in sinks, "backlog_mb": backlog_mb},
                    "jsonl": {"enabled": "jsonl" in sinks, "path": jsonl_path, "backlog_mb": backlog_mb},
                    "prometheus": {"enabled": False},
                },
            }
        )
    )
    return cfg


@dataclass
class LoadResult:
    offered_per_s: float  # events/s the driver was paced to cause (0 = unpaced)
    calls: int
    produced: int  # sequence numbers taken in the kernel
    elapsed: float  # go -> every record consumed and every sink drained (or given up)
    cpu_seconds: float  # the daemon process (user + system), same interval
    lost: Counter[str] = field(default_factory=Counter)  # stage -> events
    delivered: dict[str, int] = field(default_factory=dict)  # sink -> distinct seqs in its output
    missing: dict[str, int] = field(default_factory=dict)  # sink -> seqs absent from its output
    duplicates: dict[str, int] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)
    kernel: dict[str, int] = field(default_factory=dict)  # the hook's kernel counters at the end
    flood_summaries: list[dict[str, Any]] = field(default_factory=list)  # in the JSON lines output
    # Per driver (FLOOD, PRIORITY), counted in the kernel: calls, emitted, lost, suppressed.
    targets: dict[str, dict[str, int]] = field(default_factory=dict)
    arrived: Counter[str] = field(default_factory=Counter)  # driver -> its records in the JSON lines output
    lanes: dict[str, dict[str, int]] = field(default_factory=dict)  # lane -> {emitted, lost} (krsid.h)
    lane_records: dict[str, int] = field(default_factory=dict)  # lane -> records the daemon read from it
    priority_calls: int = 0  # getppid() calls the priority driver reports
    ring_reader: str = ""  # how the daemon read the ring buffers (LoadedPrograms.ring_reader)
    poll_wakeups: int = 0  # times the daemon's poll loop woke up

    def counted_lost(self, sink: str) -> int:
        return sum(self.lost[stage] for stage in gap_stages(sink))

    def balanced(self, sink: str) -> bool:
        """produced = delivered + counted lost, and the missing seqs are exactly the counted losses."""
        return (
            self.produced == self.delivered[sink] + self.counted_lost(sink)
            and self.missing[sink] == self.counted_lost(sink)
            and self.duplicates[sink] == 0
        )

    def rate(self, sink: str) -> float:
        return self.delivered[sink] / self.elapsed if self.elapsed else 0.0


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_load(
    workdir: Path,
    driver: Path,
    *,
    sinks: tuple[str, ...] = ("jsonl",),
    events_per_s: float,
    seconds: float,
    ringbuf_pages: int = 256,
    backlog_mb: int = 16,
    jsonl_path: Path | None = None,
    journal_seqs: Callable[[], list[int]] | None = None,
    read_jsonl: Callable[[], list[int]] | None = None,
    during: Callable[[LoadgenDaemon], None] | None = None,
    drain_timeout: float = 60.0,
    fair_share: Mapping[str, Any] = FAIR_SHARE_OFF,
    priority_per_s: float = 0,
    priority_lane: str = LANE_PRIORITY,
    priority_pages: int | None = None,
    identity: bool = True,
) -> LoadResult:
    """Run the real daemon under generated load; return the balanced books.

    ``during`` runs in a helper thread while the driver runs (e.g. to stall a sink).
    ``priority_per_s`` > 0 runs the priority driver alongside for the same time, its
    records into ``priority_lane`` (LANE_BULK: one lane for all, krsid before lanes).
    Must be called from the main thread (the daemon installs signal handlers).
    """
    jsonl = jsonl_path or workdir / "events.jsonl"
    if not jsonl.exists() or jsonl.is_file():
        jsonl.write_bytes(b"")  # fresh output per run
    cfg = write_config(
        workdir,
        sinks=sinks,
        ringbuf_pages=ringbuf_pages,
        backlog_mb=backlog_mb,
        jsonl_path=str(jsonl),
        fair_share=fair_share,
        priority_pages=priority_pages,
    )
    logs: list[str] = []
    daemon = LoadgenDaemon(load_config(cfg))
    if not identity:
        daemon.enricher = WithoutIdentityEnricher(seed=False)
    daemon.start()
    assert daemon.dispatcher is not None and daemon.programs is not None
    seed = daemon.programs.current_sequence()  # seq numbers continue across runs (state_dir)
    daemon.dispatcher._log = logs.append
    proc = subprocess.Popen(
        [str(driver), str(events_per_s), str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    daemon.set_target(proc.pid)
    drivers = [proc]
    prio: subprocess.Popen[str] | None = None
    if priority_per_s > 0:
        prio = subprocess.Popen(
            [str(driver), str(priority_per_s), str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        daemon.set_priority_target(prio.pid, lane=priority_lane, getppid_nr=getppid_number(driver))
        drivers.append(prio)
    marks: dict[str, float] = {}

    def control() -> None:
        try:
            if during is not None:
                during(daemon)
            for p in drivers:
                p.wait()
            deadline = time.monotonic() + drain_timeout
            while time.monotonic() < deadline:
                if _drained(daemon, seed):
                    break
                time.sleep(0.005)
            marks["end"] = time.monotonic()
            marks["cpu_end"] = _cpu_seconds()
        finally:
            daemon.request_stop()

    marks["start"], marks["cpu_start"] = time.monotonic(), _cpu_seconds()
    for p in drivers:
        assert p.stdin is not None
        p.stdin.write("g")
        p.stdin.close()
    controller = threading.Thread(target=control, daemon=True)
    controller.start()
    try:
        daemon.run()
    finally:
        daemon.set_target(0)
        daemon.set_priority_target(0)
        produced = daemon.programs.current_sequence() - seed
        kernel = dict(daemon.programs.hook_counters()[HOOK])  # the module is freed by stop()
        ringbuf_lost = kernel[CNT_LOST_RINGBUF]
        targets = daemon.target_counts()
        lanes = daemon.programs.lane_counters()
        ring_reader = daemon.programs.ring_reader
        daemon.stop()
        controller.join(5)
        for p in drivers:
            p.wait(5)
    assert proc.stdout is not None
    calls = int(proc.stdout.read().strip() or 0)
    priority_calls = 0
    if prio is not None:
        assert prio.stdout is not None
        priority_calls = int(prio.stdout.read().strip() or 0)
    lost: Counter[str] = Counter()
    for (_hook, stage), n in daemon.stats.lost.items():
        lost[stage] += n
    lost["ringbuf"] += ringbuf_lost
    result = LoadResult(
        offered_per_s=events_per_s,
        calls=calls,
        produced=produced,
        elapsed=marks.get("end", time.monotonic()) - marks["start"],
        cpu_seconds=marks.get("cpu_end", _cpu_seconds()) - marks["cpu_start"],
        lost=lost,
        logs=logs,
        kernel=kernel,
        targets=targets,
        lanes=lanes,
        lane_records=dict(daemon.stats.lane_records),
        priority_calls=priority_calls,
        ring_reader=ring_reader,
        poll_wakeups=daemon.stats.poll_wakeups,
    )
    outputs: dict[str, Callable[[], list[int]]] = {}
    if "jsonl" in sinks and read_jsonl is None and jsonl.is_file():
        records = complete_jsonl(jsonl)  # read once: a flood's output is large
        result.flood_summaries = [obj for obj in records if obj["hook"] == "flood"]
        by_file = {name: target for target, name in TARGET_FILES.items()}
        for obj in records:
            if obj["hook"] == HOOK and obj.get("file") in by_file:
                result.arrived[by_file[obj["file"]]] += 1
        outputs["jsonl"] = lambda: [obj["seq"] for obj in records]
    elif "jsonl" in sinks:
        outputs["jsonl"] = read_jsonl or (lambda: [obj["seq"] for obj in complete_jsonl(jsonl)])
    if "journald" in sinks:
        assert journal_seqs is not None, "journald sink needs journal_seqs"
        outputs["journald"] = journal_seqs
    for sink, read in outputs.items():
        seqs = read()
        ours = [s - seed for s in seqs if seed < s <= seed + produced]
        distinct = set(ours)
        result.delivered[sink] = len(distinct)
        result.missing[sink] = produced - len(distinct)
        result.duplicates[sink] = len(ours) - len(distinct)
    return result


def _drained(daemon: Daemon, seed: int) -> bool:
    """Every record the kernel produced has been consumed, and no sink holds any."""
    assert daemon.programs is not None and daemon.dispatcher is not None
    produced = daemon.programs.current_sequence() - seed
    counters = daemon.programs.hook_counters()[HOOK]
    decode_lost = sum(n for (_hook, stage), n in daemon.stats.lost.items() if stage == STAGE_DECODE)
    consumed = sum(daemon.stats.events.values()) + decode_lost + counters[CNT_LOST_RINGBUF]
    return consumed >= produced and daemon.dispatcher.pending() == 0


def journal_seqs_reader(directory: str = "/run/log/journal") -> Callable[[], list[int]]:
    def read() -> list[int]:
        out = subprocess.run(
            ["journalctl", f"--directory={directory}", "-o", "cat", "--output-fields=KRSID_SEQ", "KRSID_HOOK=" + HOOK],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [int(x) for x in out.split()]

    return read


def environ_ok() -> str | None:
    """Why the load generator cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (BPF)"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "python3-bpfcc (bcc) is not installed"
    return None
