"""Event layouts, derived from the C source: the struct is written once, in C.

A program's event struct is flat: it begins with KRSID_EVENT_HEADER (defined in
programs/include/krsid.h) and continues with one integer or ``char name[N]`` member
per line, or a member group of krsid.h (a ``KRSID_<NAME>_MEMBERS`` macro, e.g. the
new name in a directory of the inode_mkdir-like hooks), expanded in place. That
restriction (the same one bcc's ``table.event()`` has) keeps this parser small. It
is not trusted blindly: :func:`layout_asserts` emits one
``_Static_assert(offsetof(...))`` per member, which the loader appends to every
compile, so clang proves this layout on the exact kernel headers in use.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from krsid.csource import IDENT, parse_defines, strip_comments
from krsid.errors import CatalogError

# C integer types an event member may use: (struct format char, size).
INTEGER_TYPES: Mapping[str, tuple[str, int]] = {
    "__u8": ("B", 1),
    "__s8": ("b", 1),
    "u8": ("B", 1),
    "s8": ("b", 1),
    "__u16": ("H", 2),
    "__s16": ("h", 2),
    "u16": ("H", 2),
    "s16": ("h", 2),
    "__u32": ("I", 4),
    "__s32": ("i", 4),
    "u32": ("I", 4),
    "s32": ("i", 4),
    "__u64": ("Q", 8),
    "__s64": ("q", 8),
    "u64": ("Q", 8),
    "s64": ("q", 8),
}

HEADER_MACRO = "KRSID_EVENT_HEADER"
# Member groups krsid.h defines for several programs' structs (besides the header).
_MEMBER_GROUP_RE = re.compile(r"KRSID_[A-Z0-9_]+_MEMBERS")

_MEMBER_RE = re.compile(rf"^({IDENT})\s+({IDENT})\s*(?:\[\s*({IDENT}|\d+)\s*\])?$")


@dataclass(frozen=True)
class Member:
    """One member of an event struct, as clang lays it out."""

    name: str
    ctype: str  # e.g. "__u32" or "char"
    offset: int
    size: int
    array_len: int | None = None  # N for char name[N]

    @property
    def is_string(self) -> bool:
        return self.array_len is not None


@dataclass(frozen=True)
class EventLayout:
    """A struct's members with their offsets, plus a precompiled unpacker."""

    struct_name: str
    members: tuple[Member, ...]
    size: int

    @property
    def unpacker(self) -> struct.Struct:
        return struct.Struct(_struct_format(self.members, self.size))

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)


def header_members_source(header_text: str) -> str:
    """The member lines of the KRSID_EVENT_HEADER macro in krsid.h."""
    return member_macro_source(header_text, HEADER_MACRO)


def member_macro_source(header_text: str, macro: str) -> str:
    """The member lines of a member macro (the header or a member group) in krsid.h."""
    m = re.search(rf"#\s*define\s+{re.escape(macro)}\s*\\\n((?:.*\\\n)*.*)", header_text)
    if not m:
        raise CatalogError(f"krsid.h: no #define {macro}")
    return m.group(1).replace("\\\n", "\n")


def _macro_declarations(header_text: str, macro: str) -> list[str]:
    source = strip_comments(member_macro_source(header_text, macro))
    return [s for s in (" ".join(x.split()) for x in source.split(";")) if s]


def parse_event_struct(
    program_text: str, struct_name: str, header_text: str, *, origin: str = "<program>"
) -> EventLayout:
    """Lay out ``struct <struct_name>`` from a program's C text.

    Raises CatalogError naming the file and member when the struct breaks the rules.
    """
    body = _struct_body(strip_comments(program_text), struct_name, origin)
    constants = parse_defines(header_text, program_text, origin=origin)

    declarations: list[str] = []
    for stmt in body.split(";"):
        stmt = " ".join(stmt.split())
        # A macro's members end with their own ";": the macro's name and the next
        # member come as one statement. Expand each macro in front.
        while stmt:
            macro = stmt.split(" ", 1)[0]
            if macro == HEADER_MACRO:
                if declarations:
                    raise CatalogError(f"{origin}: {HEADER_MACRO} must be the first member of {struct_name}")
            elif not _MEMBER_GROUP_RE.fullmatch(macro):
                declarations.append(stmt)
                break
            declarations.extend(_macro_declarations(header_text, macro))
            stmt = stmt[len(macro) :].strip()
    if not declarations or HEADER_MACRO not in body:
        raise CatalogError(f"{origin}: struct {struct_name} must start with {HEADER_MACRO}")

    members: list[Member] = []
    offset = 0
    max_align = 1
    for decl in declarations:
        m = _MEMBER_RE.match(decl)
        if not m:
            raise CatalogError(
                f"{origin}: struct {struct_name}: cannot lay out member {decl!r}; event structs "
                "hold only __u8..__u64/__s8..__s64 or char name[N] members"
            )
        ctype, name, dim = m.groups()
        if ctype == "char":
            if dim is None:
                raise CatalogError(f"{origin}: {struct_name}.{name}: use an integer type, not a lone char")
            length = int(dim) if dim.isdigit() else constants.get(dim, -1)
            if length <= 0:
                raise CatalogError(f"{origin}: {struct_name}.{name}: array length {dim} is not a known constant")
            size, align, array_len = length, 1, length
        elif ctype in INTEGER_TYPES:
            if dim is not None:
                raise CatalogError(f"{origin}: {struct_name}.{name}: integer arrays are not supported")
            size = align = INTEGER_TYPES[ctype][1]
            array_len = None
        else:
            raise CatalogError(f"{origin}: {struct_name}.{name}: unsupported type {ctype}")
        offset = _align(offset, align)
        if any(x.name == name for x in members):
            raise CatalogError(f"{origin}: {struct_name}: duplicate member {name}")
        members.append(Member(name, ctype, offset, size, array_len))
        offset += size
        max_align = max(max_align, align)
    return EventLayout(struct_name, tuple(members), _align(offset, max_align))


def layout_asserts(layout: EventLayout) -> str:
    """C lines that make clang prove this layout, member by member."""
    s = layout.struct_name
    lines = [f'_Static_assert(sizeof(struct {s}) == {layout.size}, "krsid layout: sizeof {s}");']
    for m in layout.members:
        lines.append(
            f"_Static_assert(__builtin_offsetof(struct {s}, {m.name}) == {m.offset} && "
            f"sizeof(((struct {s} *)0)->{m.name}) == {m.size}, "
            f'"krsid layout: {s}.{m.name}");'
        )
    return "\n".join(lines) + "\n"


def _struct_body(text: str, struct_name: str, origin: str) -> str:
    m = re.search(rf"\bstruct\s+{re.escape(struct_name)}\s*\{{", text)
    if not m:
        raise CatalogError(f"{origin}: no definition of struct {struct_name}")
    end = text.find("}", m.end())
    if end < 0:
        raise CatalogError(f"{origin}: struct {struct_name} is not closed")
    return text[m.end() : end]


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _struct_format(members: tuple[Member, ...], size: int) -> str:
    """A struct-module format with explicit padding, so unpacking needs no alignment rules."""
    parts = ["<"]
    pos = 0
    for m in members:
        if m.offset > pos:
            parts.append(f"{m.offset - pos}x")
        parts.append(f"{m.size}s" if m.is_string else INTEGER_TYPES[m.ctype][0])
        pos = m.offset + m.size
    if size > pos:
        parts.append(f"{size - pos}x")
    return "".join(parts)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CatalogError(f"{path}: cannot read: {e}") from e
