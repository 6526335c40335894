"""exe_sha256 / hash_unavailable on events: the BinaryHasher wired into the Enricher,
the daemon's config and the metrics (issue 12, item 3), with real processes."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from krsid.config import parse_config
from krsid.event import Event
from krsid.identity import BootClock, ProcessTable
from krsid.identity.binary_hash import BinaryHasher, key_of
from krsid.identity.procfs import parse_stat
from krsid.metrics import KrsidCollector, make_registry
from krsid.pipeline.decode import EventDecoder
from krsid.pipeline.enrich import Enricher, exec_file_key
from krsid.pipeline.stats import PipelineStats
from tests.support.records import catalog, pack
from tests.unit.test_metrics import FakeKernel

CAT = catalog()
DECODER = EventDecoder({0: CAT["bprm_check_security"], 1: CAT["file_mprotect"]}, boot_to_epoch=0.0)
CLOCK = BootClock()


def start_ns_of(pid: int) -> int:
    parsed = parse_stat(Path(f"/proc/{pid}/stat").read_bytes())
    assert parsed is not None
    return parsed[1] * CLOCK.ns_per_tick


def file_fields(path: bytes) -> dict[str, int]:
    """The executed file's identity as bprm_check_security sends it (enrich.new_exe_file)."""
    st = os.stat(path)
    return {
        "dev_major": os.major(st.st_dev),
        "dev_minor": os.minor(st.st_dev),
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


def exec_event(
    pid: int, start_ns: int, path: bytes, seq: int, action: str = "", file: dict[str, int] | None = None
) -> Event:
    e = DECODER.decode(
        pack(
            CAT["bprm_check_security"],
            0,
            seq=seq,
            tgid=pid,
            pid=pid,
            ppid=os.getpid(),
            start_ns=start_ns,
            path=path,
            **(file or {}),
        )
    )
    if action:
        e.values["action"] = action
    return e


def other_event(pid: int, start_ns: int, seq: int) -> Event:
    return DECODER.decode(
        pack(CAT["file_mprotect"], 1, seq=seq, tgid=pid, pid=pid, ppid=os.getpid(), start_ns=start_ns)
    )


@pytest.fixture
def hasher() -> Iterator[BinaryHasher]:
    h = BinaryHasher(start=False)  # started by the Enricher on its first event
    yield h
    h.close()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live child running sleep, kept until the test ends."""
    p = subprocess.Popen(["sleep", "60"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def enricher(hasher: BinaryHasher | None) -> Enricher:
    table = ProcessTable(clock=CLOCK)
    return Enricher(processes=table, seed=False, hasher=hasher)


def test_exec_event_is_pending_then_every_later_event_carries_the_hash(
    hasher: BinaryHasher, sleeper: subprocess.Popen[bytes]
) -> None:
    pid, start = sleeper.pid, start_ns_of(sleeper.pid)
    image = os.readlink(f"/proc/{pid}/exe").encode()
    want = hashlib.sha256(Path(os.fsdecode(image)).read_bytes()).hexdigest()
    enr = enricher(hasher)
    e = exec_event(pid, start, image, seq=10)
    enr.enrich(e)
    # The poll thread never waits for the file: the exec event is read before it is hashed.
    assert (e.values["exe_sha256"], e.values["hash_unavailable"]) == ("", "pending")
    assert hasher.wait_idle(10.0)
    later = other_event(pid, start, seq=11)
    enr.enrich(later)
    assert (later.values["exe_sha256"], later.values["hash_unavailable"]) == (want, "")
    again = other_event(pid, start, seq=12)
    enr.enrich(again)
    assert again.values["exe_sha256"] == want
    assert hasher.stats.hashed_files == 1 and hasher.stats.cache_hits == 2  # read once, then from the cache


def test_a_second_process_of_the_same_binary_is_answered_without_reading_it(
    hasher: BinaryHasher, sleeper: subprocess.Popen[bytes]
) -> None:
    enr = enricher(hasher)
    enr.enrich(other_event(sleeper.pid, start_ns_of(sleeper.pid), seq=1))
    assert hasher.wait_idle(10.0)
    with subprocess.Popen(["sleep", "60"]) as second:
        try:
            start = start_ns_of(second.pid)
            e = other_event(second.pid, start, seq=2)
            enr.enrich(e)
            assert e.values["hash_unavailable"] == "pending"  # a new image: asked of the worker ...
            assert hasher.wait_idle(10.0)
            e = other_event(second.pid, start, seq=3)
            enr.enrich(e)
            assert len(str(e.values["exe_sha256"])) == 64
            assert hasher.stats.hashed_files == 1  # ... which found the file's key in the cache
        finally:
            second.kill()


def test_an_event_of_a_process_that_is_gone_says_gone(hasher: BinaryHasher) -> None:
    p = subprocess.Popen(["sleep", "60"])
    start = start_ns_of(p.pid)
    p.kill()
    p.wait()
    enr = enricher(hasher)
    e = other_event(p.pid, start, seq=1)
    enr.enrich(e)
    assert hasher.wait_idle(10.0)
    e = other_event(p.pid, start, seq=2)
    enr.enrich(e)
    assert (e.values["exe_sha256"], e.values["hash_unavailable"]) == ("", "gone")


def test_an_exec_the_process_does_not_run_is_gone_and_a_denied_one_says_denied(
    hasher: BinaryHasher, sleeper: subprocess.Popen[bytes]
) -> None:
    pid, start = sleeper.pid, start_ns_of(sleeper.pid)
    enr = enricher(hasher)
    denied = exec_event(pid, start, b"/usr/bin/true", seq=1, action="deny")
    enr.enrich(denied)
    assert (denied.values["exe_sha256"], denied.values["hash_unavailable"]) == ("", "denied")
    # A failed exec (or a script's first event: the process runs the interpreter):
    # /proc/PID/exe never names the path, so the worker gives up after its short wait.
    failed = exec_event(pid, start, b"/no/such/binary", seq=2)
    enr.enrich(failed)
    assert hasher.wait_idle(10.0)
    later = other_event(pid, start, seq=3)
    enr.enrich(later)
    assert (later.values["exe_sha256"], later.values["hash_unavailable"]) == ("", "gone")


def test_with_the_files_identity_a_binary_seen_before_is_hashed_on_the_exec_event(hasher: BinaryHasher) -> None:
    """Processes that exit at once (the exec benchmark's loop, a cron job's tools): the
    first exec's file is hashed through its path (the process is gone, the file
    still has the kernel's key); every later exec of it carries the hash itself."""
    image = os.path.realpath("/bin/true").encode()
    want = hashlib.sha256(Path(os.fsdecode(image)).read_bytes()).hexdigest()
    enr = enricher(hasher)
    answers = []
    for seq in range(1, 4):
        p = subprocess.Popen([image])
        start = start_ns_of(p.pid)
        p.wait()
        e = exec_event(p.pid, start, image, seq=seq, file=file_fields(image))
        enr.enrich(e)
        answers.append((e.values["exe_sha256"], e.values["hash_unavailable"]))
        assert hasher.wait_idle(10.0)
    assert answers == [("", "pending"), (want, ""), (want, "")]
    assert hasher.stats.hashed_files == 1
    # Without the identity (a sidecar without new_exe_file), the same gone process: no hash.
    p = subprocess.Popen([image])
    start = start_ns_of(p.pid)
    p.wait()
    e = exec_event(p.pid, start, image, seq=9)
    enr.enrich(e)
    assert hasher.wait_idle(10.0)
    later = other_event(p.pid, start, seq=10)
    enr.enrich(later)
    assert later.values["hash_unavailable"] == "gone"


def test_hashing_off_says_off(sleeper: subprocess.Popen[bytes]) -> None:
    e = other_event(sleeper.pid, start_ns_of(sleeper.pid), seq=1)
    enricher(None).enrich(e)
    assert (e.values["exe_sha256"], e.values["hash_unavailable"]) == ("", "off")


def test_too_large_is_said_on_the_next_event(sleeper: subprocess.Popen[bytes]) -> None:
    small = BinaryHasher(max_bytes=1, start=False)
    try:
        enr = enricher(small)
        pid, start = sleeper.pid, start_ns_of(sleeper.pid)
        enr.enrich(other_event(pid, start, seq=1))
        assert small.wait_idle(10.0)
        e = other_event(pid, start, seq=2)
        enr.enrich(e)
        assert (e.values["exe_sha256"], e.values["hash_unavailable"]) == ("", "too large")
    finally:
        small.close()


def test_the_exec_image_replaces_the_current_owner_and_the_old_one_is_forgotten(
    hasher: BinaryHasher, sleeper: subprocess.Popen[bytes]
) -> None:
    pid, start = sleeper.pid, start_ns_of(sleeper.pid)
    image = os.readlink(f"/proc/{pid}/exe").encode()
    enr = enricher(hasher)
    table = enr.processes
    enr.enrich(exec_event(pid, start, image, seq=5))
    enr.enrich(exec_event(pid, start, image, seq=6))  # a second exec of the same process
    proc = table.get(table.key_of(start, pid))
    assert proc is not None and enr._images[proc.key] == (proc.process_id, 6)
    assert len(enr._images) == 1


def test_config_keys_and_the_metrics_chain() -> None:
    base = "hooks:\n  file_mprotect: {}\n"
    c = parse_config(base, "t.yaml", catalog=CAT)
    assert (c.identity.hash_max_mb, c.identity.hash_queue) == (512, 1024)
    c = parse_config(base + "identity:\n  hash_max_mb: 0\n  hash_queue: 8\n", "t.yaml", catalog=CAT)
    assert (c.identity.hash_max_mb, c.identity.hash_queue) == (0, 8)
    h = BinaryHasher(start=False)
    h.stats.requests = 7
    text = generate_latest(make_registry(KrsidCollector(PipelineStats(), FakeKernel(), ["file_mprotect"], hasher=h)))
    assert b"krsid_binary_hash_requests_total 7.0" in text
    assert b'krsid_binary_hash_skipped_total{reason="queue full"} 0.0' in text


def test_the_exec_files_key_needs_every_part_and_an_inode() -> None:
    """No key (the worker then checks /proc/PID/exe against the path alone) when the
    kernel could not read the file (inode 0) or a part is missing."""
    image = os.path.realpath("/bin/true").encode()
    fields = file_fields(image)
    st = os.stat(image)
    assert exec_file_key(exec_event(1, 1, image, seq=1, file=fields)) == key_of(st)
    assert exec_file_key(exec_event(1, 1, image, seq=2, file={**fields, "ino": 0})) is None
    e = exec_event(1, 1, image, seq=3, file=fields)
    del e.values["ctime_ns"]
    assert exec_file_key(e) is None
    assert exec_file_key(other_event(1, 1, seq=4)) is None  # a hook without enrich.new_exe_file
