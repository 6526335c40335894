#!/usr/bin/env python3
"""Workload for bprm_check_security: exec paths Python's os.exec* cannot take.

Usage:
  bprm_workload.py execveat DIR NAME ARG...   execveat(open(DIR), NAME, [ARG...], env)
  bprm_workload.py empty PATH                 execve(PATH, {NULL}, {NULL})
  bprm_workload.py null PATH                  execve(PATH, NULL, NULL)

env for execveat: this process's KRSID_TEST_* variables. The process replaces itself, so
the exec event's tgid is this process's pid; on failure it prints the errno as
JSON and exits 1.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

SYS_EXECVEAT = 322  # x86-64
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.execve.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p]


def cvec(items: list[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    return (ctypes.c_char_p * (len(items) + 1))(*items, None)


def main() -> None:
    mode, *rest = sys.argv[1:]
    if mode == "execveat":
        directory, name, *args = rest
        dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        argv = cvec([os.fsencode(a) for a in args])
        # Only the test's own variables: Python may have added LC_CTYPE (PEP 538).
        envp = cvec([k + b"=" + v for k, v in os.environb.items() if k.startswith(b"KRSID_TEST_")])
        libc.syscall(
            ctypes.c_long(SYS_EXECVEAT),
            ctypes.c_long(dirfd),
            ctypes.c_char_p(os.fsencode(name)),
            argv,
            envp,
            ctypes.c_long(0),
        )
    elif mode == "empty":
        libc.execve(os.fsencode(rest[0]), cvec([]), cvec([]))
    elif mode == "null":
        libc.execve(os.fsencode(rest[0]), None, None)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps({"pid": os.getpid(), "errno": ctypes.get_errno()}), flush=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
