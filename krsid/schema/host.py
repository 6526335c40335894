"""What OCSF's device and ECS's host say about this machine: read once, at sink start."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _first_line(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    machine_id: str  # /etc/machine-id (32 hex), "" if unset
    boot_id: str  # /proc/sys/kernel/random/boot_id without dashes, as journald's _BOOT_ID
    kernel_release: str  # uname -r

    @classmethod
    def read(cls, root: Path = Path("/")) -> HostInfo:
        uname = os.uname()
        return cls(
            hostname=uname.nodename,
            machine_id=_first_line(root / "etc/machine-id"),
            boot_id=_first_line(root / "proc/sys/kernel/random/boot_id").replace("-", ""),
            kernel_release=uname.release,
        )
