"""Hook cost of krsid vs Debian's auditd, and krsid's cold start and RSS (issue 6).

    bench/run.py cost       inside the test VM (tests/vm/run); prints markdown tables

Configurations, measured in one VM session and alternated (rounds):
  base    nothing attached, audit off
  empty   an empty BPF-LSM program (`return 0`) on each hook krsid attaches: the cost the
          kernel's trampoline puts on any BPF-LSM program, the floor under krsid's numbers
  krsid   the daemon with etc/krsid.yaml's hooks and options; its sinks go to a temp dir,
          a private journald and a loopback Prometheus port. One path on a tmpfs is added
          to file_open's sensitive_paths, so the "emitted" open is not dominated by the
          guest's 9p root (an open there costs ~1 ms under TCG).
  auditd  auditd -n with Debian's auditd.conf (log file moved to the tmpfs, no rotation)
          and the rules that audit the same calls: execve, mprotect with PROT_EXEC
          (-F a2&0x4), a read watch on the sensitive file.
Each loop (bench/loops.c: C, so that no interpreter hides the cost) is either FILTERED
(krsid's program runs and drops the call in the kernel; auditd's rule does not match)
or EMITTED (krsid writes an event to the ring buffer; auditd writes a record). Exec is
never filtered by krsid (bprm_check_security reports every exec), so it has no
filtered row. Every call's fate is checked: krsid's per-hook kernel counters and the
auditd log's records by rule key.

Ratios are per round against the mean of the baselines measured right before and after
that configuration; the tables give the median over rounds and the spread (min-max).
Under TCG absolute times are emulator-bound: compare ratios. The VM has one vCPU, so the
consumer (krsid's daemon, auditd + kauditd) shares it with the loop, as on a busy host.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    build_loops,
    cpu_seconds,
    krsid_running,
    pids_of,
    proc_status_mb,
    scrape,
    table,
    tmpfs_mounted,
)
from krsid.catalog import load_catalog  # noqa: E402
from krsid.watch import DEFAULT_NAMES, DEFAULT_PATHS  # noqa: E402
from tests.support.net import free_port  # noqa: E402

CATALOG = load_catalog(ROOT / "programs")
AUDIT_KEY = "krsidbench"
LOOP_COMMS = ("loops", "bench-true")  # comm of bench/loops.c and of the program its exec loop runs


@dataclass(frozen=True)
class Loop:
    name: str  # row label
    kind: str  # bench/loops.c kind
    calls: int
    path: str  # "" | "secret" | "plain" | "true": a file on the bench tmpfs
    fate: str  # "filtered" | "emitted"
    hook: str  # krsid hook whose counters prove the fate
    audit_key: str  # auditd rule key that must (emitted) or must not (filtered) match


LOOPS = (
    Loop("mprotect(PROT_READ)", "mprotect_r", 4000, "", "filtered", "file_mprotect", "mprotect"),
    Loop("open+close, other file", "open", 2000, "plain", "filtered", "file_open", "open"),
    # The file-integrity watch (issue 11): a write open and a rename of an unwatched
    # file. On a filesystem with no watched path the program looks up its device only;
    # on one with watched paths it walks every directory level up to the root ("deep":
    # 4 directories down, next to a watched directory).
    Loop("open(O_WRONLY)+close, other file", "open_w", 2000, "plain", "filtered", "file_open", "open"),
    Loop("rename there and back, other file", "rename", 1000, "plain", "filtered", "inode_rename", "rename"),
    Loop("open(O_WRONLY)+close, 4 dirs deep, watched fs", "open_w", 2000, "deep", "filtered", "file_open", "open"),
    Loop(
        "rename there and back, 4 dirs deep, watched fs", "rename", 1000, "deep", "filtered", "inode_rename", "rename"
    ),
    # A new file made and removed: inode_create's rule-only default (one option lookup
    # after the policy's), with file_open's write open and inode_unlink on the way.
    Loop("create+close+unlink, other file", "create", 1000, "plain", "filtered", "inode_create", "open"),
    # Every ioctl runs file_ioctl, inode_file_setattr's fallback before 6.17 (from 6.17
    # the hook is in vfs_fileattr_set, off this path): its command check.
    Loop("ioctl(FIONREAD), a file", "ioctl", 4000, "plain", "filtered", "file_ioctl", "ioctl"),
    Loop("mprotect(PROT_READ|PROT_EXEC)", "mprotect_x", 4000, "", "emitted", "file_mprotect", "mprotect"),
    Loop("open+close, sensitive file", "open", 2000, "secret", "emitted", "file_open", "open"),
    Loop("fork+exec of /bin/true (copy)", "exec", 60, "true", "emitted", "bprm_check_security", "exec"),
)


@dataclass
class ConfigRun:
    """ns/call samples of one configuration in one round, and what the consumer did."""

    ns: dict[str, list[float]] = field(default_factory=dict)
    fate: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # (reported, calls) per run
    lost: dict[str, int] = field(default_factory=dict)
    consumer_cpu: dict[str, float] = field(default_factory=dict)  # CPU s of the consumer, per loop


def note(msg: str) -> None:
    print(f"[cost] {msg}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self._mounts = contextlib.ExitStack()
        # tmpfs: the files the loops open and exec, auditd's log
        self.fs = self._mounts.enter_context(tmpfs_mounted(tmp / "fs", "1g"))
        # A second tmpfs with a watched directory on it: its files pay the watch walk.
        self.watched_fs = self._mounts.enter_context(tmpfs_mounted(tmp / "watched-fs", "16m"))
        (self.watched_fs / "watched").mkdir()
        deep = self.watched_fs / "a" / "b" / "c" / "d"
        deep.mkdir(parents=True)
        self.files = {
            "secret": self.fs / "bench-secret",
            "plain": self.fs / "bench-plain",
            "deep": deep / "bench-deep",
            "true": self.fs / "bench-true",
        }
        self.files["deep"].write_text("deep\n")
        self.files["secret"].write_text("secret\n")
        self.files["plain"].write_text("plain\n")
        shutil.copy2("/bin/true", self.files["true"])
        self.loops_exe = build_loops(self.fs)
        self.config_path = tmp / "krsid.yaml"
        self.port = free_port()
        self.config_path.write_text(yaml.safe_dump(self.krsid_config()))
        self._empty: tuple[Any, list[str]] | None = None  # (bcc.BPF, hooks), compiled on first use

    def close(self) -> None:
        self._mounts.close()

    # -- configuration ---------------------------------------------------------------

    def krsid_config(self) -> dict[str, object]:
        shipped = yaml.safe_load((ROOT / "etc" / "krsid.yaml").read_text())
        hooks = shipped["hooks"]
        default_paths = next(o.default for o in CATALOG["file_open"].options if o.name == "sensitive_paths")
        assert isinstance(default_paths, tuple)
        hooks["file_open"] = dict(
            hooks.get("file_open") or {}, sensitive_paths=[*default_paths, str(self.files["secret"])]
        )
        return {
            "headers": self.args.headers,
            "cache_dir": str(self.tmp / "cache"),
            "state_dir": str(self.tmp / "state"),
            "buffer": shipped.get("buffer", {}),
            "hooks": hooks,
            "watch": {"paths": [*DEFAULT_PATHS, str(self.watched_fs / "watched")], "names": list(DEFAULT_NAMES)},
            "sinks": {
                "journald": {"enabled": True},
                "jsonl": {"enabled": True, "path": str(self.tmp / "events.jsonl")},
                "prometheus": {"enabled": True, "listen": f"127.0.0.1:{self.port}"},
            },
        }

    # -- the loops ---------------------------------------------------------------------

    def run_loop(self, loop: Loop) -> float:
        argv = [str(self.loops_exe), loop.kind, str(loop.calls)]
        if loop.path:
            argv.append(str(self.files[loop.path]))
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        return float(out)

    def measure(self, label: str, observer: Observer | None) -> ConfigRun:
        """Each loop `repeat` times, the loops interleaved, after one untimed short run
        of each (the emulator translates the newly attached code paths on first use)."""
        run = ConfigRun()
        for loop in LOOPS:
            self.run_loop(dataclasses.replace(loop, calls=max(1, loop.calls // 10)))
        for i in range(self.args.repeat):
            for loop in LOOPS:
                before = observer.snapshot(loop) if observer else None
                cpu0 = observer.cpu() if observer else 0.0
                ns = self.run_loop(loop)
                run.ns.setdefault(loop.name, []).append(ns)
                if observer and before is not None:
                    observer.drain(loop, before)
                    reported = observer.reported(loop, before)
                    run.fate.setdefault(loop.name, []).append((reported, loop.calls))
                    run.consumer_cpu[loop.name] = run.consumer_cpu.get(loop.name, 0.0) + observer.cpu() - cpu0
            note(
                f"{label}: repeat {i + 1}/{self.args.repeat}: "
                + ", ".join(f"{k} {v[-1]:.0f}" for k, v in run.ns.items())
            )
        if observer:
            run.lost = observer.lost()
        return run

    # -- krsid -------------------------------------------------------------------------

    @contextlib.contextmanager
    def krsid(self, round_no: int) -> Iterator[KrsidObserver]:
        from tests.support.journald import private_journald

        notify_path = self.tmp / f"notify{round_no}"
        log_path = self.tmp / f"krsid{round_no}.log"
        with private_journald(), log_path.open("w") as log:
            t0 = time.perf_counter()
            with krsid_running(self.config_path, notify_path, stderr=log, ready_timeout=1500) as proc:
                observer = KrsidObserver(proc.pid, self.port)
                observer.cold_start = time.perf_counter() - t0
                observer.rss_ready = proc_status_mb(proc.pid)
                yield observer
                observer.rss_after = proc_status_mb(proc.pid)
        text = log_path.read_text()
        observer.log_compile = [float(x) for x in re.findall(r"compiled \d+ program\(s\) in ([\d.]+)s", text)]
        observer.log_attach = [float(x) for x in re.findall(r"attached \(([\d.]+)s\)", text)]

    # -- empty programs: the kernel's floor ------------------------------------------------

    def enabled_hooks(self) -> list[str]:
        from krsid.config import load_config
        from krsid.kernel.btf import lsm_hook_arity
        from krsid.plan import plan_build

        specs, _settings, _serves = plan_build(load_config(self.config_path), lsm_hook_arity())
        return [s.name for s in specs]

    @contextlib.contextmanager
    def empty_programs(self) -> Iterator[None]:
        """`return 0` LSM programs on the hooks krsid attaches, compiled once."""
        from krsid.kernel.headers import resolve_headers
        from krsid.pipeline.load import compile_source

        if self._empty is None:
            hooks = self.enabled_hooks()
            text = "".join(f"LSM_PROBE({h}) {{ return 0; }}\n" for h in hooks)  # catalog names: [a-z0-9_]
            headers = resolve_headers(self.tmp / "cache", prefer=self.args.headers)
            self._empty = (compile_source(text, headers), hooks)
        bpf, hooks = self._empty
        for h in hooks:
            bpf.attach_lsm(h.encode())
        try:
            yield
        finally:
            for h in hooks:
                bpf.detach_lsm(h.encode())

    # -- auditd ------------------------------------------------------------------------

    def auditd_config_dir(self) -> Path:
        """Debian's auditd.conf with the log on the bench tmpfs and no rotation/suspend."""
        conf_dir = self.tmp / "audit"
        conf_dir.mkdir(mode=0o750, exist_ok=True)
        lines = []
        overrides = {
            "log_file": str(self.fs / "audit.log"),
            "max_log_file_action": "IGNORE",  # one file to count records in
            "space_left": "2",  # MB; must stay above admin_space_left
            "admin_space_left": "1",
        }
        for line in Path("/etc/audit/auditd.conf").read_text().splitlines():
            key = line.split("=", 1)[0].strip()
            if key in overrides:
                line = f"{key} = {overrides.pop(key)}"
            lines.append(line)
        lines += [f"{k} = {v}" for k, v in overrides.items()]
        conf = conf_dir / "auditd.conf"
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o640)
        return conf_dir

    @contextlib.contextmanager
    def auditd(self) -> Iterator[AuditObserver]:
        log = self.fs / "audit.log"
        log.unlink(missing_ok=True)
        proc = subprocess.Popen(
            ["auditd", "-n", "-c", str(self.auditd_config_dir())],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while f"pid {proc.pid}" not in auditctl("-s"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"auditd did not register with the kernel: {err.strip()}")
                time.sleep(0.2)
            auditctl("-D")
            # The equivalent of etc/audit/rules.d/audit.rules' buffer settings, then our rules.
            auditctl("-b", "8192")
            auditctl("--backlog_wait_time", "60000")
            auditctl("-f", "1")
            auditctl("-a", "always,exit", "-F", "arch=b64", "-S", "execve", "-k", f"{AUDIT_KEY}_exec")
            auditctl(
                "-a", "always,exit", "-F", "arch=b64", "-S", "mprotect", "-F", "a2&0x4", "-k", f"{AUDIT_KEY}_mprotect"
            )  # fmt: skip
            auditctl("-w", str(self.files["secret"]), "-p", "r", "-k", f"{AUDIT_KEY}_open")
            auditctl("-e", "1")
            rules = auditctl("-l")
            observer = AuditObserver(proc.pid, log, rules)
            yield observer
        finally:
            audit_off()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def auditctl(*argv: str) -> str:
    r = subprocess.run(["auditctl", *argv], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"auditctl {' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def audit_off() -> None:
    """No rules, auditing off, and no audit context for new tasks.

    Once auditing was ever enabled, every new task gets an audit context (a slower
    syscall path) even with no rules; `-a never,task` keeps the next baseline clean.
    """
    for argv in (("-D",), ("-a", "task,never"), ("-e", "0")):
        with contextlib.suppress(RuntimeError):
            auditctl(*argv)


class Observer:
    def snapshot(self, loop: Loop) -> int:
        raise NotImplementedError

    def reported(self, loop: Loop, before: int) -> int:
        raise NotImplementedError

    def drain(self, loop: Loop, before: int) -> None:
        raise NotImplementedError

    def cpu(self) -> float:
        raise NotImplementedError

    def lost(self) -> dict[str, int]:
        raise NotImplementedError


class KrsidObserver(Observer):
    def __init__(self, pid: int, port: int) -> None:
        self.pid = pid
        self.port = port
        self.cold_start = 0.0
        self.rss_ready: dict[str, float] = {}
        self.rss_after: dict[str, float] = {}
        self.log_compile: list[float] = []
        self.log_attach: list[float] = []

    def metrics(self) -> dict[tuple[str, str], float]:
        """(metric name, labels) -> value."""
        return scrape(self.port)

    def hook_value(self, metrics: dict[tuple[str, str], float], name: str, hook: str) -> int:
        return int(sum(v for (n, labels), v in metrics.items() if n == name and f'hook="{hook}"' in labels))

    def snapshot(self, loop: Loop) -> int:
        return self.hook_value(self.metrics(), "krsid_events_emitted_total", loop.hook)

    def reported(self, loop: Loop, before: int) -> int:
        return self.snapshot(loop) - before

    def drain(self, loop: Loop, before: int) -> None:
        """Until the daemon has decoded what the programs emitted (or lost)."""
        deadline = time.monotonic() + 120
        last = -1.0
        while time.monotonic() < deadline:
            m = self.metrics()
            emitted = sum(v for (n, _), v in m.items() if n == "krsid_events_emitted_total")
            handled = sum(v for (n, _), v in m.items() if n in ("krsid_events_total", "krsid_events_lost_total"))
            if handled >= emitted and handled == last:
                return
            last = handled
            time.sleep(0.3)

    def cpu(self) -> float:
        return cpu_seconds([self.pid])

    def lost(self) -> dict[str, int]:
        m = self.metrics()
        return {labels: int(v) for (n, labels), v in m.items() if n == "krsid_events_lost_total" and v > 0}


class AuditObserver(Observer):
    def __init__(self, pid: int, log: Path, rules: str) -> None:
        self.pids = [pid, *pids_of("kauditd")]
        self.log = log
        self.rules = rules
        self.offset = 0
        self.counts: dict[str, int] = {}
        self.others: dict[str, int] = {}  # "key:comm" -> records of other processes

    def _scan(self) -> None:
        """Count SYSCALL records by key in what auditd appended since the last scan."""
        with contextlib.suppress(FileNotFoundError), self.log.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
            end = data.rfind(b"\n") + 1
            self.offset += end
            pattern = rb"type=SYSCALL .*? comm=\"([^\"]*)\".*?key=\"" + AUDIT_KEY.encode() + rb"_([a-z]+)\""
            for m in re.finditer(pattern, data[:end]):
                comm, k = m.group(1).decode(), m.group(2).decode()
                if comm in LOOP_COMMS:  # the rules audit every process; count the loops' calls
                    self.counts[k] = self.counts.get(k, 0) + 1
                else:
                    self.others[f"{k}:{comm}"] = self.others.get(f"{k}:{comm}", 0) + 1

    def snapshot(self, loop: Loop) -> int:
        self._scan()
        return self.counts.get(loop.audit_key, 0)

    def reported(self, loop: Loop, before: int) -> int:
        return self.snapshot(loop) - before

    def drain(self, loop: Loop, before: int) -> None:
        """Until the kernel backlog is empty and, for an emitted loop, every record is in the log.

        Not "until the log stops growing": the execve rule also records each auditctl
        this polling runs.
        """
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            backlog = re.search(r"^backlog (\d+)", auditctl("-s"), re.M)
            done = loop.fate == "filtered" or self.reported(loop, before) >= loop.calls
            if done and backlog and backlog.group(1) == "0":
                time.sleep(0.3)  # auditd's writer thread (flush = INCREMENTAL_ASYNC)
                return
            time.sleep(0.3)

    def cpu(self) -> float:
        return cpu_seconds(self.pids)

    def lost(self) -> dict[str, int]:
        m = re.search(r"^lost (\d+)", auditctl("-s"), re.M)
        return {"kernel (auditctl -s: lost)": int(m.group(1))} if m and m.group(1) != "0" else {}


def audit_unavailable() -> str | None:
    if shutil.which("auditd") is None or shutil.which("auditctl") is None:
        return "auditd is not installed (.ci/install-deps installs it)"
    r = subprocess.run(["auditctl", "-s"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"the kernel's audit subsystem does not answer: {r.stderr.strip()}"
    return None


# -- cold start, in process --------------------------------------------------------------


def cold_start_in_process(bench: Bench) -> list[list[str]]:
    """Compile + load + attach the shipped config's hooks as the daemon does, and the RSS
    of this process before and after returning the compiler's freed heap."""
    from krsid.config import load_config
    from krsid.kernel.btf import lsm_hook_arity
    from krsid.pipeline.load import LoadedPrograms, release_free_heap
    from krsid.plan import plan_build

    config = load_config(bench.config_path)
    specs, settings, _serves = plan_build(config, lsm_hook_arity())
    pid = os.getpid()
    rss0 = proc_status_mb(pid)
    programs = LoadedPrograms(CATALOG, specs, settings, log=note)
    t0 = time.perf_counter()
    programs.build()
    t_build = time.perf_counter() - t0
    status = programs.attach()
    t_attach = sum(st.load_seconds for st in status.values())
    attached = sum(st.attached for st in status.values())
    rss1 = proc_status_mb(pid)
    released = release_free_heap()
    rss2 = proc_status_mb(pid)
    programs.close()

    def fmt(r: dict[str, float]) -> str:
        return f"{r['VmRSS']:.0f} MB (anon {r['RssAnon']:.0f}, file {r['RssFile']:.0f})"

    return [
        [f"compile, {len(specs)} hooks as one module (TCG: ~30x the host's)", f"{t_build:.1f} s"],
        [f"load+attach, sum over {len(status)} hooks (attached: {attached})", f"{t_attach:.2f} s"],
        ["load+attach, slowest hook", f"{max(st.load_seconds for st in status.values()):.2f} s"],
        ["RSS of a Python process before the compile (krsid + bcc imported)", fmt(rss0)],
        ["RSS after compile+attach", fmt(rss1)],
        [f"RSS after malloc_trim (released: {released})", fmt(rss2)],
        ["peak RSS (VmHWM)", f"{rss2['VmHWM']:.0f} MB"],
    ]


# -- report ------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else "-"


def main(args: argparse.Namespace) -> None:
    if os.environ.get("KRSID_IN_VM") != "1":
        sys.exit("bench/run.py cost: run it inside the test VM: tests/vm/run -- .venv/bin/python bench/run.py cost")
    why_no_audit = audit_unavailable()
    if why_no_audit:
        note(f"auditd configuration skipped: {why_no_audit}")
    else:
        audit_off()  # a clean start, whatever ran before
    with tempfile.TemporaryDirectory() as tmpdir:
        bench = Bench(args, Path(tmpdir))
        try:
            run_all(bench, args, why_no_audit)
        finally:
            bench.close()


@dataclass
class Series:
    """One configuration's runs, each with the baselines measured right before and after it."""

    runs: list[ConfigRun] = field(default_factory=list)
    around: list[tuple[ConfigRun, ConfigRun]] = field(default_factory=list)

    def ratios(self, name: str) -> list[float]:
        def med(run: ConfigRun) -> float:
            return statistics.median(run.ns[name])

        return [med(run) / ((med(before) + med(after)) / 2) for run, (before, after) in zip(self.runs, self.around)]

    def ns(self, name: str) -> float:
        return statistics.median(statistics.median(run.ns[name]) for run in self.runs)


def run_all(bench: Bench, args: argparse.Namespace, why_no_audit: str | None) -> None:
    cold_rows = cold_start_in_process(bench)
    bases: list[ConfigRun] = [bench.measure("base", None)]
    empty, krsid, audit = Series(), Series(), Series()
    daemons: list[KrsidObserver] = []
    audit_rules = ""

    def then_base(series: Series, run: ConfigRun, r: int) -> None:
        before = bases[-1]
        bases.append(bench.measure(f"round {r + 1} base", None))
        series.runs.append(run)
        series.around.append((before, bases[-1]))

    for r in range(args.rounds):
        with bench.empty_programs():
            run = bench.measure(f"round {r + 1} empty programs", None)
        then_base(empty, run, r)
        with bench.krsid(r) as kobs:
            run = bench.measure(f"round {r + 1} krsid", kobs)
        daemons.append(kobs)
        then_base(krsid, run, r)
        if why_no_audit is None:
            with bench.auditd() as aobs:
                run = bench.measure(f"round {r + 1} auditd", aobs)
                audit_rules = aobs.rules
            print(f"auditd round {r + 1}: records of other processes (key:comm): {aobs.others or 'none'}")
            then_base(audit, run, r)
    report(args, bases, empty, krsid, audit, daemons, cold_rows, audit_rules, why_no_audit)


def report(
    args: argparse.Namespace,
    bases: list[ConfigRun],
    empty: Series,
    krsid: Series,
    audit: Series,
    daemons: list[KrsidObserver],
    cold_rows: list[list[str]],
    audit_rules: str,
    why_no_audit: str | None,
) -> None:
    def med(run: ConfigRun, name: str) -> float:
        return statistics.median(run.ns[name])

    rows = []
    for loop in LOOPS:
        base_ns = statistics.median(med(b, loop.name) for b in bases)
        base_noise = statistics.median((max(b.ns[loop.name]) - min(b.ns[loop.name])) / med(b, loop.name) for b in bases)
        e, k = empty.ratios(loop.name), krsid.ratios(loop.name)
        added_e, added_k = statistics.median(e) - 1, statistics.median(k) - 1
        row = [
            loop.name,
            loop.fate,
            f"{base_ns:.0f} (±{base_noise * 50:.0f} %)",
            f"{statistics.median(e):.3f} ({spread(e)})",
            f"{krsid.ns(loop.name):.0f}",
            f"{statistics.median(k):.3f} ({spread(k)})",
            f"{100 * (added_k - added_e):+.1f} %",
        ]
        if audit.runs:
            a = audit.ratios(loop.name)
            added_a = statistics.median(a) - 1
            row += [
                f"{audit.ns(loop.name):.0f}",
                f"{statistics.median(a):.3f} ({spread(a)})",
                f"{added_a / added_k:.1f}" if added_k > 0.005 else f"krsid +{added_k * 100:.1f} %: n/a",
            ]
        else:
            row += ["-", "-", "-"]
        rows.append(row)
    table(
        f"Per-call cost, krsid vs auditd (VM, TCG, {os.cpu_count()} vCPU; "
        f"ns/call: median of {args.repeat} runs per round; "
        f"ratio to the adjacent baselines: median over {args.rounds} rounds (min-max))",
        [
            "loop",
            "krsid / auditd",
            "baseline ns (run spread)",
            "empty LSM programs ratio",
            "krsid ns",
            "krsid ratio",
            "krsid above the empty programs",
            "auditd ns",
            "auditd ratio",
            "added cost auditd/krsid",
        ],
        rows,
    )
    krsid_runs, audit_runs = krsid.runs, audit.runs

    def fate_cell(runs: list[ConfigRun], name: str) -> str:
        got = [f for run in runs for f in run.fate.get(name, [])]
        return f"{sum(r for r, _ in got)}/{sum(c for _, c in got)}" if got else "-"

    def cpu_cell(runs: list[ConfigRun], name: str) -> str:
        calls = sum(c for run in runs for _, c in run.fate.get(name, []))
        cpu = sum(run.consumer_cpu.get(name, 0.0) for run in runs)
        return f"{cpu * 1e6 / calls:.0f}" if calls else "-"

    table(
        "What each call did (krsid: events the hook's program emitted / calls; auditd: SYSCALL records with "
        "the rule's key / calls) and the consumer's CPU time per call (krsid daemon; auditd + kauditd), µs",
        ["loop", "krsid emitted/calls", "krsid daemon CPU µs/call", "auditd records/calls", "auditd CPU µs/call"],
        [
            [
                loop.name,
                fate_cell(krsid_runs, loop.name),
                cpu_cell(krsid_runs, loop.name),
                fate_cell(audit_runs, loop.name),
                cpu_cell(audit_runs, loop.name),
            ]
            for loop in LOOPS
        ],
    )
    lost_k = [run.lost for run in krsid_runs]
    lost_a = [run.lost for run in audit_runs]
    print(f"\nlost: krsid {lost_k or '-'}; auditd {lost_a or '-'}")
    if why_no_audit:
        print(f"auditd not measured: {why_no_audit}")
    else:
        print("auditd rules (auditctl -l):\n" + "".join(f"    {line}\n" for line in audit_rules.splitlines()))

    def rss(r: dict[str, float]) -> str:
        return f"{r['VmRSS']:.0f} MB (anon {r['RssAnon']:.0f}, file {r['RssFile']:.0f})"

    daemon_rows = []
    for i, d in enumerate(daemons):
        daemon_rows.append(
            [
                f"daemon {i + 1}: process start -> READY=1",
                f"{d.cold_start:.1f} s (compile {', '.join(f'{x:.1f}' for x in d.log_compile)} s; "
                f"load+attach {sum(d.log_attach):.2f} s over {len(d.log_attach)} hooks)",
            ]
        )
        daemon_rows.append([f"daemon {i + 1}: RSS after READY", rss(d.rss_ready)])
        daemon_rows.append([f"daemon {i + 1}: RSS after the loops", rss(d.rss_after)])
    table(
        "Cold start and memory with the shipped config (VM, TCG)",
        ["measure", "value"],
        cold_rows + daemon_rows,
    )
