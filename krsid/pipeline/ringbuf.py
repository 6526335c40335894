"""A BPF ring buffer read straight from its memory mapping, many records per call.

bcc (through libbpf) hands each record to a ctypes callback: one C-to-Python
transition and one ``string_at`` per record (issue 16: together with calling the JSON
encoder directly, 9-12 % of the CPU per event into JSON lines). The ring buffer is
plain shared memory, so this reader walks it in Python instead, as libbpf's
``ringbuf_process_ring`` does in C:

    page 0          consumer position (u64): user space writes it (mapped read-write)
    page 1          producer position (u64): the kernel writes it (read-only)
    pages 2..       the data, max_entries bytes, mapped twice in a row, so that a
                    record that wraps around the end reads as one piece

Each record is an 8-byte header (u32 length with two flag bits: BUSY while the
program has reserved but not yet submitted it, DISCARD when it gave it up; u32 page
offset, for the kernel) and the data, padded to 8 bytes. Records become readable in
order: reading stops at the first BUSY one.

Memory ordering: the kernel publishes a record by a release store of its header, and
libbpf reads headers and positions with acquire loads. Python has no such loads; on
x86-64 every load is an acquire and every store a release (TSO), so plain 8-byte
reads and writes are what libbpf's atomics compile to there. The positions are read
and written as native u64 items of a memoryview: one aligned 8-byte memcpy each, a
single load or store (never struct.pack_into, which zero-fills first). Elsewhere
``usable()`` is False and the loader keeps libbpf's callbacks (pipeline.load), as
it does everywhere when ``ENABLED`` is False (see there).
"""

from __future__ import annotations

import mmap
import platform
import struct
from collections.abc import Callable

# include/uapi/linux/bpf.h
BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8
_LENGTH_MASK = ~(BUSY_BIT | DISCARD_BIT) & 0xFFFFFFFF

_LENGTH = struct.Struct("I")  # the header's first half; native like the kernel's u32

# On by default; False puts libbpf's callbacks back. It was off for a day because the
# VM's flood test lost a priority record with it in 2 of 2 whole-file runs: the cause
# was the consumer position written with struct.pack_into, which zero-fills before it
# writes (see __init__). This reader costs 0-10 % less CPU per event than libbpf's
# callbacks (host throughput bench, the two alternated; README: Lanes).
ENABLED = True

# Architectures whose plain loads and stores order like acquire/release (TSO).
_TSO_MACHINES = frozenset({"x86_64", "amd64", "AMD64"})


def usable(machine: str | None = None) -> bool:
    """Whether this reader is safe on this CPU (else use libbpf's callbacks)."""
    return (machine or platform.machine()) in _TSO_MACHINES


class MappedRingBuffer:
    """One BPF_MAP_TYPE_RINGBUF map, read through its own mapping.

    ``consume(limit)`` hands up to ``limit`` waiting records (0: all of them) to
    ``handle`` as bytes and returns how many it handed; it never waits. The consumer
    position is written after every record, as libbpf does, so the kernel sees room
    (and wakes poll) exactly as it would with libbpf reading."""

    def __init__(self, map_fd: int, size: int, handle: Callable[[bytes], None]) -> None:
        page = mmap.PAGESIZE
        if size <= 0 or size % page or size & (size - 1):
            raise ValueError(f"ring buffer size {size} is not a power-of-2 multiple of the page size {page}")
        self.fd = map_fd
        self._handle = handle
        self._mask = size - 1
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        try:
            # The producer page, then the data twice (the kernel maps it so).
            self._producer = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except BaseException:
            self._consumer.close()
            raise
        self._data_start = page  # within the producer mapping
        # The positions as native u64 items of a memoryview: an item assignment is one
        # aligned 8-byte memcpy, a single store on x86-64. Never struct.pack_into: it
        # zero-fills its target before writing the value, so the kernel could read a
        # consumer position of 0 in between, see the whole ring as taken, and refuse a
        # record (lost_ringbuf) with the ring nearly empty: found in 2026-12-06's host
        # runs of the stalled-reader test (1 to 23 records lost in ~1 run of 4).
        self._consumer_pos = memoryview(self._consumer).cast("Q")
        self._producer_pos = memoryview(self._producer).cast("Q")

    def consume(self, limit: int = 0) -> int:
        handle = self._handle
        data = self._producer
        start, mask = self._data_start, self._mask
        read_length = _LENGTH.unpack_from
        consumer_pos, producer_pos = self._consumer_pos, self._producer_pos
        cons = consumer_pos[0]
        handed = 0
        while True:
            prod = producer_pos[0]
            if cons >= prod:
                return handed
            while cons < prod:
                at = start + (cons & mask)
                length = read_length(data, at)[0]
                if length & BUSY_BIT:
                    return handed  # reserved, not yet submitted: the rest waits behind it
                size = length & _LENGTH_MASK
                cons += (size + HEADER_SIZE + 7) & ~7
                if not length & DISCARD_BIT:
                    body = at + HEADER_SIZE
                    record = data[body : body + size]
                    # Position first: if handle raises, this record is not read twice.
                    consumer_pos[0] = cons
                    handle(record)
                    handed += 1
                    if handed == limit:
                        return handed
                else:
                    consumer_pos[0] = cons

    def close(self) -> None:
        self._consumer_pos.release()  # a mapping with a view still exported cannot close
        self._producer_pos.release()
        self._producer.close()
        self._consumer.close()
