"""Context the kernel side cannot cheaply give, added in user space to every event.

- ``exe``: the process's executable, full path. bpf_d_path is allowed on a few hooks
  only, so the kernel sends ids and user space resolves /proc/<tgid>/exe, cached per
  process. An event of a hook whose sidecar says ``enrich: {new_exe: FIELD}`` (an
  exec) updates the cache with the new image once it is decoded (the exec event
  itself still names the caller's old exe: that is who ran it).
  A process that is already gone when its event is decoded gets exe "".
- ``cgroup``: the cgroup v2 path of ``cgroup_id`` (the id is the inode number of the
  cgroup's directory in cgroupfs); looked up in a cache rebuilt by walking
  /sys/fs/cgroup, at most once per ``rescan_interval`` on a miss.
- ``unit``: the systemd unit derived from the cgroup path (the deepest *.service or
  *.scope component), ``container_id``: a 64-hex container id when the path carries
  one (docker, containerd/cri-o, podman, kubepods).
"""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict
from pathlib import Path

from krsid.event import Event

UNIT_RE = re.compile(r"^[^/]+\.(?:service|scope)$")
CONTAINER_RE = re.compile(
    r"(?:docker-|cri-containerd-|crio-|libpod-|/docker/|/kubepods[^/]*/(?:[^/]+/)*(?:pod[^/]+/)?)([0-9a-f]{64})"
)
# The fields enrich() adds to every event, with what they mean (the field reference
# in README.md and the journal catalog are generated from this).
ENRICHED_FIELDS: tuple[tuple[str, str], ...] = (
    ("exe", "Full path of the process's executable (/proc/TGID/exe, cached per process; empty if already gone)."),
    ("cgroup", "cgroup v2 path of cgroup_id (resolved from /sys/fs/cgroup)."),
    ("unit", "systemd unit from the cgroup path (the deepest *.service or *.scope), empty if none."),
    ("container_id", "64-hex container id when the cgroup path carries one (docker, containerd, cri-o, podman)."),
)


def unit_of(cgroup: str) -> str:
    for part in reversed(cgroup.split("/")):
        if UNIT_RE.match(part):
            return part
    return ""


def container_of(cgroup: str) -> str:
    m = CONTAINER_RE.search(cgroup)
    return m.group(1) if m else ""


class _Lru(OrderedDict[int, bytes]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: int, value: bytes) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


class Enricher:
    def __init__(
        self,
        *,
        proc_root: Path = Path("/proc"),
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        cache_size: int = 16384,
        rescan_interval: float = 1.0,
    ) -> None:
        self._proc = proc_root
        self._cgroup_root = cgroup_root
        self._exe = _Lru(cache_size)
        self._cgroups: dict[int, str] = {}
        self._cgroup_ctx: dict[int, tuple[str, str, str]] = {}  # cgroup id -> (path, unit, container id)
        self._rescan_interval = rescan_interval
        self._next_scan = 0.0

    def enrich(self, event: Event) -> None:
        v = event.values
        tgid = v.get("tgid")
        if isinstance(tgid, int):
            v["exe"] = self.exe_of(tgid)
        cgid = v.get("cgroup_id")
        if isinstance(cgid, int):
            ctx = self._cgroup_ctx.get(cgid)
            if ctx is None:
                path = self.cgroup_of(cgid)
                ctx = (path, unit_of(path), container_of(path))
                if path:  # unknown ids are looked up again (after the next rescan)
                    if len(self._cgroup_ctx) >= 65536:
                        self._cgroup_ctx.clear()
                    self._cgroup_ctx[cgid] = ctx
            v["cgroup"], v["unit"], v["container_id"] = ctx
        new_exe = event.spec.enrich.new_exe
        if new_exe and isinstance(tgid, int):
            new = v.get(new_exe)
            if isinstance(new, bytes) and new:
                self._exe.put(tgid, new)  # what this process runs from now on

    def exe_of(self, tgid: int) -> bytes:
        exe = self._exe.get(tgid)
        if exe is None:
            try:
                exe = os.readlink(os.fsencode(self._proc / str(tgid) / "exe"))
            except OSError:
                exe = b""  # gone already, or a kernel thread
            self._exe.put(tgid, exe)
        return exe

    def cgroup_of(self, cgroup_id: int) -> str:
        path = self._cgroups.get(cgroup_id)
        if path is None and time.monotonic() >= self._next_scan:
            self._next_scan = time.monotonic() + self._rescan_interval
            self._cgroups = self._scan()
            path = self._cgroups.get(cgroup_id)
        return path or ""

    def _scan(self) -> dict[int, str]:
        out: dict[int, str] = {}
        root = str(self._cgroup_root)
        for dirpath, _dirs, _files in os.walk(root):
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue
            rel = dirpath[len(root) :] or "/"
            out[ino] = rel if rel.startswith("/") else "/" + rel
        return out
