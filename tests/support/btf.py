"""The parts of a BTF reader only the tests need: C spellings of types and enum values.

krsid itself needs only argument counts, ids and layouts from BTF (krsid.kernel.btf);
the tests cross-check that reader against bpftool by the parameters' names and C
types, and check krsid's BPF constants against the kernel's enums.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from krsid.errors import HeaderError
from krsid.kernel.btf import (
    KIND_ARRAY,
    KIND_CONST,
    KIND_ENUM,
    KIND_ENUM64,
    KIND_FLOAT,
    KIND_FUNC,
    KIND_FUNC_PROTO,
    KIND_FWD,
    KIND_INT,
    KIND_PTR,
    KIND_RESTRICT,
    KIND_STRUCT,
    KIND_TYPE_TAG,
    KIND_TYPEDEF,
    KIND_UNION,
    KIND_VOLATILE,
    Btf,
)

_QUALIFIERS = {KIND_CONST: "const", KIND_VOLATILE: "volatile", KIND_RESTRICT: "restrict"}


class DescribingBtf(Btf):
    """Btf plus what tests compare: (name, C type) of a function's parameters, the C
    spelling of a type, and an enum's values. Load it as Btf: DescribingBtf.load()."""

    def func_params(self, name: str) -> list[tuple[str, str]]:
        """(name, C type) of each parameter of FUNC `name`."""
        proto = self._ref(self.func_id(name))
        if self.kind(proto) != KIND_FUNC_PROTO:
            raise HeaderError(f"malformed BTF in {self.path}: {name} has no FUNC_PROTO")
        base = self._rec(proto) + 3
        out = []
        for j in range(self._vlen(proto)):
            pname_off, ptype = self.words[base + 2 * j], self.words[base + 2 * j + 1]
            if ptype == 0:  # a trailing void param marks a variadic function
                out.append(("", "..."))
            else:
                out.append((self._str(pname_off), self.type_str(ptype)))
        return out

    # ------------------------------------------------------------ type names
    def type_str(self, tid: int, declarator: str = "") -> str:
        """C spelling of type `tid`, optionally wrapped around a declarator.

        Built inside-out like C declarators are read, so pointers to arrays and
        functions come out parenthesised correctly (``int (*)(struct file *)``).
        """
        return self._decl(tid, declarator, 0).strip()

    def _decl(self, tid: int, decl: str, depth: int) -> str:
        if depth > 64:
            raise HeaderError(f"malformed BTF in {self.path}: type nesting too deep at {tid}")
        k = self.kind(tid)
        sp = (" " + decl) if decl else ""
        if k == 0:
            return "void" + sp
        if k in (KIND_INT, KIND_FLOAT, KIND_TYPEDEF):
            return self.name(tid) + sp
        if k in (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FWD):
            if k == KIND_FWD:
                tag = "union" if self.words[self._rec(tid) + 1] >> 31 else "struct"
            else:
                tag = {KIND_STRUCT: "struct", KIND_UNION: "union"}.get(k, "enum")
            return f"{tag} {self.name(tid) or '(anon)'}{sp}"
        if k == KIND_PTR:
            target = self._strip(self._ref(tid))
            inner = "*" + decl
            if self.kind(target) in (KIND_ARRAY, KIND_FUNC_PROTO):
                inner = f"({inner})"
            return self._decl(self._ref(tid), inner, depth + 1)
        if k in _QUALIFIERS:
            ref = self._ref(tid)
            if self.kind(self._strip(ref)) == KIND_PTR:
                # A qualifier on a pointer binds to the pointer: `char *const p`.
                return self._decl(ref, f"{_QUALIFIERS[k]} {decl}".strip(), depth + 1)
            return f"{_QUALIFIERS[k]} {self._decl(ref, decl, depth + 1)}"
        if k == KIND_TYPE_TAG:
            return self._decl(self._ref(tid), decl, depth + 1)
        if k == KIND_ARRAY:
            elem, _index, nelems = self.words[self._rec(tid) + 3 : self._rec(tid) + 6]
            return self._decl(elem, f"{decl}[{nelems}]", depth + 1)
        if k == KIND_FUNC_PROTO:
            base = self._rec(tid) + 3
            params = []
            for j in range(self._vlen(tid)):
                ptype = self.words[base + 2 * j + 1]
                params.append("..." if ptype == 0 else self.type_str(ptype))
            return self._decl(self._ref(tid), f"{decl}({', '.join(params) or 'void'})", depth + 1)
        if k == KIND_FUNC:
            return self._decl(self._ref(tid), self.name(tid) + decl, depth + 1)
        return f"<kind {k}>{sp}"

    # ------------------------------------------------------------- enums
    def enum_values(self, name: str) -> dict[str, int]:
        """Enumerators of the (first) enum named `name`; used to cross-check UAPI
        constants krsid hardcodes (prog types, attach types)."""
        for tid in range(1, len(self.starts)):
            k = self.kind(tid)
            if k in (KIND_ENUM, KIND_ENUM64) and self.name(tid) == name:
                base = self._rec(tid) + 3
                signed = bool(self.words[self._rec(tid) + 1] >> 31)
                out: dict[str, int] = {}
                for j in range(self._vlen(tid)):
                    if k == KIND_ENUM:
                        noff, val = self.words[base + 2 * j], self.words[base + 2 * j + 1]
                        if signed and val >= 1 << 31:
                            val -= 1 << 32
                    else:
                        noff = self.words[base + 3 * j]
                        val = self.words[base + 3 * j + 1] | self.words[base + 3 * j + 2] << 32
                        if signed and val >= 1 << 63:
                            val -= 1 << 64
                    out[self._str(noff)] = val
                return out
        raise HeaderError(f"enum {name!r} is not in the BTF of {self.path}")


def mnt_namespace_ns_first(btf: Btf) -> bool:
    """Whether the kernel's struct mnt_namespace begins with its ns_common, as
    programs/file_open.c assumes with kernel headers (fs/mount.h, where it is
    defined, is not installed). False also when BTF has no such struct."""
    c = btf.struct("mnt_namespace")
    return c is not None and any(m.name == "ns" and m.bit_offset == 0 for m in c.members)


def ovl_upperdentry_follows_vfs_inode(overlay_types: list[dict[str, Any]], inode_size: int) -> bool:
    """Whether struct ovl_inode's __upperdentry lies right after its vfs_inode (of
    inode_size bytes), as programs/bprm_check_security.c assumes (fs/overlayfs/
    ovl_entry.h is not installed). overlay_types: the "types" of `bpftool -j btf dump`
    of the overlay module's BTF (or of vmlinux, when overlayfs is built in). False also
    when there is no such struct."""
    for t in overlay_types:
        if t.get("kind") == "STRUCT" and t.get("name") == "ovl_inode":
            at = {m.get("name"): m.get("bits_offset") for m in t.get("members", [])}
            vfs, upper = at.get("vfs_inode"), at.get("__upperdentry")
            return isinstance(vfs, int) and upper == vfs + 8 * inode_size
    return False


def overlay_btf_types(bpftool: Path, btf_dir: Path = Path("/sys/kernel/btf")) -> list[dict[str, Any]]:
    """The types of overlayfs' BTF as bpftool's JSON shows them: the module's split
    BTF (bpftool reads vmlinux as its base) or, for a built-in overlayfs, vmlinux's."""
    module = btf_dir / "overlay"
    path = module if module.exists() else btf_dir / "vmlinux"
    out = subprocess.run([str(bpftool), "-j", "btf", "dump", "file", str(path)], capture_output=True, check=True)
    types: list[dict[str, Any]] = json.loads(out.stdout)["types"]
    return types


def struct_size(btf: Btf, name: str) -> int:
    """sizeof(struct name) in this BTF."""
    c = btf.struct(name)
    if c is None:
        raise HeaderError(f"struct {name} is not in the BTF of {btf.path}")
    return c.size
