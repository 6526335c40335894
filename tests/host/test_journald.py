"""The journald sink against a real systemd-journald (private mount namespace)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from krsid.pipeline.decode import EventDecoder
from krsid.sinks.base import SinkUnavailable
from krsid.sinks.journald import JournaldSink
from tests.support.journald import Journal, private_journald, unavailable_reason
from tests.support.records import catalog, pack

CAT = catalog()
EXEC = CAT["bprm_check_security"]
DECODER = EventDecoder({0: EXEC}, boot_to_epoch=0.0)


@pytest.fixture(scope="module")
def journal() -> Iterator[Journal]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with private_journald() as j:
        yield j


def send(sink: JournaldSink, seq: int, filename: bytes) -> None:
    sink.emit(
        DECODER.decode(
            pack(
                EXEC, 0, seq=seq, pid=4242, tgid=4242, comm="tester", filename=filename, interp=filename, path=filename
            )
        )
    )


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
    entries = journal.wait_for(lambda e: True, f"KRSID_SEQ={seq}")
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
    send(sink, 2000, b"/before")
    journal.stop()
    with pytest.raises(SinkUnavailable):
        send(sink, 2001, b"/while-down")
    journal.restart()
    send(sink, 2002, b"/after")
    assert journal.wait_for(lambda e: True, "KRSID_SEQ=2002")
    assert journal.wait_for(lambda e: True, "KRSID_SEQ=2000", timeout=2)
    assert not journal.entries("KRSID_SEQ=2001")
