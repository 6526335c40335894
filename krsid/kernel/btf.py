"""A small reader of the kernel's raw BTF blob (/sys/kernel/btf/vmlinux).

krsid needs a handful of facts from the running kernel's type information: which
LSM hooks exist (the ``bpf_lsm_<hook>`` functions), their argument counts, the BTF id
of a hook (for the raw BPF_PROG_LOAD in ``krsid doctor``) and struct layouts (to
check that a header tree generated from BTF gives the same offsets).  Pulling in
libbpf or parsing bpftool output for that would add a dependency or a subprocess
to every start; the format is simple enough to read with the standard library.

Format reference: Documentation/bpf/btf.rst in the kernel tree.  Only base BTF is
supported (vmlinux); split BTF (modules) refers to the base's types and strings.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from krsid.errors import HeaderError, UnsupportedKernelError

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
LSM_PREFIX = "bpf_lsm_"
_BtfT = TypeVar("_BtfT", bound="Btf")  # load() and from_bytes() of a subclass return the subclass

BTF_MAGIC = 0xEB9F
_HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type/str off+len

# BTF_KIND_* values (include/uapi/linux/btf.h).
KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19

# Size in 32-bit words of the data that follows the 3-word btf_type record, as
# (fixed words, words per vlen item).  Indexed by kind.  None marks a kind this
# reader does not know: its size cannot be computed, so nothing after it could be
# read either, and guessing would silently yield wrong types.
_TRAILER: tuple[tuple[int, int] | None, ...] = (
    None,  # 0 UNKN: never a valid kind for an entry in the type section
    (1, 0),  # INT: encoding word
    (0, 0),  # PTR
    (3, 0),  # ARRAY: btf_array
    (0, 3),  # STRUCT: btf_member[vlen]
    (0, 3),  # UNION
    (0, 2),  # ENUM: btf_enum[vlen]
    (0, 0),  # FWD
    (0, 0),  # TYPEDEF
    (0, 0),  # VOLATILE
    (0, 0),  # CONST
    (0, 0),  # RESTRICT
    (0, 0),  # FUNC (vlen is the linkage, no trailer)
    (0, 2),  # FUNC_PROTO: btf_param[vlen]
    (1, 0),  # VAR: linkage
    (0, 3),  # DATASEC: btf_var_secinfo[vlen]
    (0, 0),  # FLOAT
    (1, 0),  # DECL_TAG: component_idx
    (0, 0),  # TYPE_TAG
    (0, 3),  # ENUM64: btf_enum64[vlen]
)

# Qualifiers that do not change layout or identity of the type beneath them.
_TRANSPARENT = frozenset({KIND_CONST, KIND_VOLATILE, KIND_RESTRICT, KIND_TYPE_TAG})


@dataclass(frozen=True)
class Member:
    """One member of a struct/union as offsetof() sees it.

    bit_offset is from the start of the outermost named struct/union (anonymous
    members flattened in); bitfield_size is 0 for ordinary members.
    """

    name: str
    bit_offset: int
    bitfield_size: int


@dataclass(frozen=True)
class Composite:
    """A struct or union from BTF, with anonymous nested members flattened in."""

    kind: str  # 'struct' | 'union'
    name: str  # '' for an anonymous type
    size: int  # bytes
    members: list[Member]
    type_id: int = 0


@dataclass(frozen=True, eq=False)
class Btf:
    """Parsed base BTF.  Types are decoded lazily from the raw words on access.

    Loading only indexes where each type record starts: decoding all ~130k types
    of vmlinux into Python objects up front would cost seconds, and callers only
    need a few functions or one pass over the composites.
    """

    path: Path
    words: array[int] = field(repr=False)  # the type section as native u32 words
    strings: bytes = field(repr=False)
    starts: array[int] = field(repr=False)  # starts[id] = word index of type id (id >= 1)
    _func_ids: dict[str, int] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls: type[_BtfT], path: Path = VMLINUX_BTF) -> _BtfT:
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            if path == VMLINUX_BTF:
                raise UnsupportedKernelError(
                    f"{path} does not exist: this kernel was built without "
                    "CONFIG_DEBUG_INFO_BTF=y, which BPF-LSM programs need to attach"
                ) from None
            raise HeaderError(f"BTF file {path} does not exist") from None
        except OSError as exc:
            raise HeaderError(f"cannot read BTF file {path}: {exc.strerror}") from exc
        return cls.from_bytes(blob, path)

    @classmethod
    def from_bytes(cls: type[_BtfT], blob: bytes, path: Path = Path("<bytes>")) -> _BtfT:
        def bad(why: str) -> HeaderError:
            return HeaderError(f"malformed BTF in {path}: {why}")

        if len(blob) < _HEADER.size:
            raise bad(f"{len(blob)} bytes is shorter than the {_HEADER.size}-byte header")
        # The blob is in the kernel's byte order; detect it from the magic so a
        # foreign-endian file is read right (or rejected) instead of misparsed.
        if int.from_bytes(blob[:2], "little") == BTF_MAGIC:
            order = "<"
        elif int.from_bytes(blob[:2], "big") == BTF_MAGIC:
            order = ">"
        else:
            raise bad(f"bad magic 0x{blob[0]:02x}{blob[1]:02x} (want 0x{BTF_MAGIC:04x})")
        hdr = struct.Struct(order + _HEADER.format[1:])
        _magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = hdr.unpack_from(blob)
        if version != 1:
            raise bad(f"unsupported BTF version {version}")
        if hdr_len < _HEADER.size or hdr_len > len(blob):
            raise bad(f"header length {hdr_len} out of range")
        t0, s0 = hdr_len + type_off, hdr_len + str_off
        if t0 + type_len > len(blob) or s0 + str_len > len(blob):
            raise bad(
                f"sections end beyond the {len(blob)}-byte file (truncated?): "
                f"types {t0}+{type_len}, strings {s0}+{str_len}"
            )
        if type_len % 4:
            raise bad(f"type section length {type_len} is not a multiple of 4")
        strings = blob[s0 : s0 + str_len]
        # Base BTF's string section starts with the empty string (offset 0 = no
        # name) and every string is NUL-terminated.
        if not strings or strings[0] != 0 or strings[-1] != 0:
            raise bad("string section is empty or not NUL-delimited")

        words = array("I", blob[t0 : t0 + type_len])
        if words.itemsize != 4:  # pragma: no cover - no such Linux platform
            raise HeaderError("array('I') is not 32-bit on this platform")
        if (order == "<") != (sys.byteorder == "little"):
            words.byteswap()

        starts = array("I", [0])  # id 0 is void and has no record
        n = len(words)
        i = 0
        trailer = _TRAILER
        nkinds = len(trailer)
        # Hot loop (~130k iterations for vmlinux): keep it to local lookups.
        while i < n:
            if i + 3 > n:
                raise bad(f"type record {len(starts)} is truncated")
            starts.append(i)
            info = words[i + 1]
            kind = (info >> 24) & 0x1F
            spec = trailer[kind] if kind < nkinds else None
            if spec is None:
                raise UnsupportedKernelError(
                    f"BTF in {path} has type kind {kind} (type id {len(starts) - 1}) "
                    "that krsid does not know; a newer krsid is needed for this kernel"
                )
            i += 3 + spec[0] + spec[1] * (info & 0xFFFF)
        if i != n:
            raise bad(f"last type record (id {len(starts) - 1}) runs past the type section")
        return cls(path=path, words=words, strings=strings, starts=starts)

    # ---------------------------------------------------------------- accessors
    @property
    def type_count(self) -> int:
        """Number of type ids including 0 (void)."""
        return len(self.starts)

    def _rec(self, tid: int) -> int:
        if not 0 < tid < len(self.starts):
            raise HeaderError(f"malformed BTF in {self.path}: reference to type id {tid}")
        return self.starts[tid]

    def kind(self, tid: int) -> int:
        if tid == 0:
            return 0
        return (self.words[self._rec(tid) + 1] >> 24) & 0x1F

    def _str(self, off: int) -> str:
        end = self.strings.find(b"\0", off)
        if off >= len(self.strings) or end < 0:
            raise HeaderError(f"malformed BTF in {self.path}: string offset {off} out of range")
        return self.strings[off:end].decode("utf-8", "replace")

    def name(self, tid: int) -> str:
        if tid == 0:
            return ""
        return self._str(self.words[self._rec(tid)])

    def _vlen(self, tid: int) -> int:
        return self.words[self._rec(tid) + 1] & 0xFFFF

    def _ref(self, tid: int) -> int:
        """The size_or_type word: the referenced type id for PTR/TYPEDEF/FUNC/..."""
        return self.words[self._rec(tid) + 2]

    def _strip(self, tid: int, *, typedefs: bool = False) -> int:
        """Follow qualifiers (and optionally typedefs) to the underlying type."""
        for _ in range(64):  # BTF can be cyclic only when malformed; do not hang
            k = self.kind(tid)
            if k in _TRANSPARENT or (typedefs and k == KIND_TYPEDEF):
                tid = self._ref(tid)
            else:
                return tid
        raise HeaderError(f"malformed BTF in {self.path}: qualifier loop at type id {tid}")

    # ------------------------------------------------------------- functions
    def _funcs(self) -> dict[str, int]:
        if not self._func_ids:
            words, strings, starts = self.words, self.strings, self.starts
            found: dict[str, int] = {}
            for tid in range(1, len(starts)):
                i = starts[tid]
                if (words[i + 1] >> 24) & 0x1F == KIND_FUNC:
                    off = words[i]
                    name = strings[off : strings.find(b"\0", off)].decode("utf-8", "replace")
                    # Static functions can repeat a name; keep the first like libbpf's
                    # btf__find_by_name_kind() does, so ids match what libbpf attaches to.
                    found.setdefault(name, tid)
            self._func_ids.update(found)
        return self._func_ids

    def func_id(self, name: str) -> int:
        """BTF type id of FUNC `name` (what BPF_PROG_LOAD wants as attach_btf_id)."""
        try:
            return self._funcs()[name]
        except KeyError:
            raise HeaderError(f"function {name!r} is not in the BTF of {self.path}") from None

    def lsm_hooks(self) -> list[str]:
        """LSM hook names that a BPF-LSM program can attach to, sorted.

        The kernel generates one ``bpf_lsm_<hook>`` stub per hook and BPF-LSM
        attaches to those, so the set of FUNCs with that prefix is the set of hooks
        this kernel offers.
        """
        return sorted(n[len(LSM_PREFIX) :] for n in self._funcs() if n.startswith(LSM_PREFIX))

    def func_arity(self, name: str) -> int:
        """Number of parameters of FUNC `name` (a variadic function's ``...`` counts as one)."""
        proto = self._ref(self.func_id(name))
        if self.kind(proto) != KIND_FUNC_PROTO:
            raise HeaderError(f"malformed BTF in {self.path}: {name} has no FUNC_PROTO")
        return self._vlen(proto)

    # ------------------------------------------------------------ composites
    def composites(self) -> Iterator[Composite]:
        """Every struct and union, in type-id order, members flattened."""
        words = self.words
        for tid in range(1, len(self.starts)):
            k = (words[self.starts[tid] + 1] >> 24) & 0x1F
            if k in (KIND_STRUCT, KIND_UNION):
                yield self.composite(tid)

    def struct(self, name: str) -> Composite | None:
        """The struct of that name (the first, in type-id order), None if this BTF has none."""
        return next((c for c in self.composites() if c.name == name and c.kind == "struct"), None)

    def composite(self, tid: int) -> Composite:
        k = self.kind(tid)
        if k not in (KIND_STRUCT, KIND_UNION):
            raise HeaderError(f"type id {tid} in {self.path} is not a struct or union")
        members: list[Member] = []
        self._flatten(tid, 0, members, 0)
        return Composite(
            kind="struct" if k == KIND_STRUCT else "union",
            name=self.name(tid),
            size=self._ref(tid),
            members=members,
            type_id=tid,
        )

    def _flatten(self, tid: int, base_bits: int, out: list[Member], depth: int) -> None:
        if depth > 32:
            raise HeaderError(f"malformed BTF in {self.path}: anonymous members nest too deep")
        rec = self._rec(tid)
        info = self.words[rec + 1]
        kflag = info >> 31
        words = self.words
        for j in range(info & 0xFFFF):
            m = rec + 3 + 3 * j
            name_off, mtype, moff = words[m], words[m + 1], words[m + 2]
            if kflag:
                # kind_flag structs pack the bitfield size into the top byte.
                bits, off = moff >> 24, moff & 0xFFFFFF
            else:
                # Without kind_flag a bitfield is an INT whose encoding says fewer
                # bits than its size (old-style BTF; pahole uses kind_flag today).
                bits, off = self._int_bitfield(mtype), moff
            if name_off:
                out.append(Member(self._str(name_off), base_bits + off, bits))
                continue
            inner = self._strip(mtype)
            # An unnamed member is either an anonymous struct/union, whose members C
            # lets you name directly (flatten them), or unnamed bitfield padding,
            # which has no name to check and is skipped.
            if self.kind(inner) in (KIND_STRUCT, KIND_UNION):
                self._flatten(inner, base_bits + off, out, depth + 1)

    def _int_bitfield(self, mtype: int) -> int:
        t = self._strip(mtype, typedefs=True)
        if self.kind(t) != KIND_INT:
            return 0
        enc = self.words[self._rec(t) + 3]
        nbits, int_off = enc & 0xFF, (enc >> 16) & 0xFF
        return nbits if (nbits != self._ref(t) * 8 or int_off) else 0


def lsm_hook_arity(path: Path = VMLINUX_BTF) -> dict[str, int]:
    """hook -> number of arguments of bpf_lsm_<hook> on this kernel.

    An LSM program finds the previous verdict right after the arguments in its
    context, so programs need this count; it changes between kernels.
    """
    btf = Btf.load(path)
    return {hook: btf.func_arity("bpf_lsm_" + hook) for hook in btf.lsm_hooks()}
