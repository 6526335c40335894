#!/usr/bin/env python3
"""Workload for inode_setattr: change a file's mode, owner, times and size.

Usage: setattr_workload.py OP...
  chmod:PATH:OCTAL            chmod(PATH, OCTAL)
  chown:PATH:UID:GID          chown(PATH, UID, GID)
  touch:PATH                  utime(PATH, None): the current time (no explicit times)
  utime:PATH:ATIME:MTIME      utime(PATH, (ATIME, MTIME)): explicit times (timestomping)
  truncate:PATH:SIZE          truncate(PATH, SIZE)
Prints one JSON object: pid, and results (one {op, errno} per OP, 0 = success).
"""

from __future__ import annotations

import json
import os
import sys


def run(op: str) -> None:
    kind, path, *args = op.split(":")
    if kind == "chmod":
        os.chmod(path, int(args[0], 8))
    elif kind == "chown":
        os.chown(path, int(args[0]), int(args[1]))
    elif kind == "touch":
        os.utime(path, None)
    elif kind == "utime":
        os.utime(path, (int(args[0]), int(args[1])))
    elif kind == "truncate":
        os.truncate(path, int(args[0]))
    else:
        raise SystemExit(f"unknown op {op!r}")


def main() -> None:
    results = []
    for op in sys.argv[1:]:
        try:
            run(op)
            err = 0
        except OSError as e:
            err = e.errno or -1
        results.append({"op": op.split(":", 1)[0], "errno": err})
    print(json.dumps({"pid": os.getpid(), "results": results}), flush=True)


if __name__ == "__main__":
    main()
