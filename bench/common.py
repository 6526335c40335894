"""What the benchmark modules share: the table printer and a krsid child process."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]


def exec_loop(binary: Path, n: int) -> float:
    """n fork+execs of binary from one shell; returns seconds."""
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", f'i=0; while [ $i -lt {n} ]; do "{binary}"; i=$((i+1)); done'], check=True)
    return time.perf_counter() - t0


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    sys.stdout.flush()


def proc_status_mb(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon, RssFile and VmHWM of a process, in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def build_loops(directory: Path) -> Path:
    """bench/loops.c compiled into directory (C, so that no interpreter hides a call's cost)."""
    exe = directory / "loops"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(ROOT / "bench" / "loops.c")], check=True)
    return exe


@contextlib.contextmanager
def tmpfs_mounted(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs on directory (created) for the run: files there are off the VM's 9p root."""
    directory.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "krsid-bench", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=False)


def scrape(port: int, timeout: float = 30) -> dict[tuple[str, str], float]:
    """krsid's samples on 127.0.0.1:port: (metric name, label text or "") -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(krsid_[a-z_]+)(?:\{([^}]*)\})? ([0-9.e+-]+)$", line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (those gone count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def pids_of(comm: str) -> list[int]:
    """Processes (and kernel threads) whose comm is exactly `comm`."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if (p / "comm").read_text().strip() == comm:
                    out.append(int(p.name))
    return out


@contextlib.contextmanager
def krsid_running(
    config: Path,
    notify_path: Path,
    *,
    stdout: IO[bytes] | IO[str] | int = subprocess.DEVNULL,
    stderr: IO[bytes] | IO[str] | int = subprocess.DEVNULL,
    ready_timeout: float = 1200,
) -> Iterator[subprocess.Popen[bytes]]:
    """`krsid run --config config` as a child, yielded once it has sent READY=1 to
    notify_path; SIGTERM and wait on the way out."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        proc = subprocess.Popen(
            [sys.executable, "-m", "krsid", "run", "--config", str(config)],
            cwd=ROOT,
            env=dict(os.environ, NOTIFY_SOCKET=str(notify_path)),
            stdout=stdout,
            stderr=stderr,
        )
        try:
            notify.settimeout(ready_timeout)
            while b"READY=1" not in notify.recv(4096):
                pass
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
