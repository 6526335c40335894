#!/usr/bin/env python3
"""Workload for inode_file_setattr (and its fallback file_ioctl): set a file's flags
through FS_IOC_FSSETXATTR, the interface chattr does not use (xfs_io does).

Usage: fileattr_workload.py OP...
  fsx-add:PATH:XFLAGS   FS_IOC_FSGETXATTR, then FS_IOC_FSSETXATTR with fsx_xflags | XFLAGS
Prints one JSON object: pid, and results (one {op, errno} per OP, 0 = success).
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import sys

FS_IOC_FSGETXATTR = 0x801C581F  # _IOR('X', 31, struct fsxattr)
FS_IOC_FSSETXATTR = 0x401C5820  # _IOW('X', 32, struct fsxattr)
FSXATTR = struct.Struct("=5I8x")  # fsx_xflags, extsize, nextents, projid, cowextsize, pad


def fsx_add(path: str, xflags: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(FSXATTR.size)
        fcntl.ioctl(fd, FS_IOC_FSGETXATTR, buf)
        fields = list(FSXATTR.unpack(buf))
        fields[0] |= xflags
        fcntl.ioctl(fd, FS_IOC_FSSETXATTR, FSXATTR.pack(*fields))
    finally:
        os.close(fd)


def main() -> None:
    results = []
    for op in sys.argv[1:]:
        kind, path, arg = op.split(":", 2)
        try:
            if kind != "fsx-add":
                raise SystemExit(f"unknown op {op!r}")
            fsx_add(path, int(arg, 0))
            err = 0
        except OSError as e:
            err = e.errno or -1
        results.append({"op": kind, "errno": err})
    print(json.dumps({"pid": os.getpid(), "results": results}), flush=True)


if __name__ == "__main__":
    main()
