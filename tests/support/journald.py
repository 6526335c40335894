"""A private systemd-journald for tests, in a private mount namespace.

libsystemd hard-codes /run/systemd/journal/socket, so a test journald has to sit
at that path. The calling process (pytest) moves into its own mount namespace and
mounts tmpfs over /run and /var/log/journal there: the journald it starts, the
daemon under test and journalctl all see the private one; the machine's /run and
journal are untouched, and everything vanishes when the processes exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
JOURNALD = Path("/lib/systemd/systemd-journald")
SOCKET = Path("/run/systemd/journal/socket")
_in_private_ns = False


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mount namespace + journald)"
    if not JOURNALD.exists() or not shutil.which("journalctl"):
        return "systemd-journald / journalctl not installed"
    return None


def _libc_call(name: str, *args: Any) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def enter_private_mount_namespace() -> None:
    """Move this process into a private mount namespace with its own /run (once)."""
    global _in_private_ns
    if _in_private_ns:
        return
    _libc_call("unshare", CLONE_NEWNS)
    _libc_call("mount", b"none", b"/", None, MS_REC | MS_PRIVATE, None)
    _libc_call("mount", b"tmpfs", b"/run", b"tmpfs", 0, b"mode=0755")
    if Path("/var/log/journal").is_dir():
        _libc_call("mount", b"tmpfs", b"/var/log/journal", b"tmpfs", 0, b"mode=0755")
    _in_private_ns = True


class Journal:
    """A running private journald and a reader for what it stored."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def entries(self, *matches: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            ["journalctl", "--directory=/run/log/journal", "-o", "json", "--no-pager", "--all", *matches],
            capture_output=True,
            check=False,
        )
        entries = []
        for line in out.stdout.splitlines():
            if line.strip():
                entries.append(json.loads(line))
        return entries

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *matches: str, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.entries(*matches) if predicate(e)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.proc = _spawn()


# journald drops messages of a chatty source beyond RateLimitBurst, silently for the
# sender: tests and benchmarks count every event, so the private journald has none
# (as the shipped unit sets LogRateLimitBurst for krsid).
PRIVATE_CONF = "[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\nRuntimeMaxUse=4G\n"


def _spawn() -> subprocess.Popen[bytes]:
    Path("/run/systemd/journal").mkdir(parents=True, exist_ok=True)
    conf = Path("/run/systemd/journald.conf.d")
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "krsid-tests.conf").write_text(PRIVATE_CONF)
    with contextlib.suppress(FileNotFoundError):
        SOCKET.unlink()
    proc = subprocess.Popen(
        [str(JOURNALD)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 15
    while not SOCKET.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("private systemd-journald did not create its socket")
        time.sleep(0.05)
    return proc


@contextlib.contextmanager
def private_journald() -> Iterator[Journal]:
    enter_private_mount_namespace()
    journal = Journal(_spawn())
    try:
        yield journal
    finally:
        journal.stop()
