"""The daemon's memory with a full-size process table (bench/run.py table, in the VM).

Issue 12: RSS stays <= 150 MB with a 32k-process table. Before krsid starts, a small
C program forks N children that sleep in pause() (one page each of their own; the
rest is shared with their parent), so /proc holds N more processes; krsid seeds its
process table from /proc on its first event, then reports exec events. Printed: the
time to READY=1, the table's entries (krsid_process_table_entries) once seeded and
how long the seed took (N processes' /proc entries read, under TCG), RSS after READY,
after the seed and after a loop of execs; the same without the sleepers, side by
side in one VM session.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import exec_loop, krsid_running, proc_status_mb, scrape, table
from tests.support.net import free_port

SLEEPERS_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 0, made = 0;
    for (; made < n; made++) {
        pid_t p = fork();
        if (p == 0)
            for (;;) pause();
        if (p < 0) { perror("fork"); break; }
    }
    printf("%ld\n", made);
    fflush(stdout);
    for (;;) pause();
}
"""


@contextmanager
def sleepers(tmp: Path, n: int) -> Iterator[int]:
    """n sleeping processes (their own session: killed as a group on the way out); yields how many."""
    if n == 0:
        yield 0
        return
    # A 1-CPU guest allows 32,768 pids in all: room for n more (the VM is thrown away).
    pid_max = Path("/proc/sys/kernel/pid_max")
    if int(pid_max.read_text()) < 2 * n:
        pid_max.write_text(str(2 * n))
    src, binary = tmp / "sleepers.c", tmp / "sleepers"
    src.write_text(SLEEPERS_C)
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(src)], check=True)
    proc = subprocess.Popen([str(binary), str(n)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        made = int(proc.stdout.readline() or 0)
        yield made
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _measure(tmp: Path, args: argparse.Namespace, n_sleepers: int) -> list[str]:
    port = free_port()
    cfg = tmp / f"krsid-{n_sleepers}.yaml"
    cfg.write_text(
        f"headers: {args.headers}\ncache_dir: {tmp / 'cache'}\nstate_dir: {tmp / f'state-{n_sleepers}'}\n"
        "hooks:\n  bprm_check_security: {}\n"
        f"sinks:\n  jsonl: {{path: {tmp / f'events-{n_sleepers}.jsonl'}}}\n  journald: {{enabled: false}}\n"
        f"  prometheus: {{listen: '127.0.0.1:{port}'}}\n"
    )
    true_copy = tmp / "bench-true"
    if not true_copy.exists():
        shutil.copy2("/bin/true", true_copy)
    with sleepers(tmp, n_sleepers) as made:
        t0 = time.perf_counter()
        with krsid_running(cfg, tmp / f"notify-{n_sleepers}") as proc:
            ready = time.perf_counter() - t0
            rss_ready = proc_status_mb(proc.pid)["VmRSS"]
            # The table is seeded from /proc on the first event: one exec, then wait
            # until the table holds the sleepers (or stops growing).
            t1 = time.perf_counter()
            subprocess.run([str(true_copy)], check=True)
            entries, last, deadline = 0.0, -1.0, time.monotonic() + 1800
            while time.monotonic() < deadline:
                time.sleep(2)
                entries = scrape(port, timeout=120).get(("krsid_process_table_entries", ""), 0)
                if entries >= made and entries == last:
                    break
                last = entries
            seeded = time.perf_counter() - t1
            rss_seeded = proc_status_mb(proc.pid)["VmRSS"]
            exec_loop(true_copy, args.execs)
            time.sleep(2)
            rss_after = proc_status_mb(proc.pid)["VmRSS"]
            entries_after = scrape(port, timeout=120).get(("krsid_process_table_entries", ""), 0)
    return [
        f"{made:,}",
        f"{ready:.1f} s",
        f"{entries:,.0f} in {seeded:.1f} s",
        f"{rss_ready:.0f} MB",
        f"{rss_seeded:.0f} MB",
        f"{rss_after:.0f} MB ({entries_after:,.0f} entries)",
    ]


def main(args: argparse.Namespace) -> None:
    n = args.table_processes
    with tempfile.TemporaryDirectory(prefix="krsid-table-") as d:
        tmp = Path(d)
        rows = [_measure(tmp, args, 0), _measure(tmp, args, n)]
    table(
        f"Process table at its size (bench/run.py table, VM, {args.headers} headers, exec hook, "
        f"JSON lines; then {args.execs} execs; TCG)",
        [
            "sleeping processes added",
            "start -> READY=1",
            "table after the first event (seeded from /proc)",
            "RSS after READY",
            "RSS after the seed",
            f"RSS after {args.execs} execs",
        ],
        rows,
    )
