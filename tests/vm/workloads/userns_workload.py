#!/usr/bin/env python3
"""Workload: create user namespaces by each system call, one forked child per call.

Usage: userns_workload.py OP [OP ...], OP one of
  unshare       unshare(CLONE_NEWUSER)
  clone         raw clone(CLONE_NEWUSER | SIGCHLD) (fork-like: the new child exits at once)
  clone3        clone3({flags: CLONE_NEWUSER, exit_signal: SIGCHLD})
  int80         unshare(CLONE_NEWUSER) through the ia32 ABI: int $0x80 with eax=310 from
                this 64-bit process (what a 32-bit program's unshare does)
  fork          plain fork (clone without CLONE_NEWUSER): must not be reported

Prints one JSON object: {"calls": [{"op", "pid" (the child that made the call),
"ret", "errno", "signal" (set if the child died of a signal)}]}.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import signal
import struct
import sys

CLONE_NEWUSER = 0x10000000
SIGCHLD = int(signal.SIGCHLD)
NR_CLONE, NR_CLONE3 = 56, 435

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def _unshare() -> tuple[int, int]:
    ret = libc.unshare(CLONE_NEWUSER)
    return ret, ctypes.get_errno() if ret < 0 else 0


def _after_clone(ret: int) -> tuple[int, int]:
    if ret == 0:  # the new process: leave at once, without Python's cleanup
        os._exit(0)
    if ret < 0:
        return ret, ctypes.get_errno()
    os.waitpid(ret, 0)
    return 0, 0


def _clone() -> tuple[int, int]:
    args = [ctypes.c_ulong(CLONE_NEWUSER | SIGCHLD)] + [ctypes.c_ulong(0)] * 4
    return _after_clone(libc.syscall(ctypes.c_long(NR_CLONE), *args))


def _clone3() -> tuple[int, int]:
    # struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack,
    # stack_size, tls, set_tid, set_tid_size, cgroup (11 x u64).
    raw = ctypes.create_string_buffer(struct.pack("<11Q", CLONE_NEWUSER, 0, 0, 0, SIGCHLD, 0, 0, 0, 0, 0, 0))
    return _after_clone(libc.syscall(ctypes.c_long(NR_CLONE3), raw, ctypes.c_ulong(88)))


# push rbx; mov eax, 310 (ia32 unshare); mov ebx, CLONE_NEWUSER; int $0x80; pop rbx; ret
INT80_UNSHARE = bytes.fromhex("53b836010000bb00000010cd805bc3")


def _int80() -> tuple[int, int]:
    code = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    code.write(INT80_UNSHARE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(code))
    ret = int(ctypes.CFUNCTYPE(ctypes.c_int)(addr)())
    return ret, -ret if ret < 0 else 0


def _fork() -> tuple[int, int]:
    return _after_clone(os.fork())


OPS = {"unshare": _unshare, "clone": _clone, "clone3": _clone3, "int80": _int80, "fork": _fork}


def run(op: str) -> dict[str, object]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            ret, err = OPS[op]()
            os.write(w, json.dumps({"ret": ret, "errno": err}).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    result: dict[str, object] = {"op": op, "pid": pid, "ret": None, "errno": None, "signal": None}
    if os.WIFSIGNALED(status):
        result["signal"] = os.WTERMSIG(status)
    if out:
        result.update(json.loads(out))
    return result


def main() -> None:
    for op in sys.argv[1:]:
        if op not in OPS:
            sys.exit(f"unknown op {op!r}; one of {', '.join(OPS)}")
    print(json.dumps({"calls": [run(op) for op in sys.argv[1:]]}))


if __name__ == "__main__":
    main()
