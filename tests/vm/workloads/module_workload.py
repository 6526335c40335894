#!/usr/bin/env python3
"""Workload: module-loading syscalls that fail harmlessly, for the kernel_* hooks.

Usage: module_workload.py ACTION [ACTION ...]
  finit:PATH     finit_module(open(PATH), "", 0): kernel_read_file, id MODULE
  init:SIZE      init_module(SIZE junk bytes, "") : kernel_load_data, id MODULE
  socket:FAMILY  socket(FAMILY, SOCK_STREAM, 0)  : request_module("net-pf-FAMILY")
Nothing gets loaded: the data is not an ELF module, so the kernel refuses it
(ENOEXEC or similar) after the LSM hook ran. Prints one JSON object: pid and the
errno of each action.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys

SYS_INIT_MODULE = 175  # x86_64
SYS_FINIT_MODULE = 313
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def finit(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        rc = libc.syscall(SYS_FINIT_MODULE, ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_int(0))
        return ctypes.get_errno() if rc else 0
    finally:
        os.close(fd)


def init(size: int) -> int:
    # Longer than an ELF header (the kernel checks that before the hook), not a module.
    buf = ctypes.create_string_buffer((b"krsid-not-a-module" * (size // 18 + 1))[:size], size)
    rc = libc.syscall(SYS_INIT_MODULE, buf, ctypes.c_ulong(size), ctypes.c_char_p(b""))
    return ctypes.get_errno() if rc else 0


def open_socket(family: int) -> int:
    try:
        socket.socket(family, socket.SOCK_STREAM, 0).close()
    except OSError as e:
        return e.errno or 0
    return 0


def main() -> None:
    results = []
    for action in sys.argv[1:]:
        kind, _, arg = action.partition(":")
        if kind == "finit":
            err = finit(arg)
        elif kind == "init":
            err = init(int(arg))
        elif kind == "socket":
            err = open_socket(int(arg))
        else:
            raise SystemExit(f"unknown action {action!r}")
        results.append({"action": action, "errno": err})
    print(json.dumps({"pid": os.getpid(), "results": results}), flush=True)


if __name__ == "__main__":
    main()
