"""Kernel-side cost of each hook program: run_cnt and run_time_ns from bpf_prog_info.

The kernel counts them only while BPF run-time stats are on. BPF_ENABLE_STATS
(Linux 5.8) turns them on for as long as the returned fd stays open, so krsid
never leaves the global kernel.bpf_stats_enabled sysctl changed behind it, even
after a crash. The struct offsets come from the running kernel's BTF, not from a
hard-coded copy of the UAPI header.
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass

from krsid.kernel.btf import VMLINUX_BTF, Btf
from krsid.kernel.probe import BpfSyscall

BPF_OBJ_GET_INFO_BY_FD = 15
BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0


@dataclass(frozen=True)
class ProgInfoLayout:
    size: int
    run_time_ns: int
    run_cnt: int

    @classmethod
    def from_btf(cls, btf: Btf) -> ProgInfoLayout:
        c = btf.struct("bpf_prog_info")
        if c is None:
            raise KeyError("struct bpf_prog_info not in BTF")
        off = {m.name: m.bit_offset // 8 for m in c.members}
        return cls(c.size, off["run_time_ns"], off["run_cnt"])


class BpfStats:
    """Turns run-time stats on (while this object lives) and reads a program's numbers."""

    def __init__(self, layout: ProgInfoLayout | None = None) -> None:
        self.layout = layout or ProgInfoLayout.from_btf(Btf.load(VMLINUX_BTF))
        self._sys = BpfSyscall()
        self._stats_fd = -1

    def _bpf(self, cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
        ret, err = self._sys.call(cmd, attr)
        if ret < 0:
            raise OSError(err, os.strerror(err))
        return ret

    def enable(self) -> None:
        attr = ctypes.create_string_buffer(8)
        struct.pack_into("<I", attr, 0, BPF_STATS_RUN_TIME)
        self._stats_fd = self._bpf(BPF_ENABLE_STATS, attr)

    def close(self) -> None:
        if self._stats_fd >= 0:
            os.close(self._stats_fd)
            self._stats_fd = -1

    def run_stats(self, prog_fd: int) -> tuple[int, int]:
        """(run_cnt, run_time_ns) of the program behind prog_fd."""
        info = ctypes.create_string_buffer(self.layout.size)
        attr = ctypes.create_string_buffer(16)
        struct.pack_into("<IIQ", attr, 0, prog_fd, len(info), ctypes.addressof(info))
        self._bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
        (run_time,) = struct.unpack_from("<Q", info, self.layout.run_time_ns)
        (run_cnt,) = struct.unpack_from("<Q", info, self.layout.run_cnt)
        return int(run_cnt), int(run_time)
