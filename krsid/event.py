"""The event every stage below the decoder passes down: what it is and how its values read.

``Event`` (one decoded record), ``Value`` (what a field can hold), ``SCHEMA_VERSION``
(of the JSON lines records) and ``text_of`` (a value as text for people). The
pipeline creates events (pipeline.decode), completes them (pipeline.flow: rule
name, pipeline.enrich: context) and hands them to the sinks, which only read them.
Both stand on this module; it imports neither.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from krsid.catalog import HookSpec

# What a field's value can be after decoding: int for int, str for hex/flags/enum/
# ipv4/ipv6/errno, bytes for strings (kernel strings are bytes: binary-safe until a
# sink decides), a tuple of bytes for strings (argv-like lists), bool for bool.
# Enrichment adds one nested shape: ``ancestors``, a tuple of Records (one per
# ancestor, flat values only).
Scalar = Union[int, str, bytes, bool, tuple[bytes, ...]]
Record = Mapping[str, Scalar]
Value = Union[Scalar, tuple[Record, ...]]
# Raised when a field changes meaning or type (README: JSON lines, schema versions).
SCHEMA_VERSION = 2
# The keys a JSON lines record starts with, before the event's values: no field may
# take one of these names (the catalog refuses it).
RECORD_KEYS = ("schema_version", "time", "hook")


class Event:
    """One decoded event. ``values`` preserves the sidecar's field order."""

    __slots__ = ("hook", "seq", "spec", "values", "wallclock")

    def __init__(self, spec: HookSpec, values: dict[str, Value], wallclock: float, seq: int) -> None:
        self.spec = spec
        self.hook = spec.name
        self.values = values
        self.seq = seq
        self.wallclock = wallclock  # seconds since the epoch, from the kernel's boot clock

    def __repr__(self) -> str:
        return f"Event({self.hook}, seq={self.seq})"


def text_of(value: Value) -> str:
    """A value as text for people: bytes decoded, undecodable bytes as \\xNN."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, tuple):
        return " ".join(
            shlex.quote(a.decode("utf-8", "backslashreplace")) if isinstance(a, bytes) else record_text(a)
            for a in value
        )
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def record_text(record: Record) -> str:
    """A nested record (an ancestor) on one line: [key=value ...], values as text_of."""
    return "[" + " ".join(f"{k}={shlex.quote(text_of(v))}" for k, v in record.items()) + "]"
