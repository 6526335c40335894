"""The event buffer behind one interface (pipeline.transport), with bcc's calls faked:
a pipe stands in for the ring buffer's map fd."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest

from krsid.pipeline.transport import (
    BUSY_SINK_RETRY_MS,
    EventTransport,
    PerfBufferTransport,
    RingBufferTransport,
)


class Calls:
    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []

    def consume(self) -> None:
        self.log.append(("consume", -1))

    def poll(self, timeout_ms: int) -> None:
        self.log.append(("poll", timeout_ms))


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def test_ring_buffer_waits_for_records_then_consumes(pipe: tuple[int, int]) -> None:
    records, writer = pipe
    calls = Calls()
    transport: EventTransport = RingBufferTransport(records, calls.consume, calls.poll)
    assert not transport.reports_losses
    t0 = time.monotonic()
    transport.wait_and_read(150, [])
    assert time.monotonic() - t0 >= 0.1  # nothing waiting: the timeout ran out
    os.write(writer, b"x")  # the map fd polls POLLIN: records wait
    t0 = time.monotonic()
    transport.wait_and_read(10_000, [])
    assert time.monotonic() - t0 < 5
    assert calls.log == [("consume", -1), ("consume", -1)]


def test_ring_buffer_wakes_when_a_busy_sink_can_take_data(pipe: tuple[int, int]) -> None:
    records, _writer = pipe
    calls = Calls()
    transport = RingBufferTransport(records, calls.consume, calls.poll)
    a, b = socket.socketpair()
    with a, b:
        t0 = time.monotonic()
        transport.wait_and_read(10_000, [a.fileno()])  # a is writable at once
        assert time.monotonic() - t0 < 5
    assert calls.log == [("consume", -1)]


def test_ring_buffer_reads_what_is_pending_without_waiting(pipe: tuple[int, int]) -> None:
    calls = Calls()
    RingBufferTransport(pipe[0], calls.consume, calls.poll).read_pending()
    assert calls.log == [("poll", 0)]


def test_perf_buffer_polls_alone_and_retries_busy_sinks_on_a_timer() -> None:
    calls = Calls()
    transport: EventTransport = PerfBufferTransport(calls.poll)
    assert transport.reports_losses
    transport.wait_and_read(500, [])
    transport.wait_and_read(500, [7])  # a busy sink's fd cannot join bcc's poll
    transport.read_pending()
    assert calls.log == [("poll", 500), ("poll", BUSY_SINK_RETRY_MS), ("poll", 0)]
