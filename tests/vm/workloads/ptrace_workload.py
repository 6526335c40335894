#!/usr/bin/env python3
"""Workload for ptrace_access_check: inspect, then attach to and detach from a process.

Usage: ptrace_workload.py PID
First reads /proc/PID/environ (a PTRACE_MODE_READ check), then PTRACE_ATTACH (an
ATTACH check), waits for the tracee to stop and PTRACE_DETACHes. Prints one JSON
object: pid, target, and the errno of each step (0 = success).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

PTRACE_ATTACH = 16
PTRACE_DETACH = 17
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]


def main() -> None:
    target = int(sys.argv[1])
    steps: dict[str, int] = {}
    try:
        with open(f"/proc/{target}/environ", "rb") as f:
            f.read()
        steps["read_environ"] = 0
    except OSError as e:
        steps["read_environ"] = e.errno or -1
    rc = libc.ptrace(PTRACE_ATTACH, target, None, None)
    steps["attach"] = ctypes.get_errno() if rc != 0 else 0
    if rc == 0:
        os.waitpid(target, 0)  # the tracee stops with SIGSTOP: a tracer may wait for it
        rc = libc.ptrace(PTRACE_DETACH, target, None, None)
        steps["detach"] = ctypes.get_errno() if rc != 0 else 0
    print(json.dumps({"pid": os.getpid(), "target": target, "steps": steps}), flush=True)


if __name__ == "__main__":
    main()
