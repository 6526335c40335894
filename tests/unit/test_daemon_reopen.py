"""SIGUSR1 in the daemon: handled from the start (its default action would end the
process during the compile), and served by the poll loop before the sinks' flush."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from krsid.catalog import load_catalog
from krsid.config import Config, parse_config
from krsid.daemon import Daemon
from krsid.pipeline.dispatch import Dispatcher
from krsid.pipeline.transport import PerfBufferTransport
from tests.support.daemons import BPF_LSM_ACTIVE
from tests.support.records import PROGRAMS
from tests.support.sinks import StubSink

CATALOG = load_catalog(PROGRAMS)


def config(tmp_path: Path) -> Config:
    text = f"state_dir: {tmp_path / 'state'}\ncache_dir: {tmp_path / 'cache'}\nhooks:\n  bprm_check_security: {{}}\n"
    return parse_config(text, "t.yaml", catalog=CATALOG)


@pytest.fixture(autouse=True)
def keep_signal_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    # Should krsid not handle SIGUSR1, the test fails instead of the signal ending pytest.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_sigusr1_is_handled_before_the_compile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = Daemon(config(tmp_path), sinks=[], bpf_lsm_check=lambda: BPF_LSM_ACTIVE)
    seen = []

    def build_programs() -> None:
        seen.append(signal.getsignal(signal.SIGUSR1))
        os.kill(os.getpid(), signal.SIGUSR1)  # logrotate during the compile: must not end krsid
        raise RuntimeError("stop here")

    monkeypatch.setattr(d, "build_programs", build_programs)
    with pytest.raises(RuntimeError, match="stop here"):
        d.start()
    assert seen == [d.request_reopen]
    assert d._reopen_requested  # remembered for run()


class RecordingSink(StubSink):
    """Notes its flushes and reopens, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def flush(self) -> Counter[str]:
        self.calls.append("flush")
        return super().flush()

    def reopen(self) -> None:
        self.calls.append("reopen")


class SignallingPrograms:
    """Polls three times: SIGUSR1 arrives during the second poll, the third ends the run."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.polls = 0

    def poll(self, timeout_ms: int) -> None:
        self.polls += 1
        if self.polls == 2:
            os.kill(os.getpid(), signal.SIGUSR1)
        if self.polls == 3:
            self.daemon.request_stop()

    def current_sequence(self) -> int:
        return 0


def test_the_poll_loop_reopens_on_sigusr1_then_flushes(tmp_path: Path) -> None:
    d = Daemon(config(tmp_path), sinks=[], bpf_lsm_check=lambda: BPF_LSM_ACTIVE)
    sink = RecordingSink()
    d.dispatcher = Dispatcher([sink], d.stats, log=lambda _m: None)
    programs = SignallingPrograms(d)
    d.programs = programs  # type: ignore[assignment]
    d.transport = PerfBufferTransport(programs.poll)
    signal.signal(signal.SIGUSR1, d.request_reopen)  # as start() does
    d.run()
    assert sink.calls == ["flush", "reopen", "flush", "flush"]


class CompiledNotAttached:
    """What build_programs returns: compiled programs that must not get attached."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> object:
        def record(*args: object, **kwargs: object) -> int:
            self.calls.append(name)
            return 0

        return record


def test_a_stop_during_the_compile_ends_start_and_run_before_anything_is_attached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LLVM cannot be interrupted: SIGTERM mid-compile is noted by the handler installed
    before it, and the daemon exits cleanly once the compile returns."""
    d = Daemon(config(tmp_path), sinks=[], bpf_lsm_check=lambda: BPF_LSM_ACTIVE)
    programs = CompiledNotAttached()

    def build_programs() -> CompiledNotAttached:
        os.kill(os.getpid(), signal.SIGTERM)  # systemctl stop during the compile
        return programs

    monkeypatch.setattr(d, "build_programs", build_programs)
    d.start()
    d.run()  # returns at once
    d.stop()
    assert "attach" not in programs.calls and "open_events" not in programs.calls, programs.calls
    assert "close" in programs.calls  # the compiled module is freed
    assert d.dispatcher is None
