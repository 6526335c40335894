from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# pytest's default base for tmp_path (/tmp/pytest-of-USER, the last three runs kept)
# outlives the run; tests leave the machine as they found it. So each run gets a
# base of its own, removed when the run ends (KRSID_KEEP_TEST_TMP=1 keeps it, to
# look at a failure). An explicit --basetemp or PYTEST_DEBUG_TEMPROOT is left alone.
_OWN_BASETEMP = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--headers",
        default="auto",
        choices=("auto", "kernel", "btf"),
        help="kernel header mode for the BPF-LSM (vm) tests: kernel = /lib/modules/$(uname -r)/build, "
        "btf = the tree krsid synthesizes from /sys/kernel/btf/vmlinux",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.option.basetemp is None and "PYTEST_DEBUG_TEMPROOT" not in os.environ:
        base = tempfile.mkdtemp(prefix="krsid-pytest-")
        config.option.basetemp = base
        config.stash[_OWN_BASETEMP] = base


def pytest_unconfigure(config: pytest.Config) -> None:
    base = config.stash.get(_OWN_BASETEMP, None)
    if base is None:
        return
    if os.environ.get("KRSID_KEEP_TEST_TMP"):
        print(f"\ntmp_path base kept (KRSID_KEEP_TEST_TMP): {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
