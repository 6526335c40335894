"""The event buffer behind one interface (pipeline.transport), with bcc's calls faked:
a pipe stands in for the ring buffer's map fd."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from krsid.pipeline.transport import (
    BULK_BATCH,
    BUSY_SINK_REFILL_DELAY,
    BUSY_SINK_RETRY_MS,
    MAX_ROUNDS,
    EventTransport,
    PerfBufferTransport,
    RingBufferTransport,
    RingLane,
)


class Calls:
    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []

    def consume(self) -> None:
        self.log.append(("consume", -1))

    def poll(self, timeout_ms: int) -> None:
        self.log.append(("poll", timeout_ms))


class Lane:
    """A lane whose buffer holds `waiting` records; reads are logged as (lane, limit, read)."""

    def __init__(self, name: str, fd: int, waiting: int, log: list[tuple[str, int, int]]) -> None:
        self.name, self.fd, self.waiting, self.log = name, fd, waiting, log

    def consume(self, limit: int) -> int:
        n = self.waiting if limit == 0 else min(limit, self.waiting)
        self.waiting -= n
        self.log.append((self.name, limit, n))
        return n

    def ring(self) -> RingLane:
        return RingLane(self.fd, self.consume)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


@pytest.fixture
def quiet_fd() -> Iterator[int]:
    r, w = os.pipe()
    yield r
    os.close(r)
    os.close(w)


def test_ring_buffers_wait_for_records_then_both_lanes_are_read(pipe: tuple[int, int], quiet_fd: int) -> None:
    records, writer = pipe
    log: list[tuple[str, int, int]] = []
    priority, bulk = Lane("priority", quiet_fd, 0, log), Lane("bulk", records, 3, log)
    transport: EventTransport = RingBufferTransport(priority.ring(), bulk.ring(), bulk_batch=512)
    assert not transport.reports_losses
    t0 = time.monotonic()
    transport.wait_and_read(150, [])
    assert time.monotonic() - t0 >= 0.1  # nothing polls readable: the timeout ran out
    os.write(writer, b"x")  # the bulk lane's fd polls POLLIN: records wait
    t0 = time.monotonic()
    transport.wait_and_read(10_000, [])
    assert time.monotonic() - t0 < 5
    assert log[-2:] == [("priority", 0, 0), ("bulk", 512, 0)]
    assert log[:2] == [("priority", 0, 0), ("bulk", 512, 3)]


def test_a_record_in_the_priority_lane_alone_wakes_the_transport(pipe: tuple[int, int], quiet_fd: int) -> None:
    records, writer = pipe
    log: list[tuple[str, int, int]] = []
    transport = RingBufferTransport(Lane("priority", records, 1, log).ring(), Lane("bulk", quiet_fd, 0, log).ring())
    os.write(writer, b"x")
    t0 = time.monotonic()
    transport.wait_and_read(10_000, [])
    assert time.monotonic() - t0 < 5
    assert log == [("priority", 0, 1), ("bulk", BULK_BATCH, 0)]


def test_under_a_bulk_flood_the_priority_lane_is_read_between_bulk_batches(quiet_fd: int) -> None:
    """A full bulk lane is read in batches with the priority lane read before each: a
    priority record never waits behind a whole bulk buffer. The rounds are bounded, so
    the poll loop gets control back while the flood lasts."""
    log: list[tuple[str, int, int]] = []
    priority, bulk = Lane("priority", quiet_fd, 0, log), Lane("bulk", quiet_fd, 10**9, log)
    RingBufferTransport(priority.ring(), bulk.ring(), bulk_batch=100).wait_and_read(0, [])
    assert [entry[0] for entry in log] == ["priority", "bulk"] * MAX_ROUNDS + ["priority"]
    assert all(n == 100 for lane, _limit, n in log if lane == "bulk")


def test_ring_buffer_wakes_when_a_busy_sink_can_take_data(quiet_fd: int) -> None:
    log: list[tuple[str, int, int]] = []
    transport = RingBufferTransport(Lane("priority", quiet_fd, 0, log).ring(), Lane("bulk", quiet_fd, 0, log).ring())
    a, b = socket.socketpair()
    with a, b:
        t0 = time.monotonic()
        transport.wait_and_read(10_000, [a.fileno()])  # a is writable at once
        assert time.monotonic() - t0 < 5
    assert log == [("priority", 0, 0), ("bulk", BULK_BATCH, 0)]


def test_a_sink_that_woke_the_loop_alone_gets_a_pause_before_it_is_refilled(quiet_fd: int) -> None:
    """journald's socket polls writable as soon as one slot of its queue is free: the loop
    lets it take more (BUSY_SINK_REFILL_DELAY) before refilling, not one wake-up per
    entry. A wake-up that also brought records gets no pause."""
    log: list[tuple[str, int, int]] = []
    transport = RingBufferTransport(Lane("priority", quiet_fd, 0, log).ring(), Lane("bulk", quiet_fd, 0, log).ring())
    a, b = socket.socketpair()
    with a, b:
        t0 = time.monotonic()
        transport.wait_and_read(10_000, [a.fileno()])
        assert time.monotonic() - t0 >= BUSY_SINK_REFILL_DELAY * 0.9
        assert transport.sink_pauses == 1
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        busy = RingBufferTransport(Lane("priority", r, 1, log).ring(), Lane("bulk", quiet_fd, 0, log).ring())
        c, d = socket.socketpair()
        with c, d:
            busy.wait_and_read(10_000, [c.fileno()])  # the sink and a record: no pause
        assert busy.sink_pauses == 0
    finally:
        os.close(r)
        os.close(w)


def test_a_record_ends_the_refill_pause_at_once(pipe: tuple[int, int], quiet_fd: int) -> None:
    """The pause waits on the lanes' fds, not a sleep: a priority record arriving during
    it is read at once (with a 30 s pause, it must not take 30 s)."""
    records, writer = pipe
    log: list[tuple[str, int, int]] = []
    transport = RingBufferTransport(
        Lane("priority", records, 1, log).ring(), Lane("bulk", quiet_fd, 0, log).ring(), refill_pause=30.0
    )
    a, b = socket.socketpair()
    timer = threading.Timer(0.2, os.write, (writer, b"x"))
    with a, b:
        t0 = time.monotonic()
        timer.start()
        transport.wait_and_read(10_000, [a.fileno()])
        elapsed = time.monotonic() - t0
    timer.join()
    assert transport.sink_pauses == 1
    assert 0.15 <= elapsed < 10
    assert log[0] == ("priority", 0, 1)


def test_a_sink_that_is_no_longer_busy_no_longer_wakes_the_transport(quiet_fd: int) -> None:
    """The poll set lives as long as the transport: a sink fd leaves it when the sink has
    caught up (else a writable socket would wake the loop at once, forever)."""
    log: list[tuple[str, int, int]] = []
    transport = RingBufferTransport(Lane("priority", quiet_fd, 0, log).ring(), Lane("bulk", quiet_fd, 0, log).ring())
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    with a, b, c, d:
        t0 = time.monotonic()
        transport.wait_and_read(10_000, [a.fileno(), c.fileno()])
        transport.wait_and_read(10_000, [c.fileno()])  # a caught up, c still busy
        assert time.monotonic() - t0 < 5
        t0 = time.monotonic()
        transport.wait_and_read(300, [])  # both caught up: only the lanes wake it
        assert time.monotonic() - t0 >= 0.25
    assert len(log) == 6


def test_ring_buffer_reads_what_is_pending_without_waiting(quiet_fd: int) -> None:
    log: list[tuple[str, int, int]] = []
    priority, bulk = Lane("priority", quiet_fd, 2, log), Lane("bulk", quiet_fd, 700, log)
    RingBufferTransport(priority.ring(), bulk.ring(), bulk_batch=512).read_pending()
    assert (priority.waiting, bulk.waiting) == (0, 0)


def test_perf_buffer_polls_alone_and_retries_busy_sinks_on_a_timer() -> None:
    calls = Calls()
    transport: EventTransport = PerfBufferTransport(calls.poll)
    assert transport.reports_losses
    transport.wait_and_read(500, [])
    transport.wait_and_read(500, [7])  # a busy sink's fd cannot join bcc's poll
    transport.read_pending()
    assert calls.log == [("poll", 500), ("poll", BUSY_SINK_RETRY_MS), ("poll", 0)]
