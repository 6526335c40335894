"""One process as /proc shows it, read so that pid reuse cannot mix two processes.

The files are read through a file descriptor of the /proc/PID directory: once the
process it was opened for is gone, reads through it fail (ESRCH) even when the pid
number already names a new process. The start time is read first and compared with
the one expected, so the caller never gets another process's exe or argv.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MAX_ARGS = 64  # as the exec hook's bound on argv
MAX_ARGS_BYTES = 4096


@dataclass(frozen=True, slots=True)
class ProcInfo:
    tgid: int
    ppid: int
    start_ticks: int  # field 22 of /proc/PID/stat
    uid: int  # real uid; -1 when unreadable
    exe: bytes  # b"" for kernel threads or when unreadable
    args: tuple[bytes, ...]


def parse_stat(text: bytes) -> tuple[int, int] | None:
    """(ppid, starttime) from /proc/PID/stat; the comm in parentheses may hold anything."""
    close = text.rfind(b")")
    if close < 0:
        return None
    rest = text[close + 1 :].split()
    if len(rest) < 20:
        return None
    try:
        return int(rest[1]), int(rest[19])
    except ValueError:
        return None


def split_args(raw: bytes) -> tuple[bytes, ...]:
    raw = raw[:MAX_ARGS_BYTES]
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return tuple(raw.split(b"\0")[:MAX_ARGS]) if raw else ()


def _read(name: str, dir_fd: int, limit: int = 65536) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


def _real_uid(status: bytes) -> int:
    for line in status.splitlines():
        if line.startswith(b"Uid:"):
            parts = line.split()
            return int(parts[1]) if len(parts) > 1 else -1
    return -1


def read_process(proc_root: Path, tgid: int, start_ticks: int | None = None) -> ProcInfo | None:
    """The process tgid, or None when it is gone or the pid now names another process
    (start_ticks given and different). A missing stat file (a partial /proc, e.g. in
    tests or under hidepid) is not a mismatch: what is readable is returned."""
    try:
        dir_fd = os.open(proc_root / str(tgid), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        ppid, start = 0, start_ticks if start_ticks is not None else 0
        try:
            parsed = parse_stat(_read("stat", dir_fd))
        except FileNotFoundError:
            parsed = None
        except OSError:
            return None  # ESRCH: gone since the open
        if parsed is not None:
            ppid, start = parsed
            if start_ticks is not None and start != start_ticks:
                return None  # the pid was reused: not the process asked for
        try:
            exe = os.readlink("exe", dir_fd=dir_fd).encode("utf-8", "surrogateescape")
        except OSError:
            exe = b""  # a kernel thread, or gone (then the reads below fail too)
        try:
            args = split_args(_read("cmdline", dir_fd, MAX_ARGS_BYTES + 1))
        except OSError:
            args = ()
        try:
            uid = _real_uid(_read("status", dir_fd))
        except (OSError, ValueError):
            uid = -1
        return ProcInfo(tgid, ppid, start, uid, exe, args)
    finally:
        os.close(dir_fd)


def list_pids(proc_root: Path) -> list[int]:
    try:
        return [int(n) for n in os.listdir(proc_root) if n.isdigit()]
    except OSError:
        return []
