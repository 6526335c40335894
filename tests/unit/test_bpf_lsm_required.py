"""Where `bpf` is not an active LSM, every program attaches without an error and is
never called: krsid would report "attached" and watch nothing. It must refuse to start
instead, before the compile, with an exit status the unit does not retry."""

from __future__ import annotations

from pathlib import Path

import pytest

from krsid import cli
from krsid.catalog import load_catalog
from krsid.config import parse_config
from krsid.daemon import Daemon
from krsid.errors import BpfLsmInactiveError
from krsid.kernel.probe import Check, lsm_active_check
from tests.support.daemons import assert_refused_before_compile, refusing_daemon
from tests.support.records import PROGRAMS

CATALOG = load_catalog(PROGRAMS)
UNIT = PROGRAMS.parent / "systemd" / "krsid.service"


def daemon(tmp_path: Path, check: Check) -> Daemon:
    text = f"state_dir: {tmp_path}\ncache_dir: {tmp_path}\nhooks:\n  bprm_check_security: {{}}\n"
    return Daemon(parse_config(text, "t.yaml", catalog=CATALOG), sinks=[], bpf_lsm_check=lambda: check)


def test_no_bpf_in_the_active_lsms_refuses_to_start_before_compiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = daemon(tmp_path, lsm_active_check(["lockdown", "capability", "apparmor"], "securityfs"))
    assert_refused_before_compile(
        d, monkeypatch, BpfLsmInactiveError, r"BPF-LSM is not active .*lsm=lockdown,apparmor,bpf"
    )


def test_an_unreadable_lsm_list_only_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    d = daemon(tmp_path, lsm_active_check(None, "securityfs is not mounted"))

    def build_programs() -> None:
        raise RuntimeError("compiling")

    monkeypatch.setattr(d, "build_programs", build_programs)
    with pytest.raises(RuntimeError, match="compiling"):
        d.start()
    assert "cannot tell whether BPF-LSM is active" in caplog.text


def test_run_exits_3_and_the_unit_does_not_restart_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import krsid.daemon

    error = BpfLsmInactiveError("BPF-LSM is not active on this kernel")
    monkeypatch.setattr(krsid.daemon, "Daemon", refusing_daemon(error))
    assert cli.main(["run", "-c", str(PROGRAMS.parent / "etc" / "krsid.yaml")]) == 3 == cli.EXIT_BPF_LSM_INACTIVE
    prevent = next(line for line in UNIT.read_text().splitlines() if line.startswith("RestartPreventExitStatus="))
    assert "3" in prevent.split("=", 1)[1].split(), prevent
