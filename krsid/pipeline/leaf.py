"""Write a BPF map key or value (a ctypes Structure, as bcc builds them) by C member name, checked.

``setattr`` on a ctypes Structure accepts any name: a misspelled member becomes a
plain Python attribute and the kernel reads zero where a value was meant. The
writer refuses a name that is not one of the structure's ``_fields_``, an integer
that does not fit its member, and a list whose length is not its array's.
"""

from __future__ import annotations

import ctypes as ct
from collections.abc import Mapping, Sequence
from typing import Any

from krsid.errors import ProgramLoadError


class LeafError(ProgramLoadError):
    """A value that does not fit the C structure it is written into (a bug in krsid, or C and Python disagree)."""


def member_names(leaf: object) -> tuple[str, ...]:
    fields = getattr(type(leaf), "_fields_", None)
    if not isinstance(leaf, ct.Structure) or fields is None:
        raise LeafError(f"{type(leaf).__name__} is not a ctypes Structure: cannot check member names")
    return tuple(f[0] for f in fields)


def write_leaf(leaf: ct.Structure, values: Mapping[str, int | Sequence[int]]) -> None:
    """Set each member of ``leaf`` named in ``values``; LeafError before writing anything
    when a name is not a member, an int does not fit or a list has the wrong length."""
    allowed = member_names(leaf)
    struct = type(leaf).__name__
    for name, value in values.items():
        if name not in allowed:
            raise LeafError(f"{struct} has no member {name!r} (its members: {', '.join(allowed)})")
        ctype: Any = {f[0]: f[1] for f in type(leaf)._fields_}[name]
        if isinstance(value, Sequence):
            if not issubclass(ctype, ct.Array) or len(value) != ctype._length_:
                length = ctype._length_ if issubclass(ctype, ct.Array) else "not an array"
                raise LeafError(f"{struct}.{name}: {len(value)} values for a member of length {length}")
            for x in value:
                _check_fits(struct, name, ctype._type_, x)
        else:
            _check_fits(struct, name, ctype, value)
    for name, value in values.items():
        if isinstance(value, Sequence):
            array = getattr(leaf, name)
            for i, x in enumerate(value):
                array[i] = x
        else:
            setattr(leaf, name, value)


def _check_fits(struct: str, name: str, ctype: Any, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not issubclass(ctype, ct._SimpleCData):
        raise LeafError(f"{struct}.{name}: {value!r} is not an integer for an integer member")
    bits = 8 * ct.sizeof(ctype)
    signed = ctype(-1).value < 0
    low, high = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    if not low <= value < high:
        kind = "signed" if signed else "unsigned"
        raise LeafError(f"{struct}.{name}: {value} does not fit a {bits}-bit {kind} member")
