"""Compile, load and attach the hook programs; open their event buffer. The only module that imports bcc.

All enabled programs are compiled as ONE BCC module: one clang run instead of one
per hook (clang is most of the cold-start cost: ~0.7 s per run on a real machine,
~30 s under TCG). Failure isolation is kept at the two places it matters:
- load/attach is per hook (autoload is disabled), so a verifier rejection or a
  missing hook detaches nothing else;
- if the joint compile fails, each program is compiled alone, in a child process,
  to name the culprit, and the others are compiled together again without it.
  A child because LLVM ends the process on some errors instead of returning them
  (see compile_guard); a build that ended the process is remembered in a marker
  file, and the next start isolates before compiling the module.

The module text is assembled from the programs' own files plus numeric defines
and _Static_asserts generated from the C-derived layouts (identifiers come from
the C source, numbers from Python): no configuration string becomes C.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import functools
import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import bcc

from krsid.catalog import Catalog, HookSpec
from krsid.config import FairShareConfig
from krsid.errors import ConfigError, ProgramLoadError
from krsid.kernel.headers import HeaderSource, bcc_environment
from krsid.pipeline import ringbuf
from krsid.pipeline.compile_guard import ChildCompile, captured_stderr, isolated_compile
from krsid.pipeline.flood import FloodState
from krsid.pipeline.layout import layout_asserts
from krsid.pipeline.leaf import write_leaf
from krsid.pipeline.transport import (
    LANE_BULK,
    LANE_PRIORITY,
    LANES,
    EventTransport,
    PerfBufferTransport,
    RingBufferTransport,
    RingLane,
)
from krsid.policy import BankLayout, CompiledRule
from krsid.watch import ResolvedWatch, dir_filter, ino_filter, name_filter

# The ring buffer of each lane (krsid.h); with a perf buffer, "events" is the only one.
LANE_MAPS = {LANE_PRIORITY: b"events", LANE_BULK: b"events_bulk"}
# The fair-share states by scope (contract.flood_scopes' names).
FLOOD_MAPS = {"process": b"krsid_flood_procs", "uid": b"krsid_flood_uids"}
# How the ring buffers are read (LoadedPrograms.ring_reader): from their mappings, or
# through libbpf's callback per record where the mapped reader is not safe.
RING_READER_MAPPED = "mapped"
RING_READER_LIBBPF = "libbpf"


@dataclass(frozen=True)
class HookStatus:
    hook: str
    attached: bool
    error: str = ""
    load_seconds: float = 0.0


@dataclass(frozen=True)
class BuildSettings:
    header_source: HeaderSource
    hook_nargs: Mapping[str, int]  # hook -> argument count on the running kernel (BTF)
    ringbuf_pages: int = 256  # the bulk lane's ring buffer (and the perf buffer's pages per CPU)
    use_perfbuf: bool = False
    wakeup_events: int = 0  # every N-th event wakes the daemon (ring buffer); 0: the kernel's default
    priority_pages: int = 256  # the priority lane's ring buffer
    # C appended to the module after the hook programs, for test and benchmark
    # instrumentation (the load generator); never built from configuration.
    extra_source: str = ""


class _BulkLane:
    """A ring buffer read in bounded batches: a libbpf ring buffer manager of its own
    (bcc's manager reads every ring it holds to the end). The callback stops the read
    after `limit` records by returning -1, which libbpf takes after consuming that one."""

    def __init__(self, map_fd: int, handle: Callable[[bytes], None]) -> None:
        self.fd = map_fd
        self._handle = handle
        self._left = 0
        self._read = 0
        # Kept referenced: libbpf calls it for as long as the manager lives.
        self._callback = bcc.libbcc._RINGBUF_CB_TYPE(self._on_record)
        self._manager = bcc.libbcc.lib.bpf_new_ringbuf(map_fd, self._callback, None)
        if not self._manager:
            raise ProgramLoadError("could not open the bulk lane's ring buffer")

    def _on_record(self, _ctx: int, data: int, size: int) -> int:
        self._read += 1
        self._handle(ct.string_at(data, size))
        self._left -= 1
        return -1 if self._left == 0 else 0

    def consume(self, limit: int) -> int:
        """Read up to `limit` waiting records (0: all of them); returns how many were read."""
        self._left, self._read = limit, 0
        bcc.libbcc.lib.bpf_consume_ringbuf(self._manager)
        return self._read

    def close(self) -> None:
        if self._manager:
            bcc.libbcc.lib.bpf_free_ringbuf(self._manager)
            self._manager = None


class _ManualAttachBPF(bcc.BPF):  # type: ignore[misc]
    """bcc.BPF without autoload: we attach each LSM program ourselves, one by one."""

    def _trace_autoload(self) -> None:
        pass


def module_text(
    specs: Sequence[HookSpec],
    header_text: str,
    hook_nargs: Mapping[str, int],
    extra_source: str = "",
    *,
    lanes: Mapping[str, int],
) -> str:
    """One translation unit: krsid.h, then every program with its hook id and layout proof.

    krsid.h is inlined, not #included: BCC rewrites map method calls
    (``events.ringbuf_reserve()``, ``map.lookup()``) only in the main file; in an
    included header they stay indirect calls that the verifier rejects ("unknown
    opcode 8d"). The programs' own ``#include "krsid.h"`` then hits the include guard.
    """
    parts = ['#line 1 "krsid.h"\n', header_text, "\n"]
    for hook_id, spec in enumerate(specs):
        if spec.name not in hook_nargs:
            raise ProgramLoadError(f"{spec.name}: this kernel has no bpf_lsm_{spec.name}")
        parts.append(f"#define KRSID_HOOK_ID {hook_id}\n")
        parts.append(f"#define KRSID_HOOK_NARGS {int(hook_nargs[spec.name])}\n")
        parts.append(f"#define KRSID_HOOK_LANE {lanes[spec.lane]}\n")
        parts.append(f'#line 1 "{spec.name}.c"\n')  # hook names are [a-z0-9_]: safe in a string
        # The text the catalog read from the checked file, not the file again: it may
        # have changed since (config.check_trusted checked it before it was read).
        parts.append(spec.source_text)
        parts.append("\n")
        parts.append(layout_asserts(spec.layout))
        parts.append("#undef KRSID_HOOK_ID\n#undef KRSID_HOOK_NARGS\n#undef KRSID_HOOK_LANE\n")
    if extra_source:
        parts += ['#line 1 "extra.c"\n', extra_source, "\n"]
    return "".join(parts)


def compile_flags(catalog: Catalog, settings: BuildSettings, hook_count: int) -> list[str]:
    return [
        f"-I{catalog.include_dir}",
        *settings.header_source.cflags,
        f"-DKRSID_MAX_HOOKS={max(hook_count, 1)}",
        f"-DKRSID_RINGBUF_PAGES={settings.priority_pages}",
        f"-DKRSID_BULK_RINGBUF_PAGES={settings.ringbuf_pages}",
        f"-DKRSID_USE_PERFBUF={1 if settings.use_perfbuf else 0}",
        f"-DKRSID_WAKEUP_EVENTS={int(settings.wakeup_events)}",
        # The contract's numbers (parsed from this header), asserted by the compile.
        f"-DKRSID_CNT_SLOTS_EXPECTED={len(catalog.contract.counters)}",
        f"-DKRSID_RULES_PER_HOOK_EXPECTED={catalog.contract.rules_per_hook}",
        "-Wno-incompatible-pointer-types-discards-qualifiers",
    ]


def _compile_uncaptured(text: str, cflags: list[str], header_source: HeaderSource) -> _ManualAttachBPF:
    """Compile with the headers' environment; raises on failure, the compiler prints to fd 2."""
    env = bcc_environment(header_source)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return _ManualAttachBPF(text=text.encode(), cflags=cflags)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _compile(
    text: str, cflags: list[str], header_source: HeaderSource, what: str, compile_marker: Path | None = None
) -> tuple[_ManualAttachBPF | None, str]:
    """Compile with the compiler's output captured, and reported if the compiler ends
    the process (``what`` names the programs in that report; a stop-then-kill
    mid-compile removes ``compile_marker``)."""
    with captured_stderr(watch=what, compile_marker=compile_marker) as output:
        try:
            return _compile_uncaptured(text, cflags, header_source), output()
        except Exception:
            return None, output()


def _compile_or_raise(text: str, cflags: list[str], header_source: HeaderSource, what: str) -> _ManualAttachBPF:
    bpf, output = _compile(text, cflags, header_source, what)
    if bpf is None:
        raise ProgramLoadError(f"compile failed:\n{output.strip()}")
    return bpf


def compile_source(text: str, header_source: HeaderSource) -> bcc.BPF:
    """Compile C for BCC as krsid does (headers, environment, guarded), without
    attaching anything; raises ProgramLoadError with clang's output on failure.
    For benchmarks and tests that need programs besides the catalog's."""
    return _compile_or_raise(text, list(header_source.cflags), header_source, "a BPF module")


def _libc_function(name: str, argtypes: list[type]) -> Callable[..., int] | None:
    """The C library's function of that name, returning int; None where it has none."""
    try:
        fn = getattr(ct.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    fn.restype = ct.c_int
    return cast(Callable[..., int], fn)


def release_free_heap() -> bool:
    """Return the C heap's free pages to the kernel (glibc's malloc_trim).

    clang/LLVM free tens of MB when a compile ends, but glibc keeps freed memory in its
    arenas, so the daemon's RSS would stay at the compile's peak for its whole life
    (measured: ~35 MB of the ~175 MB after compiling the catalog). Returns whether
    anything was released; False also where libc has no malloc_trim (not glibc).
    """
    trim = _libc_function("malloc_trim", [ct.c_size_t])
    return trim is not None and bool(trim(0))


PR_SET_THP_DISABLE = 41  # <linux/prctl.h>


def disable_transparent_hugepages() -> bool:
    """Keep the kernel from backing this process's memory with transparent huge pages
    (prctl PR_SET_THP_DISABLE; inherited by children). Returns whether the kernel took it.

    Why: the compile leaves ~40 MB of free chunks scattered through malloc's arenas,
    whose pages release_free_heap returns. Where THP is "always" (Debian's kernels),
    khugepaged then collapses each 2 MB range that still holds a few live pages back
    into a whole huge page, and RSS climbs to the compile's peak again with no page
    touched by krsid (measured in the VM: +12 MB per 500 exec events over 110 MB,
    while malloc's bytes in use stayed at 19 MB and the threads took 150 page faults;
    a malloc_trim gave the 24 MB back). krsid's allocations are small and scattered:
    huge pages buy it nothing.
    """
    prctl = _libc_function("prctl", [ct.c_int, ct.c_ulong, ct.c_ulong, ct.c_ulong, ct.c_ulong])
    return prctl is not None and prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0


BPF_CALLX = 0x8D  # BPF_JMP | BPF_CALL | BPF_X: an indirect call, which no kernel loads


def indirect_calls(bpf: bcc.BPF, fn_name: bytes) -> int:
    """How many indirect-call instructions a compiled function holds.

    An unrewritten map method call compiles fine and is only refused at load time;
    scanning the bytecode catches it on hosts that cannot load LSM programs.
    """
    start = bcc.lib.bpf_function_start(bpf.module, fn_name)
    size = bcc.lib.bpf_function_size(bpf.module, fn_name)
    code = ct.string_at(start, size)
    return sum(1 for i in range(0, len(code), 8) if code[i] == BPF_CALLX)


def _module_for(
    catalog: Catalog, specs: Sequence[HookSpec], settings: BuildSettings, hook_count: int
) -> tuple[str, list[str]]:
    """The module text and compile flags for these programs; hook_count sizes the
    per-hook maps (KRSID_MAX_HOOKS), which user space indexes by hook id."""
    text = module_text(
        specs, catalog.header_text, settings.hook_nargs, settings.extra_source, lanes=catalog.contract.lanes
    )
    return text, compile_flags(catalog, settings, hook_count)


def _programs_named(specs: Sequence[HookSpec]) -> str:
    names = ", ".join(s.name for s in specs)
    return f"the program{'s' if len(specs) != 1 else ''} {names}"


def compile_only(catalog: Catalog, specs: Sequence[HookSpec], settings: BuildSettings) -> None:
    """Compile without loading (works on kernels that refuse LSM programs).

    Also rejects bytecode that no kernel would load (indirect calls).
    """
    text, flags = _module_for(catalog, specs, settings, len(specs))
    bpf = _compile_or_raise(text, flags, settings.header_source, _programs_named(specs))
    try:
        _reject_indirect_calls(bpf, specs)
    finally:
        bpf.cleanup()


def _reject_indirect_calls(bpf: bcc.BPF, specs: Sequence[HookSpec]) -> None:
    for spec in specs:
        n = indirect_calls(bpf, f"lsm__{spec.name}".encode())
        if n:
            raise ProgramLoadError(
                f"{spec.name}: compiled code has {n} indirect call(s), which the verifier refuses "
                "(a map method called where BCC does not rewrite it?)"
            )


def _compile_checked(text: str, cflags: list[str], header_source: HeaderSource, specs: Sequence[HookSpec]) -> None:
    """compile_only's work without the capture: for a child process (isolated_compile)."""
    bpf = _compile_uncaptured(text, cflags, header_source)
    try:
        _reject_indirect_calls(bpf, specs)
    finally:
        bpf.cleanup()


def compile_in_child(
    catalog: Catalog, specs: Sequence[HookSpec], settings: BuildSettings, hook_count: int = 0
) -> ChildCompile:
    """compile_only in a child process: a program that makes LLVM end the process
    ends the child, and the caller learns how (ChildCompile.died)."""
    text, flags = _module_for(catalog, specs, settings, hook_count or len(specs))
    return isolated_compile(functools.partial(_compile_checked, text, flags, settings.header_source, specs))


def compile_each_alone(catalog: Catalog, specs: Sequence[HookSpec], settings: BuildSettings) -> dict[str, ChildCompile]:
    """Compile each program alone, each in a child process; returns the ones that
    failed, with how (see why_not)."""
    failed = {}
    for spec in specs:
        result = compile_in_child(catalog, [spec], settings, hook_count=len(specs))
        if not result.ok:
            failed[spec.name] = result
    return failed


def why_not(result: ChildCompile) -> str:
    """A failed child compile, for a person."""
    why = f"the compiler ended the process ({result.died})" if result.died else "compile failed"
    return f"{why}:\n{result.output.strip()}"


# What bcc's load_func raises for EPERM, whatever the cause: a kernel without "bpf" in
# its active LSMs, lockdown, a missing capability. The cause is for `krsid doctor`.
BCC_EPERM_TEXT = "Need super-user privileges"
EPERM_HINT = "run `krsid doctor` to see why"


def load_error_text(error: Exception, errno_after: int) -> str:
    """A load/attach exception from bcc, for a person; errno_after is ctypes' errno
    right after the failed call (bcc raises plain Exceptions without it)."""
    text = str(error)
    if text.startswith(BCC_EPERM_TEXT):
        return f"the kernel refused to load the BPF-LSM program (EPERM): {EPERM_HINT} (bcc: {text})"
    if errno_after == errno.EPERM and text.startswith("Failed to attach LSM"):
        return f"the kernel refused to attach the BPF-LSM program (EPERM): {EPERM_HINT} (bcc: {text})"
    return text


class LoadedPrograms:
    """The compiled module(s) with their attached programs, maps and event buffer."""

    def __init__(
        self,
        catalog: Catalog,
        specs: Sequence[HookSpec],
        settings: BuildSettings,
        *,
        log: Callable[[str], None] = print,
        compile_marker: Path | None = None,
    ) -> None:
        """compile_marker: a file that says a build is under way (the daemon's state
        dir); left behind by a compile that ended the process, it makes the next
        build find the program responsible before compiling the module."""
        self.catalog = catalog
        self.compile_marker = compile_marker
        self.settings = settings
        self._log = log
        self.specs = list(specs)  # hook id = index in this list
        self.hook_ids = {s.name: i for i, s in enumerate(self.specs)}
        self.status: dict[str, HookStatus] = {}
        self.compile_seconds = 0.0
        self.max_hooks = max(len(self.specs), 1)
        self._bpf: _ManualAttachBPF | None = None
        self._bulk_lane: _BulkLane | None = None  # the bulk lane's own ring buffer manager (open_events)
        self._ring_readers: list[ringbuf.MappedRingBuffer] = []  # both lanes' mappings (open_events)
        self.ring_reader = ""  # how open_events reads the ring buffers: RING_READER_*
        # The watch's pre-filters (krsid_watch_name_filter, krsid_watch_dir_filter,
        # krsid_watch_ino_filter): map -> its nonzero words, as written.
        self._filters: dict[bytes, dict[int, int]] = {}

    # -- build -------------------------------------------------------------------------

    def _module(self, specs: Sequence[HookSpec]) -> tuple[str, list[str]]:
        return _module_for(self.catalog, specs, self.settings, len(self.specs))

    def _compile_specs(self, specs: Sequence[HookSpec]) -> tuple[_ManualAttachBPF | None, str]:
        self.max_hooks = max(len(self.specs), 1)
        text, cflags = self._module(specs)
        return _compile(text, cflags, self.settings.header_source, _programs_named(specs), self.compile_marker)

    def module_key(self) -> str:
        """Digest of what build() compiles first (the compile marker's content)."""
        text, cflags = self._module(self.specs)
        return hashlib.sha256("\0".join([text, *cflags]).encode()).hexdigest()

    def build(self) -> None:
        """Compile all programs together; on failure, find and leave out the broken ones."""
        t0 = time.monotonic()
        key = self.module_key()
        # A marker still holding this module's key: the process ended while compiling
        # it. If a program really ends the compiler, the marker stays (until the
        # module changes), so every start isolates first; if none does (the process
        # was killed), it goes.
        keep_marker = False
        if self._marker_holds(key):
            self._log(
                "an earlier start ended inside the BPF compiler while compiling these programs; "
                "compiling each alone in a child process to find the ones responsible"
            )
            keep_marker = self._leave_out_broken()
        else:
            self._set_marker(key)
        try:
            bpf, output = self._compile_specs(self.specs)
            if bpf is None and len(self.specs) > 1:
                self._leave_out_broken()
                bpf, output = self._compile_specs(self.specs)
        finally:
            if not keep_marker:
                self._set_marker("")
        if bpf is None:
            raise ProgramLoadError("compile failed:\n" + output.strip())
        self.compile_seconds = time.monotonic() - t0
        self._bpf = bpf
        self._filters = {}  # a new module's maps are all zero

    def _leave_out_broken(self) -> bool:
        """Compile each program alone (in child processes); keep those that compile.
        Returns whether one of them ended the compiler's process."""
        failed = compile_each_alone(self.catalog, self.specs, self.settings)
        for hook, result in failed.items():
            self.status[hook] = HookStatus(hook, False, why_not(result))
            self._log(f"{hook}: leaving it out: {why_not(result)}")
        good = [s for s in self.specs if s.name not in failed]
        if not good:
            errors = "; ".join(f"{h}: {why_not(r)}" for h, r in failed.items())
            raise ProgramLoadError(f"no program compiles: {errors}")
        self.specs = good
        self.hook_ids = {s.name: i for i, s in enumerate(good)}
        return any(r.died for r in failed.values())

    def _marker_holds(self, key: str) -> bool:
        """Did the last build of exactly this module end the process?"""
        if self.compile_marker is None:
            return False
        try:
            return self.compile_marker.read_text().strip() == key
        except OSError:
            return False

    def _set_marker(self, key: str) -> None:
        """Write the module's key before compiling it, remove it after ("": remove).
        A key still there at the next start means the compile ended the process."""
        marker = self.compile_marker
        if marker is None:
            return
        try:
            if key:
                marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                marker.write_text(key + "\n")
            else:
                marker.unlink(missing_ok=True)
        except OSError as e:
            self._log(f"cannot {'write' if key else 'remove'} {marker}: {e}")

    def attach(self) -> dict[str, HookStatus]:
        """Load and attach each hook's program on its own; one failure leaves the rest attached."""
        bpf = self._require()
        for spec in self.specs:
            t0 = time.monotonic()
            with captured_stderr() as output:
                try:
                    bpf.attach_lsm(fn_name=f"lsm__{spec.name}".encode())
                    err = ""
                except Exception as e:
                    err = f"{load_error_text(e, ct.get_errno())}\n{output().strip()}".strip()
            self.status[spec.name] = HookStatus(spec.name, not err, err, time.monotonic() - t0)
        return dict(self.status)

    def attach_raw_tracepoint(self, tracepoint: str, fn_name: str) -> None:
        """Attach a raw-tracepoint function of extra_source (the load generator)."""
        self._require().attach_raw_tracepoint(tp=tracepoint.encode(), fn_name=fn_name.encode())

    def table(self, name: str) -> object:
        """A map of the module by name (for tools and benchmarks: bcc table object)."""
        return self._require()[name.encode()]

    def close(self) -> None:
        """Detach everything and free the module. Also what happens on exit/kill: fail-open."""
        if self._bulk_lane is not None:
            self._bulk_lane.close()  # before the module: the manager holds the map's mmap
            self._bulk_lane = None
        for reader in self._ring_readers:
            reader.close()
        self._ring_readers = []
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
        for name, st in self.status.items():
            if st.attached:
                self.status[name] = HookStatus(name, False, "detached")

    # -- maps ----------------------------------------------------------------------------

    def set_options(self, options: Mapping[str, Mapping[str, int | tuple[str, ...]]]) -> None:
        """Write option values: numbers into the hook's slots of krsid_options, string
        sets into the maps the option names (cleared first, so a reload replaces)."""
        bpf = self._require()
        table = bpf[b"krsid_options"]
        for hook, values in options.items():
            if hook not in self.hook_ids:
                continue
            spec = self.specs[self.hook_ids[hook]]
            for name, value in values.items():
                opt = spec.option(name)
                if isinstance(value, tuple):
                    for target in opt.maps:
                        self._fill_set(bpf, target.name, target.key_size, [target.key(v) for v in value])
                    continue
                idx = self.hook_ids[hook] * self.catalog.contract.option_slots + opt.slot
                table[ct.c_int(idx)] = ct.c_uint64(value)

    def set_limits(self, limits: Mapping[str, tuple[int, int]]) -> None:
        """hook -> (rate limit in events/s, 0 = none; dedup window in ms, 0 = none).

        The rate is split over the CPUs (one bucket each, no lock); a bucket holds at
        most one second's worth of its share."""
        table = self._require()[b"krsid_limits"]
        cpus = max(os.cpu_count() or 1, 1)
        for hook, hook_id in self.hook_ids.items():
            rate, window_ms = limits.get(hook, (0, 0))
            values = {"window_ns": window_ms * 1_000_000}
            if rate:
                cost_ns = max(1, 1_000_000_000 * cpus // rate)
                values |= {"cost_ns": cost_ns, "burst_ns": max(cost_ns, 1_000_000_000)}
            leaf = table.Leaf()
            write_leaf(leaf, values)
            table[ct.c_int(hook_id)] = leaf

    def set_fair_share(self, share: FairShareConfig) -> None:
        """Write each lane's fair-share costs (krsid_fair_share_config[lane]); rates of 0
        turn that share off. Costs are per key, not per CPU: a key's bucket is one map entry."""
        table = self._require()[b"krsid_fair_share_config"]

        def cost_burst(rate: int, burst: int) -> tuple[int, int]:
            if not rate:
                return 0, 0
            cost = max(1, 1_000_000_000 // rate)
            return cost, cost * max(burst, 1)

        for lane, lane_no in self.catalog.contract.lanes.items():
            lane_share = share.lane(lane)
            proc_cost, proc_burst = cost_burst(lane_share.process_rate, lane_share.process_burst)
            uid_cost, uid_burst = cost_burst(lane_share.uid_rate, lane_share.uid_burst)
            leaf = table.Leaf()
            write_leaf(
                leaf,
                {
                    "proc_cost_ns": proc_cost,
                    "proc_burst_ns": proc_burst,
                    "uid_cost_ns": uid_cost,
                    "uid_burst_ns": uid_burst,
                    "summary_ns": share.summary_interval_ms * 1_000_000,
                },
            )
            table[ct.c_int(lane_no)] = leaf

    def flood_states(self) -> list[FloodState]:
        """The per-process and per-uid fair-share states that hold folded calls."""
        bpf = self._require()
        out = []
        for scope, map_name in FLOOD_MAPS.items():
            table = bpf[map_name]
            for key, value in table.items():
                if value.pending:
                    out.append(
                        FloodState(
                            scope=scope,
                            hook_id=int(key.hook_id),
                            key_id=int(key.id),
                            pending=int(value.pending),
                            first_ns=int(value.first_ns),
                            last_ns=int(value.last_folded_ns),
                            pid=int(value.pid),
                            tgid=int(value.tgid),
                            uid=int(value.uid),
                            comm=bytes(value.comm).split(b"\0", 1)[0],
                        )
                    )
        return out

    def forget_flood_state(self, state: FloodState) -> None:
        """Delete a key's state once the daemon wrote its summary (a new call starts afresh)."""
        table = self._require()[FLOOD_MAPS[state.scope]]
        key = table.Key()
        key.hook_id = state.hook_id
        key.id = state.key_id
        with contextlib.suppress(KeyError):
            table.__delitem__(key)

    def lane_counters(self) -> dict[str, dict[str, int]]:
        """lane -> {"emitted": records written, "lost": no room}, summed over CPUs."""
        if self._bpf is None:
            return {}
        table = self._bpf[b"krsid_lane_counters"]
        contract = self.catalog.contract
        slots = len(contract.lane_counters)
        return {
            lane: {
                name: int(table.sum(ct.c_int(lane_no * slots + slot)).value)
                for name, slot in contract.lane_counters.items()
            }
            for lane, lane_no in contract.lanes.items()
        }

    @staticmethod
    def _fill_set(bpf: _ManualAttachBPF, map_name: str, key_size: int, keys: list[bytes]) -> None:
        try:
            table = bpf[map_name.encode()]
        except KeyError:
            raise ProgramLoadError(f"option map {map_name!r} is not declared by its program") from None
        if ct.sizeof(table.Key) != key_size:
            raise ProgramLoadError(f"map {map_name}: key is {ct.sizeof(table.Key)} bytes in C, {key_size} in the YAML")
        table.clear()
        for key in keys:
            k = table.Key()
            ct.memmove(ct.byref(k), key, len(key))  # the rest stays zero: NUL padding
            table[k] = table.Leaf(1)

    # -- the file-integrity watch ----------------------------------------------------------

    def set_watch(self, resolved: ResolvedWatch) -> None:
        """Make krsid_watch_files / krsid_watch_names / krsid_watch_dirs (and
        krsid_watch_devs, the devices files are watched on) hold exactly ``resolved``:
        new and changed entries first, stale ones removed after, the entry count last,
        so that an entry in both the old and the new watch is never absent
        (krsid.watch). Devices go in before their files and out after them, so no
        watched file is ever on a device the walk skips."""
        bpf = self._require()
        files, names, devs = bpf[b"krsid_watch_files"], bpf[b"krsid_watch_names"], bpf[b"krsid_watch_devs"]
        dirs = bpf[b"krsid_watch_dirs"]
        per_dev = Counter(dev for dev, _ino in resolved.files)
        have_devs = {int(k.value): k for k in devs}
        for dev, count in per_dev.items():
            devs[ct.c_uint32(dev)] = ct.c_uint32(count)
        want_files = {}
        for (dev, ino), watch_id in resolved.files.items():
            k = files.Key()
            write_leaf(k, {"dev": dev, "ino": ino})
            want_files[bytes(k)] = (k, watch_id)
        want_names = {}
        for name, watch_id in resolved.names.items():
            k = names.Key()
            ct.memmove(ct.byref(k), name, min(len(name), ct.sizeof(k) - 1))  # NUL padding stays
            want_names[bytes(k)] = (k, watch_id)
        want_dirs = {}
        for key, watch_id in resolved.dirs.items():
            if len(key) != ct.sizeof(dirs.Key):
                raise ProgramLoadError(f"krsid_watch_dirs: a key is {ct.sizeof(dirs.Key)} bytes in C, {len(key)} here")
            k = dirs.Key()
            ct.memmove(ct.byref(k), key, len(key))
            want_dirs[key] = (k, watch_id)
        # The pre-filters (of names, of directory names, of inode numbers) cover the old
        # and the new entries while the maps change, and only the new ones after: a
        # watched name, directory or inode is never ruled out by them.
        contract = self.catalog.contract
        new_filters = {
            b"krsid_watch_name_filter": name_filter(resolved.names, contract),
            b"krsid_watch_dir_filter": dir_filter(resolved.dirs, contract),
            b"krsid_watch_ino_filter": ino_filter(resolved.files, contract),
        }
        for map_name, new_words in new_filters.items():
            old_words = self._filters.get(map_name, {})
            both = {w: old_words.get(w, 0) | new_words.get(w, 0) for w in {*old_words, *new_words}}
            self._write_filter(map_name, both)
        for table, want in ((files, want_files), (names, want_names), (dirs, want_dirs)):
            have = {bytes(k): k for k in table}
            for raw, (k, watch_id) in want.items():
                if raw not in have or int(table[have[raw]].value) != watch_id:
                    table[k] = ct.c_uint32(watch_id)
            for raw, k in have.items():
                if raw not in want:
                    del table[k]
        for map_name, new_words in new_filters.items():
            self._write_filter(map_name, new_words)
        for dev, k in have_devs.items():
            if dev not in per_dev:
                del devs[k]
        bpf[b"krsid_watch_count"][ct.c_int(0)] = ct.c_uint64(len(want_files) + len(want_names) + len(want_dirs))

    def _write_filter(self, map_name: bytes, words: Mapping[int, int]) -> None:
        """Make a pre-filter array hold ``words`` (absent words: 0), writing only the
        words that change; self._filters follows each write."""
        table = self._require()[map_name]
        written = self._filters.setdefault(map_name, {})
        for word in sorted({*words, *written}):
            value = words.get(word, 0)
            if written.get(word, 0) != value:
                table[ct.c_int(word)] = ct.c_uint64(value)
                if value:
                    written[word] = value
                else:
                    written.pop(word, None)

    # -- policy --------------------------------------------------------------------------

    def bank_layout(self) -> BankLayout:
        """Where each hook's rules live in the policy maps of this module (krsid.policy.banks)."""
        contract = self.catalog.contract
        return BankLayout(dict(self.hook_ids), self.max_hooks, contract.rules_per_hook, contract.policy_cgroups)

    def rule_index(self, bank: int, hook: str, slot: int) -> int:
        return self.bank_layout().rule_index(bank, hook, slot)

    def active_bank(self) -> int:
        return int(self._require()[b"krsid_policy_bank"][ct.c_int(0)].value) & 1

    def apply_policy(self, per_hook: Mapping[str, Sequence[CompiledRule]]) -> int:
        """Write every hook's rules into the inactive bank, then make it the active one.

        Hook calls see the whole old or the whole new policy, never a mix, and no
        program is detached. Returns the bank that is now active. What goes where is
        the bank layout's (krsid.policy.banks); each slot's hits are cleared when it
        is written.
        """
        bpf = self._require()
        rules = bpf[b"krsid_rules"]
        hits = bpf[b"krsid_rule_hits"]
        layout = self.bank_layout()
        target = layout.other(self.active_bank())
        self._write_cgroups(layout, target, per_hook)
        self._write_dirs(layout, target, per_hook)
        for slot in layout.rule_slots(target, per_hook):
            idx = ct.c_int(slot.index)
            leaf = rules.Leaf()  # all zero: an empty slot ends the hook's list
            write_leaf(leaf, slot.values)
            rules[idx] = leaf
            hits.clearitem(idx)
        bpf[b"krsid_policy_bank"][ct.c_int(0)] = ct.c_uint32(target)
        return target

    def _write_cgroups(self, layout: BankLayout, bank: int, per_hook: Mapping[str, Sequence[CompiledRule]]) -> None:
        """Point the bank's krsid_rule_cgroups entries at the cgroups its rules name,
        and empty the bank's other entries (a cgroup an older policy named is not
        held on to). The kernel takes the cgroup of an open directory: the fd is
        closed after. ConfigError if a directory cannot be opened or is another
        cgroup than the one compiled (removed, or made again, since); the kernel
        refuses a directory that is no cgroup v2."""
        table = self._require()[b"krsid_rule_cgroups"]
        slots = layout.cgroup_slots(bank, per_hook)
        for cgroup, index in slots.items():
            try:
                fd = os.open(cgroup.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as e:
                raise ConfigError(f"cgroup {cgroup.directory}: {e.strerror}") from None
            try:
                if os.fstat(fd).st_ino != cgroup.id:
                    raise ConfigError(f"cgroup {cgroup.directory}: made again while the rules were loaded")
                table[ct.c_int(index)] = fd
            finally:
                os.close(fd)
        first, used = bank * layout.cgroups_per_bank, set(slots.values())
        for index in range(first, first + layout.cgroups_per_bank):
            if index not in used:
                with contextlib.suppress(KeyError):  # bcc's answer for an entry already empty
                    del table[ct.c_int(index)]

    def _write_dirs(self, layout: BankLayout, bank: int, per_hook: Mapping[str, Sequence[CompiledRule]]) -> None:
        """Replace the bank's krsid_dirs entries (the other bank's stay: they are live)."""
        dirs = self._require()[b"krsid_dirs"]
        for key in list(dirs.keys()):
            if layout.bank_of(key.bank_hook) == bank:
                dirs.__delitem__(key)
        for entry in layout.dir_entries(bank, per_hook):
            key = dirs.Key()
            write_leaf(key, entry.key)
            leaf = dirs.Leaf()
            write_leaf(leaf, entry.leaf)
            dirs[key] = leaf

    def rule_hits(self, bank: int, hook: str, slot: int) -> int:
        if self._bpf is None or hook not in self.hook_ids:
            return 0
        return int(self._bpf[b"krsid_rule_hits"].sum(ct.c_int(self.rule_index(bank, hook, slot))).value)

    def seed_sequence(self, last_seq: int) -> None:
        self._require()[b"krsid_seq"][ct.c_int(0)] = ct.c_uint64(last_seq)

    def current_sequence(self) -> int:
        return int(self._require()[b"krsid_seq"][ct.c_int(0)].value)

    def hook_counters(self) -> dict[str, dict[str, int]]:
        if self._bpf is None:
            return {}
        table = self._bpf[b"krsid_counters"]
        counters = self.catalog.contract.counters  # enum krsid_counter, in slot order
        out: dict[str, dict[str, int]] = {}
        for hook, hook_id in self.hook_ids.items():
            out[hook] = {
                name: int(table.sum(ct.c_int(hook_id * len(counters) + slot)).value)
                for slot, name in enumerate(counters)
            }
        return out

    def program_fds(self) -> dict[str, int]:
        """hook -> fd of its loaded program (for bpf_prog_info run-time stats)."""
        if self._bpf is None:
            return {}
        out = {}
        for hook in self.hook_ids:
            fn = self._bpf.funcs.get(f"lsm__{hook}".encode())
            if fn is not None:
                out[hook] = int(fn.fd)
        return out

    def attached(self) -> dict[str, bool]:
        return {h: s.attached for h, s in self.status.items()}

    # -- events --------------------------------------------------------------------------

    def open_events(
        self, on_record: Mapping[str, Callable[[bytes], None]], on_lost: Callable[[int], None]
    ) -> EventTransport:
        """Deliver each raw record (bytes) to the callback of the lane it came from
        (on_record: lane -> callback; the perf buffer is one lane, "priority"); on_lost
        gets perf-buffer loss counts. Returns the buffers as one EventTransport, which
        the poll loop drives: the priority lane is read first on every wake-up."""
        bpf = self._require()
        string_at = ct.string_at
        if self.settings.use_perfbuf:
            priority = on_record[LANE_PRIORITY]

            def perf_cb(_cpu: int, data: int, size: int) -> None:
                priority(string_at(data, size))

            bpf[LANE_MAPS[LANE_PRIORITY]].open_perf_buffer(
                perf_cb, page_cnt=self.settings.ringbuf_pages, lost_cb=on_lost
            )
            return PerfBufferTransport(lambda timeout_ms: bpf.perf_buffer_poll(timeout=timeout_ms))

        if ringbuf.ENABLED and ringbuf.usable():
            # Both lanes read straight from their mappings (pipeline.ringbuf): no
            # callback per record.
            lanes = {
                lane: ringbuf.MappedRingBuffer(
                    int(bpf[LANE_MAPS[lane]].map_fd), int(bpf[LANE_MAPS[lane]].max_entries), on_record[lane]
                )
                for lane in LANES
            }
            self._ring_readers = list(lanes.values())
            self.ring_reader = RING_READER_MAPPED
            return RingBufferTransport(
                RingLane(lanes[LANE_PRIORITY].fd, lanes[LANE_PRIORITY].consume),
                RingLane(lanes[LANE_BULK].fd, lanes[LANE_BULK].consume),
            )

        # Where the mapped reader is not safe (no TSO) or is turned off (ringbuf.ENABLED):
        # libbpf's callbacks. The priority lane in bcc's own ring buffer manager; the
        # bulk lane in a manager of its own, so that it can be read in bounded batches
        # (RingBufferTransport).
        priority = on_record[LANE_PRIORITY]

        def priority_cb(_ctx: int, data: int, size: int) -> int:
            priority(string_at(data, size))
            return 0

        events = bpf[LANE_MAPS[LANE_PRIORITY]]
        events.open_ring_buffer(priority_cb)

        def consume_priority(_limit: int) -> int:
            bpf.ring_buffer_consume()
            return 0

        self._bulk_lane = _BulkLane(int(bpf[LANE_MAPS[LANE_BULK]].map_fd), on_record[LANE_BULK])
        self.ring_reader = RING_READER_LIBBPF
        return RingBufferTransport(
            RingLane(int(events.map_fd), consume_priority),
            RingLane(self._bulk_lane.fd, self._bulk_lane.consume),
        )

    def _require(self) -> _ManualAttachBPF:
        if self._bpf is None:
            raise ProgramLoadError("programs are not built")
        return self._bpf
