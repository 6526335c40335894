"""Event records in fleet schemas: krsid's own, OCSF 1.x and ECS (``sinks.jsonl.format``).

``record_builder(format)`` returns the function that turns an Event into the dict a
JSON line holds, or None for the native krsid format (written by the JSON lines sink
as before, byte for byte). Which OCSF class and ECS category each hook becomes is
decided in one table, ``krsid.schema.mapping.HOOK_MAPPINGS``; a hook missing from it
falls back to OCSF Base Event / ECS host:info (and fails tests/unit/test_schema.py
until it is mapped).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from krsid.event import Event
from krsid.schema.host import HostInfo

FORMAT_KRSID = "krsid"
FORMAT_OCSF = "ocsf"
FORMAT_ECS = "ecs"
FORMATS = (FORMAT_KRSID, FORMAT_OCSF, FORMAT_ECS)

RecordBuilder = Callable[[Event], dict[str, Any]]


def record_builder(fmt: str, host: HostInfo | None = None) -> RecordBuilder | None:
    """The record builder of a format; None for krsid (the sink's own line format).
    ValueError for an unknown format (the config check names the valid ones first)."""
    if fmt == FORMAT_KRSID:
        return None
    host = host or HostInfo.read()
    if fmt == FORMAT_OCSF:
        from krsid.schema.ocsf import OcsfBuilder

        return OcsfBuilder(host).record
    if fmt == FORMAT_ECS:
        from krsid.schema.ecs import EcsBuilder

        return EcsBuilder(host).record
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


__all__ = ["FORMATS", "FORMAT_ECS", "FORMAT_KRSID", "FORMAT_OCSF", "HostInfo", "RecordBuilder", "record_builder"]
