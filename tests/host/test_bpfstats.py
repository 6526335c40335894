"""Kernel run-time stats of a BPF program, read with offsets from BTF (runs on this host)."""

from __future__ import annotations

import ctypes
import os
import socket
import struct

import pytest

from krsid.kernel.bpfstats import BpfStats

TINY = bytes.fromhex("b7000000ffff00009500000000000000")  # r0 = 0xffff (accept); exit
SO_ATTACH_BPF = 50


def load_socket_filter() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    insns = ctypes.create_string_buffer(TINY, len(TINY))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQ", attr, 0, 1, len(TINY) // 8, ctypes.addressof(insns), ctypes.addressof(lic))
    # bpf(BPF_PROG_LOAD) on x86-64, with explicit C types (a bare int would cut the pointer)
    fd = int(
        libc.syscall(
            ctypes.c_long(321), ctypes.c_long(5), ctypes.c_void_p(ctypes.addressof(attr)), ctypes.c_ulong(len(attr))
        )
    )
    if fd < 0:
        pytest.skip(f"cannot load a socket filter here: {os.strerror(ctypes.get_errno())}")
    return fd


@pytest.mark.skipif(os.geteuid() != 0, reason="loading BPF programs needs root")
def test_run_count_and_time_follow_the_program() -> None:
    stats = BpfStats()
    assert stats.layout.run_cnt == stats.layout.run_time_ns + 8
    prog = load_socket_filter()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        b.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, prog)
        stats.enable()
        before = stats.run_stats(prog)
        for _ in range(25):
            a.send(b"x")
            b.recv(10)
        runs, ns = stats.run_stats(prog)
        assert runs - before[0] == 25
        assert ns > before[1]
        stats.close()  # stats off again: the count stops
        a.send(b"x")
        b.recv(10)
        assert stats.run_stats(prog)[0] == runs
    finally:
        stats.close()
        a.close()
        b.close()
        os.close(prog)
