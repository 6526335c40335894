"""BinaryHasher: sha256 of what a process runs, off the caller's thread.

The caller's request never blocks (a worker stuck on a FIFO, a full queue), each
binary is hashed once per (dev, ino, size, mtime, ctime), the hash is of the
inode the process runs even after its path was replaced, a 2 GB sparse file is
"too large" without being read, and a vanished process is "gone"."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from krsid.identity.binary_hash import (
    GONE,
    PENDING,
    QUEUE_FULL,
    TOO_LARGE,
    UNREADABLE,
    BinaryHasher,
    FileKey,
    HashAnswer,
    key_of,
)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_proc(root: Path, pid: int, target: Path) -> Path:
    """root/<pid>/exe -> target, as /proc/<pid>/exe reads (a symlink the open follows)."""
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "exe").unlink(missing_ok=True)
    (d / "exe").symlink_to(target)
    return root


def answer_after_work(
    h: BinaryHasher, pid: int, owner: object, key: FileKey | None = None, path: bytes | None = None
) -> HashAnswer:
    first = h.request(pid, owner, key, path)
    assert first.unavailable in (PENDING, "") or first.sha256
    assert h.wait_idle(10.0)
    return h.request(pid, owner, key, path)


@pytest.fixture
def hasher(tmp_path: Path) -> Iterator[BinaryHasher]:
    h = BinaryHasher(proc_root=tmp_path / "proc")
    yield h
    h.close()


def test_hashes_what_the_process_runs_once_per_file(tmp_path: Path, hasher: BinaryHasher) -> None:
    binary = tmp_path / "tool"
    binary.write_bytes(b"\x7fELF" + os.urandom(3 << 20))
    proc = tmp_path / "proc"
    fake_proc(proc, 100, binary)
    fake_proc(proc, 101, binary)
    assert hasher.request(100, "p100") == HashAnswer(unavailable=PENDING)
    assert hasher.request(100, "p100") == HashAnswer(unavailable=PENDING)  # queued once
    assert hasher.wait_idle(10.0)
    assert hasher.request(100, "p100") == HashAnswer(sha256=sha256_of(binary))
    # Another process of the same binary: the worker opens it, finds the key cached, reads nothing.
    assert answer_after_work(hasher, 101, "p101").sha256 == sha256_of(binary)
    assert (hasher.stats.hashed_files, hasher.stats.hashed_bytes) == (1, binary.stat().st_size)
    # With the file's key from the kernel, a new process's first event already has it.
    assert hasher.request(102, "p102", key_of(binary.stat())).sha256 == sha256_of(binary)
    assert hasher.stats.cache_hits == 3


def test_a_changed_binary_is_hashed_again(tmp_path: Path, hasher: BinaryHasher) -> None:
    binary = tmp_path / "tool"
    binary.write_bytes(b"one")
    fake_proc(tmp_path / "proc", 7, binary)
    first = answer_after_work(hasher, 7, ("7", 1)).sha256
    binary.write_bytes(b"two, longer")  # new size/mtime/ctime: a new key
    second = answer_after_work(hasher, 7, ("7", 2)).sha256
    assert (first, second) == (hashlib.sha256(b"one").hexdigest(), hashlib.sha256(b"two, longer").hexdigest())
    assert hasher.stats.hashed_files == 2


def test_the_running_inode_is_hashed_not_the_replaced_path(tmp_path: Path) -> None:
    """Through the real /proc: the path is renamed over after the exec; the hash is
    still of the running image (/proc/PID/exe pins its inode)."""
    binary = tmp_path / "sleeper"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    original = sha256_of(binary)
    child = subprocess.Popen([str(binary), "30"])
    h = BinaryHasher()
    try:
        replacement = tmp_path / "new"
        replacement.write_bytes(b"#!/bin/sh\necho replaced\n")
        os.chmod(replacement, 0o755)
        os.replace(replacement, binary)
        assert sha256_of(binary) != original
        assert answer_after_work(h, child.pid, "child").sha256 == original
        # /proc/PID/exe now reads "<path> (deleted)": still the exec's path, still the original bytes.
        assert answer_after_work(h, child.pid, "child-path", path=str(binary).encode()).sha256 == original
        # The kernel's key of the replaced path's file does not match what runs: "gone", not a wrong hash.
        assert answer_after_work(h, child.pid, "child-2", key_of(binary.stat())) == HashAnswer(unavailable=GONE)
    finally:
        child.kill()
        child.wait()
        h.close()


def test_a_process_running_another_path_than_the_exec_named_is_gone(tmp_path: Path, hasher: BinaryHasher) -> None:
    """An exec event names the new image's path; if /proc/PID/exe names another by the
    time the worker looks (the exec failed, or a later exec won), no hash is given."""
    binary = tmp_path / "old"
    binary.write_bytes(b"old image")
    fake_proc(tmp_path / "proc", 12, binary)
    assert answer_after_work(hasher, 12, "e1", path=b"/usr/bin/new") == HashAnswer(unavailable=GONE)
    ok = answer_after_work(hasher, 12, "e2", path=str(binary).encode())
    assert ok.sha256 == hashlib.sha256(b"old image").hexdigest()


def test_a_process_that_is_gone_says_so(tmp_path: Path, hasher: BinaryHasher) -> None:
    (tmp_path / "proc").mkdir()
    assert answer_after_work(hasher, 4242, "x") == HashAnswer(unavailable=GONE)
    assert hasher.stats.skipped[GONE] == 1


def test_a_2gb_sparse_file_is_too_large_without_being_read(tmp_path: Path, hasher: BinaryHasher) -> None:
    big = tmp_path / "huge"
    with open(big, "wb") as f:
        f.truncate(2 << 30)  # sparse: 2 GiB of size, no blocks
    fake_proc(tmp_path / "proc", 9, big)
    started = time.monotonic()
    assert answer_after_work(hasher, 9, "big") == HashAnswer(unavailable=TOO_LARGE)
    assert time.monotonic() - started < 2.0
    assert hasher.stats.hashed_bytes == 0 and hasher.stats.skipped[TOO_LARGE] == 1
    # The verdict is cached per file: with the key, no job is queued again.
    assert hasher.request(10, "big-2", key_of(big.stat())) == HashAnswer(unavailable=TOO_LARGE)
    assert hasher.queue_depth() == 0


def test_a_fifo_is_unreadable_and_blocks_nobody(tmp_path: Path, hasher: BinaryHasher) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fake_proc(tmp_path / "proc", 11, fifo)
    assert answer_after_work(hasher, 11, "fifo") == HashAnswer(unavailable=UNREADABLE)


def test_a_worker_stuck_on_a_slow_file_never_blocks_the_caller(tmp_path: Path) -> None:
    """The FIFO trick: the worker's open of a FIFO without a writer blocks in the
    kernel (like a hung FUSE or NFS file); requests still answer at once, and the
    bounded queue turns the overflow into "queue full"."""
    fifo = tmp_path / "slow"
    os.mkfifo(fifo)
    entered = threading.Event()

    def blocking_open(_pid_dir: str) -> int:
        entered.set()
        return os.open(fifo, os.O_RDONLY)  # blocks until a writer opens the FIFO

    h = BinaryHasher(opener=blocking_open, queue_size=2)
    try:
        answers = []
        slowest = 0.0
        for pid in range(1, 6):
            started = time.perf_counter()
            answers.append(h.request(pid, pid).unavailable)
            slowest = max(slowest, time.perf_counter() - started)
            if pid == 1:
                assert entered.wait(5.0)  # the worker is now stuck in open()
        assert answers == [PENDING, PENDING, PENDING, QUEUE_FULL, QUEUE_FULL]
        assert slowest < 0.05, f"a request took {slowest * 1000:.1f} ms"
        assert h.stats.skipped[QUEUE_FULL] == 2
        # Unstick it: a writer opens and closes the FIFO (non-blocking: only while the
        # worker waits in open); each of the 3 jobs then ends "unreadable" (not a file).
        deadline = time.monotonic() + 10.0
        while h.queue_depth() or not h.wait_idle(0.01):
            assert time.monotonic() < deadline, "the worker did not get unstuck"
            with contextlib.suppress(OSError):  # ENXIO: no reader (the worker is between jobs)
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        assert h.request(1, 1) == HashAnswer(unavailable=UNREADABLE)
    finally:
        h.close()


def test_metric_families(tmp_path: Path, hasher: BinaryHasher) -> None:
    binary = tmp_path / "b"
    binary.write_bytes(b"x" * 1000)
    fake_proc(tmp_path / "proc", 1, binary)
    answer_after_work(hasher, 1, "a")
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in hasher.metric_families() for s in m.samples}
    assert values[("krsid_binary_hash_files_total", ())] == 1
    assert values[("krsid_binary_hash_bytes_total", ())] == 1000
    assert values[("krsid_binary_hash_requests_total", ())] == 2
    assert values[("krsid_binary_hash_cache_hits_total", ())] == 1
    assert values[("krsid_binary_hash_skipped_total", (("reason", "too large"),))] == 0
    assert values[("krsid_binary_hash_cache_entries", ())] == 1


def test_cached_answers_are_cheap_for_the_caller(tmp_path: Path, hasher: BinaryHasher) -> None:
    fake_proc(tmp_path / "proc", 1, Path(sys.executable).resolve())
    answer_after_work(hasher, 1, "py")
    n = 20000
    started = time.process_time()
    for _ in range(n):
        hasher.request(1, "py")
    per_request = (time.process_time() - started) / n
    print(f"cached request: {per_request * 1e6:.2f} us")
    assert per_request < 50e-6


def test_with_the_kernels_key_a_gone_process_has_its_path_hashed(tmp_path: Path, hasher: BinaryHasher) -> None:
    """A process that exited before the worker looked: /proc/PID/exe is gone, but the
    exec's path still holds the very file the kernel named (same dev, ino, size,
    mtime, ctime): that file is hashed, and the next exec of it answers at once."""
    binary = tmp_path / "short-lived"
    binary.write_bytes(b"\x7fELF short")
    (tmp_path / "proc").mkdir()
    key = key_of(binary.stat())
    path = str(binary).encode()
    assert answer_after_work(hasher, 31, "e1", key, path).sha256 == sha256_of(binary)
    assert hasher.request(32, "e2", key, path).sha256 == sha256_of(binary)  # on the exec event itself
    assert hasher.stats.hashed_files == 1


def test_a_path_that_no_longer_holds_the_kernels_file_is_never_hashed(tmp_path: Path, hasher: BinaryHasher) -> None:
    """The file was changed (or renamed over) after the exec and the process is gone:
    the path now holds other bytes, whose key differs, so "gone", not a wrong hash."""
    binary = tmp_path / "tool"
    binary.write_bytes(b"what ran")
    key = key_of(binary.stat())
    other = tmp_path / "other"
    other.write_bytes(b"what replaced it")
    other.rename(binary)
    (tmp_path / "proc").mkdir()
    assert answer_after_work(hasher, 41, "x", key, str(binary).encode()) == HashAnswer(unavailable=GONE)
    assert hasher.stats.hashed_files == 0
    # Written in place (same inode, same size): ctime and mtime move, the key with them.
    binary.write_bytes(b"what ran")
    key = key_of(binary.stat())
    time.sleep(0.01)
    binary.write_bytes(b"what RAN")
    assert answer_after_work(hasher, 42, "y", key, str(binary).encode()) == HashAnswer(unavailable=GONE)


def test_a_path_is_looked_up_in_the_processs_root_first(tmp_path: Path, hasher: BinaryHasher) -> None:
    """A container's exec names its path inside the container: /proc/PID/root/<path>."""
    root = tmp_path / "container"
    (root / "usr/bin").mkdir(parents=True)
    inside = root / "usr/bin/tool"
    inside.write_bytes(b"the container's tool")
    proc = tmp_path / "proc"
    (proc / "51").mkdir(parents=True)
    (proc / "51" / "root").symlink_to(root)
    answer = answer_after_work(hasher, 51, "c", key_of(inside.stat()), b"/usr/bin/tool")
    assert answer.sha256 == sha256_of(inside)


def test_a_device_or_fifo_at_the_path_is_never_opened(tmp_path: Path, hasher: BinaryHasher) -> None:
    """The path is swapped for a FIFO (or a device) after the exec: the worker looks
    at it through O_PATH only, so nothing blocks and nothing is opened."""
    fifo = tmp_path / "tool"
    os.mkfifo(fifo)
    (tmp_path / "proc").mkdir()
    key: FileKey = (1, 2, 3, 4, 5)
    started = time.monotonic()
    assert answer_after_work(hasher, 61, "f", key, str(fifo).encode()) == HashAnswer(unavailable=GONE)
    assert time.monotonic() - started < 2.0


def _mnt_id_of(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        info = Path(f"/proc/self/fdinfo/{fd}").read_bytes()
    finally:
        os.close(fd)
    return next(line.split()[1] for line in info.splitlines() if line.startswith(b"mnt_id:"))


@pytest.mark.parametrize(("mount_dev", "hashed"), [((0, 999), True), ((0, 998), False)])
def test_the_kernels_device_is_the_superblocks_as_mountinfo_shows_it(
    tmp_path: Path, mount_dev: tuple[int, int], hashed: bool
) -> None:
    """overlayfs (the VM's root, every container) reports the layer's device in stat,
    while the kernel names the overlay's superblock: the worker then checks the
    device of the file's mount in mountinfo. Another device is another file, however
    equal inode, size and times are (a FUSE server can report any of those)."""
    binary = tmp_path / "on-overlay"
    binary.write_bytes(b"\x7fELF layered")
    st = binary.stat()
    kernel_dev = os.makedev(0, 999)
    assert kernel_dev != st.st_dev
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_bytes(
        b"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        + _mnt_id_of(binary)
        + b" 1 %d:%d / /merged rw - overlay overlay rw\n" % mount_dev
    )
    (tmp_path / "proc").mkdir()
    h = BinaryHasher(proc_root=tmp_path / "proc", own_mountinfo=str(mountinfo))
    try:
        key: FileKey = (kernel_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        answer = answer_after_work(h, 71, "o", key, str(binary).encode())
        if hashed:
            assert answer.sha256 == sha256_of(binary)
            assert h.request(72, "o2", key, str(binary).encode()).sha256 == sha256_of(binary)  # cached by it
        else:
            assert answer == HashAnswer(unavailable=GONE)
            assert h.stats.hashed_files == 0
    finally:
        h.close()
