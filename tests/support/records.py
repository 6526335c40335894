"""Build raw event records as a BPF program would write them, from the derived layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from krsid.catalog import Catalog, HookSpec, load_catalog

PROGRAMS = Path(__file__).resolve().parents[2] / "programs"


def catalog() -> Catalog:
    return load_catalog(PROGRAMS)


def pack(spec: HookSpec, hook_id: int = 0, **values: Any) -> bytes:
    """A record of spec's struct; members not given are 0 / empty."""
    args: list[Any] = []
    for m in spec.layout.members:
        v = hook_id if m.name == "hook_id" else values.pop(m.name, b"" if m.is_string else 0)
        args.append(v.encode() if isinstance(v, str) else v)
    if values:
        raise KeyError(f"no such members: {sorted(values)}")
    return spec.layout.unpacker.pack(*args)
