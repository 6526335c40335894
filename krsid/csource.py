"""Reading C source text: the one place krsid strips C comments and reads ``#define``s.

The catalog (krsid.catalog: the contract, map sizes, slot defines) and the event
layouts (krsid.pipeline.layout) all read programs/*.c and include/krsid.h through
these helpers, so every reader agrees on what a define's value is.

A define's value is an integer when it is a C integer literal, in C's notation:
decimal, ``0x`` hex or ``0`` octal, with any ``u``/``l`` suffix (``0777``, ``64U``,
``0x10UL``), in parentheses or not; or when it names another such define. Anything
else (an expression, a type, a function-like macro) is not a number and is skipped.
A value that is one token starting with a digit yet no C integer (``08``, ``0x``,
``12abc``) is an error: the C compiler would refuse it too, and skipping it would
hide a number Python relies on.

This module is a leaf (it imports nothing of krsid's but errors), so both
krsid.catalog and krsid.pipeline can import it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from krsid.errors import CatalogError

IDENT = r"[A-Za-z_]\w*"

_COMMENT_RE = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
# Object-like macros only: "#define NAME(" (no space) is a function-like macro.
_DEFINE_RE = re.compile(rf"^[ \t]*#[ \t]*define[ \t]+({IDENT})[ \t]+([^\n]+?)[ \t]*$", re.M)
_NUMBER_RE = re.compile(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)[uUlL]*")
# One C preprocessing number: what a reader takes for a number, valid or not.
_NUMBER_LIKE_RE = re.compile(r"[0-9][\w.]*")
# How many defines deep a name may point to another (``#define A B``, ``#define B 4``).
_MAX_ALIAS_HOPS = 8


def strip_comments(text: str) -> str:
    """The C text with each comment replaced by a space (line numbers shift in
    multi-line comments; nothing here reports line numbers)."""
    return _COMMENT_RE.sub(" ", text)


def define_values(text: str) -> dict[str, str]:
    """Every object-like ``#define NAME value`` of the text (comments stripped), as
    written; the first definition of a name wins, as in declared_map_sizes' lookups."""
    out: dict[str, str] = {}
    for name, value in _DEFINE_RE.findall(strip_comments(text)):
        out.setdefault(name, value.strip())
    return out


def c_number(expr: str, defines: Mapping[str, str], origin: str = "<C source>") -> int | None:
    """The integer ``expr`` stands for: a C integer literal, or a define that expands
    (through at most _MAX_ALIAS_HOPS others) to one; None for anything else.

    CatalogError, naming ``origin``, for a token that looks like a number but is none.
    """
    for _ in range(_MAX_ALIAS_HOPS + 1):
        expr = expr.strip()
        while expr.startswith("(") and expr.endswith(")"):
            expr = expr[1:-1].strip()
        if _NUMBER_LIKE_RE.fullmatch(expr):
            return _literal(expr, origin)
        if expr not in defines:
            return None
        expr = defines[expr]
    return None


def is_literal(expr: str) -> bool:
    """True if ``expr`` is written as a C integer literal (not through a define)."""
    return _NUMBER_RE.fullmatch(expr.strip()) is not None


def parse_defines(*texts: str, origin: str = "<C source>") -> dict[str, int]:
    """Every ``#define`` of these texts whose value is an integer (see the module doc),
    by name. A name's value may use defines of any of the texts; when two texts define
    one name, the later text's definition counts (a program's own over krsid.h's)."""
    values: dict[str, str] = {}
    for text in texts:
        values.update(define_values(text))
    out: dict[str, int] = {}
    for name, value in values.items():
        number = c_number(value, values, f"{origin}: #define {name} {value}")
        if number is not None:
            out[name] = number
    return out


def _literal(token: str, origin: str) -> int:
    m = _NUMBER_RE.fullmatch(token)
    if not m:
        raise CatalogError(f"{origin}: {token!r} is not a C integer (decimal, 0x hex or 0 octal, u/l suffixes)")
    digits = m.group(1)
    if digits[:2] in ("0x", "0X"):
        return int(digits, 16)
    if len(digits) > 1 and digits[0] == "0":
        return int(digits, 8)
    return int(digits)
