#!/usr/bin/env python3
"""Workload for sb_mount: mount a tmpfs, remount it read-only, unmount it.

Usage: mount_workload.py SOURCE TARGET
mount(SOURCE, TARGET, "tmpfs", MS_NOSUID|MS_NODEV|MS_NOEXEC, "size=1m"), then
mount(NULL, TARGET, NULL, MS_REMOUNT|MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC, NULL),
then umount2(TARGET, 0), all with mount(2) itself (no libmount: the new mount API
would bypass the hook). Run it in a private mount namespace (the VM tests do).
Prints one JSON object: pid and the errno of each call.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def errno_of(rc: int) -> int:
    return ctypes.get_errno() if rc != 0 else 0


def main() -> None:
    source, target = (a.encode() for a in sys.argv[1:3])
    base = MS_NOSUID | MS_NODEV | MS_NOEXEC
    calls = {"mount": errno_of(libc.mount(source, target, b"tmpfs", base, b"size=1m"))}
    if calls["mount"] == 0:
        calls["remount"] = errno_of(libc.mount(None, target, None, MS_REMOUNT | MS_RDONLY | base, None))
        calls["umount"] = errno_of(libc.umount2(target, 0))
    print(json.dumps({"pid": os.getpid(), "calls": calls}), flush=True)


if __name__ == "__main__":
    main()
