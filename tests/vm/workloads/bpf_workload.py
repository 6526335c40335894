#!/usr/bin/env python3
"""Workload: raw bpf() syscalls (ctypes, no libbpf), for the bpf hook.

Usage: bpf_workload.py ACTION [ACTION ...]
  prog:NAME   BPF_PROG_LOAD of a socket filter "r0 = 0; exit" named NAME
  map:NAME    BPF_MAP_CREATE of an ARRAY map (4-byte key, 8-byte value, 3 entries) named NAME
  nextid      BPF_PROG_GET_NEXT_ID from 0 (a command the default filter drops)
Every fd is closed at exit: nothing stays loaded. Prints one JSON object: pid and,
per action, the return value (fd or 0) and errno.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import sys

SYS_BPF = 321  # x86_64
BPF_MAP_CREATE = 0
BPF_PROG_LOAD = 5
BPF_PROG_GET_NEXT_ID = 11
BPF_PROG_TYPE_SOCKET_FILTER = 1
BPF_MAP_TYPE_ARRAY = 2
ATTR_SIZE = 128  # a zeroed bpf_attr prefix; the kernel zero-fills the rest

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

# r0 = 0 (BPF_ALU64 | BPF_MOV | BPF_K), exit (BPF_JMP | BPF_EXIT)
INSNS = struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)
LICENSE = ctypes.create_string_buffer(b"GPL")
INSN_BUF = ctypes.create_string_buffer(INSNS, len(INSNS))


def bpf(cmd: int, attr: bytes) -> tuple[int, int]:
    buf = ctypes.create_string_buffer(attr.ljust(ATTR_SIZE, b"\0"), ATTR_SIZE)
    rc = libc.syscall(SYS_BPF, ctypes.c_int(cmd), buf, ctypes.c_uint(ATTR_SIZE))
    return (int(rc), ctypes.get_errno() if rc < 0 else 0)


def name16(name: str) -> bytes:
    raw = name.encode()
    assert len(raw) < 16, "BPF object names hold 15 bytes"
    return raw.ljust(16, b"\0")


def prog_load(name: str) -> tuple[int, int]:
    # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version, prog_flags, prog_name
    attr = struct.pack(
        "<IIQQIIQII16s",
        BPF_PROG_TYPE_SOCKET_FILTER,
        len(INSNS) // 8,
        ctypes.addressof(INSN_BUF),
        ctypes.addressof(LICENSE),
        0,
        0,
        0,
        0,
        0,
        name16(name),
    )
    return bpf(BPF_PROG_LOAD, attr)


def map_create(name: str) -> tuple[int, int]:
    # map_type, key_size, value_size, max_entries, map_flags, inner_map_fd, numa_node, map_name
    attr = struct.pack("<IIIIIII16s", BPF_MAP_TYPE_ARRAY, 4, 8, 3, 0, 0, 0, name16(name))
    return bpf(BPF_MAP_CREATE, attr)


def main() -> None:
    results = []
    fds = []
    for action in sys.argv[1:]:
        kind, _, arg = action.partition(":")
        if kind == "prog":
            rc, err = prog_load(arg)
        elif kind == "map":
            rc, err = map_create(arg)
        elif kind == "nextid":
            rc, err = bpf(BPF_PROG_GET_NEXT_ID, struct.pack("<II", 0, 0))
        else:
            raise SystemExit(f"unknown action {action!r}")
        if kind in ("prog", "map") and rc >= 0:
            fds.append(rc)
        results.append({"action": action, "rc": rc, "errno": err})
    for fd in fds:
        os.close(fd)
    print(json.dumps({"pid": os.getpid(), "results": results}), flush=True)


if __name__ == "__main__":
    main()
