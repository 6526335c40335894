"""The service protocol (krsid.service): sd_notify, the sequence state file, the pid file."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path

import pytest

from krsid.service import SEQ_CRASH_JUMP, Notifier, SeqState, remove_pid_file, write_pid_file


def test_notifier_sends_datagrams_and_reads_watchdog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "3000000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        n = Notifier()
        assert n.watchdog_interval == 1.5
        n.notify("READY=1\nSTATUS=ok")
        assert sock.recv(100) == b"READY=1\nSTATUS=ok"


def test_watchdog_for_another_pid_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert Notifier("").watchdog_interval == 0.0


@pytest.mark.timeout(30)  # a notify that blocks on the full queue hangs here: fail, do not wait
def test_notifier_never_blocks_on_a_full_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        n = Notifier(str(path))
        for _ in range(5000):  # far beyond the queue length: must return, not hang
            n.notify("WATCHDOG=1")
        sock.setblocking(False)
        received = 0
        with contextlib.suppress(BlockingIOError):
            while sock.recv(100) == b"WATCHDOG=1":
                received += 1
    # The queue took some, the rest were dropped instead of waited for.
    assert 0 < received < 5000


def test_notifier_without_socket_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_socket(*_args: object) -> socket.socket:
        raise AssertionError("a notifier without $NOTIFY_SOCKET opened a socket")

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.setattr(socket, "socket", no_socket)
    for n in (Notifier(""), Notifier()):
        n.notify("READY=1")  # sends nothing, raises nothing
        assert n.watchdog_interval == 0.0


def test_seq_state_per_boot_and_crash_jump(tmp_path: Path) -> None:
    st = SeqState(tmp_path / "sub" / "seq")
    assert st.load() == 0
    st.save(41, clean=True)
    assert st.load() == 41
    st.save(50, clean=False)  # a crash: the kernel counter may be ahead of the file
    assert st.load() == 50 + SEQ_CRASH_JUMP
    (tmp_path / "sub" / "seq").write_text("other-boot 99 clean\n")
    assert st.load() == 0
    (tmp_path / "sub" / "seq").write_text("garbage")
    assert st.load() == 0


def test_pid_file_holds_this_pid_and_goes_away(tmp_path: Path) -> None:
    pid_file = tmp_path / "state" / "krsid.pid"
    write_pid_file(pid_file)
    assert pid_file.read_text() == f"{os.getpid()}\n"
    remove_pid_file(pid_file)
    assert not pid_file.exists()
    remove_pid_file(pid_file)  # already gone: not an error


def test_an_unwritable_pid_file_is_a_warning_not_a_failure(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "state").write_text("a file where the directory should be")
    with caplog.at_level(logging.WARNING, logger="krsid"):
        write_pid_file(tmp_path / "state" / "krsid.pid")
    assert any("krsid reload needs it" in r.getMessage() for r in caplog.records)


def test_daemon_process_key_packs_the_pid_under_its_pid_namespace() -> None:
    """krsid.h's krsid_task_is_process compares the pid at the namespace level whose
    inode is in the high 32 bits: the layout is the contract."""
    from krsid.daemon import daemon_process_key

    assert daemon_process_key(1234, 4026531836) == (4026531836 << 32) | 1234
    here = daemon_process_key()
    assert (here & 0xFFFFFFFF, here >> 32) == (os.getpid(), os.stat("/proc/self/ns/pid").st_ino)
    for pid, inode in ((0, 4026531836), (1 << 32, 4026531836), (1, 0), (1, 1 << 32)):
        with pytest.raises(ValueError, match="out of range"):
            daemon_process_key(pid, inode)
