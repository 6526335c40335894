#!/usr/bin/env python3
"""Workload for mmap_file: mmap() calls made from one thread of their own.

Usage: mmap_workload.py STEP...
  STEP = file:PATH:PROT:FLAGS or anon:PROT:FLAGS, PROT like READ|EXEC, FLAGS like
  PRIVATE or SHARED|POPULATE (ANONYMOUS is added for anon).
The calls run in a fresh thread, so the hook's pid (the thread id) tells them apart
from the interpreter's own mappings (its libraries are PROT_EXEC mappings too).
Prints one JSON object: pid, tid, and each call's flags value and errno.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import sys
import threading
from typing import Any

PROT = {"READ": 1, "WRITE": 2, "EXEC": 4}
MAP = {"SHARED": 0x1, "PRIVATE": 0x2, "ANONYMOUS": 0x20, "NORESERVE": 0x4000, "POPULATE": 0x8000}
MAP_FAILED = ctypes.c_void_p(-1).value
SIZE = 2 * mmap.PAGESIZE
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def bits(spec: str, table: dict[str, int]) -> int:
    n = 0
    for name in spec.split("|"):
        n |= table[name]
    return n


def run(steps: list[str], out: dict[str, Any]) -> None:
    out["tid"] = threading.get_native_id()
    calls = []
    for step in steps:
        kind, *rest = step.split(":")
        fd = -1
        if kind == "file":
            path, prot_s, flags_s = rest
            flags = bits(flags_s, MAP)
            fd = os.open(path, os.O_RDWR if flags & MAP["SHARED"] else os.O_RDONLY)
        else:
            prot_s, flags_s = rest
            flags = bits(flags_s, MAP) | MAP["ANONYMOUS"]
        addr = libc.mmap(None, SIZE, bits(prot_s, PROT), flags, fd, 0)
        err = ctypes.get_errno() if addr in (None, MAP_FAILED) else 0
        if fd >= 0:
            os.close(fd)
        if not err:
            libc.munmap(addr, SIZE)
        calls.append({"step": step, "flags": flags, "errno": err})
    out["calls"] = calls


def main() -> None:
    out: dict[str, Any] = {"pid": os.getpid()}
    t = threading.Thread(target=run, args=(sys.argv[1:], out))
    t.start()
    t.join()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
