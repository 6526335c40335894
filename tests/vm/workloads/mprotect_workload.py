#!/usr/bin/env python3
"""Workload: mmap a region, then mprotect it, reporting what the kernel hook will see.

Usage: mprotect_workload.py anon|file PATH [PROT ...]
Prints one JSON object: pid, the /proc/self/maps line of the mapping just before
each mprotect (the vma the LSM hook receives), and each call's errno.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import sys
import time

PROT = {"READ": 1, "WRITE": 2, "EXEC": 4}
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def maps_line(addr: int) -> dict[str, str]:
    with open("/proc/self/maps") as f:
        for line in f:
            rng = line.split()[0]
            start, end = (int(x, 16) for x in rng.split("-"))
            if start <= addr < end:
                parts = line.split(maxsplit=5)
                return {
                    "start": hex(start),
                    "end": hex(end),
                    "perms": parts[1],
                    "path": parts[5].strip() if len(parts) > 5 else "",
                }
    raise SystemExit(f"address {addr:#x} not in /proc/self/maps")


def main() -> None:
    kind, path, *prots = sys.argv[1:]
    comm = os.environ.get("KRSID_WORKLOAD_COMM")
    if comm:  # a unique command name lets a policy rule target only this process
        libc.prctl(15, comm.encode(), 0, 0, 0)  # PR_SET_NAME
    size = 3 * mmap.PAGESIZE
    if kind == "anon":
        addr = libc.mmap(None, size, PROT["READ"] | PROT["WRITE"], mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    else:
        fd = os.open(path, os.O_RDONLY)
        addr = libc.mmap(None, size, PROT["READ"], mmap.MAP_PRIVATE, fd, 0)
        os.close(fd)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise SystemExit(f"mmap failed: {os.strerror(ctypes.get_errno())}")
    calls = []
    for spec in prots or ["READ|EXEC"]:
        if spec.startswith("SLEEP:"):  # a pause between calls, e.g. past a dedup window
            time.sleep(float(spec[6:]))
            continue
        prot = 0
        for p in spec.split("|"):
            prot |= PROT[p]
        before = maps_line(addr)
        rc = libc.mprotect(addr, size, prot)
        calls.append({"prot": spec, "before": before, "errno": ctypes.get_errno() if rc else 0})
    print(json.dumps({"pid": os.getpid(), "addr": hex(addr), "calls": calls}), flush=True)


if __name__ == "__main__":
    main()
