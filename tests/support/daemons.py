"""Stand-ins for krsid.daemon.Daemon, for driving `krsid run` (cli.main) in unit tests."""

from __future__ import annotations

import pytest

from krsid.daemon import Daemon
from krsid.errors import KrsidError
from krsid.kernel.probe import Check

BPF_LSM_ACTIVE = Check("bpf in active LSMs", True, "bpf (test)", "")


def refusing_daemon(error: KrsidError) -> type:
    """A Daemon class whose start() raises `error` (what cmd_run then turns into an exit status)."""

    class Refusing:
        stop_signal = 0

        def __init__(self, config: object) -> None:
            pass

        def start(self) -> None:
            raise error

        def run(self) -> None:
            raise AssertionError("run() after a failed start()")

        def stop(self) -> None:
            pass

    return Refusing


def assert_refused_before_compile(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, error: type[KrsidError], match: str
) -> None:
    """daemon.start() raises `error` (matching `match`) without having compiled anything."""
    compiled: list[bool] = []
    monkeypatch.setattr(daemon, "build_programs", lambda: compiled.append(True))
    with pytest.raises(error, match=match):
        daemon.start()
    assert not compiled, "start() compiled before refusing"
