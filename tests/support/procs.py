"""Running workload commands as another user."""

from __future__ import annotations

import subprocess


def run_as(uid: int, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """argv as uid (and gid uid, no supplementary groups), output captured as text."""
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
