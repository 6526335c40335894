"""Small helpers for driving sinks in tests."""

from __future__ import annotations

from krsid.pipeline.decode import Event
from krsid.sinks.base import Sink


def emit_and_flush(sink: Sink, *events: Event) -> None:
    """Queue the events and write them out; fails if the sink gave any up."""
    for event in events:
        sink.emit(event)
    lost = sink.flush()
    assert not lost, f"sink {sink.name} gave up {dict(lost)}"
    assert sink.pending() == 0, f"sink {sink.name} still holds {sink.pending()} entries"
