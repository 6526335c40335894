#!/usr/bin/env python3
"""Workload for task_fix_setuid (run as root): a no-op setuid, then a real drop.

Usage: setuid_workload.py UID
setuid(0) as root changes no id (the kernel still calls the hook: filtered in the
kernel), then setresuid(UID, UID, UID). Prints one JSON object: pid, the ids
before and after (getresuid), and the errno of each call.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    uid = int(sys.argv[1])
    before = os.getresuid()
    calls: dict[str, int] = {}
    for name, args in (("setuid_noop", None), ("setresuid", (uid, uid, uid))):
        try:
            if args is None:
                os.setuid(0)
            else:
                os.setresuid(*args)
            calls[name] = 0
        except OSError as e:
            calls[name] = e.errno or -1
    print(
        json.dumps({"pid": os.getpid(), "before": before, "after": os.getresuid(), "calls": calls}),
        flush=True,
    )


if __name__ == "__main__":
    main()
