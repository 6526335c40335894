"""JSON lines file rotation: reopen on request (SIGUSR1) and when the path stops naming
the open file; every line lands whole in exactly one file, a failed reopen is counted
and retried, stdout is never reopened."""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from krsid.event import Event
from krsid.pipeline.decode import EventDecoder
from krsid.pipeline.dispatch import Dispatcher
from krsid.pipeline.stats import PipelineStats
from krsid.sinks import jsonl
from krsid.sinks.jsonl import ROTATION_CHECK_INTERVAL, JsonlSink, event_line
from tests.support.records import catalog, pack

EXEC = catalog()["bprm_check_security"]
DECODER = EventDecoder({0: EXEC}, boot_to_epoch=0.0)


def event(seq: int) -> Event:
    return DECODER.decode(pack(EXEC, 0, seq=seq, pid=10, tgid=10, comm="sh", filename=b"/bin/true"))


class Clock:
    """A monotonic clock the test moves by hand (the inode check runs once a second)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = ROTATION_CHECK_INTERVAL) -> None:
        self.now += seconds


def seqs(path: Path) -> list[int]:
    """seq of every line; fails on a torn line (a file must end with a whole line)."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends with a torn line"
    return [json.loads(line)["seq"] for line in data.splitlines()]


def emit(sink: JsonlSink, *numbers: int) -> None:
    for n in numbers:
        sink.emit(event(n))


def test_reopen_on_request_moves_later_lines_to_the_new_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(str(path), clock=Clock())
    emit(sink, 1, 2)
    assert not sink.flush()
    path.rename(tmp_path / "events.jsonl.1")  # what logrotate does first
    emit(sink, 3, 4)  # queued before the request: still the old file's
    sink.reopen()
    assert not sink.flush()
    emit(sink, 5, 6)
    assert not sink.flush() and not sink.close()
    assert seqs(tmp_path / "events.jsonl.1") == [1, 2, 3, 4]
    assert seqs(path) == [5, 6]
    assert oct(path.stat().st_mode & 0o777) in (oct(jsonl.FILE_MODE & ~0o022), oct(jsonl.FILE_MODE))


def test_without_a_reopen_lines_follow_the_renamed_file(tmp_path: Path) -> None:
    """The switch above is the reopen's doing: with none, the renamed file gets everything."""
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(str(path), clock=Clock())  # the clock never moves: no inode check
    emit(sink, 1)
    sink.flush()
    path.rename(tmp_path / "events.jsonl.1")
    emit(sink, 2)
    sink.flush()
    sink.close()
    assert seqs(tmp_path / "events.jsonl.1") == [1, 2] and not path.exists()


@pytest.mark.parametrize("rotation", ["rename", "unlink", "replace"])
def test_a_rotation_without_signal_is_noticed_within_a_second(tmp_path: Path, rotation: str) -> None:
    path = tmp_path / "events.jsonl"
    clock = Clock()
    sink = JsonlSink(str(path), clock=clock)
    emit(sink, 1)
    sink.flush()
    old = tmp_path / "events.jsonl.1"
    if rotation == "rename":
        path.rename(old)
    elif rotation == "unlink":
        os.link(path, old)  # keep the old inode readable for the assertion
        path.unlink()
    else:  # another file put in its place (logrotate's create)
        path.rename(old)
        path.write_bytes(b"")
    emit(sink, 2)
    clock.advance(ROTATION_CHECK_INTERVAL / 2)
    sink.flush()  # too early for the check: still the old file
    emit(sink, 3)
    clock.advance(ROTATION_CHECK_INTERVAL / 2)
    sink.flush()  # the check runs: line 3 is written to the old file first, then the reopen
    emit(sink, 4)
    sink.flush()
    sink.close()
    assert seqs(old) == [1, 2, 3]
    assert seqs(path) == [4]


def test_lines_are_not_written_into_a_deleted_file_once_it_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    clock = Clock()
    sink = JsonlSink(str(path), clock=clock)
    emit(sink, 1)
    sink.flush()
    path.unlink()
    emit(sink, 2)
    clock.advance()
    sink.flush()  # the check finds the file deleted: line 2 goes to the new file
    sink.close()
    assert seqs(path) == [2]


def test_the_inode_check_runs_at_most_once_a_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "events.jsonl"
    clock = Clock()
    sink = JsonlSink(str(path), clock=clock)
    stats: list[str] = []
    real_stat = os.stat

    def counting_stat(p: str, *args: Any, **kw: Any) -> os.stat_result:
        stats.append(str(p))
        return real_stat(p, *args, **kw)

    monkeypatch.setattr(os, "stat", counting_stat)
    for _ in range(100):
        emit(sink, 1)
        sink.flush()
    assert stats == []
    clock.advance()
    for _ in range(100):
        sink.flush()
    assert stats == [str(path)]
    sink.close()


def test_a_failed_reopen_is_counted_and_retried_and_the_old_file_kept(tmp_path: Path) -> None:
    """The path cannot be opened (here: a directory took its place): the error is counted
    and logged once, lines keep going to the old (renamed) file, and a later retry works."""
    path = tmp_path / "events.jsonl"
    clock, logs, stats = Clock(), list[str](), PipelineStats()
    sink = JsonlSink(str(path), clock=clock, log=logs.append)
    d = Dispatcher([sink], stats, log=logs.append)
    d.handle(event(1))
    d.flush()
    old = tmp_path / "events.jsonl.1"
    path.rename(old)
    path.mkdir()
    d.reopen()
    d.handle(event(2))
    d.flush()
    assert stats.sink_errors["jsonl"] == 1
    assert any("cannot reopen" in line and "still writing to the old file" in line for line in logs), logs
    clock.advance()
    d.handle(event(3))
    d.flush()  # retried once a second: fails again, counted again
    assert stats.sink_errors["jsonl"] == 2
    path.rmdir()
    clock.advance()
    d.handle(event(4))
    d.flush()
    d.handle(event(5))
    d.close()
    assert seqs(old) == [1, 2, 3, 4] and seqs(path) == [5]
    assert stats.sink_errors["jsonl"] == 2 and not stats.lost
    assert any(f"reopened {path}" in line for line in logs), logs


def test_a_deleted_file_that_cannot_be_reopened_holds_lines_until_it_can(tmp_path: Path) -> None:
    """The directory itself is gone: writing on into the deleted file would lose lines
    without a trace, so they wait in the backlog (bounded, losses counted) until the
    directory is back."""
    logdir = tmp_path / "log"
    logdir.mkdir()
    path = logdir / "events.jsonl"
    clock, logs, stats = Clock(), list[str](), PipelineStats()
    sink = JsonlSink(str(path), clock=clock, log=logs.append)
    d = Dispatcher([sink], stats, log=logs.append)
    d.handle(event(1))
    d.flush()
    first = path.read_bytes()
    path.unlink()
    logdir.rmdir()
    clock.advance()
    d.handle(event(2))
    d.flush()
    assert stats.sink_errors["jsonl"] == 1 and sink.pending() == 1
    assert any("holding new lines" in line for line in logs), logs
    d.handle(event(3))
    d.flush()
    assert sink.pending() == 2  # nothing written into the deleted file
    logdir.mkdir()
    clock.advance()
    d.flush()
    assert sink.pending() == 0
    d.close()
    assert seqs(path) == [2, 3] and json.loads(first)["seq"] == 1
    assert not stats.lost


def test_lines_held_at_stop_are_counted_lost(tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    logdir.mkdir()
    path = logdir / "events.jsonl"
    clock, stats = Clock(), PipelineStats()
    sink = JsonlSink(str(path), clock=clock, log=lambda _m: None)
    d = Dispatcher([sink], stats, log=lambda _m: None)
    path.unlink()
    logdir.rmdir()
    sink.reopen()
    d.handle(event(1))
    d.flush()
    d.close()  # one last reopen attempt fails too: the held line is lost, and counted
    assert stats.lost[("bprm_check_security", "sink_jsonl")] == 1


def test_stdout_and_streams_are_never_reopened(capfd: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    sink = JsonlSink(stream=out, clock=Clock())
    emit(sink, 1)
    sink.reopen()
    assert not sink.flush() and sink.take_errors() == []
    emit(sink, 2)
    sink.flush()
    assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == [1, 2]

    capfd.readouterr()
    sink = JsonlSink("-", clock=Clock())  # fd 1 is pytest's capture file here
    writer = sink._writer
    assert not writer.reopenable
    sink.reopen()
    emit(sink, 3)
    sink.flush()
    assert sink._writer is writer and sink.take_errors() == []
    sink.close()
    assert [json.loads(line)["seq"] for line in capfd.readouterr().out.splitlines()] == [3]


class PartialWriter:
    """A destination that takes a set number of bytes per write; each reopen starts a new file."""

    reopenable = True
    path = "fake"

    def __init__(self) -> None:
        self.files: list[bytearray] = [bytearray()]
        self.budget = 1 << 30

    @property
    def is_open(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        n = min(len(data), self.budget)
        self.files[-1] += data[:n]
        self.budget -= n
        return n

    def flush(self) -> None:
        pass

    def path_moved(self) -> bool:
        return False

    def file_deleted(self) -> bool:
        return False

    def reopen(self) -> None:
        self.files.append(bytearray())

    def wait_fd(self) -> int:
        return -1

    def close(self) -> None:
        pass


def test_a_reopen_waits_for_the_line_being_written_to_end() -> None:
    """A destination that took half a line: the rest of that line goes to the same file
    before the reopen, so neither file holds a torn line."""
    sink = JsonlSink(stream=io.StringIO(), clock=Clock())
    writer = PartialWriter()
    sink._writer = writer  # type: ignore[assignment]
    line = event_line(event(1))
    writer.budget = len(line) // 2
    emit(sink, 1, 2)
    sink.reopen()
    assert sink.flush() == Counter()
    assert len(writer.files) == 1 and sink.pending() == 2  # half of line 1 is out: no reopen yet
    writer.budget = len(line) - len(line) // 2  # exactly the rest of line 1
    sink.flush()
    assert len(writer.files) == 2 and sink.pending() == 1  # line 1 finished, then the reopen
    writer.budget = 1 << 30
    sink.flush()
    assert [json.loads(x)["seq"] for x in bytes(writer.files[0]).splitlines()] == [1]
    assert [json.loads(x)["seq"] for x in bytes(writer.files[1]).splitlines()] == [2]
    assert all(bytes(f).endswith(b"\n") for f in writer.files)
