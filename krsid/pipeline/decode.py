"""Raw records -> Event objects (krsid.event), using layouts derived from the C structs.

Each hook gets a precompiled plan: one ``struct.Struct`` unpack for the whole record,
then a converter per field chosen from the sidecar YAML's field types. Nothing here
is per-hook code.
"""

from __future__ import annotations

import errno
import ipaddress
import operator
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

from krsid.catalog import FieldSpec, HookSpec
from krsid.event import Event, Value
from krsid.memo import Memo

_HOOK_ID = struct.Struct("<I")
HOOK_ID_OFFSET = 24  # seq (8) + ktime_ns (8) + cgroup_id (8); checked against the layout below


class DecodeError(ValueError):
    """A record that cannot be decoded: unknown hook id or short record."""


def _c_strings(raw: bytes) -> tuple[bytes, ...]:
    """NUL-separated strings (argv, envp) up to the first empty one; the kernel side
    writes them back to back and zero-fills the rest."""
    end = raw.find(b"\0\0")
    body = raw if end < 0 else raw[:end]
    return tuple(body.split(b"\0")) if body else ()


def _sized_strings(raw: bytes, used: int) -> tuple[bytes, ...]:
    """NUL-terminated strings in the first ``used`` bytes: empty strings included
    (argv may hold ""), which _c_strings cannot tell from the zero fill."""
    body = raw[:used]
    if body.endswith(b"\0"):
        body = body[:-1]
    return tuple(body.split(b"\0")) if used else ()


def _ipv4(value: object) -> str:
    # A __u32 as the kernel stores sin_addr (network byte order, read little-endian
    # here) or 4 raw bytes: either way the bytes in memory are the address in order.
    raw = value if isinstance(value, bytes) else int(value).to_bytes(4, "little")  # type: ignore[call-overload]
    return str(ipaddress.IPv4Address(raw))


def _ipv6(value: object) -> str:
    return str(ipaddress.IPv6Address(bytes(value)))  # type: ignore[call-overload]


def _errno(value: object) -> str:
    n = int(value)  # type: ignore[call-overload]
    if n == 0:
        return "0"
    name = errno.errorcode.get(abs(n), str(abs(n)))
    return f"-{name}" if n < 0 else name


def _c_string(raw: bytes) -> bytes:
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def _flags(values: tuple[tuple[str, int], ...], zero: str) -> Callable[[int], str]:
    def render(n: int) -> str:
        names = [name for name, bit in values if bit and n & bit == bit]
        rest = n
        for name, bit in values:
            if name in names:
                rest &= ~bit
        if rest:
            names.append(hex(rest))
        return "|".join(names) if names else (zero or "0")

    return render


def _enum(values: tuple[tuple[str, int], ...]) -> Callable[[int], str]:
    table = {v: name for name, v in values}
    return lambda n: table.get(n, str(n))


def _no_watch(watch_id: int) -> str:
    return "" if watch_id == 0 else f"unknown-{watch_id}"


# String fields (comm, tty, names, paths: 16 to 256 bytes) are memoized by their raw
# bytes, in one memo for every string field of every hook: its bound is then the
# memory they can take all together (4,096 entries, ~2 MB at 256 bytes each), whatever
# comms or names a process makes up; per-field memos could hold tens of MB.
_strings: Memo[bytes, bytes] = Memo(_c_string)

Converter = Callable[[Any], Value]


def _converter(f: FieldSpec, hook_names: Mapping[int, str], watch_entry: Callable[[int], str]) -> Converter:
    """The function that turns a field's raw member into its value. Where values
    repeat it is a Memo's C-level lookup (krsid.memo): no Python call per field."""
    if f.kind == "hook":
        return Memo(lambda n: hook_names.get(n, f"unknown-{n}")).__getitem__
    if f.kind == "watch":
        return watch_entry  # the live watch table's: a reload changes its answers
    if f.kind == "string":
        return _strings.__getitem__
    if f.kind == "strings":
        return _c_strings
    if f.kind == "ipv4":
        return Memo(_ipv4).__getitem__
    if f.kind == "ipv6":
        return Memo(_ipv6).__getitem__
    if f.kind == "errno":
        return Memo(_errno).__getitem__
    if f.kind == "hex":
        return hex
    if f.kind == "flags":
        return Memo(_flags(f.values, f.zero)).__getitem__
    if f.kind == "enum":
        return Memo(_enum(f.values)).__getitem__
    if f.kind == "bool":
        mask = f.mask
        return Memo(lambda n: bool(n & mask)).__getitem__
    return int


# converter(value) for each pair, called from C by map(): operator.call (3.11+).
_call: Callable[[Converter, Any], Value] = getattr(operator, "call", None) or (lambda conv, raw: conv(raw))


class _Plan:
    """One hook's decode recipe, built once: the hot path is one unpack, a dict of the
    fields as unpacked, and one update with the converted ones (map over C-level
    converters: no Python frame per field)."""

    __slots__ = (
        "converted",
        "converters",
        "ktime_index",
        "min_size",
        "names",
        "pick",
        "pick_converted",
        "seq_index",
        "sized",
        "spec",
        "unpack",
    )

    def __init__(self, spec: HookSpec, hook_names: Mapping[int, str], watch_entry: Callable[[int], str]) -> None:
        self.spec = spec
        self.unpack = spec.layout.unpacker.unpack_from
        self.min_size = spec.layout.size
        index = {m.name: i for i, m in enumerate(spec.layout.members)}
        self.seq_index = index["seq"]
        self.ktime_index = index["ktime_ns"]
        shown = [f for f in spec.fields if f.kind != "hidden"]
        self.names = tuple(f.name for f in shown)
        self.pick = _getter([index[f.member] for f in shown])
        # Integer fields come out of struct.unpack final; only the others are converted
        # (same keys: the field order is kept). A rule field stays the rule's number
        # here: the pipeline names the rule (flow).
        converted = [f for f in shown if f.kind not in ("int", "rule") and not f.length]
        self.converted = tuple(f.name for f in converted)
        self.converters = tuple(_converter(f, hook_names, watch_entry) for f in converted)
        self.pick_converted = _getter([index[f.member] for f in converted])
        # String lists with a byte count: (field, index of the bytes, index of the count).
        self.sized = tuple((f.name, index[f.member], index[f.length]) for f in shown if f.length)


def _getter(indices: list[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """The items at indices, always as a tuple: itemgetter of one index returns the item
    itself, so one index is asked for twice (zip and map stop at the names' end)."""
    if not indices:
        return lambda _t: ()
    return operator.itemgetter(*indices, indices[0])


class EventDecoder:
    """Decodes records of the hooks compiled into one module, keyed by hook id."""

    def __init__(
        self,
        hooks_by_id: Mapping[int, HookSpec],
        *,
        boot_to_epoch: float | None = None,
        watch_entry: Callable[[int], str] = _no_watch,
    ) -> None:
        """watch_entry: a watch id -> the watched path, name or directory name (the daemon's WatchTable)."""
        for spec in hooks_by_id.values():
            if spec.layout.member("hook_id").offset != HOOK_ID_OFFSET:
                raise ValueError(f"{spec.name}: hook_id is not at offset {HOOK_ID_OFFSET}")
        hook_names = {i: s.name for i, s in hooks_by_id.items()}
        self._plans = {i: _Plan(s, hook_names, watch_entry) for i, s in hooks_by_id.items()}
        # CLOCK_BOOTTIME -> epoch: computed once; the kernel stamps events with boot time.
        self._boot_to_epoch = (
            boot_to_epoch if boot_to_epoch is not None else time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        )

    def hook_of(self, raw: bytes) -> HookSpec | None:
        if len(raw) < HOOK_ID_OFFSET + 4:
            return None
        plan = self._plans.get(_HOOK_ID.unpack_from(raw, HOOK_ID_OFFSET)[0])
        return plan.spec if plan else None

    def decode(self, raw: bytes) -> Event:
        if len(raw) < HOOK_ID_OFFSET + 4:
            raise DecodeError(f"record of {len(raw)} bytes is shorter than the event header")
        hook_id = _HOOK_ID.unpack_from(raw, HOOK_ID_OFFSET)[0]
        plan = self._plans.get(hook_id)
        if plan is None:
            raise DecodeError(f"record names unknown hook id {hook_id}")
        if len(raw) < plan.min_size:
            raise DecodeError(f"{plan.spec.name}: record of {len(raw)} bytes, layout needs {plan.min_size}")
        t = plan.unpack(raw)
        values: dict[str, Value] = dict(zip(plan.names, plan.pick(t)))
        values.update(zip(plan.converted, map(_call, plan.converters, plan.pick_converted(t))))
        for name, at, used in plan.sized:
            values[name] = _sized_strings(t[at], t[used])
        return Event(plan.spec, values, self._boot_to_epoch + t[plan.ktime_index] / 1e9, t[plan.seq_index])
