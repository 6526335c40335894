"""What start() settles before the (slow) compile, and what a stop mid-compile must
leave as it was: the sequence state file."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from krsid import cli
from krsid.catalog import load_catalog
from krsid.config import Config, parse_config
from krsid.daemon import Daemon
from krsid.errors import SinkError
from krsid.service import SeqState
from tests.support.daemons import BPF_LSM_ACTIVE, assert_refused_before_compile, refusing_daemon
from tests.support.records import PROGRAMS

CATALOG = load_catalog(PROGRAMS)


def config(tmp_path: Path, sinks: str = "sinks: {journald: {enabled: false}, prometheus: {enabled: false}}") -> Config:
    text = (
        f"state_dir: {tmp_path / 'state'}\ncache_dir: {tmp_path / 'cache'}\n"
        f"hooks:\n  bprm_check_security: {{}}\n{sinks}\n"
    )
    return parse_config(text, "t.yaml", catalog=CATALOG)


@pytest.fixture(autouse=True)
def keep_signal_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


class Unseeded:
    """Compiled programs whose krsid_seq map was never seeded: it reads 0."""

    def current_sequence(self) -> int:
        return 0

    def close(self) -> None:
        pass


def test_a_stop_during_the_compile_leaves_the_sequence_state_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = config(tmp_path, "sinks: {journald: {enabled: false}, jsonl: {enabled: false}, prometheus: {enabled: false}}")
    state = SeqState(c.state_dir / "seq")
    state.save(123456, clean=True)
    d = Daemon(c, bpf_lsm_check=lambda: BPF_LSM_ACTIVE)

    def build_programs() -> Unseeded:
        os.kill(os.getpid(), signal.SIGTERM)  # systemctl stop during the compile
        return Unseeded()

    monkeypatch.setattr(d, "build_programs", build_programs)
    d.start()
    d.run()
    d.stop()
    # Saving the unseeded map's 0 as "clean" would make the next start reuse seq numbers.
    assert state.load() == 123456


def test_an_unopenable_jsonl_path_is_a_config_error_before_the_compile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("")
    c = config(tmp_path, f"sinks: {{journald: {{enabled: false}}, jsonl: {{path: {tmp_path / 'file' / 'x.jsonl'}}}}}")
    d = Daemon(c, bpf_lsm_check=lambda: BPF_LSM_ACTIVE)
    assert_refused_before_compile(d, monkeypatch, SinkError, r"sinks\.jsonl\.path: cannot open")


def test_a_metrics_port_in_use_is_a_config_error_before_the_compile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        off = "journald: {enabled: false}, jsonl: {enabled: false}"
        sinks = f"sinks: {{{off}, prometheus: {{listen: '127.0.0.1:{port}'}}}}"
        d = Daemon(config(tmp_path, sinks), bpf_lsm_check=lambda: BPF_LSM_ACTIVE)
        assert_refused_before_compile(d, monkeypatch, SinkError, rf"cannot listen on 127\.0\.0\.1:{port}: ")


def test_a_sink_error_exits_2_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import krsid.daemon

    error = SinkError("sinks.prometheus.listen: cannot listen on 127.0.0.1:9477: Address already in use")
    monkeypatch.setattr(krsid.daemon, "Daemon", refusing_daemon(error))
    assert cli.main(["run", "-c", str(PROGRAMS.parent / "etc" / "krsid.yaml")]) == 2
    err = capsys.readouterr().err
    assert "krsid: config error: sinks.prometheus.listen: cannot listen" in err and "Traceback" not in err
