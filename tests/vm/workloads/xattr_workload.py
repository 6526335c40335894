#!/usr/bin/env python3
"""Workload for inode_setxattr / inode_removexattr: set and remove extended attributes.

Usage: xattr_workload.py OP...
  set:PATH:NAME:VALUE   setxattr(PATH, NAME, VALUE) (VALUE as UTF-8 bytes)
  remove:PATH:NAME      removexattr(PATH, NAME)
Prints one JSON object: pid, and results (one {op, name, errno} per OP, 0 = success).
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    results = []
    for op in sys.argv[1:]:
        kind, path, name, *rest = op.split(":", 3)
        try:
            if kind == "set":
                os.setxattr(path, name, rest[0].encode())
            elif kind == "remove":
                os.removexattr(path, name)
            else:
                raise SystemExit(f"unknown op {op!r}")
            err = 0
        except OSError as e:
            err = e.errno or -1
        results.append({"op": kind, "name": name, "errno": err})
    print(json.dumps({"pid": os.getpid(), "results": results}), flush=True)


if __name__ == "__main__":
    main()
