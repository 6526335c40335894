"""The process table: every process krsid knows, keyed by instance, not by pid.

Seeded from /proc when the daemon starts, then kept current from the events
themselves: each event names its process and its parent by (start time, tgid)
as the kernel saw them at the hook (KRSID_EVENT_HEADER's start_ns and
parent_start_ns), so the parent link is exact even when both processes are gone
before user space reads the event. What only /proc knows (exe, argv, real uid of
a process born after the seed) is read through krsid.identity.procfs, which
refuses a pid that now names another process.

A process that is gone before krsid reads /proc still gets a true image: with an
exec hook enabled, a process that krsid never saw exec runs its parent's image
(fork copies it), so it inherits the parent's exe and argv (origin "parent"). On
the exec event itself, the process's pre-exec image is taken from the same rule,
since /proc already shows the new one.

Forks and exits are not traced: a fork is visible in the first event of the
child (its parent link comes from the kernel), and an exit needs no action
because keys are instances (a reused pid is a new key). The table is an LRU
bounded by ``max_entries``: entries used by an event or an ancestry walk move to
the young end, the oldest go first (``evictions``); an evicted live process is
read again from /proc when it next appears.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

from krsid.identity.ids import BootClock
from krsid.identity.procfs import list_pids, parse_stat, read_process

DEFAULT_MAX_ENTRIES = 65536
DEFAULT_ANCESTORS_DEPTH = 10
UNKNOWN_UID = -1
_NO_ARGS: tuple[bytes, ...] = ()

# Where an entry's image (exe, args, uid) came from.
ORIGIN_PROC = "proc"  # /proc/PID, checked to be the same instance
ORIGIN_EXEC = "exec"  # an exec event of the process
ORIGIN_PARENT = "parent"  # inherited from the parent (fork without exec)
ORIGIN_GONE = "gone"  # gone before krsid read it, nothing known but the ids


# Distinct exe and argv values remembered for sharing (ProcessTable._shared).
SHARED_VALUES = 8192
_V = TypeVar("_V", bytes, tuple[bytes, ...])


@dataclass(slots=True)
class Process:
    key: int  # start_ticks << 32 | tgid
    process_id: str
    pid: int
    parent_key: int  # 0: none (the parent of pid 1 and kthreadd) or unknown
    parent_id: str
    exe: bytes
    args: tuple[bytes, ...]
    uid: int
    origin: str
    # The parent's entry, resolved once when this one is made (a fork is forever):
    # per event no lookup, and it stays readable even after the LRU dropped it.
    parent: Process | None = None

    def summary(self) -> dict[str, int | str | bytes | tuple[bytes, ...]]:
        """One ancestor as exec events carry it."""
        return {"process_id": self.process_id, "pid": self.pid, "uid": self.uid, "exe": self.exe, "args": self.args}


class ProcessTable:
    def __init__(
        self,
        *,
        proc_root: Path = Path("/proc"),
        clock: BootClock | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        inherit_image: bool = True,
    ) -> None:
        """inherit_image: an exec hook is enabled, so a process never seen exec runs its parent's image."""
        self._proc = proc_root
        self.clock = clock or BootClock()
        self._ns_per_tick = self.clock.ns_per_tick
        self.max_entries = max(1, max_entries)
        self.inherit_image = inherit_image
        self._procs: OrderedDict[int, Process] = OrderedDict()
        self._values: dict[object, object] = {}  # exe and argv values entries share (_shared)
        self.evictions = 0
        self.proc_reads = 0
        self.seeded = False

    def __len__(self) -> int:
        return len(self._procs)

    # -- keys and ids ------------------------------------------------------------------

    def key_of(self, start_ns: int, tgid: int) -> int:
        return (start_ns // self._ns_per_tick) << 32 | tgid

    def id_of_key(self, key: int) -> str:
        return self.clock.process_id(key >> 32, key & 0xFFFFFFFF) if key else ""

    # -- filling -----------------------------------------------------------------------

    def seed(self) -> int:
        """Every process in /proc now; returns how many were read."""
        self.seeded = True
        infos = [i for i in (read_process(self._proc, pid) for pid in list_pids(self._proc)) if i is not None]
        start_of = {i.tgid: i.start_ticks for i in infos}
        infos.sort(key=lambda i: (i.start_ticks, i.tgid))  # parents first: children share their ids
        for i in infos:
            parent_key = start_of[i.ppid] << 32 | i.ppid if i.ppid in start_of else 0
            key = i.start_ticks << 32 | i.tgid
            self._put(self._new(key, parent_key, i.exe, i.args, i.uid, ORIGIN_PROC))
        return len(infos)

    def _new(
        self,
        key: int,
        parent_key: int,
        exe: bytes,
        args: tuple[bytes, ...],
        uid: int,
        origin: str,
        parent: Process | None = None,
    ) -> Process:
        """A new entry (not linked to its parent: parent_of does that). parent: the
        parent's entry when the caller has it already, else it is looked up."""
        pid = key & 0xFFFFFFFF
        # Values many entries hold are shared, not copied: the parent's id is its
        # entry's string, and equal exe and argv (a service's workers, kernel
        # threads' b"") are one object. Measured with 32k processes of one binary
        # (a synthetic /proc on the host): 634 -> 393 bytes held per entry.
        if parent is None and parent_key:
            parent = self._procs.get(parent_key)
        parent_id = parent.process_id if parent is not None else self.id_of_key(parent_key)
        return Process(
            key, self.id_of_key(key), pid, parent_key, parent_id, self._shared(exe), self._shared(args), uid, origin
        )

    def _shared(self, value: _V) -> _V:
        """The object equal to value that entries already hold, else value (kept for the next)."""
        known = self._values.get(value)
        if known is not None:
            return cast(_V, known)
        if len(self._values) >= SHARED_VALUES:
            self._values.clear()  # what entries hold stays; only later ones share less
        self._values[value] = value
        return value

    def _put(self, p: Process) -> Process:
        procs = self._procs
        procs[p.key] = p
        procs.move_to_end(p.key)
        while len(procs) > self.max_entries:
            _key, old = procs.popitem(last=False)
            # A child may still hold it as its parent; it must not hold its own parent
            # in turn, or a long fork chain would stay in memory past the cap.
            old.parent = None
            self.evictions += 1
        return p

    def get(self, key: int) -> Process | None:
        p = self._procs.get(key)
        if p is not None:
            self._procs.move_to_end(key)
        return p

    def observe(
        self, tgid: int, start_ns: int, ppid: int, parent_start_ns: int, uid: int, *, exec_path: bytes | None = None
    ) -> Process:
        """The process an event names, learned on first sight. exec_path: the event is an
        exec of this file (the entry must still show the image that called exec)."""
        key = (start_ns // self._ns_per_tick) << 32 | tgid
        p = self._procs.get(key)
        if p is not None:
            self._procs.move_to_end(key)
            return p
        parent_key = (parent_start_ns // self._ns_per_tick) << 32 | ppid if ppid else 0
        parent = self._lookup(parent_key) if parent_key else None
        self.proc_reads += 1
        info = read_process(self._proc, tgid, key >> 32)
        exe, args, origin = b"", _NO_ARGS, ORIGIN_GONE
        if info is not None and not (exec_path and info.exe == exec_path):
            exe, args, origin = info.exe, info.args, ORIGIN_PROC
            uid = info.uid if info.uid != UNKNOWN_UID else uid
        elif parent is not None and self.inherit_image and parent.origin != ORIGIN_GONE:
            exe, args, origin = parent.exe, parent.args, ORIGIN_PARENT
        p = self._new(key, parent_key, exe, args, uid, origin, parent)
        p.parent = parent
        return self._put(p)

    def _lookup(self, key: int) -> Process:
        """An entry for key: known, read from /proc, or a stub that only knows its ids."""
        p = self.get(key)
        if p is not None:
            return p
        tgid, ticks = key & 0xFFFFFFFF, key >> 32
        self.proc_reads += 1
        info = read_process(self._proc, tgid, ticks)
        if info is None:
            return self._put(self._new(key, 0, b"", _NO_ARGS, UNKNOWN_UID, ORIGIN_GONE))
        parent_key = 0
        if info.ppid:
            pstart = self._start_ticks(info.ppid)
            parent_key = pstart << 32 | info.ppid if pstart is not None else 0
        return self._put(self._new(key, parent_key, info.exe, info.args, info.uid, ORIGIN_PROC))

    def _start_ticks(self, pid: int) -> int | None:
        try:
            with open(self._proc / str(pid) / "stat", "rb") as f:
                parsed = parse_stat(f.read())
        except OSError:
            return None
        return parsed[1] if parsed else None

    def exec(self, p: Process, exe: bytes, args: tuple[bytes, ...] | None) -> None:
        """The process now runs exe with args (after its exec event)."""
        p.exe = exe
        if args is not None:
            p.args = args
        p.origin = ORIGIN_EXEC

    # -- reading -----------------------------------------------------------------------

    def parent_of(self, p: Process) -> Process | None:
        if p.parent is None and p.parent_key:
            p.parent = self._lookup(p.parent_key)
        return p.parent

    def ancestors(self, p: Process, depth: int) -> tuple[Mapping[str, int | str | bytes | tuple[bytes, ...]], ...]:
        """The parent, its parent, ... up to depth entries or pid 1."""
        out: list[Mapping[str, int | str | bytes | tuple[bytes, ...]]] = []
        key = p.parent_key
        seen = {p.key}
        while key and len(out) < depth and key not in seen:
            seen.add(key)
            a = self._lookup(key)
            out.append(a.summary())
            if a.pid == 1:
                break
            key = a.parent_key
        return tuple(out)
