"""Every krsid program takes its event sequence number with an atomic fetch-and-add
(krsid_next_seq in krsid.h), which the BPF verifier accepts from Linux 5.12. On an
older kernel (Debian 11's 5.10) every program would be rejected after a compile of
a minute: krsid must refuse before the compile, with one message naming the kernel
and 5.12, exit 3 (not restarted), and `krsid doctor` must say the same."""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pytest

from krsid import cli
from krsid.catalog import load_catalog
from krsid.config import parse_config
from krsid.daemon import Daemon
from krsid.errors import BpfAtomicsMissingError
from krsid.kernel import probe
from krsid.kernel.probe import ATOMIC_FETCH_ADD_PROG, Check, classify_atomics_load, lsm_active_check
from krsid.plan import require_bpf_lsm
from tests.support.daemons import assert_refused_before_compile, refusing_daemon
from tests.support.records import PROGRAMS

CATALOG = load_catalog(PROGRAMS)
# What Debian 11's 5.10.223 answers (measured in the kernel matrix VM).
LOG_5_10 = (
    "0: (b7) r1 = 0\n1: (7b) *(u64 *)(r10 -8) = r1\n2: (b7) r1 = 1\n3: (db) BPF_STX uses reserved fields\n"
    "processed 0 insns (limit 1000000) max_states_per_insn 0 total_states 0\n"
)
BPF_LSM_ON = lsm_active_check(["lockdown", "capability", "bpf"], "securityfs")


def test_the_probe_is_the_instruction_krsid_programs_compile_to() -> None:
    """BPF_STX | BPF_ATOMIC | BPF_DW with imm BPF_ADD | BPF_FETCH: __sync_fetch_and_add
    whose result is used; plain BPF_XADD (imm 0) loads on 5.10 and would prove nothing."""
    insns = [struct.unpack_from("<BBhi", ATOMIC_FETCH_ADD_PROG, off) for off in range(0, len(ATOMIC_FETCH_ADD_PROG), 8)]
    atomics = [i for i in insns if i[0] == 0x03 | 0xC0 | 0x18]
    assert len(atomics) == 1
    _opcode, regs, offset, imm = atomics[0]
    assert imm == 0x00 | 0x01, "BPF_ADD | BPF_FETCH"
    assert (regs & 0xF, regs >> 4, offset) == (10, 1, -8), "on the stack slot the program initialised"
    assert insns[-1][0] == 0x95, "ends with exit"


def test_a_5_10_verifier_refusal_names_the_kernel_and_5_12() -> None:
    check = classify_atomics_load(errno.EINVAL, LOG_5_10, "5.10.0-32-amd64")
    assert check.ok is False
    assert "kernel 5.10.0-32-amd64" in check.detail and "5.12" in check.detail, check.detail
    assert "BPF_STX uses reserved fields" in check.detail, check.detail
    assert "5.12" in check.remedy


def test_an_accepted_probe_passes() -> None:
    assert classify_atomics_load(0, "", "6.1.0-50-amd64").ok is True


def test_without_privilege_the_version_decides() -> None:
    old = classify_atomics_load(errno.EPERM, "", "5.10.0-32-amd64")
    assert old.ok is False and "5.12" in old.detail, old
    assert classify_atomics_load(errno.EPERM, "", "6.12.95+deb12-amd64").ok is None
    assert classify_atomics_load(errno.EPERM, "", "weird").ok is None


def test_doctor_reports_the_atomics_check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    loaded: list[bytes] = []

    def prog_load(self: probe.BpfSyscall, prog_type: int, attach_type: int = 0, attach_btf_id: int = 0,
                  program: bytes = probe.TINY_PROG) -> tuple[int, str]:  # fmt: skip
        loaded.append(program)
        return (errno.EINVAL, LOG_5_10) if program == ATOMIC_FETCH_ADD_PROG else (0, "")

    monkeypatch.setattr(probe.BpfSyscall, "prog_load", prog_load)
    checks = {c.name: c for c in probe.run_checks(tmp_path, release="5.10.0-32-amd64")}
    assert ATOMIC_FETCH_ADD_PROG in loaded
    assert checks["BPF atomics"].ok is False, checks["BPF atomics"]
    assert "kernel 5.10.0-32-amd64" in checks["BPF atomics"].detail


def test_start_refuses_before_compiling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    refused = classify_atomics_load(errno.EINVAL, LOG_5_10, "5.10.0-32-amd64")
    monkeypatch.setattr(probe, "bpf_atomics_check", lambda: refused)
    text = f"state_dir: {tmp_path}\ncache_dir: {tmp_path}\nhooks:\n  bprm_check_security: {{}}\n"
    d = Daemon(parse_config(text, "t.yaml", catalog=CATALOG), sinks=[], bpf_lsm_check=lambda: BPF_LSM_ON)
    assert_refused_before_compile(d, monkeypatch, BpfAtomicsMissingError, r"kernel 5\.10\.0-32-amd64 .*5\.12")


def test_one_message_naming_the_kernel_and_the_minimum() -> None:
    refused = classify_atomics_load(errno.EINVAL, LOG_5_10, "5.10.0-32-amd64")
    with pytest.raises(BpfAtomicsMissingError) as raised:
        require_bpf_lsm(lambda: BPF_LSM_ON, lambda: refused)
    message = str(raised.value)
    assert message.count("5.10.0-32-amd64") == 1 and "Linux 5.12 or newer" in message, message
    assert "krsid doctor" in message


@pytest.mark.parametrize("answer", [True, None])
def test_an_accepting_or_unknown_kernel_starts(answer: bool | None) -> None:
    require_bpf_lsm(lambda: BPF_LSM_ON, lambda: Check("BPF atomics", answer, "", ""))


def test_run_exits_3() -> None:
    error = BpfAtomicsMissingError("kernel 5.10.0-32-amd64 has no BPF atomic fetch-and-add (Linux 5.12 or newer)")
    import krsid.daemon

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(krsid.daemon, "Daemon", refusing_daemon(error))
        assert cli.main(["run", "-c", str(PROGRAMS.parent / "etc" / "krsid.yaml")]) == cli.EXIT_BPF_LSM_INACTIVE == 3
