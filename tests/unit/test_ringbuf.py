"""The mapped ring-buffer reader (krsid.pipeline.ringbuf) on a file laid out as the
kernel maps a BPF ring buffer: consumer page, producer page, the data twice.

The real buffer is read by the host tier (tests/host/test_load.py: the load generator's
records through the real daemon, books balanced from sequence numbers)."""

from __future__ import annotations

import mmap
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from krsid.pipeline import ringbuf

PAGE = mmap.PAGESIZE
SIZE = 2 * PAGE


class FakeRing:
    """A file with the ring buffer's layout; records are written the way the kernel
    writes them (header, data, padded to 8), mirrored into the second copy."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(self.fd, 2 * PAGE + 2 * SIZE)
        self.prod = 0

    def position(self, page: int) -> int:
        value: int = struct.unpack("Q", os.pread(self.fd, 8, page * PAGE))[0]
        return value

    def set_consumer(self, pos: int) -> None:
        os.pwrite(self.fd, struct.pack("Q", pos), 0)

    def _write_data(self, pos: int, raw: bytes) -> None:
        for i, byte in enumerate(raw):  # byte by byte: a record may wrap around the end
            at = (pos + i) % SIZE
            for copy in (0, SIZE):
                os.pwrite(self.fd, bytes([byte]), 2 * PAGE + copy + at)

    def add(self, body: bytes, flags: int = 0) -> None:
        self._write_data(self.prod, struct.pack("II", len(body) | flags, 0) + body)
        self.prod += (len(body) + ringbuf.HEADER_SIZE + 7) & ~7
        os.pwrite(self.fd, struct.pack("Q", self.prod), PAGE)

    def skip_to(self, pos: int) -> None:
        self.prod = pos
        self.set_consumer(pos)
        os.pwrite(self.fd, struct.pack("Q", pos), PAGE)


@pytest.fixture
def ring(tmp_path: Path) -> Iterator[FakeRing]:
    r = FakeRing(tmp_path / "ring")
    yield r
    os.close(r.fd)


def reader(ring: FakeRing, got: list[bytes]) -> ringbuf.MappedRingBuffer:
    return ringbuf.MappedRingBuffer(ring.fd, SIZE, got.append)


def test_records_are_handed_in_order_and_the_consumer_position_follows(ring: FakeRing) -> None:
    got: list[bytes] = []
    r = reader(ring, got)
    assert r.consume() == 0 and got == []
    for body in (b"a", b"bcdefghij", b"x" * 100):
        ring.add(body)
    assert r.consume() == 3
    assert got == [b"a", b"bcdefghij", b"x" * 100]
    assert ring.position(0) == ring.prod == 16 + 24 + 112  # 8-byte header, padded to 8
    r.close()


def test_limit_stops_after_that_many_and_the_rest_waits(ring: FakeRing) -> None:
    got: list[bytes] = []
    r = reader(ring, got)
    for i in range(5):
        ring.add(bytes([i]) * 3)
    assert r.consume(2) == 2 and len(got) == 2
    assert r.consume(0) == 3 and [g[0] for g in got] == [0, 1, 2, 3, 4]
    r.close()


def test_a_busy_record_stops_the_read_and_a_discarded_one_is_skipped(ring: FakeRing) -> None:
    got: list[bytes] = []
    r = reader(ring, got)
    ring.add(b"first")
    ring.add(b"dropped", ringbuf.DISCARD_BIT)
    ring.add(b"second")
    busy_at = ring.prod
    ring.add(b"reserved", ringbuf.BUSY_BIT)
    ring.add(b"after")
    assert r.consume() == 2 and got == [b"first", b"second"]
    assert ring.position(0) == busy_at  # the discarded record is consumed, the busy one is not
    # Submitted (the BUSY bit cleared): it and what follows are read.
    ring._write_data(busy_at, struct.pack("I", len(b"reserved")))
    assert r.consume() == 2 and got[2:] == [b"reserved", b"after"]
    r.close()


def test_a_record_across_the_end_reads_as_one_piece(ring: FakeRing) -> None:
    got: list[bytes] = []
    ring.skip_to(SIZE - 16)  # 16 bytes before the end, far into the positions (they never wrap)
    r = reader(ring, got)
    body = bytes(range(200))
    ring.add(body)
    ring.add(b"next")
    assert r.consume() == 2 and got == [body, b"next"]
    assert ring.position(0) == SIZE - 16 + 208 + 16
    r.close()


def test_a_size_the_kernel_never_makes_is_refused(ring: FakeRing) -> None:
    with pytest.raises(ValueError, match="power-of-2"):
        ringbuf.MappedRingBuffer(ring.fd, 3 * PAGE, lambda _raw: None)


def test_used_only_where_plain_loads_and_stores_order_as_libbpf_needs() -> None:
    assert ringbuf.usable("x86_64")
    assert not ringbuf.usable("aarch64") and not ringbuf.usable("ppc64le")


# A C program that maps the consumer page and reads its position as fast as it can,
# the way the kernel reads it when a program reserves a record; it counts the reads
# that saw 0 after the position had left 0.
WATCHER_C = r"""
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }
int main(int argc, char **argv) {
    int fd = open(argv[1], O_RDONLY);
    volatile uint64_t *pos = mmap(0, 4096, PROT_READ, MAP_SHARED, fd, 0);
    if (fd < 0 || pos == MAP_FAILED) return 2;
    signal(SIGTERM, on_term);
    long reads = 0, zeros = 0;
    while (!*pos && !stop) {}
    puts("armed"); fflush(stdout);
    while (!stop) { zeros += *pos == 0; reads++; }
    printf("%ld %ld\n", reads, zeros);
    return 0;
}
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the watcher must read while the reader writes: 2 CPUs")
def test_the_consumer_position_is_never_seen_as_zero_while_it_moves(ring: FakeRing, tmp_path: Path) -> None:
    """The kernel reads the consumer position to find room for a record: a moment at 0
    makes a nearly empty ring look full, and the record is lost (lost_ringbuf). So the
    position must go from one value to the next in one store. struct.pack_into failed
    this (it zero-fills before writing): host runs lost 1 to 23 records in ~1 of 4."""
    src, exe = tmp_path / "watcher.c", tmp_path / "watcher"
    src.write_text(WATCHER_C)
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    base = 1 << 16  # every byte of each position written below is non-zero in its low half
    ring.skip_to(base)
    for _ in range(16):
        ring.add(b"r")
    r = reader(ring, [])
    watcher = subprocess.Popen([str(exe), str(ring.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None and watcher.stdout.readline().strip() == "armed"
        for _ in range(20_000):
            assert r.consume() == 16
            ring.set_consumer(base)  # the same records again
    finally:
        watcher.terminate()
        out, _ = watcher.communicate(timeout=10)
    r.close()
    reads, zeros = (int(x) for x in out.split())
    assert reads > 0
    assert zeros == 0, f"the consumer position read as 0 in {zeros} of {reads} reads"
