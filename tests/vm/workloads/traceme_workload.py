#!/usr/bin/env python3
"""Workload for ptrace_traceme: a child asks to be traced by this process.

Usage: traceme_workload.py TRACER_COMM TRACEE_COMM
Names itself TRACER_COMM (prctl PR_SET_NAME), forks a child that names itself
TRACEE_COMM and calls ptrace(PTRACE_TRACEME), reports the errno through a pipe and
exits. Prints one JSON object: pid (the tracer), child (the tracee's pid) and errno
(0 = the request succeeded).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

PTRACE_TRACEME = 0
PR_SET_NAME = 15
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]


def set_comm(name: str) -> None:
    libc.prctl(PR_SET_NAME, name.encode(), 0, 0, 0)


def main() -> None:
    tracer_comm, tracee_comm = sys.argv[1], sys.argv[2]
    set_comm(tracer_comm)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        set_comm(tracee_comm)
        rc = libc.ptrace(PTRACE_TRACEME, 0, None, None)
        err = ctypes.get_errno() if rc != 0 else 0
        os.write(w, str(err).encode())
        os._exit(0)
    os.close(w)
    err = int(os.read(r, 16) or b"-1")
    os.close(r)
    os.waitpid(child, 0)
    print(json.dumps({"pid": os.getpid(), "child": child, "errno": err}), flush=True)


if __name__ == "__main__":
    main()
