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
from dataclasses import dataclass
from typing import Protocol

# How often a busy sink is retried when nothing else wakes the loop: a sink without a
# pollable fd (Sink.wait_fd() == -1), or any busy sink behind a perf buffer.
BUSY_SINK_RETRY_MS = 10

# How long a busy sink that woke the loop alone gets to take more entries before it is
# refilled, unless a record arrives first: ~3 entries of journald's work (~30 µs
# each), well under the ~300 µs its 10-slot queue holds. A datagram socket polls
# writable as soon as one slot of journald's queue is free, so without it every
# entry journald takes costs a wake-up of this loop (~550 per 1,000 events with 10
# slots; README: throughput). The wait is on the lanes' fds, so a record that wakes
# the daemon (every priority record; a bulk one every buffer.wakeup_events) ends it at
# once: an earlier cut slept instead and could keep the loop from a priority record.
BUSY_SINK_REFILL_DELAY = 100e-6

# The two buffers, by the name the config's buffer.kind gives them (krsid.config).
RINGBUF = "ringbuf"
PERFBUF = "perfbuf"

# The lanes (krsid.h: one ring buffer each; catalog.contract.lanes has their numbers).
# The perf buffer is one lane, reported as the priority one.
LANE_PRIORITY = "priority"
LANE_BULK = "bulk"
LANES = (LANE_PRIORITY, LANE_BULK)


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


# The priority lane is read in full, then at most this many bulk records, then the
# priority lane again...: under a bulk flood that the daemon cannot keep up with, a
# priority record waits for at most one bulk batch, never for a whole bulk buffer.
BULK_BATCH = 256
# Rounds per wake-up, so that the poll loop still flushes the sinks, feeds the
# watchdog and serves signals while the bulk lane stays full.
MAX_ROUNDS = 16


@dataclass(frozen=True)
class RingLane:
    """One lane's ring buffer, as the loader opened it."""

    fd: int  # the map fd: polls POLLIN while records wait
    consume: Callable[[int], int]  # read up to N waiting records (0: all), without waiting; returns how many


class RingBufferTransport:
    """The lanes' BPF ring buffers: their map fds polled with the busy sinks' fds, then
    read priority lane first, the bulk lane in batches between (BULK_BATCH)."""

    reports_losses = False

    def __init__(
        self,
        priority: RingLane,
        bulk: RingLane,
        *,
        bulk_batch: int = BULK_BATCH,
        refill_pause: float = BUSY_SINK_REFILL_DELAY,
    ) -> None:
        self._priority = priority
        self._bulk = bulk
        self._bulk_batch = bulk_batch
        self._refill_pause_s = refill_pause
        # One poll set for the daemon's life: the lanes always, the busy sinks' fds
        # added and removed as they change (a poll set per wake-up cost ~3 µs, and a
        # busy journald wakes the loop once per datagram it takes).
        self._poller = select.poll()
        self._lane_fds = (priority.fd, bulk.fd)
        for fd in self._lane_fds:
            self._poller.register(fd, select.POLLIN)
        self._writable: frozenset[int] = frozenset()
        self.sink_pauses = 0  # wake-ups by busy sinks alone, each followed by a refill pause

    def wait_and_read(self, timeout_ms: int, writable_fds: Sequence[int]) -> None:
        wanted = frozenset(writable_fds)
        if wanted != self._writable:
            for fd in self._writable - wanted:
                self._poller.unregister(fd)
            for fd in wanted - self._writable:
                self._poller.register(fd, select.POLLOUT)
            self._writable = wanted
        ready: list[tuple[int, int]] = []
        with contextlib.suppress(InterruptedError):
            ready = self._poller.poll(timeout_ms)
        if wanted and ready and all(fd in wanted for fd, _event in ready):
            self._refill_pause()
        self._read(MAX_ROUNDS)

    def _refill_pause(self) -> None:
        """Only busy sinks woke the loop: their destination has just taken an entry.
        Let it take a few more (BUSY_SINK_REFILL_DELAY), waiting on the lanes, so that
        a record ends the pause at once. select, not poll: poll's timeout is whole ms."""
        self.sink_pauses += 1
        with contextlib.suppress(InterruptedError, ValueError):  # ValueError: an fd past FD_SETSIZE
            select.select(self._lane_fds, (), (), self._refill_pause_s)

    def read_pending(self) -> None:
        self._read(MAX_ROUNDS * 4)

    def _read(self, rounds: int) -> None:
        for _ in range(rounds):
            self._priority.consume(0)
            if self._bulk.consume(self._bulk_batch) < self._bulk_batch:
                return  # the bulk lane is empty: both are read
        self._priority.consume(0)


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
