#!/usr/bin/env python3
"""Workload for file_open: open files in the order given, then report.

Usage: open_workload.py ACTION [ACTION ...]
ACTION is MODE:PATH with MODE one of
  r   open(PATH, O_RDONLY)
  w   open(PATH, O_WRONLY)
  wa  open(PATH, O_WRONLY|O_APPEND)
  wct open(PATH, O_WRONLY|O_CREAT|O_TRUNC)
PATH may contain {ppid} and {pid} (this process's parent and itself), so a child of
the test can name its parent's /proc/PID/mem. Files are closed right away; nothing
is read or written. Prints one JSON object: pid, ppid, and each open's path and errno.
"""

from __future__ import annotations

import json
import os
import sys

MODES = {
    "r": os.O_RDONLY,
    "w": os.O_WRONLY,
    "wa": os.O_WRONLY | os.O_APPEND,
    "wct": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
}


def main() -> None:
    opens = []
    for action in sys.argv[1:]:
        mode, path = action.split(":", 1)
        path = path.format(ppid=os.getppid(), pid=os.getpid())
        try:
            os.close(os.open(path, MODES[mode], 0o600))
            err = 0
        except OSError as e:
            err = e.errno or -1
        opens.append({"mode": mode, "path": path, "errno": err})
    print(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "opens": opens}), flush=True)


if __name__ == "__main__":
    main()
