"""Where krsid's cost on exec goes: its BPF programs vs its user-space consumers (issue 6).

    bench/run.py exec       inside the test VM (tests/vm/run); prints a markdown table

The fork+exec loop of bench/loops.c runs without krsid, then with the daemon on the
shipped config's hooks, once with the shipped sinks (journald + JSON lines) and once
with JSON lines only. `bpf_stats: true` makes the kernel count each hook program's
runs and run time (krsid_hook_program_{runs,seconds}_total), so the table splits the
loop's slowdown into the programs' own time per exec and the rest, which is the
consumers (krsid's daemon, journald) sharing the VM's CPUs with the loop. Under TCG
every absolute number is emulator-bound: compare within the table.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import build_loops, cpu_seconds, krsid_running, pids_of, scrape, table, tmpfs_mounted  # noqa: E402
from tests.support.net import free_port  # noqa: E402

SINKS = {
    "journald + JSON lines (shipped)": {"journald": {"enabled": True}},
    "JSON lines only": {"journald": {"enabled": False}},
}


def program_metrics(port: int) -> dict[tuple[str, str], float]:
    """("runs" | "seconds", hook) -> krsid_hook_program_{runs,seconds}_total."""
    out = {}
    for (name, labels), value in scrape(port, timeout=60).items():
        m = re.fullmatch(r"krsid_hook_program_(runs|seconds)_total", name)
        hook = re.search(r'hook="([a-z0-9_]+)"', labels)
        if m and hook:
            out[(m.group(1), hook.group(1))] = value
    return out


def main(args: argparse.Namespace) -> None:
    from tests.support.journald import private_journald

    if os.environ.get("KRSID_IN_VM") != "1":
        sys.exit("bench/run.py exec: run it inside the test VM: tests/vm/run -- .venv/bin/python bench/run.py exec")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        # tmpfs: the loop and the program it execs, off the guest's 9p root
        with tmpfs_mounted(tmp / "fs", "256m") as fs:
            loops = build_loops(fs)
            shutil.copy2("/bin/true", fs / "bench-true")
            calls = args.execs_per_run

            def loop() -> float:
                argv = [str(loops), "exec", str(calls), str(fs / "bench-true")]
                return float(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)

            shipped = yaml.safe_load((ROOT / "etc" / "krsid.yaml").read_text())
            port = free_port()
            rows: list[list[str]] = []
            for label, sinks_override in SINKS.items():
                sinks = {
                    "journald": {"enabled": True},
                    "jsonl": {"enabled": True, "path": str(fs / "events.jsonl")},
                    "prometheus": {"enabled": True, "listen": f"127.0.0.1:{port}"},
                    **sinks_override,
                }
                config = tmp / "krsid.yaml"
                config.write_text(
                    yaml.safe_dump(
                        {
                            "headers": args.headers if args.headers != "auto" else "kernel",
                            "cache_dir": str(tmp / "cache"),
                            "state_dir": str(tmp / "state"),
                            "bpf_stats": True,
                            "buffer": shipped.get("buffer", {}),
                            "hooks": shipped["hooks"],
                            "sinks": sinks,
                        }
                    )
                )
                before = statistics.median(loop() for _ in range(args.repeat))
                with (
                    private_journald(),
                    (tmp / "krsid.log").open("a") as log,
                    krsid_running(config, tmp / f"notify-{len(rows)}", stderr=log, ready_timeout=1500) as proc,
                ):
                    time.sleep(2)  # past the start-up work
                    m0 = program_metrics(port)
                    consumers = [proc.pid, *pids_of("systemd-journal")]
                    c0 = cpu_seconds(consumers)
                    with_krsid = statistics.median(loop() for _ in range(args.repeat))
                    c1 = cpu_seconds(consumers)
                    time.sleep(1)  # the last events' program runs are counted already; the daemon drains
                    m1 = program_metrics(port)
                after = statistics.median(loop() for _ in range(args.repeat))
                base = (before + after) / 2
                execs = args.repeat * calls
                prog_s = {
                    hook: m1[("seconds", hook)] - m0.get(("seconds", hook), 0.0)
                    for (kind, hook) in m1
                    if kind == "seconds"
                }
                runs = {hook: m1[("runs", hook)] - m0.get(("runs", hook), 0.0) for (kind, hook) in m1 if kind == "runs"}
                added_us = (with_krsid - base) / 1e3
                programs_us = sum(prog_s.values()) * 1e6 / execs
                busiest = sorted((h for h in runs if runs[h]), key=lambda h: -prog_s[h])
                rows.append(
                    [
                        label,
                        f"{base / 1e6:.1f} ms",
                        f"{with_krsid / base:.3f}x (+{added_us:.0f} µs)",
                        f"{programs_us:.0f} µs ("
                        + ", ".join(f"{h} {runs[h] / execs:.1f}x {prog_s[h] * 1e6 / execs:.0f}" for h in busiest)
                        + ")",
                        f"{(c1 - c0) * 1e3 / execs:.2f} ms",
                    ]
                )
    table(
        f"Where the cost of an exec goes (VM, TCG, {os.cpu_count()} vCPU; fork+exec of a copy of /bin/true, "
        f"median of {args.repeat} runs of {args.execs_per_run}; programs: kernel bpf_stats)",
        [
            "sinks",
            "exec without krsid",
            "with krsid",
            "krsid's BPF programs per exec (hook: runs per exec, µs)",
            "consumer CPU per exec (daemon + journald)",
        ],
        rows,
    )
