"""The event buffer behind one interface: a BPF ring buffer or a per-CPU perf buffer.

The programs write each event to the ring buffer (kernel 5.8+), or to a perf
buffer where there is none (``buffer.kind``); the C side picks one with
KRSID_USE_PERFBUF, as bcc's libbpf-tools compat.h does. Here both are an
``EventTransport``: the poll loop asks it to wait for records (or for room in a
busy sink) and to hand every waiting record to the pipeline, and never asks which
buffer it is.

The two differ in what they can wait on, and this module hides it:
- a ring buffer is one map fd that polls POLLIN when records wait: it is polled
  together with the busy sinks' fds, so a sink that takes data again is retried
  at once, and the records are then consumed without waiting;
- a perf buffer is one fd per CPU behind bcc's own poll, which cannot also wait on
  a sink's fd: while a sink is busy it wakes every BUSY_SINK_RETRY_MS instead.

The bcc calls come from pipeline.load (the only module that imports bcc) as plain
callables; the records they deliver go to the callback given to
``LoadedPrograms.open_events`` (pipeline.flow's EventPipeline.handle).
"""

from __future__ import annotations

import contextlib
import select
from collections.abc import Callable, Sequence
from typing import Protocol

# How often a busy sink is retried when nothing else wakes the loop: a sink without a
# pollable fd (Sink.wait_fd() == -1), or any busy sink behind a perf buffer.
BUSY_SINK_RETRY_MS = 10

# The two buffers, by the name the config's buffer.kind gives them (krsid.config).
RINGBUF = "ringbuf"
PERFBUF = "perfbuf"


class EventTransport(Protocol):
    """Where the records come from; reading one calls the record callback."""

    @property
    def reports_losses(self) -> bool:
        """True if the kernel reports lost records to user space (perf buffer: counted
        in the pipeline as stage perfbuf); False if they are counted in the kernel
        (ring buffer: the programs' lost_ringbuf counter)."""
        ...

    def wait_and_read(self, timeout_ms: int, writable_fds: Sequence[int]) -> None:
        """Wait up to timeout_ms for records or for one of writable_fds (busy sinks) to
        poll writable, then read every record waiting."""

    def read_pending(self) -> None:
        """Read what is already in the buffer, without waiting (at stop)."""


class RingBufferTransport:
    """A BPF ring buffer: its map fd polled with the busy sinks' fds, then consumed."""

    reports_losses = False

    def __init__(self, map_fd: int, consume: Callable[[], None], poll: Callable[[int], None]) -> None:
        """consume: read every waiting record, without waiting (bcc's ring_buffer_consume);
        poll: wait up to N ms, then read (bcc's ring_buffer_poll)."""
        self._fd = map_fd
        self._consume = consume
        self._poll = poll

    def wait_and_read(self, timeout_ms: int, writable_fds: Sequence[int]) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        for fd in writable_fds:
            poller.register(fd, select.POLLOUT)
        with contextlib.suppress(InterruptedError):
            poller.poll(timeout_ms)
        self._consume()

    def read_pending(self) -> None:
        self._poll(0)


class PerfBufferTransport:
    """Per-CPU perf buffers behind bcc's perf_buffer_poll, which waits on them alone."""

    reports_losses = True

    def __init__(self, poll: Callable[[int], None], busy_retry_ms: int = BUSY_SINK_RETRY_MS) -> None:
        """poll: wait up to N ms for records, then read them (bcc's perf_buffer_poll)."""
        self._poll = poll
        self._busy_retry_ms = busy_retry_ms

    def wait_and_read(self, timeout_ms: int, writable_fds: Sequence[int]) -> None:
        # The sinks' fds cannot join bcc's poll: wake on a short timer to retry them.
        self._poll(self._busy_retry_ms if writable_fds else timeout_ms)

    def read_pending(self) -> None:
        self._poll(0)
