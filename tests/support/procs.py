"""Running workload commands as another user."""

from __future__ import annotations

import subprocess


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
