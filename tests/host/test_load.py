"""The real pipeline under generated load (raw-tracepoint load generator, host kernel).

Correctness only: every event produced in the kernel is either delivered or counted
lost at the stage that lost it, exactly, proven with sequence numbers; a stalled
sink never stalls the ring-buffer poller; the daemon recovers. Speeds are measured
by bench/run.py throughput, never asserted here.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from krsid.pipeline import ringbuf
from krsid.pipeline.load import RING_READER_LIBBPF, RING_READER_MAPPED
from tests.support import loadgen
from tests.support.journald import Journal

pytestmark = pytest.mark.skipif(loadgen.environ_ok() is not None, reason=str(loadgen.environ_ok()))


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return loadgen.build_driver(tmp_path_factory.mktemp("loadgen"))


@pytest.mark.parametrize("reader", [RING_READER_MAPPED, RING_READER_LIBBPF])
def test_overload_books_balance_exactly(
    tmp_path: Path, driver: Path, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Far above capacity (an unpaced driver into a 16-page ring buffer): most events
    are lost in the ring buffer, every one of them is counted, none twice. With both
    ring-buffer readers: the mapped one (x86-64) and libbpf's callbacks (elsewhere)."""
    monkeypatch.setattr(ringbuf, "ENABLED", reader == RING_READER_MAPPED)
    r = loadgen.run_load(tmp_path, driver, events_per_s=0, seconds=1.5, ringbuf_pages=16)
    assert r.ring_reader == reader
    assert r.produced > 0 and r.delivered["jsonl"] > 0
    assert r.lost["ringbuf"] > 0, f"not an overload: {r}"
    assert r.balanced("jsonl"), r
    # Later load is handled again: the daemon came through the overload intact.
    again = loadgen.run_load(tmp_path, driver, events_per_s=2000, seconds=0.5)
    assert again.balanced("jsonl") and again.counted_lost("jsonl") == 0, again


def test_stalled_jsonl_reader_never_stalls_the_poller(tmp_path: Path, driver: Path) -> None:
    """JSON lines into a pipe nobody reads: the sink's backlog fills and new events are
    counted at queue_jsonl while the ring buffer keeps being drained (no ring loss);
    once the reader reads again the sink catches up."""
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    seqs: list[int] = []
    reader_go = threading.Event()

    def read_all() -> list[int]:
        t.join(30)
        return seqs

    def reader() -> None:
        fd = os.open(fifo, os.O_RDONLY)  # opened at once (the writer needs a reader), read later
        reader_go.wait()
        # Joined once at the end: `buf += chunk` copied the whole buffer (MBs) for every
        # 64 KiB chunk, holding the GIL, which starved the daemon's poll thread (same process).
        chunks = []
        with os.fdopen(fd, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 16), b""):
                chunks.append(chunk)
        seqs.extend(json.loads(line)["seq"] for line in b"".join(chunks).splitlines() if line.strip())

    t = threading.Thread(target=reader, daemon=True)
    t.start()

    def stall_then_read(_daemon: loadgen.LoadgenDaemon) -> None:
        time.sleep(1.5)  # the driver runs 2 s; the pipe (64 KiB) and 1 MiB backlog fill first
        reader_go.set()

    r = loadgen.run_load(
        tmp_path,
        driver,
        events_per_s=20000,
        seconds=2,
        backlog_mb=1,
        jsonl_path=fifo,
        during=stall_then_read,
        read_jsonl=read_all,
    )
    assert r.lost["queue_jsonl"] > 0, r
    assert r.lost["ringbuf"] == 0, "a stalled sink stalled the poller"
    assert r.balanced("jsonl"), r
    assert any("is behind" in line for line in r.logs) and any("caught up" in line for line in r.logs), r.logs


def test_stalled_journald_never_stalls_the_poller(tmp_path: Path, driver: Path, journal: Journal) -> None:
    """journald stopped (SIGSTOP) mid-run: its entries wait in the sink's backlog, the
    overflow is counted at queue_journald, the ring buffer loses nothing; after
    SIGCONT everything queued is delivered."""

    def stall(_daemon: loadgen.LoadgenDaemon) -> None:
        time.sleep(0.3)
        os.kill(journal.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(1.5)
        finally:
            os.kill(journal.proc.pid, signal.SIGCONT)

    r = loadgen.run_load(
        tmp_path,
        driver,
        sinks=("journald",),
        events_per_s=5000,
        seconds=2.5,
        backlog_mb=1,
        during=stall,
        journal_seqs=loadgen.journal_seqs_reader(),
    )
    assert r.lost["queue_journald"] > 0, r
    assert r.lost["ringbuf"] == 0, "a stalled journald stalled the poller"
    assert r.balanced("journald"), r
