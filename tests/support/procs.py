"""Running workload commands: as another user, and small workload scripts they run."""

from __future__ import annotations

import subprocess

# The system's Python by its path (its comm is "python3"): a PATH search may find a
# pyenv shim first, a shell script that execs several programs (seconds under TCG).
PYTHON3 = "/usr/bin/python3"


def as_uid(uid: int, *argv: str) -> list[str]:
    """The command line that runs argv as uid (and gid uid, no supplementary groups):
    setpriv execs argv, so it keeps setpriv's pid."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]


def run_as(uid: int, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """argv as uid (as_uid), output captured as text."""
    return subprocess.run(
        as_uid(uid, *argv),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Python: open with O_APPEND (quiet: an append), then F_SETFL with the given flags, then
# write at offset 0. Prints "fcntl-refused" when the kernel (or a deny rule) refuses.
SETFL_THEN_WRITE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
try:
    fcntl.fcntl(fd, fcntl.F_SETFL, int(sys.argv[2], 0))
except PermissionError:
    print("fcntl-refused")
    sys.exit(0)
os.pwrite(fd, b"XXXX", 0)
"""
