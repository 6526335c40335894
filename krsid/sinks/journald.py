"""journald sink: one structured entry per event, a stable MESSAGE_ID per hook.

Uses sd_journal_sendv with one "KEY=value" item per field. Each item is one field
whatever the value holds, newlines and '=' included (libsystemd switches to the
binary-safe framing), so a hostile file name cannot forge another field. Values
from the kernel stay bytes: journald stores them as given.
"""

from __future__ import annotations

import importlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from krsid.pipeline.decode import Event, Value, text_of
from krsid.sinks.base import SinkUnavailable

# libsystemd 252 hard-codes this path; sd_journal_sendv silently returns success
# when it is missing (journal-send.c: "fail silently if the journal is not
# available"), so the sink has to look for itself to be able to say so.
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
SYSLOG_IDENTIFIER = "krsid"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Sender = Callable[..., object]


def _default_sender() -> Sender:
    # Imported here: only this sink needs libsystemd (python-systemd ships no type info).
    journal = importlib.import_module("systemd.journal")
    sendv: Sender = journal.sendv
    return sendv


def _escape_control(text: str) -> str:
    """MESSAGE is for one-line reading: control characters (newlines, ANSI ESC) shown as \\xNN."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def render_message(event: Event) -> str:
    """The hook's MESSAGE template with each {field} replaced by its readable value."""
    values = event.values
    empties = {f.name: f.empty for f in event.spec.fields if f.empty}

    def field(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "hook":
            return event.hook
        v = values.get(name, "")
        text = text_of(v)
        return _escape_control(text) if text else empties.get(name, "")

    return re.sub(r"\{([a-z_][a-z0-9_]*)\}", field, event.spec.message)


def _quote(arg: bytes) -> bytes:
    """Shell-style quoting, so a list reads back unambiguously (spaces, quotes, newlines)."""
    if arg and all(c not in arg for c in b" \t\n'\"\\$`;&|<>()*?[]{}!#~"):
        return arg
    return b"'" + arg.replace(b"'", b"'\\''") + b"'"


def _journal_value(v: Value) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, tuple):
        return b" ".join(_quote(a) for a in v)
    if isinstance(v, bool):
        return b"1" if v else b"0"
    return str(v).encode()


def journal_fields(event: Event) -> list[bytes]:
    """The sd_journal_sendv items for an event."""
    spec = event.spec
    items = [
        b"MESSAGE=" + render_message(event).encode("utf-8", "surrogateescape"),
        b"MESSAGE_ID=" + spec.message_id.encode(),
        b"PRIORITY=%d" % spec.priority,
        b"SYSLOG_IDENTIFIER=" + SYSLOG_IDENTIFIER.encode(),
        b"KRSID_HOOK=" + spec.name.encode(),
    ]
    # Every value: the hook's fields and whatever enrichment added (names are
    # [a-z0-9_], from the sidecars or krsid itself, never from event content).
    for name, v in event.values.items():
        items.append(b"KRSID_" + name.upper().encode() + b"=" + _journal_value(v))
    return items


class JournaldSink:
    """Writes events to journald; notices (once) when there is no journald to write to."""

    name = "journald"

    def __init__(
        self,
        sender: Sender | None = None,
        *,
        socket_path: Path = JOURNAL_SOCKET,
        log: Callable[[str], None] | None = None,
        recheck_seconds: float = 1.0,
    ) -> None:
        self._send = sender or _default_sender()
        self._socket_path = socket_path
        self._log = log or (lambda msg: None)
        self._recheck = recheck_seconds
        self._available = True
        self._next_check = 0.0

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
        try:
            self._send(*journal_fields(event))
        except OSError as e:
            self._next_check = 0.0  # journald may have died: look again next time
            raise SinkUnavailable(f"journald: {e}") from e

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
