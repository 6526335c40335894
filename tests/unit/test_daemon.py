from __future__ import annotations

import socket
from pathlib import Path

import pytest

from krsid.daemon import SEQ_CRASH_JUMP, Notifier, SeqState


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


def test_notifier_never_blocks_on_a_full_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        n = Notifier(str(path))
        for _ in range(5000):  # far beyond the queue length: must return, not hang
            n.notify("WATCHDOG=1")


def test_notifier_without_socket_is_silent() -> None:
    Notifier("").notify("READY=1")


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
