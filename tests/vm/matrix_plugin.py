"""pytest plugin for the kernel matrix (tests/vm/matrix): loaded with
``-p tests.vm.matrix_plugin`` inside the VM of one kernel and header mode.

It does two things the ordinary VM tier does not need:

* tests written for what the default kernel offers are skipped, with the reason, on a
  kernel that lacks it (today: the userns_create hook before 6.1; there
  tests/vm/test_matrix.py checks the cred_prepare fallback that krsid uses instead);
* on a kernel krsid refuses (no BPF atomics before 5.12: Debian 11's 5.10) only the
  refusal tests of tests/vm/test_matrix.py run (doctor, and `krsid run` exiting 3
  before the compile); every other test needs a daemon and is deselected;
* it writes one JSON result to $KRSID_MATRIX_OUT: the kernel, header mode, every test's
  outcome and duration, and the facts tests/vm/test_matrix.py recorded (hooks
  attached, fallbacks, start-up warnings, doctor's lines), from which
  tests/vm/matrix_table.py makes the README's kernel support table.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import pytest

# Filled by tests/vm/test_matrix.py (hooks attached, fallbacks, doctor...).
FACTS: dict[str, Any] = {}

# Tests that need a hook the kernel may lack: (node id prefix, hook).
NEEDS_HOOK = (
    ("tests/vm/test_hook_userns_create.py", "userns_create"),
    ("tests/vm/test_policy.py::test_deny_user_namespaces_to_an_unprivileged_user", "userns_create"),
    # Its fixture checks the "fallback: always" wording of a kernel that has the hook;
    # where the hook is missing, test_matrix.py checks the automatic fallback instead.
    ("tests/vm/test_hook_cred_prepare.py", "userns_create"),
)


# What runs on a kernel krsid refuses (no BPF atomics before 5.12): the tests that
# check the refusal. Everything else needs a running daemon and is deselected.
ON_A_REFUSED_KERNEL = (
    "tests/vm/test_matrix.py::test_doctor_on_this_kernel",
    "tests/vm/test_matrix.py::test_start_without_bpf_atomics_is_refused",
)


def kernel_refusal() -> str | None:
    """Why krsid refuses to start on this kernel (its own probe), or None."""
    try:
        from krsid.kernel.probe import bpf_atomics_check

        check = bpf_atomics_check()
    except Exception:  # an unusable probe must not hide tests: nothing is deselected
        return None
    return check.detail if check.ok is False else None


def kernel_lsm_hooks() -> set[str]:
    """LSM hooks of the running kernel (BTF bpf_lsm_*); empty if BTF cannot be read."""
    try:
        from krsid.kernel.btf import Btf

        return set(Btf.load().lsm_hooks())
    except Exception:  # a missing hook list must not hide tests: nothing is skipped
        return set()


class _Recorder:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.started = time.monotonic()
        self.tests: dict[str, dict[str, Any]] = {}
        self.hooks = kernel_lsm_hooks()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        refusal = kernel_refusal()
        if refusal is not None:
            FACTS["unsupported"] = refusal
            kept = [item for item in items if item.nodeid in ON_A_REFUSED_KERNEL]
            config.hook.pytest_deselected(items=[item for item in items if item not in kept])
            items[:] = kept
            return
        if not self.hooks:
            return
        for item in items:
            for prefix, hook in NEEDS_HOOK:
                if item.nodeid.startswith(prefix) and hook not in self.hooks:
                    item.add_marker(
                        pytest.mark.skip(
                            reason=f"kernel {platform.release()} has no {hook} hook "
                            "(tests/vm/test_matrix.py covers what krsid does instead)"
                        )
                    )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.tests.setdefault(report.nodeid, {"outcome": "passed", "seconds": 0.0})
        entry["seconds"] = round(entry["seconds"] + report.duration, 2)
        if report.skipped and report.when in ("setup", "call"):
            entry["outcome"] = "skipped"
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            entry["reason"] = str(reason)[:300]
        elif report.failed:
            entry["outcome"] = "failed" if report.when == "call" else "error"
            entry["error"] = str(report.longreprtext)[-1500:]

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        counts: dict[str, int] = {}
        for t in self.tests.values():
            counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
        result = {
            "kernel": platform.release(),
            "series": os.environ.get("KRSID_VM_SERIES", ""),
            "headers": str(session.config.getoption("--headers")),
            "exitstatus": int(exitstatus),
            # Nothing passed (all skipped, or nothing collected) is not a pass either.
            "passed": exitstatus == 0
            and bool(counts.get("passed"))
            and not counts.get("failed")
            and not counts.get("error"),
            "counts": counts,
            "seconds": round(time.monotonic() - self.started, 1),
            "facts": FACTS,
            "tests": self.tests,
        }
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.out)


def pytest_configure(config: pytest.Config) -> None:
    out = os.environ.get("KRSID_MATRIX_OUT")
    if out:
        config.pluginmanager.register(_Recorder(Path(out)), "krsid-matrix-recorder")
