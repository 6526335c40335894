"""Per-stage CPU of one event in krsid's user-space pipeline (bench/run.py stages).

The throughput bench measures the whole daemon against a load generator; this one
says where the time goes. Records are built in user space (tests/support/records:
the real layouts) for this very process, so the enricher answers from a process
table, a hash and a cgroup it really looked up, as it does for a flood from one
process. Each stage runs over the same records, min of --repeat rounds:

    decode          raw record -> Event (pipeline.decode)
    enrich          process identity, hash answer, cgroup context (pipeline.enrich)
    JSON line       Event -> bytes (sinks.jsonl.event_line)
    journald entry  Event -> bytes (sinks.journald: fields, native protocol)
    whole, ...      a lane's record handler -> the sink's backlog -> written
                    (JSON lines to /dev/null; journald to a send that drops it)

``--against DIR`` runs the same stages on another checkout (a ``git worktree`` of
an older commit), the two alternated round by round in child processes, and prints
them side by side with the ratio: the way to show what a change saved.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDS = 20_000
HOOKS = ("file_mprotect", "file_open")
STAGES = ("decode", "enrich", "JSON line", "journald entry", "whole, into JSON lines", "whole, into journald")


def _start_ns(pid: int) -> int:
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    return ticks * (1_000_000_000 // os.sysconf("SC_CLK_TCK"))


def _records(spec: object, pack: Callable[..., bytes], hook: str) -> list[bytes]:
    """RECORDS records of hook as this process's own: same identity, seqs counting up."""
    pid, ppid = os.getpid(), os.getppid()
    common: dict[str, int | bytes] = {
        "tgid": pid,
        "pid": pid,
        "ppid": ppid,
        "start_ns": _start_ns(pid),
        "parent_start_ns": _start_ns(ppid),
        "cgroup_id": os.stat("/sys/fs/cgroup").st_ino,
        "comm": b"python3",
    }
    own: dict[str, int | bytes]
    if hook == "file_mprotect":  # as the load generator's
        own = {"vm_start": 0x7F0000000000, "vm_end": 0x7F0000001000, "vm_flags": 0x73, "reqprot": 5, "prot": 5}
        own["file"] = b"libloadgen-jit-cache.so"
    else:
        own = {"path": b"/etc/ld.so.preload", "flags": 0o101, "mode": 0o100644}
    return [pack(spec, 0, seq=i, ktime_ns=1_000_000_000 + i, **common, **own) for i in range(RECORDS)]


def _best(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        run()
        best = min(best, time.process_time() - t0)
    return best / RECORDS * 1e6


def measure(repeat: int) -> dict[str, dict[str, float]]:
    """µs per event of every stage, per hook, for the krsid importable here."""
    from krsid.catalog import load_catalog
    from krsid.identity.binary_hash import BinaryHasher
    from krsid.pipeline.decode import EventDecoder
    from krsid.pipeline.dispatch import Dispatcher
    from krsid.pipeline.enrich import Enricher
    from krsid.pipeline.flow import EventPipeline
    from krsid.pipeline.stats import PipelineStats
    from krsid.sinks.base import Sink
    from krsid.sinks.journald import JournaldSink, journal_fields, native_entry
    from krsid.sinks.jsonl import JsonlSink, event_line
    from tests.support.records import pack

    catalog = load_catalog(Path(sys.path[0]) / "programs")
    hasher = BinaryHasher(max_bytes=256 << 20, queue_size=64, start=False)
    enricher = Enricher(hasher=hasher)

    def stages_of(hook: str) -> dict[str, float]:
        spec = catalog[hook]
        decoder = EventDecoder({0: spec}, boot_to_epoch=1.7e9)
        raws = _records(spec, pack, hook)
        enricher.enrich(decoder.decode(raws[0]))  # asks for this process's hash ...
        hasher.wait_idle(30.0)  # ... and waits for it: later events answer from the cache
        events = [decoder.decode(r) for r in raws]
        for e in events:
            enricher.enrich(e)
        decode, enrich = decoder.decode, enricher.enrich
        stages = {  # loops that keep nothing: the allocator reuses what each event freed, as the daemon's does
            "decode": lambda: [None for r in raws if decode(r) is None],
            "enrich": lambda: [None for r in raws if enrich(decode(r))],
            "JSON line": lambda: [None for e in events if event_line(e) is None],
            "journald entry": lambda: [None for e in events if native_entry(journal_fields(e)) is None],
        }
        times = {name: _best(run, repeat) for name, run in stages.items()}
        times["enrich"] -= times["decode"]  # enrich needs a fresh event: timed with its decode
        times["whole, into JSON lines"] = _best(whole_path(JsonlSink("/dev/null"), decoder, raws), repeat)
        # socket_path: any path that exists (the sink checks that journald's socket does)
        journald = JournaldSink(send=lambda entry: None, socket_path=Path("/"))
        times["whole, into journald"] = _best(whole_path(journald, decoder, raws), repeat)
        return times

    def whole_path(sink: Sink, decoder: EventDecoder, raws: list[bytes]) -> Callable[[], None]:
        """A lane's record handler over every record, then the sink's flush (its write)."""
        stats = PipelineStats()
        dispatcher = Dispatcher([sink], stats)
        handle = EventPipeline(decoder, lambda _hook, _n: "", enricher, dispatcher, stats).lane_handler("bulk")

        def run() -> None:
            for raw in raws:
                handle(raw)
            dispatcher.flush()

        return run

    out = {hook: stages_of(hook) for hook in HOOKS}
    enricher.close()
    return out


def bench_stages(args: argparse.Namespace, table: Callable[[str, list[str], list[list[str]]], None]) -> None:
    codes = [("this checkout", ROOT)]
    if args.against:
        codes.append((f"{args.against}", Path(args.against).resolve()))
    results: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name, _ in codes}
    for _ in range(args.rounds):  # alternated, so that a busy moment hits both
        for name, root in codes:
            child = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", str(root), "--repeat", str(args.repeat)],
                check=True,
                capture_output=True,
                text=True,
            )
            results[name].append(json.loads(child.stdout))
    best = {
        name: {hook: {stage: min(r[hook][stage] for r in runs) for stage in STAGES} for hook in HOOKS}
        for name, runs in results.items()
    }
    header = ["hook", "stage"] + [f"µs per event: {name}" for name, _ in codes]
    if args.against:
        header.append("ratio")
    rows = []
    for hook in HOOKS:
        for stage in STAGES:
            cells = [f"{best[name][hook][stage]:.2f}" for name, _ in codes]
            if args.against:
                cells.append(f"{best[codes[0][0]][hook][stage] / best[codes[1][0]][hook][stage]:.2f}")
            rows.append([hook, stage, *cells])
    table(
        f"Per-stage CPU of one event (process CPU time, min of {args.rounds} x {args.repeat} rounds of "
        f"{RECORDS} records; enrich = decode+enrich - decode)",
        header,
        rows,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--against", default="", help="stages: a checkout of other code to compare with, side by side")


if __name__ == "__main__":  # the child: one round on the checkout named
    p = argparse.ArgumentParser()
    p.add_argument("--child", required=True)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    sys.path.insert(0, a.child)
    print(json.dumps(measure(a.repeat)))
