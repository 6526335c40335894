"""JSON lines sink: one object per event, keys are the field names (lower case).

Kernel strings are bytes. They are decoded as UTF-8 with surrogateescape and
written with ensure_ascii, so invalid bytes appear as \\udcXX escapes: valid JSON,
no raw control characters, and the original bytes recoverable
(``s.encode("utf-8", "surrogateescape")``).
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from krsid.pipeline.decode import SCHEMA_VERSION, Event


def event_record(event: Event) -> dict[str, Any]:
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "time": _rfc3339(event.wallclock),
        "hook": event.hook,
    }
    for name, v in event.values.items():
        if isinstance(v, bytes):
            record[name] = v.decode("utf-8", "surrogateescape")
        elif isinstance(v, tuple):
            record[name] = [a.decode("utf-8", "surrogateescape") for a in v]
        else:
            record[name] = v
    return record


def _rfc3339(t: float) -> str:
    whole = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((t - whole) * 1e6):06d}Z"


class JsonlSink:
    name = "jsonl"

    def __init__(self, path: str = "-", *, stream: IO[str] | None = None) -> None:
        self._owned = False
        if stream is not None:
            self._out = stream
        elif path == "-":
            self._out = sys.stdout
        else:
            # Append, never truncate: a restart must not wipe what was written.
            self._out = open(path, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115
            self._owned = True
        self._encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode

    def emit(self, event: Event) -> None:
        self._out.write(self._encode(event_record(event)) + "\n")

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self.flush()
        if self._owned:
            self._out.close()
