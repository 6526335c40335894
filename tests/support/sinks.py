"""Small helpers for driving sinks in tests."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from krsid.event import Event
from krsid.sinks.base import Sink
from krsid.sinks.jsonl import event_line


def event_record(event: Event) -> dict[str, Any]:
    """The JSON object of an event, with bytes values as text (surrogateescape)."""
    record: dict[str, Any] = json.loads(event_line(event))
    return record


def emit_and_flush(sink: Sink, *events: Event) -> None:
    """Queue the events and write them out; fails if the sink gave any up."""
    for event in events:
        sink.emit(event)
    lost = sink.flush()
    assert not lost, f"sink {sink.name} gave up {dict(lost)}"
    assert sink.pending() == 0, f"sink {sink.name} still holds {sink.pending()} entries"


def complete_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a JSON lines file that a daemon may still be appending to.

    A read can catch the newest line half written (a write(2) to a regular file
    is not atomic for a concurrent reader), so whatever follows the last newline
    is left for the next read, as a log shipper tailing the file does."""
    if not path.exists():
        return []
    complete = path.read_bytes().split(b"\n")[:-1]
    return [json.loads(line) for line in complete if line.strip()]


class StubSink:
    """A configured sink with nothing behind it: takes every event, never falls behind,
    never fails. Tests subclass it to watch the calls they care about."""

    def __init__(self, name: str = "jsonl") -> None:
        self.name = name

    def emit(self, event: Event) -> None:
        pass

    def flush(self) -> Counter[str]:
        return Counter()

    def pending(self) -> int:
        return 0

    def wait_fd(self) -> int:
        return -1

    def close(self) -> Counter[str]:
        return Counter()


class CollectingSink(StubSink):
    """Keeps every event it is given, in order."""

    def __init__(self, name: str = "jsonl") -> None:
        super().__init__(name)
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)
