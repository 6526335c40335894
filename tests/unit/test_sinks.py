from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from krsid.event import SCHEMA_VERSION, Event
from krsid.memo import Memo
from krsid.pipeline.decode import EventDecoder
from krsid.pipeline.dispatch import Dispatcher
from krsid.pipeline.stats import PipelineStats
from krsid.sinks import jsonl
from krsid.sinks.base import Backlog, BacklogFull, SinkUnavailable
from krsid.sinks.journald import JournaldSink, _items_of, journal_fields, native_entry, render_message
from krsid.sinks.jsonl import JsonlSink, event_line
from tests.support.records import catalog, pack
from tests.support.sinks import StubSink, complete_jsonl, emit_and_flush, event_record

CAT = catalog()
EXEC, MPROT = CAT["bprm_check_security"], CAT["file_mprotect"]
DECODER = EventDecoder({0: EXEC, 1: MPROT}, boot_to_epoch=0.0)
HOSTILE = [
    b"name\nKRSID_HOOK=fake",  # newline + forged field
    b"a=b=c",
    b"KRSID_PID=1",
    b"\xff\xfe invalid utf-8 \xc3",
    b"\x1b[2J\x1b[31mred",  # ANSI escapes
    b"/" + b"d" * 254,  # as long as the event allows
]


def exec_event(filename: bytes = b"/bin/true", **kw: Any) -> Event:
    return DECODER.decode(
        pack(EXEC, 0, seq=5, pid=10, tgid=10, comm="sh", filename=filename, interp=filename, path=filename, **kw)
    )


class Recorder:
    """A journald sender that keeps the entries (native protocol, decoded back to items)."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, ...]] = []

    def __call__(self, entry: bytes) -> None:
        self.calls.append(tuple(_items_of(entry)))


def as_fields(items: tuple[bytes, ...] | list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for item in items:
        key, _, value = item.partition(b"=") if isinstance(item, bytes) else (item[0], b"=", item[1])
        assert key not in out, f"field {key!r} sent twice"
        out[key] = value
    return out


def test_journald_fields_for_exec(tmp_path: Path) -> None:
    sock = tmp_path / "socket"
    sock.touch()
    rec = Recorder()
    sink = JournaldSink(rec, socket_path=sock)
    sink.emit(exec_event())
    assert rec.calls == [] and sink.pending() == 1  # queued; written by flush
    assert not sink.flush() and sink.pending() == 0
    f = as_fields(rec.calls[0])
    assert f[b"MESSAGE_ID"] == EXEC.message_id.encode()
    assert f[b"PRIORITY"] == b"6" and f[b"SYSLOG_IDENTIFIER"] == b"krsid"
    assert f[b"KRSID_HOOK"] == b"bprm_check_security"
    assert f[b"KRSID_FILENAME"] == b"/bin/true" and f[b"KRSID_COMM"] == b"sh"
    assert f[b"KRSID_PID"] == b"10" and f[b"KRSID_SEQ"] == b"5"
    assert f[b"MESSAGE"].startswith(b"exec /bin/true")
    for required in (b"KRSID_TGID", b"KRSID_PPID", b"KRSID_UID", b"KRSID_GID", b"KRSID_INTERP"):
        assert required in f


def test_mprotect_message_and_fields() -> None:
    e = DECODER.decode(
        pack(MPROT, 1, vm_start=0x1000, vm_end=0x2000, reqprot=5, prot=5, flags=1, vm_flags=3, comm="jit", tgid=9)
    )
    f = as_fields(journal_fields(e))
    assert f[b"KRSID_PROT"] == b"READ|EXEC" and f[b"KRSID_REQPROT"] == b"READ|EXEC"
    assert f[b"KRSID_VM_START"] == b"0x1000" and f[b"KRSID_FILE"] == b""
    assert f[b"KRSID_ANONYMOUS"] == b"1"
    assert render_message(e) == "mprotect READ|EXEC on 0x1000-0x2000 (anonymous, was READ|WRITE) by jit[9] uid=0"


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_cannot_forge_journald_fields(name: bytes) -> None:
    entry = native_entry(journal_fields(exec_event(name)))
    # Each item is one field, whatever it holds: the value is carried whole.
    f = as_fields(tuple(_items_of(entry)))
    assert f[b"KRSID_FILENAME"] == name
    assert f[b"KRSID_HOOK"] == b"bprm_check_security"
    # MESSAGE stays one line with no raw control characters.
    assert not any(c < 0x20 or c == 0x7F for c in f[b"MESSAGE"])


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_in_jsonl_are_escaped_and_recoverable(name: bytes) -> None:
    out = io.StringIO()
    sink = JsonlSink(stream=out)
    sink.emit(exec_event(name))
    sink.flush()
    line = out.getvalue()
    assert line.count("\n") == 1 and line.endswith("\n")
    assert all(0x20 <= ord(c) < 0x7F for c in line[:-1])  # ASCII only, no raw controls
    obj = json.loads(line)
    assert obj["hook"] == "bprm_check_security"
    assert obj["filename"].encode("utf-8", "surrogateescape") == name


@pytest.mark.parametrize("name", [*HOSTILE, "ünïcödé ✓".encode(), b""])
def test_jsonl_lines_are_byte_for_byte_what_json_dumps_writes(name: bytes) -> None:
    """The sink calls the C encoder directly (krsid.sinks.jsonl._compact_ascii_encoder):
    its lines must stay exactly the stdlib's, nested ancestors, bools and bytes included."""
    event = exec_event(name, argc=2)
    event.values["ancestors"] = ({"pid": 1, "exe": name, "args": (name, b"-x")},)
    event.values["flag"] = True
    record = {"schema_version": SCHEMA_VERSION, "hook": event.hook, **event.values}
    line = event_line(event)
    record["time"] = json.loads(line)["time"]
    record = {k: record[k] for k in ["schema_version", "time", "hook", *event.values]}

    def text(o: object) -> str:
        assert isinstance(o, bytes)
        return o.decode("utf-8", "surrogateescape")

    assert line == (json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=text) + "\n").encode()


def test_the_encoders_text_cache_changes_no_line_and_stays_bounded() -> None:
    """The encoder's bytes -> text answers are cached by value (a krsid.memo.Memo): past
    its size it starts again, every line stays what json.dumps writes, and what json
    cannot encode is still refused."""
    size = jsonl.TEXT_CACHE_SIZE
    cache = Memo(jsonl._text, size)
    for i in range(size * 2 + 7):
        name = b"/tmp/f-%d-\xff" % (i % (size + 3))
        assert cache[name] == name.decode("utf-8", "surrogateescape")
        assert len(cache) <= size
    with pytest.raises(TypeError, match="cannot encode object as JSON"):
        cache[object()]
    event = exec_event(b"/usr/bin/\xfe-tool")
    assert event_line(event) == event_line(event)  # the second one from the cache
    event.values["odd"] = object()  # type: ignore[assignment]
    with pytest.raises(TypeError):
        event_line(event)


def test_an_event_without_values_is_a_whole_record() -> None:
    event = exec_event()
    event.values.clear()
    assert json.loads(event_line(event))["hook"] == "bprm_check_security"
    assert list(json.loads(event_line(event))) == ["schema_version", "time", "hook"]


def test_jsonl_record_shape() -> None:
    r = event_record(exec_event())
    assert r["schema_version"] == SCHEMA_VERSION == 2 and r["seq"] == 5 and r["pid"] == 10
    assert list(r)[:3] == ["schema_version", "time", "hook"]
    assert all(k == k.lower() and not k.startswith("krsid") for k in r)


def test_jsonl_appends_to_file(tmp_path: Path) -> None:
    p = tmp_path / "events.jsonl"
    p.write_text('{"old": 1}\n')
    sink = JsonlSink(str(p))
    sink.emit(exec_event())
    sink.close()
    lines = p.read_text().splitlines()
    assert json.loads(lines[0]) == {"old": 1} and json.loads(lines[1])["seq"] == 5


def test_a_reader_tailing_jsonl_leaves_a_half_written_line_for_later(tmp_path: Path) -> None:
    """The VM tests read the file while the daemon appends; a read caught mid-write
    (CI saw one) must not parse the torn line, and must get it once it is whole."""
    p = tmp_path / "events.jsonl"
    sink = JsonlSink(str(p))
    emit_and_flush(sink, exec_event())
    whole = p.read_bytes()
    torn = event_line(exec_event())[:40]
    with p.open("ab") as f:
        f.write(torn)
    assert [r["seq"] for r in complete_jsonl(p)] == [5]
    with p.open("ab") as f:
        f.write(event_line(exec_event())[40:])
    assert [r["seq"] for r in complete_jsonl(p)] == [5, 5]
    assert p.read_bytes().startswith(whole)
    sink.close()


def test_journald_without_socket_says_so_once_and_recovers(tmp_path: Path) -> None:
    sock = tmp_path / "socket"
    logged: list[str] = []
    rec = Recorder()
    sink = JournaldSink(rec, socket_path=sock, log=logged.append, recheck_seconds=0.0)
    for _ in range(3):
        with pytest.raises(SinkUnavailable):
            sink.emit(exec_event())
    assert len(logged) == 1 and "no journald socket" in logged[0]
    assert rec.calls == []
    sock.touch()
    sink.emit(exec_event())
    sink.flush()
    assert len(rec.calls) == 1 and "is back" in logged[1]


def test_dispatcher_counts_failing_sinks_and_keeps_the_others() -> None:
    class Broken(StubSink):
        def emit(self, event: Event) -> None:
            raise RuntimeError("boom")

    out = io.StringIO()
    stats = PipelineStats()
    logs: list[str] = []
    d = Dispatcher([Broken("broken"), JsonlSink(stream=out)], stats, log=logs.append)
    for _ in range(3):
        d.handle(exec_event())
    d.flush()
    assert stats.events["bprm_check_security"] == 3
    assert stats.lost[("bprm_check_security", "sink_broken")] == 3
    assert stats.sink_errors["broken"] == 3
    assert len(out.getvalue().splitlines()) == 3
    assert len(logs) == 1  # rate-limited


def test_4k_hostile_path_from_enrichment_is_carried_whole() -> None:
    """Kernel strings are bounded (256 bytes, truncation flagged), but user-space context
    such as exe (readlink of /proc/PID/exe) can be PATH_MAX long: sinks take any length."""
    e = exec_event()
    long_path = b"/" + b"d\n=KRSID_HOOK=fake\xff/" * 200 + b"x" * 96  # > 4 KiB
    assert len(long_path) > 4096
    e.values["exe"] = long_path
    f = as_fields(tuple(_items_of(native_entry(journal_fields(e)))))
    assert f[b"KRSID_EXE"] == long_path and f[b"KRSID_HOOK"] == b"bprm_check_security"
    out = io.StringIO()
    emit_and_flush(JsonlSink(stream=out), e)
    assert out.getvalue().count("\n") == 1
    assert json.loads(out.getvalue())["exe"].encode("utf-8", "surrogateescape") == long_path


class StallingSender:
    """A journald that takes nothing while ``stalled``, then everything."""

    def __init__(self) -> None:
        self.stalled = True
        self.entries: list[bytes] = []

    def __call__(self, entry: bytes) -> None:
        if self.stalled:
            raise BlockingIOError
        self.entries.append(entry)


def test_a_stalled_sink_fills_its_backlog_then_counts_drops_and_recovers(tmp_path: Path) -> None:
    sock = tmp_path / "socket"
    sock.touch()
    sender = StallingSender()
    one = len(native_entry(journal_fields(exec_event())))
    sink = JournaldSink(sender, socket_path=sock, backlog_bytes=10 * one)
    stats, logs = PipelineStats(), list[str]()
    d = Dispatcher([sink], stats, log=logs.append, log_interval=3600)
    for _ in range(25):
        d.handle(exec_event())
        d.flush()  # nothing goes out: the sender would block
    assert sink.pending() == 10 and stats.backlog["journald"] == (10, 10 * one)
    assert stats.lost[("bprm_check_security", "queue_journald")] == 15
    assert len(logs) == 1 and "is behind" in logs[0]  # once, not per event
    sender.stalled = False
    d.flush()
    assert len(sender.entries) == 10 and sink.pending() == 0
    assert "caught up; 15 event(s)" in logs[-1]
    assert stats.events["bprm_check_security"] == 25  # decoded; 10 delivered + 15 counted lost
    # The backlog drained: the daemon learns how big it got (to return that memory), once.
    assert d.take_drained_peak() == 10 * one
    assert d.take_drained_peak() == 0


@pytest.mark.parametrize("sink_kind", ["journald", "jsonl"])
def test_a_full_backlog_drops_before_encoding(tmp_path: Path, sink_kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under overload a dropped event must cost no encoding (issue 16): once the backlog
    is at its budget, emit refuses before the encoder runs, and counts the same loss."""
    import krsid.sinks.journald as journald_module

    sock = tmp_path / "socket"
    sock.touch()
    if sink_kind == "journald":
        one = len(native_entry(journal_fields(exec_event())))
        sink: JournaldSink | JsonlSink = JournaldSink(StallingSender(), socket_path=sock, backlog_bytes=3 * one)
        module: object = journald_module
        encoder = "journal_fields"
    else:
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open, never read
        sink = JsonlSink(str(fifo), backlog_bytes=1)
        module, encoder = sink, "_line"  # an instance attribute: the line encoder
    real = getattr(module, encoder)
    calls = []

    def counting(*args: object) -> object:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(module, encoder, counting)
    stats = PipelineStats()
    d = Dispatcher([sink], stats, log=lambda _m: None)
    for _ in range(50):
        d.handle(exec_event())
    queued = sink.pending()
    assert 1 <= queued < 50 and len(calls) == queued  # the 50 - queued refused were never encoded
    assert stats.lost[("bprm_check_security", f"queue_{sink_kind}")] == 50 - queued
    sink.close()
    if sink_kind == "jsonl":
        os.close(reader)


def test_no_drained_peak_while_a_sink_still_holds_entries(tmp_path: Path) -> None:
    sock = tmp_path / "socket"
    sock.touch()
    sink = JournaldSink(StallingSender(), socket_path=sock)
    d = Dispatcher([sink], PipelineStats(), log=lambda _m: None)
    d.handle(exec_event())
    d.flush()
    assert sink.pending() == 1 and d.take_drained_peak() == 0


def test_backlog_refuses_the_newest_and_keeps_order() -> None:
    b = Backlog(max_bytes=10)
    b.push("a", b"12345")
    b.push("b", b"67890")
    with pytest.raises(BacklogFull):
        b.push("c", b"x")
    assert [h for h, _ in b.entries] == ["a", "b"] and b.size == 10
    b.replace_head(b"45")
    assert b.size == 7 and b.popleft() == ("a", b"45")
    assert b.drop_all() == Counter({"b": 1}) and b.size == 0


def test_backlog_drops_written_entries_from_the_head() -> None:
    b = Backlog(max_bytes=100)
    for hook, data in (("a", b"12"), ("b", b"345"), ("c", b"6")):
        b.push(hook, data)
    b.drop_head(2, 5)
    assert list(b.entries) == [("c", b"6")] and b.size == 1
    b.drop_head(1, 1)
    assert not b.entries and b.size == 0


def test_jsonl_writes_a_backlog_larger_than_one_write_whole_and_in_order(tmp_path: Path) -> None:
    """Past jsonl.WRITE_CHUNK bytes the backlog goes out in several writes (each whole
    lines): every line arrives once, in order, and the backlog ends empty."""
    p = tmp_path / "events.jsonl"
    sink = JsonlSink(str(p), backlog_bytes=64 << 20)
    event = exec_event()
    line = len(event_line(event))
    n = jsonl.WRITE_CHUNK // line * 3 + 5
    for seq in range(n):
        event.seq = seq
        event.values["seq"] = seq
        sink.emit(event)
    assert sink.backlog.size > 2 * jsonl.WRITE_CHUNK
    assert sink.flush() == Counter() and sink.pending() == 0 and sink.backlog.size == 0
    assert [json.loads(text)["seq"] for text in p.read_text().splitlines()] == list(range(n))
    sink.close()


def test_jsonl_to_a_pipe_nobody_reads_never_blocks(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sink = JsonlSink(str(fifo), backlog_bytes=4 << 20)
    n = 0
    while sink.pending() == 0 or n < 2000:  # well past the 64 KiB pipe buffer
        sink.emit(exec_event())
        assert not sink.flush()
        n += 1
    assert sink.pending() > 0 and sink.wait_fd() >= 0
    with open(fifo, "rb", buffering=0) as reader:
        os.set_blocking(reader.fileno(), False)
        got = b""
        while sink.pending():
            got += reader.read(1 << 20) or b""
            sink.flush()
        got += reader.read(1 << 20) or b""
    assert got.count(b"\n") == n
    sink.close()
