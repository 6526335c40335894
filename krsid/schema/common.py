"""Helpers both schema builders share: text of a value, fields the header maps itself."""

from __future__ import annotations

import os

from krsid.event import Event, Value

UNSET_ID = 4294967295  # auid / sessionid when never set

# Header and enrichment fields both builders map to schema attributes; every other
# field of an event is kept under unmapped (OCSF) / krsid (ECS) by its krsid name.
MAPPED_FIELDS = frozenset({"seq", "pid", "tgid", "ppid", "uid", "comm", "verdict", "action", "exe"})
# Fields the identity work adds (issue 12 items 1 and 3): used where present.
PROCESS_ID_FIELD = "process_id"
PARENT_PROCESS_ID_FIELD = "parent_process_id"
EXE_SHA256_FIELD = "exe_sha256"
ANCESTORS_FIELD = "ancestors"  # records of process_id, pid, uid, exe, args; parent first


def text(value: Value | None) -> str:
    """A value as JSON text: bytes decoded as the krsid format does (surrogateescape)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, tuple):
        return " ".join(a.decode("utf-8", "surrogateescape") for a in value if isinstance(a, bytes))
    return str(value)


def strings(value: Value | None) -> list[str]:
    if isinstance(value, tuple):
        return [a.decode("utf-8", "surrogateescape") for a in value if isinstance(a, bytes)]
    return []


def integer(value: Value | None) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return None
    return None


def basename(path: str) -> str:
    name = os.path.basename(path.rstrip("/"))
    return name or path


def enum_number(event: Event, field_name: str) -> int | None:
    """The number behind an enum field's rendered name (or its number when unnamed)."""
    value = event.values.get(field_name)
    n = integer(value)
    if n is not None:
        return n
    for f in event.spec.fields:
        if f.name == field_name:
            for name, number in f.values:
                if name == value:
                    return number
    return None


def flag_bits(value: Value | None, bits: dict[str, int]) -> int:
    """A rendered flag set ("READ|EXEC", "NONE", "0x40") back to its bits."""
    if not isinstance(value, str):
        return integer(value) or 0
    total = 0
    for part in value.split("|"):
        if part in bits:
            total |= bits[part]
        elif part.startswith("0x"):
            total |= int(part, 16)
    return total


def unmapped(event: Event) -> dict[str, object]:
    """Every field the schema attributes do not carry, by its krsid name (lossless)."""
    out: dict[str, object] = {"hook": event.hook}
    for k, v in event.values.items():
        if k in MAPPED_FIELDS:
            continue
        out[k] = v  # the sink's JSON encoder writes bytes as the krsid format does
    return out
