"""Stand-ins for krsid.daemon.Daemon, for driving `krsid run` (cli.main) in unit tests."""

from __future__ import annotations

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
