"""journald sink: one structured entry per event, a stable MESSAGE_ID per hook.

Entries go to journald in its native protocol (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/)
over a NON-BLOCKING datagram socket, not through libsystemd's sd_journal_sendv:
sendv blocks while journald's receive queue is full, and python-systemd calls it
holding the GIL, so a stalled journald would freeze the whole daemon, ring-buffer
poller included. Here a busy journald leaves entries in the sink's backlog (see
krsid.sinks.base) and the poller keeps going. ``libsystemd_sender`` is the
reference implementation the tests compare this encoding against.

Every field is one protocol item whatever the value holds: values with a newline
use the binary-safe framing (KEY\\n, 64-bit length, value), so a hostile file name
cannot forge another field. Values from the kernel stay bytes: journald stores
them as given. Entries too big for a datagram go in a sealed memfd, as libsystemd
does.
"""

from __future__ import annotations

import array
import errno
import fcntl
import importlib
import os
import re
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from krsid.catalog import TEMPLATE_FIELD_RE, HookSpec
from krsid.event import Event, Record, Value, text_of
from krsid.sinks.base import DEFAULT_BACKLOG_BYTES, Backlog, SinkUnavailable

# libsystemd hard-codes this path, and so does journald.
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
SYSLOG_IDENTIFIER = "krsid"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TEMPLATE_FIELD = TEMPLATE_FIELD_RE  # the catalog checks MESSAGE templates with the same pattern
_LE64 = struct.Struct("<Q")
# Errors that mean "journald is not there"; anything else is a failed write of this entry.
_GONE = (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTCONN)

Fields = list[tuple[bytes, bytes]]
Send = Callable[[bytes], None]  # one encoded entry; raises BlockingIOError when journald is behind


def _escape_control(text: str) -> str:
    """MESSAGE is for one-line reading: control characters (newlines, ANSI ESC) shown as \\xNN."""
    if text.isprintable():  # the usual case, checked in C
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class _Template:
    """A hook's MESSAGE template, split once into literal text and field names."""

    __slots__ = ("empties", "head", "parts", "spec")

    def __init__(self, spec: HookSpec) -> None:
        # Held, so that the spec outlives its entry in _templates (keyed by id(spec)):
        # a freed spec's id could be reused by another one (catalogs made and dropped).
        self.spec = spec
        pieces = _TEMPLATE_FIELD.split(spec.message)  # literal, name, literal, name, ..., literal
        self.parts = [(pieces[i], pieces[i + 1] if i + 1 < len(pieces) else None) for i in range(0, len(pieces), 2)]
        self.empties = {f.name: f.empty for f in spec.fields if f.empty}
        # The hook's fields that follow MESSAGE in every entry, encoded once.
        self.head: Fields = [
            (b"MESSAGE_ID", spec.message_id.encode()),
            (b"PRIORITY", b"%d" % spec.priority),
            (b"SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER.encode()),
            (b"KRSID_HOOK", spec.name.encode()),
        ]

    def render(self, event: Event) -> str:
        values = event.values
        out = []
        for literal, name in self.parts:
            out.append(literal)
            if name is None:
                continue
            if name == "hook":
                out.append(event.hook)
                continue
            v: Any = values.get(name, "")  # Any: the type is tested below, by type() (mypy cannot follow t)
            t = type(v)  # text_of's common cases inline: a call per field cost ~0.1 µs
            text: str = (
                v
                if t is str
                else str(v)
                if t is int
                else v.decode("utf-8", "backslashreplace")
                if t is bytes
                else text_of(v)
            )
            if not text:
                text = self.empties.get(name, "")
            elif not text.isprintable():
                text = _escape_control(text)
            out.append(text)
        return "".join(out)


_templates: dict[int, _Template] = {}


def _template_of(spec: HookSpec) -> _Template:
    template = _templates.get(id(spec))
    if template is None:
        template = _templates[id(spec)] = _Template(spec)
    return template


def render_message(event: Event) -> str:
    """The hook's MESSAGE template with each {field} replaced by its readable value."""
    return _template_of(event.spec).render(event)


def _quote(arg: bytes) -> bytes:
    """Shell-style quoting, so a list reads back unambiguously (spaces, quotes, newlines)."""
    if arg and all(c not in arg for c in b" \t\n'\"\\$`;&|<>()*?[]{}!#~"):
        return arg
    return b"'" + arg.replace(b"'", b"'\\''") + b"'"


def _journal_value(v: Value) -> bytes:
    # Most frequent first: this runs for every field of every event (bool before int:
    # a bool is an int).
    if isinstance(v, bytes):
        return v
    if isinstance(v, bool):
        return b"1" if v else b"0"
    if isinstance(v, int):
        return b"%d" % v
    if isinstance(v, str):
        return v.encode("utf-8", "surrogateescape")
    if v and not isinstance(v[0], bytes):
        # Records (ancestors): one line each, "process_id pid uid exe args...", every
        # value quoted so that a newline or space in an exe or argument cannot blur lines.
        return b"\n".join(_record_line(r) for r in v if not isinstance(r, bytes))
    return b" ".join(_quote(a) for a in v if isinstance(a, bytes))


def _record_line(record: Record) -> bytes:
    out: list[bytes] = []
    for value in record.values():
        if isinstance(value, tuple):
            out += [_quote(a) for a in value]
        else:
            out.append(_quote(_journal_value(value)) if isinstance(value, (bytes, str)) else _journal_value(value))
    return b" ".join(out)


_UNIT_SUFFIXES = (".service", ".scope")
_unit_fields: dict[str, Fields] = {}


def units_of_cgroup(path: str) -> tuple[str, str]:
    """(system unit, user unit) of a cgroup v2 path, as journald derives _SYSTEMD_UNIT and
    _SYSTEMD_USER_UNIT: slices are skipped, the first unit below them is the system unit;
    below user@UID.service the same rule gives the user unit."""
    parts = [p for p in path.split("/") if p]
    system, user, rest = "", "", []
    for i, part in enumerate(parts):
        if part.endswith(".slice"):
            continue
        if part.endswith(_UNIT_SUFFIXES):
            system, rest = part, parts[i + 1 :]
        break
    if system.startswith("user@") and system.endswith(".service"):
        for part in rest:
            if part.endswith(".slice"):
                continue
            if part.endswith(_UNIT_SUFFIXES):
                user = part
            break
    return system, user


def object_unit_fields(cgroup: str) -> Fields:
    """OBJECT_SYSTEMD_UNIT= (and OBJECT_SYSTEMD_USER_UNIT=) of the event's process, so that
    `journalctl -u UNIT` (and --user-unit) lists the event next to the unit's own lines:
    journalctl matches OBJECT_SYSTEMD_UNIT= on entries from uid-0 senders. Taken from the
    kernel's cgroup id at the hook, not from OBJECT_PID=: journald would read /proc/PID
    when the entry arrives, by then possibly gone or another process."""
    fields = _unit_fields.get(cgroup)
    if fields is None:
        system, user = units_of_cgroup(cgroup)
        fields = [(b"OBJECT_SYSTEMD_UNIT", system.encode())] if system else []
        if user:
            fields.append((b"OBJECT_SYSTEMD_USER_UNIT", user.encode()))
        if len(_unit_fields) >= 4096:  # bounded: cgroups come and go
            _unit_fields.clear()
        _unit_fields[cgroup] = fields
    return fields


_field_keys: dict[str, bytes] = {}
_keys_of: dict[tuple[str, ...], tuple[bytes, ...]] = {}  # field names of an event -> journal keys


def _key(name: str) -> bytes:
    # Names are [a-z0-9_] from the sidecars or krsid itself, never from event content.
    key = _field_keys.get(name)
    if key is None:
        key = _field_keys[name] = b"KRSID_" + name.upper().encode()
    return key


def journal_fields(event: Event) -> Fields:
    """The (KEY, value) pairs of an event's journal entry."""
    template = _template_of(event.spec)
    fields = [(b"MESSAGE", template.render(event).encode("utf-8", "surrogateescape"))]
    fields += template.head
    values = event.values
    names = tuple(values)
    keys = _keys_of.get(names)
    if keys is None:
        keys = tuple(_key(n) for n in names)
        if len(_keys_of) < 1024:  # bounded: a few shapes per hook in practice
            _keys_of[names] = keys
    # The three common types inline (a Python call per field was ~40 % of an entry);
    # the rest, bools included (type(True) is not int), through _journal_value.
    untyped: Iterable[Any] = values.values()  # tested by type(v) is ...: mypy cannot follow t
    fields += [
        (
            k,
            v
            if (t := type(v)) is bytes
            else b"%d" % v
            if t is int
            else v.encode("utf-8", "surrogateescape")
            if t is str
            else _journal_value(v),
        )
        for k, v in zip(keys, untyped)
    ]
    cgroup = values.get("cgroup")
    if type(cgroup) is str and cgroup:
        fields += object_unit_fields(cgroup)
    return fields


def native_entry(fields: Fields) -> bytes:
    """Encode an entry in journald's native protocol."""
    # Common case first: no value holds a newline, so KEY=value lines joined by
    # newlines have exactly one newline per field (one C-level count checks that).
    entry = b"\n".join(map(b"=".join, fields)) + b"\n"  # KEY=value, joined in C
    if entry.count(b"\n") == len(fields):
        return entry
    out: list[bytes] = []
    for key, value in fields:
        if b"\n" in value:
            out += (key, b"\n", _LE64.pack(len(value)), value, b"\n")
        else:
            out += (key, b"=", value, b"\n")
    return b"".join(out)


class NativeJournal:
    """A non-blocking datagram socket connected to journald; ``send`` is the sink's Send.

    Connected, so that poll(POLLOUT) on ``fileno()`` says when journald has room
    again (its receive queue is short: net.unix.max_dgram_qlen, 10 by default).
    A journald restart leaves the socket pointing at the old one: reconnect once.
    """

    SNDBUF = 8 << 20  # as libsystemd: room for bursts before journald reads

    def __init__(self, path: Path = JOURNAL_SOCKET) -> None:
        self._path = str(path)
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        for opt in (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, self.SNDBUF)
                break
            except OSError:
                continue
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        return sock

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def send(self, entry: bytes) -> None:
        sock = self._sock or self._connect()
        try:
            sock.send(entry)
        except BlockingIOError:
            raise
        except OSError as e:
            if e.errno in (errno.EMSGSIZE, errno.ENOBUFS, errno.ENOMEM):  # too big: as libsystemd does
                self._send_memfd(entry)
                return
            if e.errno not in (errno.ECONNREFUSED, errno.ENOTCONN, errno.EPIPE, errno.ECONNRESET):
                raise
            self.close()  # journald restarted (or is gone): one fresh connection
            self._connect().send(entry)

    def _send_memfd(self, entry: bytes) -> None:
        # Too big for one datagram: journald accepts a sealed memfd holding the entry.
        fd = os.memfd_create("krsid-journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(entry)
            while view:
                view = view[os.write(fd, view) :]
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            (self._sock or self._connect()).sendmsg([], rights)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def libsystemd_sender() -> Send:
    """sd_journal_sendv through python-systemd: blocking, holds the GIL. For tests
    and benchmarks that compare it with the native sender; the daemon does not use it."""
    journal = importlib.import_module("systemd.journal")

    def send(entry: bytes) -> None:
        journal.sendv(*_items_of(entry))

    return send


def _items_of(entry: bytes) -> list[bytes]:
    """Decode a native entry back into KEY=value items (the inverse of native_entry)."""
    items, i = [], 0
    while i < len(entry):
        nl = entry.index(b"\n", i)
        line = entry[i:nl]
        if b"=" in line:
            items.append(line)
            i = nl + 1
        else:
            (size,) = _LE64.unpack_from(entry, nl + 1)
            start = nl + 1 + 8
            items.append(line + b"=" + entry[start : start + size])
            i = start + size + 1
    return items


class JournaldSink:
    """Writes events to journald without ever blocking; notices (once) when there is
    no journald to write to, and counts what it could not deliver."""

    name = "journald"

    def __init__(
        self,
        send: Send | None = None,
        *,
        socket_path: Path = JOURNAL_SOCKET,
        log: Callable[[str], None] | None = None,
        recheck_seconds: float = 1.0,
        backlog_bytes: int = DEFAULT_BACKLOG_BYTES,
    ) -> None:
        self._journal = NativeJournal(socket_path) if send is None else None
        self._send = send if send is not None else self._journal.send  # type: ignore[union-attr]
        self._socket_path = socket_path
        self._log = log or (lambda msg: None)
        self._recheck = recheck_seconds
        self._available = True
        self._refused = False
        self._next_check = 0.0
        self.backlog = Backlog(backlog_bytes)

    def _check_socket(self) -> bool:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._recheck
            present = os.path.exists(self._socket_path)
            if present != self._available:
                self._log(
                    f"journald sink: {self._socket_path} is back; delivering again"
                    if present
                    else f"journald sink: no journald socket at {self._socket_path}; journald events are "
                    'counted as lost (krsid_events_lost_total{stage="sink_journald"}) until it appears; '
                    "other sinks keep running"
                )
            self._available = present
        return self._available

    def emit(self, event: Event) -> None:
        if not self._check_socket():
            raise SinkUnavailable("no journald socket")
        self.backlog.check_room()
        self.backlog.push(event.hook, native_entry(journal_fields(event)))

    def flush(self) -> Counter[str]:
        lost: Counter[str] = Counter()
        backlog = self.backlog
        send = self._send
        while backlog.entries:
            hook, entry = backlog.entries[0]
            try:
                send(entry)
            except BlockingIOError:
                break  # journald is behind: keep the rest for the next round
            except OSError as e:
                backlog.popleft()
                lost[hook] += 1
                if e.errno in _GONE:
                    # journald died (its socket file may stay behind): what is queued
                    # cannot be delivered; say so once per outage.
                    lost += backlog.drop_all()
                    self._next_check = 0.0
                    if not self._refused:
                        self._refused = True
                        self._log(
                            f"journald sink: journald refuses entries ({e.strerror}); they are counted as "
                            'lost (krsid_events_lost_total{stage="sink_journald"}) until it is back'
                        )
                    break
                continue
            backlog.popleft()
            if self._refused:
                self._refused = False
                self._log("journald sink: journald accepts entries again")
        return lost

    def pending(self) -> int:
        return len(self.backlog)

    def wait_fd(self) -> int:
        """A socket to poll for POLLOUT while entries are pending (-1: none, retry on a timer)."""
        return self._journal.fileno() if self._journal is not None else -1

    def close(self) -> Counter[str]:
        deadline = time.monotonic() + 2.0
        lost = self.flush()
        while self.backlog.entries and time.monotonic() < deadline:
            time.sleep(0.01)
            lost += self.flush()
        lost += self.backlog.drop_all()
        if self._journal is not None:
            self._journal.close()
        return lost
