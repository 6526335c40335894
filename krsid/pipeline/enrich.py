"""Context the kernel side cannot cheaply give, added in user space to every event.

- ``exe``: the process's executable, full path. bpf_d_path is allowed on a few hooks
  only, so the kernel sends ids and user space resolves /proc/<tgid>/exe, cached per
  process. An event of a hook whose sidecar says ``enrich: {new_exe: FIELD}`` (an
  exec) updates the cache with the new image once it is decoded (the exec event
  itself still names the caller's old exe: that is who ran it).
  A process that is already gone when its event is decoded gets exe "".
- ``cgroup``: the cgroup v2 path of ``cgroup_id`` (the id is the inode number of the
  cgroup's directory in cgroupfs); looked up in a cache built by walking
  /sys/fs/cgroup. A cgroup made since (a container or transient unit just started)
  is taken from the event's process, /proc/TGID/cgroup, when that path still has
  the event's id; else the walk is redone, at most once per ``rescan_interval``.
- ``unit``: the systemd unit derived from the cgroup path (the deepest *.service or
  *.scope component), ``container_id``: a 64-hex container id when the path carries
  one (docker, containerd/cri-o, podman, kubepods).
- ``process_id``, ``parent_process_id``: the process instance ids
  (krsid.identity.ids) of the process and its real parent, from the start times the
  kernel put in the header; ``exe`` comes from the same process table
  (krsid.identity.table), so a reused pid never lends its exe to another process.
- ``ancestors`` (exec events only): parent, grandparent, ... as records.
- ``exe_sha256``, ``hash_unavailable``: the sha256 of the image the process runs,
  from krsid.identity.binary_hash (hashed in a worker thread through
  /proc/PID/exe; the poll thread only looks up and queues). An exec event names
  the new image: its own request (owner: process_id and the event's seq) becomes
  the process's current image, so later events answer from the cache. The exec
  event carries the file's identity from the kernel (enrich.new_exe_file), the
  cache's key: a binary hashed before answers on the exec event itself; a new one
  says "pending" (hashed after the event is read); a denied exec says "denied"
  (the process never ran the file).
"""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict
from pathlib import Path

from krsid.event import Event
from krsid.identity.binary_hash import GONE, UNREADABLE, BinaryHasher, FileKey, HashAnswer
from krsid.identity.table import DEFAULT_ANCESTORS_DEPTH, DEFAULT_MAX_ENTRIES, Process, ProcessTable

UNIT_RE = re.compile(r"^[^/]+\.(?:service|scope)$")
CONTAINER_RE = re.compile(
    r"(?:docker-|cri-containerd-|crio-|libpod-|/docker/|/kubepods[^/]*/(?:[^/]+/)*(?:pod[^/]+/)?)([0-9a-f]{64})"
)
# The fields enrich() adds to every event, with what they mean (the field reference
# in README.md and the journal catalog are generated from this).
ENRICHED_FIELDS: tuple[tuple[str, str], ...] = (
    ("exe", "Full path of the process's executable (/proc/TGID/exe, cached per process; empty if already gone)."),
    (
        "cgroup",
        "cgroup v2 path of cgroup_id as krsid's cgroup namespace shows it (from /sys/fs/cgroup; a cgroup made "
        "since krsid last walked that tree, from /proc/TGID/cgroup); empty if it was gone before krsid read the "
        "event.",
    ),
    ("unit", "systemd unit from the cgroup path (the deepest *.service or *.scope), empty if none."),
    ("container_id", "64-hex container id when the cgroup path carries one (docker, containerd, cri-o, podman)."),
    (
        "process_id",
        "Process instance id, BOOTID:START:TGID: journald's _BOOT_ID, the start time in clock ticks since boot "
        "(start_ns // 10000000, field 22 of /proc/PID/stat) and tgid. Unique per boot across pid reuse; "
        "unchanged by exec.",
    ),
    ("parent_process_id", "Process instance id of the real parent (from parent_start_ns and ppid); empty for none."),
    (
        "exe_sha256",
        "sha256 (64 hex) of the image the process runs, read through /proc/PID/exe (the running inode, not what "
        "the path names now) in a worker thread and cached per file (dev, ino, size, mtime, ctime); on an exec "
        "event, of the new image (the file in path), while exe still names the caller's: a binary hashed before "
        "answers on the exec event itself (looked up by the file's identity from the kernel), and the file of a "
        "process gone before the worker got to it is hashed through its path if it is still that very file. "
        "Empty when hash_unavailable says why.",
    ),
    (
        "hash_unavailable",
        "Why exe_sha256 is empty, else empty: pending (being hashed: the first exec of a binary new to krsid; "
        "later events of the process, and later execs of the file, carry the hash), too large (over "
        "identity.hash_max_mb), gone (the process exited or runs another image and its path no longer holds "
        "the file the kernel named), "
        "queue full (over identity.hash_queue), unreadable, changed (written while hashed), denied (an exec "
        "krsid denied), off (identity.hash_max_mb or hash_queue is 0).",
    ),
)
HASH_OFF = "off"
HASH_DENIED = "denied"
# Added to exec events only (hooks whose sidecar has enrich: new_exe).
EXEC_ENRICHED_FIELDS: tuple[tuple[str, str], ...] = (
    (
        "ancestors",
        "The chain that started the process: parent first, up to identity.ancestors_depth entries or pid 1; "
        "each has process_id, pid, uid (-1 if unknown), exe and args (empty if the ancestor was gone before "
        "krsid could read it).",
    ),
)


def exec_file_key(event: Event) -> FileKey | None:
    """The executed file's identity as ``os.fstat`` would show it (key_of), from the
    fields the sidecar names in enrich.new_exe_file; None without them (or inode 0:
    the kernel could not read the file)."""
    names = event.spec.enrich.new_exe_file
    if not names:
        return None
    v = event.values
    parts = [v.get(name) for name in names]
    if not all(type(p) is int for p in parts):
        return None
    major, minor, ino, size, mtime_ns, ctime_ns = parts  # NEW_EXE_FILE_PARTS
    if not ino:
        return None
    try:
        dev = os.makedev(major, minor)  # type: ignore[arg-type]
    except (OverflowError, ValueError):
        return None
    return (dev, ino, size, mtime_ns, ctime_ns)  # type: ignore[return-value]


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
        processes: ProcessTable | None = None,
        process_table_size: int = DEFAULT_MAX_ENTRIES,
        ancestors_depth: int = DEFAULT_ANCESTORS_DEPTH,
        seed: bool = True,
        exec_events: bool = True,
        hasher: BinaryHasher | None = None,
    ) -> None:
        """seed: read every process in /proc before the first event (the daemon's table).
        exec_events: an exec hook is enabled, so a process never seen exec runs its parent's image.
        hasher: fills exe_sha256 (None: hashing off); started on the first event, stopped by close()."""
        self._proc = proc_root
        self._cgroup_root = cgroup_root
        if processes is None:  # (not `or`: an empty table is falsy)
            processes = ProcessTable(proc_root=proc_root, max_entries=process_table_size, inherit_image=exec_events)
        self.processes = processes
        self.ancestors_depth = ancestors_depth
        self._seed = seed
        self._exe = _Lru(cache_size)
        self._cgroups: dict[int, str] = {}
        self._cgroup_ctx: dict[int, tuple[str, str, str]] = {}  # cgroup id -> (path, unit, container id)
        self._rescan_interval = rescan_interval
        self._next_scan = 0.0
        self.hasher = hasher
        self._hasher_started = False
        # Process key -> the hash owner of its current image (the exec that made it), for
        # processes krsid saw exec; others are owned by (process_id, 0): the image seen in
        # /proc or inherited. Bounded like the process table; a dropped owner is forgotten.
        self._images: OrderedDict[int, tuple[str, int]] = OrderedDict()
        self._images_cap = max(1, self.processes.max_entries)

    def close(self) -> None:
        """Stop the hash workers (the daemon's stop)."""
        if self.hasher is not None:
            self.hasher.close()

    def enrich(self, event: Event) -> None:
        v = event.values
        tgid = v.get("tgid")
        start = v.get("start_ns")
        new_exe = event.spec.enrich.new_exe
        proc = None
        if type(tgid) is int and type(start) is int:
            table = self.processes
            if self._seed and not table.seeded:
                table.seed()
            exec_path = v.get(new_exe) if new_exe else None
            proc = table.observe(
                tgid,
                start,
                v.get("ppid", 0),  # type: ignore[arg-type]
                v.get("parent_start_ns", 0),  # type: ignore[arg-type]
                v.get("uid", -1),  # type: ignore[arg-type]
                exec_path=exec_path if type(exec_path) is bytes else None,
            )
            v["exe"] = proc.exe
            v["process_id"] = proc.process_id
            v["parent_process_id"] = proc.parent_id
            if new_exe:
                v["ancestors"] = table.ancestors(proc, self.ancestors_depth)
            answer = self._hash(tgid, proc, event, exec_path if type(exec_path) is bytes else None)
        elif isinstance(tgid, int):
            v["exe"] = self.exe_of(tgid)
            answer = self._hash(tgid, None, event, None)
        else:
            answer = HashAnswer(unavailable=HASH_OFF if self.hasher is None else GONE)
        v["exe_sha256"], v["hash_unavailable"] = answer.sha256, answer.unavailable
        cgid = v.get("cgroup_id")
        if isinstance(cgid, int):
            ctx = self._cgroup_ctx.get(cgid)
            if ctx is None:
                path = self.cgroup_of(cgid, tgid if type(tgid) is int else None)
                ctx = (path, unit_of(path), container_of(path))
                if path:  # unknown ids are looked up again (after the next rescan)
                    if len(self._cgroup_ctx) >= 65536:
                        self._cgroup_ctx.clear()
                    self._cgroup_ctx[cgid] = ctx
            v["cgroup"], v["unit"], v["container_id"] = ctx
        if new_exe and isinstance(tgid, int):
            new = v.get(new_exe)
            # A denied exec leaves the process on its old image.
            if isinstance(new, bytes) and new and v.get("action") != "deny":
                if proc is not None:
                    args = v.get("args")
                    self.processes.exec(proc, new, args if isinstance(args, tuple) else None)  # type: ignore[arg-type]
                else:
                    self._exe.put(tgid, new)  # what this process runs from now on

    def _hash(self, tgid: int, proc: Process | None, event: Event, exec_path: bytes | None) -> HashAnswer:
        """The hash of the image the event's process runs (of the new one on an exec). Never blocks."""
        hasher = self.hasher
        if hasher is None:
            return HashAnswer(unavailable=HASH_OFF)
        if not self._hasher_started:
            hasher.start()
            self._hasher_started = True
        if proc is None:  # no start time in the event: the pid alone, checked against nothing
            return hasher.request(tgid, ("pid", tgid))
        if exec_path is not None:
            if event.values.get("action") == "deny":
                return HashAnswer(unavailable=HASH_DENIED)
            if not exec_path:  # the kernel could not name the file: nothing to check the image against
                return HashAnswer(unavailable=UNREADABLE)
            image = (proc.process_id, event.seq)
            # With the file's identity from the kernel, a binary hashed before answers
            # now, and the worker can hash the path of a process already gone (only
            # while it is still that file). Without it, the worker hashes
            # /proc/PID/exe only if it names this path (the exec succeeded and no
            # later exec replaced it).
            answer = hasher.request(tgid, image, key=exec_file_key(event), path=exec_path)
            self._remember_image(proc.key, image)
            return answer
        current = self._images.get(proc.key)
        if current is not None:
            self._images.move_to_end(proc.key)
        return hasher.request(tgid, current or (proc.process_id, 0), path=proc.exe or None)

    def _remember_image(self, key: int, owner: tuple[str, int]) -> None:
        assert self.hasher is not None
        old = self._images.pop(key, None)
        if old is not None:
            self.hasher.forget(old)  # that image is no longer run by anyone
        self._images[key] = owner
        while len(self._images) > self._images_cap:
            _key, dropped = self._images.popitem(last=False)
            self.hasher.forget(dropped)

    def exe_of(self, tgid: int) -> bytes:
        exe = self._exe.get(tgid)
        if exe is None:
            try:
                exe = os.readlink(os.fsencode(self._proc / str(tgid) / "exe"))
            except OSError:
                exe = b""  # gone already, or a kernel thread
            self._exe.put(tgid, exe)
        return exe

    def cgroup_of(self, cgroup_id: int, tgid: int | None = None) -> str:
        """The path of a cgroup id ("" if unknown); tgid: the process of the event."""
        path = self._cgroups.get(cgroup_id)
        if path is None and tgid is not None:  # made since the last walk: the caller caches it
            path = self._cgroup_of_process(tgid, cgroup_id)
        if path is None and time.monotonic() >= self._next_scan:
            self._next_scan = time.monotonic() + self._rescan_interval
            self._cgroups = self._scan()
            path = self._cgroups.get(cgroup_id)
        return path or ""

    def _cgroup_of_process(self, tgid: int, cgroup_id: int) -> str | None:
        """The cgroup v2 path /proc/TGID/cgroup names, if that directory is the cgroup
        cgroup_id (the process may have moved, or be gone); None otherwise. Paths
        outside krsid's cgroup namespace ("/../x") are not followed."""
        try:
            text = (self._proc / str(tgid) / "cgroup").read_text()
        except (OSError, ValueError):
            return None
        path = next((line[3:] for line in text.splitlines() if line.startswith("0::/")), None)
        if path is None or "/.." in path:
            return None
        try:
            same = os.stat(self._cgroup_root / path.lstrip("/")).st_ino == cgroup_id
        except (OSError, ValueError):
            return None
        return path if same else None

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
