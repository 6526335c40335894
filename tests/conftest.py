from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--headers",
        default="auto",
        choices=("auto", "kernel", "btf"),
        help="kernel header mode for the BPF-LSM (vm) tests: kernel = /lib/modules/$(uname -r)/build, "
        "btf = the tree krsid synthesizes from /sys/kernel/btf/vmlinux",
    )
