"""JSON lines sink: one object per event, keys are the field names (lower case).

Kernel strings are bytes. They are decoded as UTF-8 with surrogateescape and
written with ensure_ascii, so invalid bytes appear as \\udcXX escapes: valid JSON,
no raw control characters, and the original bytes recoverable
(``s.encode("utf-8", "surrogateescape")``).

Writes never block the poll loop (see krsid.sinks.base): a file is written as
usual (appended), while stdout, when it is a pipe, terminal or socket, is written
without blocking, so a reader that stops reading fills the backlog instead of
stalling krsid.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import sys
import time
from collections import Counter
from typing import IO, Any

from krsid.pipeline.decode import SCHEMA_VERSION, Event
from krsid.sinks.base import DEFAULT_BACKLOG_BYTES, Backlog

WRITE_CHUNK = 1 << 20  # bytes per write call: many lines per syscall


def _text(o: object) -> object:
    # json calls this only for what it cannot encode itself: bytes (also inside argv tuples).
    if isinstance(o, bytes):
        return o.decode("utf-8", "surrogateescape")
    raise TypeError(f"cannot encode {type(o).__name__} as JSON")


_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=_text).encode


class _Clock:
    """RFC 3339 UTC timestamps; the part up to the second is built once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, t: float) -> str:
        whole = int(t)
        if whole != self._second:
            self._second = whole
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        return f"{self._prefix}.{int((t - whole) * 1e6):06d}Z"


_clock = _Clock()


def event_record(event: Event) -> dict[str, Any]:
    """The JSON object of an event, with bytes values as text (surrogateescape)."""
    record: dict[str, Any] = json.loads(event_line(event))
    return record


def event_line(event: Event) -> bytes:
    """One JSON line (ASCII, newline-terminated) for an event."""
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "time": _clock.format(event.wallclock),
        "hook": event.hook,
    }
    record.update(event.values)
    return (_encode(record) + "\n").encode("ascii")


class _Writer:
    """Writes bytes to the destination; returns how many it took (0 = would block)."""

    def __init__(self, path: str, stream: IO[str] | None) -> None:
        self._stream = stream
        self._sock: socket.socket | None = None
        self._fd = -1
        self._owned = True
        if stream is not None:
            self._owned = False
        elif path == "-":
            self._open_stdout()
        else:
            try:
                fifo = stat.S_ISFIFO(os.stat(path).st_mode)
            except FileNotFoundError:
                fifo = False
            if fifo:
                # A named pipe to a log shipper: O_RDWR opens without waiting for a
                # reader, and O_NONBLOCK lets a reader that stops reading fill the
                # backlog instead of stalling krsid.
                self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            else:
                # Append, never truncate: a restart must not wipe what was written.
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def _open_stdout(self) -> None:
        fd = sys.stdout.fileno()
        mode = os.fstat(fd).st_mode
        if stat.S_ISSOCK(mode):  # e.g. systemd's stdout stream to journald: send(MSG_DONTWAIT)
            self._sock = socket.socket(fileno=os.dup(fd))
            return
        if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            # A new open file description of the same pipe/terminal, non-blocking for us
            # only (setting O_NONBLOCK on fd 1 would change it for the shell too).
            with contextlib.suppress(OSError):
                self._fd = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                return
        self._fd = os.dup(fd)  # a regular file: plain writes
        self._owned = True

    def write(self, data: bytes) -> int:
        if self._stream is not None:
            self._stream.write(data.decode("ascii"))
            return len(data)
        try:
            if self._sock is not None:
                return self._sock.send(data, socket.MSG_DONTWAIT)
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0

    def flush(self) -> None:
        if self._stream is not None:
            self._stream.flush()

    def wait_fd(self) -> int:
        """fd to poll for POLLOUT when a write would block (pipes, terminals, sockets)."""
        if self._sock is not None:
            return self._sock.fileno()
        return self._fd if self._fd >= 0 and os.get_blocking(self._fd) is False else -1

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        elif self._fd >= 0 and self._owned:
            os.close(self._fd)
        self._fd = -1


class JsonlSink:
    name = "jsonl"

    def __init__(
        self, path: str = "-", *, stream: IO[str] | None = None, backlog_bytes: int = DEFAULT_BACKLOG_BYTES
    ) -> None:
        self._writer = _Writer(path, stream)
        self.backlog = Backlog(backlog_bytes)
        self.last_error = ""

    def emit(self, event: Event) -> None:
        self.backlog.push(event.hook, event_line(event))

    def flush(self) -> Counter[str]:
        """Write whole lines in chunks; keep what the destination did not take."""
        backlog = self.backlog
        lost: Counter[str] = Counter()
        while backlog.entries:
            chunk, taken = [], 0
            for _hook, data in backlog.entries:
                chunk.append(data)
                taken += len(data)
                if taken >= WRITE_CHUNK:
                    break
            try:
                written = self._writer.write(b"".join(chunk))
            except OSError as e:
                # e.g. ENOSPC, EPIPE: these lines are given up and counted; later ones retry.
                self.last_error = e.strerror or str(e)
                for _ in chunk:
                    lost[backlog.popleft()[0]] += 1
                break
            self._consume(written)
            if written < taken:
                break  # the destination is full: the rest waits
        self._writer.flush()
        return lost

    def _consume(self, written: int) -> None:
        backlog = self.backlog
        while written > 0:
            _hook, data = backlog.entries[0]
            if written >= len(data):
                backlog.popleft()
                written -= len(data)
            else:
                backlog.replace_head(data[written:])
                written = 0

    def pending(self) -> int:
        return len(self.backlog)

    def wait_fd(self) -> int:
        return self._writer.wait_fd()

    def close(self) -> Counter[str]:
        lost: Counter[str] = Counter()
        deadline = time.monotonic() + 2.0
        while True:
            lost += self.flush()
            if not self.backlog.entries or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        lost += self.backlog.drop_all()
        self._writer.close()
        return lost
