"""tests/vm/vmrun.py's one download path (_download_kernel), for the default kernel,
a pinned one and `--kernel SERIES` alike: a failed download is retried once after the
lists are refreshed, never for a pinned kernel or without root, and falls back to the
newest cached kernel when nothing can be fetched. No apt, network or VM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.vm import vmrun

OLD, NEW = "6.12.90+deb12-amd64", "6.12.95+deb12-amd64"


def cached_entry(cache: Path, version: str) -> None:
    (cache / version).mkdir(parents=True)
    (cache / version / "manifest.json").write_text(json.dumps({"kernel": version, "image_version": version}))


@pytest.fixture
def populate(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """_populate that fails for OLD (the mirror dropped its .debs) and works for NEW."""
    tried: list[str] = []

    def fake(tmp: Path, image_pkg: str, version: str, apt: vmrun.Apt | None = None) -> dict[str, str]:
        tried.append(version)
        if version == OLD:
            raise vmrun.VMError(f"{image_pkg}: 404 Not Found")
        (tmp / "manifest.json").write_text(json.dumps({"kernel": version, "image_version": version}))
        return {}

    monkeypatch.setattr(vmrun, "_populate", fake)
    monkeypatch.setattr(vmrun, "_is_root", lambda: True)
    return tried


def test_a_failed_download_refreshes_the_lists_and_takes_the_new_choice(tmp_path: Path, populate: list[str]) -> None:
    refreshed: list[bool] = []

    def refresh() -> tuple[str, str]:
        refreshed.append(True)
        return f"linux-image-{NEW}", NEW

    kernel = vmrun._download_kernel(
        tmp_path, f"linux-image-{OLD}", OLD, apt=None, refresh=refresh, fallback_series=None
    )
    assert (kernel.version, populate, refreshed) == (NEW, [OLD, NEW], [True])
    assert (tmp_path / NEW / "manifest.json").is_file()
    assert not list(tmp_path.glob(".tmp-*")), "the failed attempt's temp dir is left"


def test_a_pinned_kernel_is_not_retried_and_falls_back_to_the_cache(tmp_path: Path, populate: list[str]) -> None:
    cached_entry(tmp_path, "6.1.0-50-amd64")
    kernel = vmrun._download_kernel(tmp_path, f"linux-image-{OLD}", OLD, apt=None, refresh=None, fallback_series=None)
    assert (kernel.version, populate) == ("6.1.0-50-amd64", [OLD])


def test_without_a_cached_kernel_the_error_is_raised(tmp_path: Path, populate: list[str]) -> None:
    with pytest.raises(vmrun.VMError, match="404"):
        vmrun._download_kernel(tmp_path, f"linux-image-{OLD}", OLD, apt=None, refresh=None, fallback_series=None)


def test_the_fallback_keeps_to_the_series(tmp_path: Path, populate: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vmrun, "_is_root", lambda: False)  # no retry without root
    cached_entry(tmp_path, "7.2.13+deb14-amd64")
    with pytest.raises(vmrun.VMError):
        vmrun._download_kernel(tmp_path, f"linux-image-{OLD}", OLD, apt=None, refresh=lambda: ("x", NEW),
                               fallback_series="6.12")  # fmt: skip
    cached_entry(tmp_path, OLD.replace("90", "80"))
    kernel = vmrun._download_kernel(tmp_path, f"linux-image-{OLD}", OLD, apt=None, refresh=lambda: ("x", NEW),
                                    fallback_series="6.12")  # fmt: skip
    assert kernel.version == "6.12.80+deb12-amd64"


def test_a_cached_kernel_is_not_downloaded(tmp_path: Path, populate: list[str]) -> None:
    cached_entry(tmp_path, NEW)
    assert vmrun._download_kernel(tmp_path, "p", NEW, apt=None, refresh=None, fallback_series=None).version == NEW
    assert populate == []


def test_a_vm_that_does_not_power_off_after_the_command_is_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command's exit code is written, the VM's shutdown hangs: the wait ends after
    POWEROFF_GRACE, not at the run's deadline (30 min of silence, holding the VM lock)."""
    import subprocess
    import time

    monkeypatch.setattr(vmrun, "POWEROFF_GRACE", 0.5)
    (tmp_path / "started").write_text("3.2 1.0\n")
    (tmp_path / "rc").write_text("0\n")
    vm = subprocess.Popen(["sleep", "60"])
    try:
        t0 = time.monotonic()
        timed_out, t_cmd, lingered = vmrun._wait_for_vm(vm, tmp_path, deadline=t0 + 30)
        assert (timed_out, lingered) == (False, True)
        assert t_cmd is not None and time.monotonic() - t0 < 5
    finally:
        vm.kill()
        vm.wait()


def test_a_vm_still_running_its_command_is_waited_for_until_the_deadline(tmp_path: Path) -> None:
    import subprocess
    import time

    vm = subprocess.Popen(["sleep", "60"])
    try:
        t0 = time.monotonic()
        assert vmrun._wait_for_vm(vm, tmp_path, deadline=t0 + 0.5) == (True, None, False)
    finally:
        vm.kill()
        vm.wait()
