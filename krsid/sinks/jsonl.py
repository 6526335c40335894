"""JSON lines sink: one object per event, keys are the field names (lower case).

Kernel strings are bytes. They are decoded as UTF-8 with surrogateescape and
written with ensure_ascii, so invalid bytes appear as \\udcXX escapes: valid JSON,
no raw control characters, and the original bytes recoverable
(``s.encode("utf-8", "surrogateescape")``).

Writes never block the poll loop (see krsid.sinks.base): a file is written as
usual (appended), while stdout, when it is a pipe, terminal or socket, is written
without blocking, so a reader that stops reading fills the backlog instead of
stalling krsid.

A file is reopened for log rotation (see ``JsonlSink.reopen``): on request
(SIGUSR1, ``krsid reopen``) and, as a safety net for a rotation that sends no
signal, whenever the path no longer names the open file (checked at most once a
second). Lines are only ever written whole to one file: everything queued before
the reopen goes to the old file, everything after to the new one.

``format`` (sinks.jsonl.format) picks the record: krsid's own (``event_line``), or
an OCSF / ECS record built by krsid.schema, encoded the same way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import os
import socket
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO

from krsid.event import SCHEMA_VERSION, Event
from krsid.memo import Memo
from krsid.schema import FORMAT_KRSID, HostInfo, RecordBuilder, record_builder
from krsid.sinks.base import DEFAULT_BACKLOG_BYTES, Backlog

WRITE_CHUNK = 1 << 20  # bytes per write call: many lines per syscall
_DATA = operator.itemgetter(1)  # a backlog entry's bytes
ROTATION_CHECK_INTERVAL = 1.0  # seconds between checks that the path still names the open file
FILE_MODE = 0o640  # a new file (before the umask); logrotate's `create` sets its own


def _text(o: object) -> object:
    # json calls this only for what it cannot encode itself: bytes (also inside argv tuples).
    if isinstance(o, bytes):
        return o.decode("utf-8", "surrogateescape")
    raise TypeError(f"cannot encode {type(o).__name__} as JSON")


# _text's answers by value: the encoder's ``default`` is then a dict's C-level
# ``__getitem__``, with no Python call for a value seen before (comm, exe, a process's
# paths repeat from event to event: ~0.35 µs of ~5 µs per line).
TEXT_CACHE_SIZE = 2048


def _compact_ascii_encoder() -> Callable[[object], str]:
    """``json.dumps(o, ensure_ascii=True, separators=(",", ":"), default=_text)``.

    JSONEncoder.encode wraps the C encoder in Python on every call (it builds the
    encoder anew each time): made once and called directly, an event line costs
    ~25 % less to encode, byte for byte the same. Records are trees, so the circular
    check is off (markers None)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the C accelerator
        return json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=_text).encode
    default = Memo(_text, TEXT_CACHE_SIZE).__getitem__  # raises TypeError as default must
    encoder = make(None, default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
    join = "".join
    return lambda o: join(encoder(o, 0))


_encode = _compact_ascii_encoder()


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


# A line is {"schema_version":N,"time":"...","hook":"NAME", then the event's values}:
# the text around the time, per hook, made once.
_line_heads: dict[str, tuple[str, str]] = {}


def event_line(event: Event) -> bytes:
    """One JSON line (ASCII, newline-terminated) for an event: exactly what json.dumps
    writes for {"schema_version", "time", "hook", **values}, built without that dict
    (values are encoded as they are and spliced in after the head: ~0.4 µs less per
    line). The catalog keeps the three head names out of the fields (RECORD_KEYS)."""
    head = _line_heads.get(event.hook)
    if head is None:
        head = _line_heads[event.hook] = (
            f'{{"schema_version":{SCHEMA_VERSION},"time":"',
            f'","hook":{_encode(event.hook)}',
        )
    body = _encode(event.values)  # "{...}", or "{}" for no values
    tail = "," + body[1:] if len(body) > 2 else "}"
    return (head[0] + _clock.format(event.wallclock) + head[1] + tail + "\n").encode("ascii")


def schema_line(build: RecordBuilder) -> Callable[[Event], bytes]:
    """One JSON line per event in another schema (OCSF, ECS), encoded as event_line does."""

    def line(event: Event) -> bytes:
        return (_encode(build(event)) + "\n").encode("ascii")

    return line


class _Writer:
    """Writes bytes to the destination; returns how many it took (0 = would block)."""

    def __init__(self, path: str, stream: IO[str] | None) -> None:
        self._stream = stream
        self._sock: socket.socket | None = None
        self._fd = -1
        self._owned = True
        self.path = path
        # Only a named destination can be reopened: a stream or stdout never is.
        self.reopenable = stream is None and path != "-"
        if stream is not None:
            self._owned = False
        elif path == "-":
            self._open_stdout()
        else:
            # /var/log/krsid when not under systemd (whose LogsDirectory= makes it);
            # only at start: a directory removed later is a failed reopen, counted.
            Path(path).parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            self._fd = self._open_path()

    def _open_path(self) -> int:
        try:
            fifo = stat.S_ISFIFO(os.stat(self.path).st_mode)
        except FileNotFoundError:
            fifo = False
        if fifo:
            # A named pipe to a log shipper: O_RDWR opens without waiting for a
            # reader, and O_NONBLOCK lets a reader that stops reading fill the
            # backlog instead of stalling krsid.
            return os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        # Append, never truncate: a restart or a reopen must not wipe what was written.
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)

    @property
    def is_open(self) -> bool:
        return self._stream is not None or self._sock is not None or self._fd >= 0

    def file_deleted(self) -> bool:
        """The open file has no name left (deleted, not renamed)."""
        return self._fd >= 0 and self.reopenable and os.fstat(self._fd).st_nlink == 0

    def path_moved(self) -> bool:
        """Whether the path no longer names the open file: renamed or deleted (rotated
        away), or replaced by another file. False for what cannot be reopened."""
        if not self.reopenable:
            return False
        if self._fd < 0:
            return True  # a reopen failed earlier: try again
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False  # cannot tell (e.g. EACCES on a parent): keep writing where we are
        mine = os.fstat(self._fd)
        return (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino)

    def reopen(self) -> None:
        """Open the path again and write there from now on. Raises OSError if it cannot
        be opened: the old file then stays in use while it still has a name, else
        nothing is written (the sink's backlog holds the lines) until a retry works."""
        if not self.reopenable:
            return
        try:
            fd = self._open_path()
        except OSError:
            if self.file_deleted():
                # Deleted: lines written there would be gone without a trace.
                os.close(self._fd)
                self._fd = -1
            raise
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd

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
            if self._fd < 0:
                return 0  # no file open (a reopen failed): the lines wait for a retry
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
        self,
        path: str = "-",
        *,
        stream: IO[str] | None = None,
        backlog_bytes: int = DEFAULT_BACKLOG_BYTES,
        log: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        format: str = FORMAT_KRSID,
        host: HostInfo | None = None,
    ) -> None:
        build = record_builder(format, host)  # ValueError for an unknown format: before opening
        self._line = event_line if build is None else schema_line(build)
        self._writer = _Writer(path, stream)
        self.backlog = Backlog(backlog_bytes)
        self.last_error = ""
        self._log = log or logging.getLogger("krsid").warning
        self._clock = clock
        self._reopen_requested = False
        self._next_rotation_check = clock() + ROTATION_CHECK_INTERVAL
        self._head_partial = False  # the head entry is a line's unwritten tail
        self._failed_reopens: list[str] = []  # since the dispatcher last took them
        self._reopen_failures = 0  # in a row, until a reopen works

    def emit(self, event: Event) -> None:
        self.backlog.check_room()
        self.backlog.push(event.hook, self._line(event))

    def reopen(self) -> None:
        """Reopen the file at the next flush (log rotation). What is queued until then
        still goes to the old file; stdout is never reopened."""
        self._reopen_requested = self._writer.reopenable

    def take_errors(self) -> list[str]:
        """Failures that lost no event by themselves (a reopen that failed), since the
        last call; the dispatcher counts each as a sink error."""
        errors, self._failed_reopens = self._failed_reopens, []
        return errors

    def flush(self) -> Counter[str]:
        """Write whole lines; reopen the file if asked to or if it was rotated away.

        What is queued goes to the old file first and the reopen follows, at a line
        boundary. Only a file already deleted gets nothing more: its lines would be
        gone without a trace, so they go to the new file instead."""
        lost: Counter[str] = Counter()
        if self._writer.reopenable and self._reopen_due():
            self._reopen_requested = True  # served at the next line boundary
            if not self._head_partial and self._writer.file_deleted():
                self._reopen()
        lost += self._write_backlog()
        if self._reopen_requested and not self._head_partial:
            self._reopen()
            if self._writer.is_open:
                lost += self._write_backlog()
        return lost

    def _reopen_due(self) -> bool:
        if self._reopen_requested:
            return True
        now = self._clock()
        if now < self._next_rotation_check:
            return False
        self._next_rotation_check = now + ROTATION_CHECK_INTERVAL
        return self._writer.path_moved()

    def _reopen(self) -> None:
        # Only at a line boundary (the caller checks): the old file ends with a whole
        # line, and the new one starts with one.
        self._reopen_requested = False
        self._next_rotation_check = self._clock() + ROTATION_CHECK_INTERVAL
        try:
            self._writer.reopen()
        except OSError as e:
            # Counted and logged (rate-limited) by the dispatcher, from take_errors().
            where = "still writing to the old file" if self._writer.is_open else "holding new lines in the backlog"
            self.last_error = f"cannot reopen {self._writer.path}: {e.strerror or e}"
            self._failed_reopens.append(f"{self.last_error}; {where}; retrying every {ROTATION_CHECK_INTERVAL:g}s")
            self._reopen_failures += 1
            return
        if self._reopen_failures:
            self._log(f"sink jsonl: reopened {self._writer.path} after {self._reopen_failures} failed attempt(s)")
        self._reopen_failures = 0

    def _write_backlog(self) -> Counter[str]:
        """Write whole lines in chunks; keep what the destination did not take."""
        backlog = self.backlog
        lost: Counter[str] = Counter()
        while backlog.entries:
            if backlog.size <= WRITE_CHUNK:  # the usual case: all of it, joined in C
                chunk, taken = list(map(_DATA, backlog.entries)), backlog.size
            else:
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
                self._head_partial = False
                break
            if written == taken:  # whole lines, all of the chunk
                backlog.drop_head(len(chunk), taken)
                self._head_partial = False
                continue
            self._consume(written)
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
                self._head_partial = False
            else:
                backlog.replace_head(data[written:])
                self._head_partial = True
                written = 0

    def pending(self) -> int:
        return len(self.backlog)

    def wait_fd(self) -> int:
        return self._writer.wait_fd()

    def close(self) -> Counter[str]:
        lost: Counter[str] = Counter()
        deadline = time.monotonic() + 2.0
        if not self._writer.is_open:
            self._reopen_requested = True  # lines held after a failed reopen: one last try
        while True:
            lost += self.flush()
            if not self.backlog.entries or not self._writer.is_open or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        lost += self.backlog.drop_all()
        self._writer.close()
        return lost
