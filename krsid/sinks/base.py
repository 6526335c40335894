"""The plug point every sink implements, and the bounded backlog they share.

Sinks never block the poll loop. ``emit`` only encodes the event and queues the
bytes; ``flush`` writes as much as the destination takes *without blocking* and
keeps the rest. A destination that stops taking data (a stalled journald, a
reader that stopped reading stdout) fills the sink's backlog; past its byte
budget new events are dropped and counted (``krsid_events_lost_total
{stage="queue_<sink>"}``), and the poller keeps draining the kernel's ring buffer.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Protocol

from krsid.event import Event

DEFAULT_BACKLOG_BYTES = 16 << 20


class Sink(Protocol):
    """Something events are written to. A raising sink is counted, never fatal."""

    name: str

    def emit(self, event: Event) -> None:
        """Encode and queue the event. Raises SinkUnavailable (destination down) or
        BacklogFull (destination too slow); either way the event is not queued."""

    def flush(self) -> Counter[str]:
        """Write queued entries without blocking. Returns, per hook, queued entries
        that could not be written and were given up (counted as lost by the caller)."""
        ...

    def pending(self) -> int:
        """Entries still queued (0 = all written)."""
        ...

    def wait_fd(self) -> int:
        """While entries are pending: an fd that polls POLLOUT when the destination
        takes data again; -1 when there is none (the daemon then retries on a timer)."""
        ...

    def close(self) -> Counter[str]:
        """Last flush (may block briefly), then release the destination; returns as flush."""
        ...


class SinkUnavailable(Exception):
    """The sink's destination is down; the event was not delivered (counted as lost)."""


class BacklogFull(Exception):
    """The sink's backlog is at its byte budget; the event was dropped (counted as lost)."""


class Backlog:
    """FIFO of (hook, encoded entry) with a byte budget. When full, the NEWEST entry
    is refused: what is queued keeps its order, and the loss is counted per hook."""

    __slots__ = ("entries", "max_bytes", "size")

    def __init__(self, max_bytes: int = DEFAULT_BACKLOG_BYTES) -> None:
        self.entries: deque[tuple[str, bytes]] = deque()
        self.max_bytes = max_bytes
        self.size = 0

    def full(self) -> bool:
        """At the budget: check_room would refuse the next entry."""
        return self.size >= self.max_bytes and bool(self.entries)

    def check_room(self) -> None:
        """BacklogFull when the budget is used up: a sink calls it before encoding, so
        that under overload a dropped event costs no encoding (the dearest step of a
        sink: ~2/3 of journald's CPU per event)."""
        if self.size >= self.max_bytes and self.entries:
            raise BacklogFull(f"backlog full ({self.size} bytes queued)")

    def push(self, hook: str, data: bytes) -> None:
        if self.size + len(data) > self.max_bytes and self.entries:
            raise BacklogFull(f"backlog full ({self.size} bytes queued)")
        self.entries.append((hook, data))
        self.size += len(data)

    def popleft(self) -> tuple[str, bytes]:
        hook, data = self.entries.popleft()
        self.size -= len(data)
        return hook, data

    def drop_head(self, count: int, size: int) -> None:
        """The first count entries, of size bytes together, were written: forget them
        (all of them at once, in C, when that is every entry)."""
        entries = self.entries
        if count == len(entries):
            entries.clear()
        else:
            for _ in range(count):
                entries.popleft()
        self.size -= size

    def replace_head(self, data: bytes) -> None:
        """The head entry was partly written: keep only its unwritten tail."""
        hook, old = self.entries[0]
        self.entries[0] = (hook, data)
        self.size -= len(old) - len(data)

    def drop_all(self) -> Counter[str]:
        lost: Counter[str] = Counter(hook for hook, _ in self.entries)
        self.entries.clear()
        self.size = 0
        return lost

    def __len__(self) -> int:
        return len(self.entries)
