#!/usr/bin/env python3
"""Workload for inode_setxattr / inode_removexattr: set and remove extended attributes.

Usage: xattr_workload.py OP...
  set:PATH:NAME:VALUE   setxattr(PATH, NAME, VALUE) (VALUE as UTF-8 bytes)
  remove:PATH:NAME      removexattr(PATH, NAME)
  acl:PATH:KIND:NAMED   a POSIX ACL as setfacl writes it: setxattr(PATH, system.posix_acl_KIND)
                        with owner rw-, group r--, other r--, the named entries (comma-
                        separated u<uid>=<perms> / g<gid>=<perms>, perms 0-7) and their mask
Prints one JSON object: pid, and results (one {op, name, errno} per OP, 0 = success).
"""

from __future__ import annotations

import json
import os
import struct
import sys

ACL_VERSION = 2
ACL_UNDEFINED_ID = 0xFFFFFFFF
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


def acl_value(named: str) -> bytes:
    """The xattr value of a POSIX ACL (posix_acl_xattr_header + entries, sorted by tag then id)."""
    entries = [(USER_OBJ, 6, ACL_UNDEFINED_ID), (GROUP_OBJ, 4, ACL_UNDEFINED_ID), (OTHER, 4, ACL_UNDEFINED_ID)]
    mask = 4  # the owning group's r--
    for item in filter(None, named.split(",")):
        who, perms = item.split("=")
        entries.append((USER if who[0] == "u" else GROUP, int(perms), int(who[1:])))
        mask |= int(perms)
    if named:
        entries.append((MASK, mask, ACL_UNDEFINED_ID))
    entries.sort(key=lambda e: (e[0], e[2]))
    return struct.pack("<I", ACL_VERSION) + b"".join(struct.pack("<HHI", *e) for e in entries)


def main() -> None:
    results = []
    for op in sys.argv[1:]:
        kind, path, name, *rest = op.split(":", 3)
        try:
            if kind == "set":
                os.setxattr(path, name, rest[0].encode())
            elif kind == "remove":
                os.removexattr(path, name)
            elif kind == "acl":
                name = f"system.posix_acl_{name}"
                os.setxattr(path, name, acl_value(rest[0]))
            else:
                raise SystemExit(f"unknown op {op!r}")
            err = 0
        except OSError as e:
            err = e.errno or -1
        results.append({"op": kind, "name": name, "errno": err})
    print(json.dumps({"pid": os.getpid(), "results": results}), flush=True)


if __name__ == "__main__":
    main()
