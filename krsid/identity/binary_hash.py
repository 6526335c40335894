"""sha256 of the binary a process runs, computed off the poll thread.

The poll thread only ever calls ``BinaryHasher.request``: dictionary look-ups and a
``put_nowait`` on a bounded queue, no system call on any file. A worker thread
does the file work:

- it opens ``/proc/PID/exe``, which is the very inode the process runs (the
  kernel pins it), so a file renamed over or replaced after the exec cannot
  mislead: the hash is of what runs, not of what the path names now;
- ``fstat`` gives the cache key (device, inode, size, mtime, ctime): each binary
  is hashed once until it changes (a write changes mtime/ctime/size);
- a file larger than ``max_bytes`` is not read ("too large"; a 2 GB sparse file
  costs one fstat); a process gone before the worker gets to it, or running
  another image than the one asked about, is "gone"; a full queue is "queue full"
  (the caller learns it at once); other open/read failures and non-regular files
  are "unreadable"; a file that changed while it was read is "changed" (not cached).

A slow file (FUSE, NFS) stalls only the worker: requests keep answering from the
cache or "pending"/"queue full" at once. The open uses O_NONBLOCK, so a FIFO
never blocks even the worker.

The kernel sends the executed file's identity with the exec event (dev, ino,
size, mtime, ctime of bprm->file): ``request(..., key=...)`` then answers a
binary hashed before on the exec event itself, and the worker, besides
/proc/PID/exe, may hash the exec's path (in the process's root, then in ours)
if the file found there has that very identity: a process that exited at once,
or a script whose process runs its interpreter, still has its file hashed. The
kernel's device is the file's superblock's; where stat shows another (overlayfs
shows the layer's) the worker compares the device of the file's mount
(mountinfo) instead. A new binary's exec event says "pending"; later events of
the process carry the hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import re
import stat
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

# Why a hash is missing (the event's hash_unavailable field).
PENDING = "pending"  # queued or being hashed: a later event of the process carries it
TOO_LARGE = "too large"
GONE = "gone"
QUEUE_FULL = "queue full"
UNREADABLE = "unreadable"
CHANGED = "changed"
SKIP_REASONS = (TOO_LARGE, GONE, QUEUE_FULL, UNREADABLE, CHANGED)

DEFAULT_MAX_BYTES = 512 << 20
DEFAULT_QUEUE_SIZE = 1024
DEFAULT_CACHE_SIZE = 16384
READ_CHUNK = 1 << 20
# Worker sleeps (s) while a process does not run the path it exec'd yet (31 ms in all);
# a failed exec or a later one costs the worker that much, never the poll thread.
EXEC_COMMIT_WAITS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.0)
_NOT_YET = "not yet"  # internal: the process does not run the job's path (yet)

# (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns); from the kernel, dev is the
# superblock's device instead (see superblock_dev)
FileKey = tuple[int, int, int, int, int]
_MNT_ID = re.compile(rb"^mnt_id:\s*(\d+)", re.MULTILINE)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Lru(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._d.get(key)
        if value is not None:
            self._d.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.size:
            self._d.popitem(last=False)

    def pop(self, key: K) -> None:
        self._d.pop(key, None)

    def __len__(self) -> int:
        return len(self._d)


def _open_regular(path: bytes) -> int:
    """Open ``path`` for reading only if it is a regular file. The name first gets an
    O_PATH descriptor, which opens nothing (a device node named there by now would
    act on open: a tape rewinds); only a regular file is then opened for reading,
    through that descriptor, so the file checked is the file read."""
    pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(pfd).st_mode):
            raise OSError(f"not a regular file: {path!r}")
        return os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    finally:
        os.close(pfd)


def superblock_dev(fd: int, mountinfo: str) -> int | None:
    """The device number (st_dev encoding) of the superblock the open file ``fd`` lives
    on, as the kernel's inode->i_sb->s_dev: its mount (``mnt_id`` in fdinfo) looked
    up in ``mountinfo`` (the mount namespace the fd was opened in); None if unknown.

    stat's st_dev is not always that device: overlayfs reports the layer's device
    (the VM's root, containers), btrfs a subvolume's."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
            found = _MNT_ID.search(f.read())
        if found is None:
            return None
        mnt_id = found.group(1)
        with open(mountinfo, "rb") as f:
            for line in f:
                fields = line.split(b" ", 3)
                if len(fields) == 4 and fields[0] == mnt_id:
                    major, _, minor = fields[2].partition(b":")
                    return os.makedev(int(major), int(minor))
    except (OSError, ValueError, OverflowError):
        return None
    return None


def _same_file(fd: int, st: os.stat_result, want: FileKey, mountinfo: str) -> bool:
    """Whether the open file (st: its fstat) is the one the kernel named (``want``)."""
    dev, ino, size, mtime_ns, ctime_ns = want
    if (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) != (ino, size, mtime_ns, ctime_ns):
        return False
    # The device too: a FUSE server can report any inode number and times, never
    # another filesystem's device.
    return st.st_dev == dev or superblock_dev(fd, mountinfo) == dev


def key_of(st: os.stat_result) -> FileKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class HashAnswer:
    sha256: str = ""  # 64 hex, "" when unavailable
    unavailable: str = ""  # "" when sha256 is set, else one of PENDING and SKIP_REASONS


@dataclass(frozen=True)
class _Job:
    pid: int
    owner: Hashable
    key: FileKey | None  # what the caller knows the process runs (from the kernel), if anything
    path: bytes | None  # the path the event says the process runs (an exec's path), if known


@dataclass
class HashStats:
    requests: int = 0
    cache_hits: int = 0  # requests answered with a hash
    hashed_files: int = 0
    hashed_bytes: int = 0
    hash_seconds: float = 0.0
    skipped: Counter[str] = field(default_factory=Counter)  # by reason: worker outcomes, and queue full


class BinaryHasher:
    """Hashes process executables in worker threads; ``request`` never blocks.

    ``owner`` names one image of one process (e.g. its process_id plus the exec's
    seq: an exec is a new image); results are kept per owner and per file key.
    """

    def __init__(
        self,
        *,
        proc_root: Path = Path("/proc"),
        max_bytes: int = DEFAULT_MAX_BYTES,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        cache_size: int = DEFAULT_CACHE_SIZE,
        workers: int = 1,
        opener: Callable[[str], int] | None = None,
        own_mountinfo: str = "/proc/self/mountinfo",
        start: bool = True,
    ) -> None:
        self._proc = str(proc_root)
        self._own_mountinfo = own_mountinfo
        self.max_bytes = max_bytes
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._by_key: _Lru[FileKey, HashAnswer] = _Lru(cache_size)  # sha256 or a lasting reason (too large)
        self._by_owner: _Lru[Hashable, HashAnswer] = _Lru(cache_size)
        self._pending: set[Hashable] = set()  # owners queued or being hashed
        self._lock = threading.Lock()
        self._open = opener or self._open_exe
        self.stats = HashStats()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"krsid-hash-{i}", daemon=True) for i in range(workers)
        ]
        if start:
            self.start()

    def start(self) -> None:
        for t in self._threads:
            if not t.is_alive():
                t.start()

    # --- the caller's side (the poll thread): no file system access ---

    def request(self, pid: int, owner: Hashable, key: FileKey | None = None, path: bytes | None = None) -> HashAnswer:
        """The hash of what ``pid`` runs, if known; else why not (PENDING once queued).

        ``key``: the file's identity as the kernel saw it at the event; ``path``: the
        path the event names (an exec's). The worker hashes only a file that matches
        both (else "gone": the process runs something else by then, e.g. the exec
        failed or a later exec replaced the image)."""
        with self._lock:
            self.stats.requests += 1
            answer = self._by_owner.get(owner)
            if answer is None and key is not None:
                answer = self._by_key.get(key)
                if answer is not None:
                    self._by_owner.put(owner, answer)
            if answer is not None:
                if answer.sha256:
                    self.stats.cache_hits += 1
                return answer
            if owner in self._pending:
                return HashAnswer(unavailable=PENDING)
            try:
                self._queue.put_nowait(_Job(pid, owner, key, path))
            except queue.Full:
                self.stats.skipped[QUEUE_FULL] += 1
                return HashAnswer(unavailable=QUEUE_FULL)
            # Under the lock: the worker cannot finish this job (and discard it) before it is added.
            self._pending.add(owner)
            return HashAnswer(unavailable=PENDING)

    def forget(self, owner: Hashable) -> None:
        """The owner's answer is no longer wanted (its process exited)."""
        with self._lock:
            self._by_owner.pop(owner)

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def cache_entries(self) -> int:
        return len(self._by_key)

    def wait_idle(self, timeout: float) -> bool:
        """Until every queued job is done (tests, benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    return True
            time.sleep(0.001)
        return False

    def close(self, timeout: float = 1.0) -> None:
        """Stop the workers. A worker stuck in a read of a hung file system cannot be
        interrupted: it is a daemon thread and is left behind after ``timeout``."""
        self._stop.set()
        for _ in self._threads:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t.is_alive():
                t.join(max(0.0, deadline - time.monotonic()))

    # --- the worker's side ---

    def _open_exe(self, pid_dir: str) -> int:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (an exe never is one,
        # but a path the worker is handed might be).
        return os.open(f"{pid_dir}/exe", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)

    def _runs_path(self, pid: int, path: bytes) -> bool:
        # Read after the open: if it still names the path, the fd is that exec's image
        # (a later exec would have changed the link first).
        try:
            link = os.readlink(f"{self._proc}/{pid}/exe".encode())
        except OSError:
            return False
        return link == path or link == path + b" (deleted)"

    def _work(self) -> None:
        while not self._stop.is_set():
            job = self._queue.get()
            if job is None:
                return
            answer, keys = self._hash(job)
            with self._lock:
                self._pending.discard(job.owner)
                if answer.unavailable != CHANGED:
                    self._by_owner.put(job.owner, answer)
                if answer.sha256 or answer.unavailable == TOO_LARGE:
                    for key in keys:
                        self._by_key.put(key, answer)  # the file's own verdict: valid until it changes
                if answer.unavailable:
                    self.stats.skipped[answer.unavailable] += 1

    def _hash(self, job: _Job) -> tuple[HashAnswer, tuple[FileKey, ...]]:
        """The answer, and the keys it is valid for: the file's own (fstat), and the
        kernel's (job.key) where the file was proven to be the one the kernel named."""
        if job.key is not None:
            verified = self._hash_verified(job, job.key)
            if verified is not None:
                answer, key = verified
                return answer, (key, job.key) if key is not None else ()
            if job.path is None:
                return HashAnswer(unavailable=GONE), ()  # the process runs another file
            # No file found with the kernel's identity (the file changed since, or a
            # filesystem whose stat shows other numbers than its inode): what the
            # process runs, if it runs the path (as without a key).
            job = _Job(job.pid, job.owner, None, job.path)
        # An exec event is written at bprm_check_security, before the exec commits
        # the new image: read right away, /proc/PID/exe may still name the old one.
        # Wait a little for the exec (in the worker only) before saying "gone".
        for delay in EXEC_COMMIT_WAITS:
            answer, key = self._hash_once(job)
            if answer.unavailable != _NOT_YET or job.path is None:
                break
            time.sleep(delay)
        if answer.unavailable == _NOT_YET:
            return HashAnswer(unavailable=GONE), ()
        return answer, (key,) if key is not None else ()

    def _hash_verified(self, job: _Job, want: FileKey) -> tuple[HashAnswer, FileKey | None] | None:
        """Hash the first of the process's image, the path in its root, the path in
        ours, that is the file the kernel named (``want``); None if none is.

        Matching the identity (inode, size, mtime, ctime: ctime no user can set, on
        the device the kernel named) makes a path as good as /proc/PID/exe: the file
        is the one the kernel saw, unchanged. So a process that exited before the
        worker got to it still has its binary hashed, and a script (whose process
        runs the interpreter) too."""
        pid_dir = f"{self._proc}/{job.pid}"
        theirs = f"{pid_dir}/mountinfo"  # the mounts /proc/PID/exe and /proc/PID/root lead to
        tries: list[tuple[Callable[[], int], str]] = [(lambda: self._open(pid_dir), theirs)]
        if job.path:
            path = job.path
            tries.append((lambda: _open_regular(f"{pid_dir}/root".encode() + path), theirs))
            tries.append((lambda: _open_regular(path), self._own_mountinfo))
        for opener, mountinfo in tries:
            try:
                fd = opener()
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                if stat.S_ISREG(st.st_mode) and _same_file(fd, st, want, mountinfo):
                    return self._digest(fd, st)
            except OSError:
                return HashAnswer(unavailable=UNREADABLE), None
            finally:
                os.close(fd)
        return None

    def _hash_once(self, job: _Job) -> tuple[HashAnswer, FileKey | None]:
        try:
            fd = self._open(f"{self._proc}/{job.pid}")
        except (FileNotFoundError, ProcessLookupError):
            return HashAnswer(unavailable=GONE), None
        except OSError:
            return HashAnswer(unavailable=UNREADABLE), None
        try:
            st = os.fstat(fd)
            if job.path is not None and not self._runs_path(job.pid, job.path):
                return HashAnswer(unavailable=_NOT_YET), None
            if not stat.S_ISREG(st.st_mode):
                return HashAnswer(unavailable=UNREADABLE), None
            return self._digest(fd, st)
        except OSError:
            return HashAnswer(unavailable=UNREADABLE), None
        finally:
            os.close(fd)

    def _digest(self, fd: int, st: os.stat_result) -> tuple[HashAnswer, FileKey | None]:
        """sha256 of the regular file open at fd (st: its fstat), or the cache's answer
        for its key. Raises OSError on a failed read."""
        key = key_of(st)
        with self._lock:
            cached = self._by_key.get(key)
        if cached is not None:
            return cached, key
        if st.st_size > self.max_bytes:
            return HashAnswer(unavailable=TOO_LARGE), key
        started = time.monotonic()
        digest = hashlib.sha256()
        done = 0
        while True:
            chunk = os.read(fd, READ_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            done += len(chunk)
            if done > self.max_bytes:  # grew while read
                return HashAnswer(unavailable=CHANGED), None
        if key_of(os.fstat(fd)) != key:
            return HashAnswer(unavailable=CHANGED), None
        with self._lock:
            self.stats.hashed_files += 1
            self.stats.hashed_bytes += done
            self.stats.hash_seconds += time.monotonic() - started
        return HashAnswer(sha256=digest.hexdigest()), key

    # --- metrics ---

    def metric_families(self) -> Iterator[Metric]:
        """What a Prometheus collector exposes for the hasher (krsid_binary_hash_*)."""
        with self._lock:
            s = self.stats
            requests, hits, files, nbytes, seconds = (
                s.requests,
                s.cache_hits,
                s.hashed_files,
                s.hashed_bytes,
                s.hash_seconds,
            )
            skipped = dict(s.skipped)
            entries = len(self._by_key)
        yield CounterMetricFamily("krsid_binary_hash_requests", "Hash look-ups by events.", value=requests)
        yield CounterMetricFamily(
            "krsid_binary_hash_cache_hits", "Look-ups answered with a hash from the cache.", value=hits
        )
        yield CounterMetricFamily("krsid_binary_hash_files", "Files read and hashed.", value=files)
        yield CounterMetricFamily("krsid_binary_hash_bytes", "Bytes read and hashed.", value=nbytes)
        yield CounterMetricFamily("krsid_binary_hash_seconds", "Worker time spent hashing.", value=seconds)
        skipped_family = CounterMetricFamily(
            "krsid_binary_hash_skipped", "Hashes not computed, by reason.", labels=["reason"]
        )
        for reason in SKIP_REASONS:
            skipped_family.add_metric([reason], skipped.get(reason, 0))
        yield skipped_family
        yield GaugeMetricFamily("krsid_binary_hash_queue_depth", "Jobs waiting for a worker.", value=self.queue_depth())
        yield GaugeMetricFamily("krsid_binary_hash_cache_entries", "Files whose hash is cached.", value=entries)
