"""The kernel matrix's host-side logic, without apt, network or a VM: choosing the
newest kernel of a series from apt's answers, the 7.x package split, and the README
table made from a matrix result."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm import matrix_table, vmrun

MADISON_SID = """\
linux-image-7.2.13+deb14-amd64 |   7.2.13-1 | http://deb.debian.org/debian sid/main amd64 Packages
linux-image-7.2.9+deb14-amd64 |   7.2.9-1 | http://deb.debian.org/debian sid/main amd64 Packages
linux-image-7.10.1+deb14-amd64 |   7.10.1-1 | http://deb.debian.org/debian sid/main amd64 Packages
"""
MADISON_BULLSEYE = """\
linux-image-5.10.0-30-amd64 | 5.10.218-1 | http://deb.debian.org/debian bullseye/main amd64 Packages
linux-image-5.10.0-32-amd64 | 5.10.223-1 | http://deb.debian.org/debian bullseye/main amd64 Packages
linux-image-5.10.0-32-amd64-unsigned | 5.10.223-1 | http://deb.debian.org/debian bullseye/main amd64 Packages
"""


class FakeApt(vmrun.Apt):
    """An Apt whose apt-cache answers come from a table (pkgnames prefix / madison)."""

    def __init__(self, suite: str, names: list[str], madison: str, depends: dict[str, list[str]] | None = None):
        super().__init__(suite, Path("/nonexistent"))
        self.names, self.madison, self.deps = names, madison, depends or {}

    def cache_query(self, *args: str) -> str:
        if args[0] == "pkgnames":
            return "\n".join(n for n in self.names if n.startswith(args[1]))
        if args[0] == "madison":
            return "".join(line + "\n" for line in self.madison.splitlines() if line.split(" |")[0] in args[1:])
        raise AssertionError(args)

    def depends(self, pkg: str) -> list[str]:
        return self.deps.get(pkg, [])


def test_series_of_a_release() -> None:
    assert vmrun.series_of("5.10.0-32-amd64") == "5.10"
    assert vmrun.series_of("7.2.13+deb14-amd64") == "7.2"
    assert vmrun.series_of("6.12.95+deb12-amd64") == "6.12"


def test_newest_of_a_series_ignores_other_series_and_prefers_signed() -> None:
    names = [line.split(" |")[0] for line in MADISON_SID.splitlines()] + ["linux-image-7.2.13+deb14-cloud-amd64"]
    # 7.10 sorts after 7.2 but is another series: "7.2" must not match it.
    assert vmrun.newest_image_in(FakeApt("sid", names, MADISON_SID), "7.2") == (
        "linux-image-7.2.13+deb14-amd64",
        "7.2.13+deb14-amd64",
    )
    names = [line.split(" |")[0] for line in MADISON_BULLSEYE.splitlines()]
    assert vmrun.newest_image_in(FakeApt("bullseye", names, MADISON_BULLSEYE), "5.10") == (
        "linux-image-5.10.0-32-amd64",
        "5.10.0-32-amd64",
    )
    # 6.1 must not pick a 6.12 kernel (a prefix of the name, not of the series).
    assert vmrun.newest_image_in(FakeApt("sid", names, MADISON_BULLSEYE), "6.1") is None


def test_a_line_of_another_suite_is_not_chosen() -> None:
    madison = MADISON_SID.replace("sid/main", "experimental/main")
    names = [line.split(" |")[0] for line in madison.splitlines()]
    assert vmrun.newest_image_in(FakeApt("sid", names, madison), "7.2") is None


def test_the_7x_split_packages_are_downloaded_with_the_meta_image() -> None:
    v = "7.2.13+deb14-amd64"
    deps = {
        f"linux-image-{v}": [
            "dracut", "initramfs-tools", f"linux-base-{v}", f"linux-binary-{v}", f"linux-modules-{v}",
            "linux-binary-7.2.13+deb14-rt-amd64",
        ]
    }  # fmt: skip
    pkgs = vmrun._image_packages(FakeApt("sid", [], "", deps), f"linux-image-{v}", v)
    assert pkgs == [f"linux-image-{v}", f"linux-base-{v}", f"linux-binary-{v}", f"linux-modules-{v}"]
    # Before 7.x the image carries everything: nothing is added.
    assert vmrun._image_packages(FakeApt("bookworm", [], ""), "linux-image-6.1.0-50-amd64", "6.1.0-50-amd64") == [
        "linux-image-6.1.0-50-amd64"
    ]


def test_every_series_has_a_suite_and_the_default_stays_backports() -> None:
    assert set(vmrun.KERNEL_SERIES) == {"5.10", "6.1", "6.12", "7.2", "7.3"}
    assert vmrun.KERNEL_SERIES["6.12"] == "bookworm-backports"


def test_unknown_series_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(vmrun.VMError, match=r"unknown kernel series '4\.19'"):
        vmrun._resolve_series(tmp_path, "4.19")


def test_table_rows_say_hooks_fallbacks_and_failures() -> None:
    run = {
        "kernel": "6.1.0-50-amd64",
        "suite": "bookworm",
        "headers": "btf",
        "passed": True,
        "vm_seconds": 301.4,
        "counts": {"passed": 40, "skipped": 2},
        "facts": {
            "enabled": ["a", "b", "userns_create"],
            "attached": ["a", "b", "cred_prepare"],
            "fallbacks": {"userns_create": "cred_prepare"},
            "deny_unshare": {"hook": "cred_prepare", "caller_sees": "Cannot allocate memory"},
        },
    }
    row = matrix_table.row(run)
    assert "| 3/3 |" in row and "userns_create → cred_prepare" in row and "**pass**" in row
    assert "Cannot allocate memory (cred_prepare)" in row and "40 passed, 2 skipped" in row
    failed = dict(
        run, passed=False, counts={"passed": 3, "failed": 1}, facts={"enabled": ["a", "b"], "attached": ["a"]}
    )
    row = matrix_table.row(failed)
    assert "| 1/2 |" in row and "**FAIL**" in row and "1 failed" in row
