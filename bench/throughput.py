"""User-space pipeline throughput on the host, at native speed (bench/run.py throughput).

The raw-tracepoint load generator (tests/support/loadgen.py) emits krsid's own
file_mprotect records into krsid's ring buffer at a paced rate; the real daemon
polls, decodes, enriches and writes them. For every run the books are checked
from sequence numbers: produced = delivered + counted lost, per stage.

journald's receive queue is net.unix.max_dgram_qlen datagrams long: 10 on these
hosts (kernel default), 512 where systemd is PID 1 (its sysctl.d default). Both are
measured; the 512 case runs journald in a private network namespace, where the
sysctl is set without touching the host's.
"""

from __future__ import annotations

import argparse
import cProfile
import ctypes
import functools
import io
import os
import pstats
import tempfile
from collections.abc import Callable
from pathlib import Path

from krsid.daemon import Daemon
from tests.support import loadgen
from tests.support.journald import private_journald

CLONE_NEWNET = 0x40000000
Row = list[str]


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _row(what: str, r: loadgen.LoadResult, sink: str, extra_cpu: str = "") -> Row:
    lost = ", ".join(f"{stage} {n}" for stage, n in sorted(r.lost.items()) if n) or "0"
    offered = f"{r.offered_per_s / 1000:.0f}k/s" if r.offered_per_s else "unpaced (max)"
    return [
        what,
        offered,
        f"{r.produced}",
        f"{r.delivered[sink]}",
        lost,
        "yes" if r.balanced(sink) else "**NO**",
        f"{r.rate(sink) / 1000:.1f}k/s",
        f"{r.cpu_seconds / r.elapsed:.2f}" + (f" (+journald {extra_cpu})" if extra_cpu else ""),
        f"{r.cpu_seconds / max(r.delivered[sink], 1) * 1e6:.1f}",
        f"{r.poll_wakeups / max(r.delivered[sink], 1) * 1000:.0f}",
    ]


Table = Callable[[str, list[str], list[Row]], None]


def bench_throughput(args: argparse.Namespace, table: Table) -> None:
    rows: list[Row] = []
    overload: list[Row] = []
    identity: list[Row] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        driver = loadgen.build_driver(tmp)
        jsonl = [loadgen.run_load(tmp, driver, events_per_s=rate, seconds=args.seconds) for rate in args.jsonl_rates]
        rows += [_row("JSON lines (file)", r, "jsonl") for r in jsonl]
        if args.overload:
            twice = loadgen.run_load(tmp, driver, events_per_s=2 * _best(jsonl, "jsonl"), seconds=args.seconds)
            rows.append(_row("JSON lines (file), 2x its best", twice, "jsonl"))
            overload.append(_overload_row("JSON lines (file)", jsonl, twice, "jsonl"))
        if args.identity_cost:
            with_it = loadgen.run_load(tmp, driver, events_per_s=0, seconds=args.seconds)
            without = loadgen.run_load(tmp, driver, events_per_s=0, seconds=args.seconds, identity=False)
            rows.append(_row("JSON lines (file), without identity", without, "jsonl"))
            identity = [_identity_row(with_it, without)]
        if args.profile:
            _profile(tmp, driver, args.seconds)
        for qlen in args.qlens:
            runs = [_journald_row(tmp, driver, rate, args.seconds, qlen) for rate in args.journald_rates]
            rows += [row for _r, row in runs]
            if args.overload:
                paced = [r for r, _row in runs]
                r2, row2 = _journald_row(tmp, driver, 2 * _best(paced, "journald"), args.seconds, qlen, " 2x its best")
                rows.append(row2)
                overload.append(_overload_row(f"journald (max_dgram_qlen {qlen})", paced, r2, "journald"))
    table(
        f"User-space pipeline on the host (load generator, {args.seconds:.0f} s per run, {os.cpu_count()} cores)",
        [
            "sink",
            "offered",
            "produced",
            "delivered",
            "lost (stage n)",
            "books balance",
            "delivered/s",
            "krsid cores",
            "µs CPU per delivered event",
            "wake-ups per 1k delivered",
        ],
        rows,
    )
    if identity:
        table(
            "What process identity costs: JSON lines unpaced, with and without it, back to back "
            "(issue 12's goal: >= 90 %)",
            ["with identity", "without (exe and cgroup only)", "ratio", "µs per event with / without"],
            identity,
        )
    if overload:
        table(
            "Overload: delivered at 2x a sink's best rate, against that best (issue 16's goal: >= 95 %)",
            ["sink", "best delivered/s (offered)", "offered at 2x", "delivered/s at 2x", "ratio"],
            overload,
        )


def _identity_row(with_it: loadgen.LoadResult, without: loadgen.LoadResult) -> Row:
    """Process ids, the process table and ancestry, and hash answers on every event,
    against what krsid added before them (tests/support/loadgen.WithoutIdentityEnricher)."""

    def per_event(r: loadgen.LoadResult) -> float:
        return r.cpu_seconds / max(r.delivered["jsonl"], 1) * 1e6

    return [
        f"{with_it.rate('jsonl') / 1000:.1f}k/s",
        f"{without.rate('jsonl') / 1000:.1f}k/s",
        f"**{with_it.rate('jsonl') / without.rate('jsonl'):.0%}**",
        f"{per_event(with_it):.1f} / {per_event(without):.1f}",
    ]


def _best(runs: list[loadgen.LoadResult], sink: str) -> float:
    """The highest delivered rate among the paced runs (an unpaced run has no offered rate to double)."""
    return max(r.rate(sink) for r in runs if r.offered_per_s)


def _overload_row(what: str, below: list[loadgen.LoadResult], twice: loadgen.LoadResult, sink: str) -> Row:
    best = max((r for r in below if r.offered_per_s), key=lambda r: r.rate(sink))
    return [
        what,
        f"{best.rate(sink) / 1000:.1f}k/s ({best.offered_per_s / 1000:.0f}k/s)",
        f"{twice.offered_per_s / 1000:.0f}k/s",
        f"{twice.rate(sink) / 1000:.1f}k/s",
        f"**{twice.rate(sink) / best.rate(sink):.0%}**",
    ]


def _journald_row(
    tmp: Path, driver: Path, rate: float, seconds: float, qlen: int, note: str = ""
) -> tuple[loadgen.LoadResult, Row]:
    # In a child process: the private journald needs a private mount namespace, and
    # the 512-datagram case a private network namespace, for this process only.
    r, jcpu = _in_child(functools.partial(_journald_run, tmp, driver, rate, seconds, qlen))
    return r, _row(f"journald (max_dgram_qlen {qlen}){note}", r, "journald", f"{jcpu:.2f}")


def _journald_run(tmp: Path, driver: Path, rate: float, seconds: float, qlen: int) -> tuple[loadgen.LoadResult, float]:
    if qlen != int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text()):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
        Path("/proc/sys/net/unix/max_dgram_qlen").write_text(str(qlen))
    with private_journald() as journal:
        c0 = _cpu_of(journal.proc.pid)
        r = loadgen.run_load(
            tmp,
            driver,
            sinks=("journald",),
            events_per_s=rate,
            seconds=seconds,
            journal_seqs=loadgen.journal_seqs_reader(),
        )
        return r, (_cpu_of(journal.proc.pid) - c0) / r.elapsed


def _in_child(fn: Callable[[], tuple[loadgen.LoadResult, float]]) -> tuple[loadgen.LoadResult, float]:
    import pickle

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(read)
        try:
            data = pickle.dumps(fn())
            with os.fdopen(write, "wb") as w:
                w.write(data)
            os._exit(0)
        except BaseException:
            import traceback

            traceback.print_exc()
            os._exit(1)
    os.close(write)
    with os.fdopen(read, "rb") as r:
        data = r.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        raise RuntimeError("journald benchmark run failed (see above)")
    result: tuple[loadgen.LoadResult, float] = pickle.loads(data)
    return result


def _profile(tmp: Path, driver: Path, seconds: float) -> None:
    """Where the daemon's time goes at 60k events/s into JSON lines (cProfile, by own time)."""
    profiler = cProfile.Profile()
    real_run = loadgen.LoadgenDaemon.run

    def run(self: Daemon) -> None:
        profiler.enable()
        try:
            real_run(self)
        finally:
            profiler.disable()

    loadgen.LoadgenDaemon.run = run  # type: ignore[method-assign]
    try:
        loadgen.run_load(tmp, driver, events_per_s=60000, seconds=seconds)
    finally:
        loadgen.LoadgenDaemon.run = real_run  # type: ignore[method-assign]
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    print("\n### Profile: JSON lines at 60k events/s (cProfile, sorted by own time; cProfile slows it ~2x)\n")
    print("```\n" + out.getvalue().strip() + "\n```")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--jsonl-rates", type=float, nargs="+", default=[50000, 100000, 200000, 400000, 0])
    p.add_argument("--journald-rates", type=float, nargs="+", default=[20000, 40000, 80000])
    p.add_argument(
        "--no-overload",
        dest="overload",
        action="store_false",
        help="skip the rows at 2x each sink's best delivered rate and their ratio table",
    )
    p.add_argument("--qlens", type=int, nargs="+", default=[10, 512])
    p.add_argument("--profile", action="store_true")
    p.add_argument(
        "--no-identity-cost",
        dest="identity_cost",
        action="store_false",
        help="skip the JSON lines runs with and without process identity and hashes",
    )
