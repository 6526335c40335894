"""What must hold on every kernel of the matrix (tests/vm/matrix), whatever it offers.

Runs on the session daemon (every configurable hook) in the VM of one kernel. The
other tests of the matrix selection (test_e2e.py, test_hook_*.py) were written for the
default kernel; these check what differs between kernels: doctor, each hook either
attached or stood in for by its fallback with the documented warning, and the
deny-unshare policy (EPERM from userns_create, or ENOMEM from the cred_prepare
fallback before 6.1) applied by a hot reload. The clean stop is checked by the
session daemon's teardown (conftest.start_daemon). The facts go to the matrix result
(tests/vm/matrix_plugin.py) when the plugin is loaded.
"""

from __future__ import annotations

import platform
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.support.cli import run_krsid
from tests.support.procs import run_as
from tests.vm import matrix_plugin
from tests.vm.conftest import ROOT, RunningDaemon, serving_program, session_hooks
from tests.vm.test_policy import Reloader

pytestmark = pytest.mark.vm

# A uid no other test uses: the deny rule below is scoped to it.
DENIED_UID = 65530


def kernel_hooks() -> set[str]:
    from krsid.plan import kernel_hooks as hooks_of_kernel

    return set(hooks_of_kernel())


def has_bpf_atomics() -> bool:
    """What the kernel's version says (the oracle for krsid's own probe): BPF atomic
    fetch-and-add came with Linux 5.12."""
    from krsid.kernel.probe import MIN_ATOMICS_KERNEL, kernel_version

    return kernel_version(platform.release()) >= MIN_ATOMICS_KERNEL


def test_doctor_on_this_kernel(lsm_kernel: None) -> None:
    """Doctor passes where krsid runs; before 5.12 it fails on exactly one check, the
    BPF atomics, naming the kernel and 5.12."""
    p = run_krsid("doctor", timeout=180)
    lines = [line for line in p.stdout.splitlines() if line.startswith("[")]
    matrix_plugin.FACTS["doctor"] = lines
    assert any(line.startswith("[ok  ] LSM program load") for line in lines), lines
    if has_bpf_atomics():
        assert p.returncode == 0, p.stdout + p.stderr
        assert any(line.startswith("[ok  ] BPF atomics") for line in lines), lines
        return
    failed = [line for line in lines if line.startswith("[FAIL]")]
    assert p.returncode == 1, p.stdout + p.stderr
    assert [line.split(":", 1)[0] for line in failed] == ["[FAIL] BPF atomics"], lines
    assert f"kernel {platform.release()}" in failed[0] and "5.12" in failed[0], failed


def test_start_without_bpf_atomics_is_refused(lsm_kernel: None, tmp_path: Path) -> None:
    """Before 5.12, `krsid run` refuses at once, before the compile: exit 3 (the unit
    does not restart it), one error line naming the kernel and 5.12. From 5.12, the
    same probe says yes (and the session daemon of the other tests starts)."""
    from krsid.kernel.probe import bpf_atomics_check

    probe = bpf_atomics_check()
    if has_bpf_atomics():
        assert probe.ok is True, probe
        return
    assert probe.ok is False, probe
    cfg = tmp_path / "krsid.yaml"
    cfg.write_text(f"state_dir: {tmp_path}\ncache_dir: {tmp_path}\nhooks:\n  bprm_check_security: {{}}\n")
    t0 = time.monotonic()
    p = run_krsid("run", "-c", str(cfg), timeout=120)
    seconds = time.monotonic() - t0
    errors = [line for line in p.stderr.splitlines() if line.startswith("krsid: error:")]
    matrix_plugin.FACTS["refused"] = {"exit": p.returncode, "message": errors, "seconds": round(seconds, 1)}
    assert p.returncode == 3, p.stderr
    assert len(errors) == 1 and f"kernel {platform.release()}" in errors[0] and "5.12" in errors[0], p.stderr
    # Before the compile: the daemon logs its header choice just before compiling
    # (Daemon.build_programs); a refusal that came after it would have compiled first.
    assert "kernel headers:" not in p.stderr and "compiled" not in p.stderr, f"it compiled first:\n{p.stderr}"
    assert not list(tmp_path.glob("*-*/.krsid-tree")), "a header tree was built before refusing"


def test_every_hook_attached_or_served_by_its_fallback(daemon: RunningDaemon) -> None:
    """A hook the kernel has is attached; one it lacks is served by its fallback with
    exactly one warning naming the hook (or skipped with one, if it has none)."""
    available = kernel_hooks()
    log = daemon.log.read_text()
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    fallbacks: dict[str, str] = {}
    expected_attached = []
    for hook in session_hooks():
        program = serving_program(hook, available)
        if program == hook:
            expected_attached.append(hook)
            continue
        named = [w for w in warnings if f"hook {hook}: this kernel has no bpf_lsm_{hook}" in w]
        assert len(named) == 1, f"{hook} is missing on {platform.release()}: want one warning, got {named}"
        if program is not None:
            assert f"using its fallback {program} instead" in named[0], named[0]
            fallbacks[hook] = program
            expected_attached.append(program)
        else:
            assert "skipping it" in named[0], named[0]
    matrix_plugin.FACTS.update(
        kernel_lacks=sorted(set(session_hooks()) - available),
        attached=daemon.attached,
        fallbacks=fallbacks,
        warnings=warnings,
        enabled=session_hooks(),
    )
    assert sorted(daemon.attached) == sorted(expected_attached), daemon.ready_status
    n = len(expected_attached)
    assert f"STATUS=attached {n}/{n} hooks" in daemon.ready_status, daemon.ready_status


def test_deny_unshare_by_reload_then_restore(daemon: RunningDaemon) -> None:
    """The shipped deny-unprivileged-userns rule, scoped to one uid, applied by a hot
    reload: userns_create denies with EPERM; before 6.1 its fallback cred_prepare makes
    prepare_creds() fail, so the caller sees ENOMEM. Root is not matched and keeps
    unshare -U; after restoring the config the uid may unshare again."""
    if "userns_create" not in daemon.hooks:
        pytest.skip("userns_create is not in this session's KRSID_TEST_HOOKS")
    example = yaml.safe_load((ROOT / "etc" / "policies" / "deny-unprivileged-userns.yaml").read_text())
    (shipped,) = example["policy"]["rules"]
    serving = serving_program("userns_create", kernel_hooks())
    assert serving in daemon.attached, daemon.ready_status
    want_error = "Operation not permitted" if serving == "userns_create" else "Cannot allocate memory"

    reloader = Reloader(daemon)
    cfg = yaml.safe_load(reloader.original)
    cfg["policy"] = {"rules": [{**shipped, "match": {"uid": DENIED_UID}}]}
    try:
        reloader.apply(str(yaml.safe_dump(cfg)))
        user = run_as(DENIED_UID, "unshare", "-U", "true")
        assert user.returncode != 0 and want_error in user.stderr, (serving, user.stderr)
        root = subprocess.run(["unshare", "-U", "true"], capture_output=True, text=True, timeout=60)
        assert root.returncode == 0, root.stderr
        denied = daemon.wait_events(lambda o: o["hook"] == serving and o.get("cred_uid") == DENIED_UID)
        assert denied, f"no {serving} event for uid {DENIED_UID}"
        verdict = "-EPERM" if serving == "userns_create" else "-ENOMEM"
        assert {(e["action"], e["rule"]) for e in denied} == {("deny", shipped["name"])}, denied
        assert re.fullmatch(r"-E[A-Z]+", denied[0]["verdict"]), denied[0]
        matrix_plugin.FACTS["deny_unshare"] = {
            "hook": serving,
            "caller_sees": want_error,
            "verdict": denied[0]["verdict"],
            "expected_verdict": verdict,
        }
    finally:
        reloader.apply(reloader.original)
    again = run_as(DENIED_UID, "unshare", "-U", "true")
    assert again.returncode == 0, f"still denied after the rule was reloaded away: {again.stderr}"
