"""The plug point every sink implements, and how events become sink fields."""

from __future__ import annotations

from typing import Protocol

from krsid.pipeline.decode import Event


class Sink(Protocol):
    """Something events are written to. A raising sink is counted, never fatal."""

    name: str

    def emit(self, event: Event) -> None: ...

    def flush(self) -> None:
        """Called after each poll batch: write out anything buffered."""

    def close(self) -> None: ...


class SinkUnavailable(Exception):
    """The sink's destination is down; the event was not delivered (counted as lost)."""
