"""The journald sink against a real systemd-journald (private mount namespace)."""

from __future__ import annotations

from collections import Counter

import pytest

from krsid.event import Event
from krsid.pipeline.decode import EventDecoder
from krsid.sinks.journald import JournaldSink, NativeJournal, libsystemd_sender
from tests.support.journald import Journal
from tests.support.records import catalog, pack

CAT = catalog()
EXEC = CAT["bprm_check_security"]
DECODER = EventDecoder({0: EXEC}, boot_to_epoch=0.0)
# Other host tests in this process write to the same private journal (its files
# outlive each journald): match this module's own events, not just a seq.
MINE = "KRSID_COMM=tester"


def event(seq: int, filename: bytes) -> Event:
    return DECODER.decode(
        pack(EXEC, 0, seq=seq, pid=4242, tgid=4242, comm="tester", filename=filename, interp=filename, path=filename)
    )


def send(sink: JournaldSink, seq: int, filename: bytes) -> Counter[str]:
    """Queue and write one event; returns what the sink gave up (counted as lost)."""
    sink.emit(event(seq, filename))
    return sink.flush()


def field_bytes(entry: dict[str, object], name: str) -> bytes:
    v = entry[name]
    # journalctl -o json prints non-UTF-8 or control-laden values as byte arrays.
    return bytes(v) if isinstance(v, list) else str(v).encode()


HOSTILE = {
    "newline_forgery": b"/tmp/x\nKRSID_HOOK=fake\nMESSAGE_ID=00000000000000000000000000000000",
    "equals": b"/tmp/a=b=KRSID_PID=1",
    "invalid_utf8": b"/tmp/\xff\xfe\xc3(",
    "ansi": b"/tmp/\x1b[2J\x1b[31mred",
    "long": b"/" + b"p" * 254,
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_filename_is_stored_whole_and_forges_nothing(journal: Journal, case: str) -> None:
    name = HOSTILE[case]
    seq = 1000 + sorted(HOSTILE).index(case)
    send(JournaldSink(), seq, name)
    entries = journal.wait_for(lambda e: True, f"KRSID_SEQ={seq}", MINE)
    assert len(entries) == 1
    e = entries[0]
    assert field_bytes(e, "KRSID_FILENAME") == name
    assert e["KRSID_HOOK"] == "bprm_check_security"
    assert e["MESSAGE_ID"] == EXEC.message_id
    assert e["KRSID_PID"] == "4242"
    msg = field_bytes(e, "MESSAGE")
    assert b"\n" not in msg and b"\x1b" not in msg


def test_journald_restart_is_survived(journal: Journal) -> None:
    sink = JournaldSink(recheck_seconds=0.0)
    assert not send(sink, 2000, b"/before")
    journal.stop()
    # journald's socket file stays behind but nobody reads it: the entry is counted lost.
    assert send(sink, 2001, b"/while-down") == Counter({"bprm_check_security": 1})
    journal.restart()
    assert not send(sink, 2002, b"/after")  # reconnects to the new journald
    assert journal.wait_for(lambda e: True, "KRSID_SEQ=2002", MINE)
    assert journal.wait_for(lambda e: True, "KRSID_SEQ=2000", MINE, timeout=2)
    assert not journal.entries("KRSID_SEQ=2001", MINE)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_native_protocol_stores_what_libsystemd_stores(journal: Journal, case: str) -> None:
    """The sink speaks journald's native protocol itself (non-blocking); python-systemd's
    sd_journal_sendv is the reference: both store the same fields, byte for byte."""
    seq = 3000 + 2 * sorted(HOSTILE).index(case)
    native = JournaldSink()
    reference = JournaldSink(libsystemd_sender())
    for sink, s in ((native, seq), (reference, seq + 1)):
        assert not send(sink, s, HOSTILE[case])
    a = journal.wait_for(lambda e: True, f"KRSID_SEQ={seq}", MINE)
    b = journal.wait_for(lambda e: True, f"KRSID_SEQ={seq + 1}", MINE)
    assert len(a) == len(b) == 1
    ours = {k: v for k, v in a[0].items() if k.startswith("KRSID_") or k in ("MESSAGE", "MESSAGE_ID", "PRIORITY")}
    theirs = {k: v for k, v in b[0].items() if k.startswith("KRSID_") or k in ("MESSAGE", "MESSAGE_ID", "PRIORITY")}
    ours.pop("KRSID_SEQ"), theirs.pop("KRSID_SEQ")
    assert ours == theirs


def test_entry_larger_than_a_datagram_goes_through_a_memfd(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the socket's datagram limit the entry travels as a sealed memfd, as libsystemd does."""
    e = event(4000, b"/big")
    huge = b"/" + b"x" * (9 << 20)  # more than the 8 MiB send buffer: EMSGSIZE
    e.values["exe"] = huge
    used: list[int] = []
    real = NativeJournal._send_memfd

    def counting(self: NativeJournal, entry: bytes) -> None:
        used.append(len(entry))
        real(self, entry)

    monkeypatch.setattr(NativeJournal, "_send_memfd", counting)
    sink = JournaldSink()
    sink.emit(e)
    assert not sink.flush()
    assert used, "the entry fit in a datagram: not the memfd path"
    found = journal.wait_for(lambda x: True, "KRSID_SEQ=4000", MINE)
    assert len(found) == 1 and field_bytes(found[0], "KRSID_EXE") == huge
