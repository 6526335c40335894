"""The process instance id: ``<boot id>:<start>:<tgid>``.

- boot id: /proc/sys/kernel/random/boot_id without dashes, as journald's _BOOT_ID;
- start: when the process started, in clock ticks since boot (USER_HZ, 100 per
  second on Linux): exactly field 22 (starttime) of /proc/PID/stat. The kernel
  side sends the start time in nanoseconds (start_ns, the thread group leader's
  start_boottime); the kernel's /proc prints that same value divided by
  NSEC_PER_SEC / USER_HZ, and so does this module. Ticks, not nanoseconds, so
  that a process running before krsid started (seeded from /proc) gets the id
  its events will carry;
- tgid: the process id (global pid namespace).

A pid is reused only after the pid space wraps (pid_max, 4M by default), never
within one 10 ms tick, so (start, tgid) names one process of the boot and the
boot id makes that unique across boots. An exec keeps the id: the process (and
its /proc/PID/stat starttime) stays the same; the exec event records the image
change. Recomputing an id from a record: ``_BOOT_ID`` (journald) or the boot's
boot_id, ``start_ns // 10_000_000`` and ``tgid``; for a live process,
``cat /proc/sys/kernel/random/boot_id`` and field 22 of ``/proc/PID/stat``.
"""

from __future__ import annotations

import os
from pathlib import Path

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
NSEC_PER_SEC = 1_000_000_000


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    try:
        return path.read_text(encoding="ascii").strip().replace("-", "")
    except OSError:
        return "0" * 32  # no procfs: ids stay unique within this boot only


def clock_ticks_per_second() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK")) or 100
    except (ValueError, OSError):
        return 100


def process_id(boot_id: str, start_ticks: int, tgid: int) -> str:
    return f"{boot_id}:{start_ticks}:{tgid}"


class BootClock:
    """Converts the kernel's start_ns into /proc's ticks and builds ids for one boot."""

    __slots__ = ("boot_id", "ns_per_tick")

    def __init__(self, boot_id: str | None = None, ticks_per_second: int | None = None) -> None:
        self.boot_id = boot_id if boot_id is not None else read_boot_id()
        self.ns_per_tick = NSEC_PER_SEC // (ticks_per_second or clock_ticks_per_second())

    def ticks(self, start_ns: int) -> int:
        return start_ns // self.ns_per_tick

    def process_id(self, start_ticks: int, tgid: int) -> str:
        return process_id(self.boot_id, start_ticks, tgid)
