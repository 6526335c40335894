"""systemd/krsid.service: verify clean, hardened, and `make install/uninstall` stage it."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.records import PROGRAMS

ROOT = PROGRAMS.parent
UNIT = ROOT / "systemd" / "krsid.service"
needs_analyze = pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")


UNITS_LOAD_MARK = Path("/run/systemd/systemd-units-load")


@pytest.fixture(autouse=True, scope="module")
def leave_run_as_found() -> Iterator[None]:
    """systemd-analyze touches /run/systemd/systemd-units-load: remove it if we made it."""
    existed = UNITS_LOAD_MARK.exists()
    yield
    if not existed:
        UNITS_LOAD_MARK.unlink(missing_ok=True)


def unit_with_existing_exec(tmp: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's krsid: verify checks that the
    binary exists, and /opt/krsid exists only after make install."""
    krsid = shutil.which("krsid") or str(Path(__import__("sys").executable).parent / "krsid")
    shipped = UNIT.read_text()
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={krsid}", shipped, flags=re.M)
    assert text != shipped
    p = tmp / "krsid.service"
    p.write_text(text)
    return p


@needs_analyze
def test_systemd_analyze_verify_prints_nothing(tmp_path: Path) -> None:
    p = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit_with_existing_exec(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", p.stdout + p.stderr


@needs_analyze
def test_security_exposure_at_most_3(tmp_path: Path) -> None:
    p = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit_with_existing_exec(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for krsid.service: ([0-9.]+)", p.stdout)
    assert m, p.stdout + p.stderr
    assert float(m.group(1)) <= 3.0, p.stdout


def test_unit_is_a_notify_service_with_watchdog_and_rate_limits() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LogsDirectory=krsid",
    ):
        assert f"\n{line}\n" in text, line
    assert re.search(r"\nWatchdogSec=\d+s\n", text)
    burst = re.search(r"\nLogRateLimitBurst=(\d+)\n", text)
    assert burst and int(burst.group(1)) >= 100_000  # journald's 10k/30s would drop audit events
    caps = re.search(r"\nCapabilityBoundingSet=(.*)\n", text)
    assert caps and {"CAP_BPF", "CAP_PERFMON"} <= set(caps.group(1).split())


def test_unit_runs_the_auditor_ahead_of_ordinary_processes() -> None:
    """CPU-bound floods must not starve the daemon into losing events (tests/vm/test_flood.py
    runs it at this nice value): a negative Nice=, like auditd's priority_boost."""
    nice = [line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith("Nice=")]
    assert len(nice) == 1 and int(nice[0]) < 0, nice


def test_unit_leaves_host_tmp_and_home_visible_to_path_rules() -> None:
    """Policy path rules resolve /tmp and /home in the daemon's mount namespace: a
    private /tmp or a hidden /home would make them silently never match a host process
    (tests/vm/test_systemd_nspawn.py proves the match under real systemd)."""
    settings = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings.get("PrivateTmp", "no") == "no", settings.get("PrivateTmp")
    assert settings.get("ProtectHome", "no") in ("no", "read-only"), settings.get("ProtectHome")
    assert "TemporaryFileSystem" not in settings and "InaccessiblePaths" not in settings


def test_make_install_and_uninstall_stage_everything(tmp_path: Path) -> None:
    if not shutil.which("make"):
        pytest.skip("make not installed")
    dest = tmp_path / "root"
    env_args = [f"DESTDIR={dest}", "INSTALL_VENV=no"]
    # -o deps: staging must not touch the machine's packages.
    inst = subprocess.run(
        ["make", "-s", "-o", "deps", "install", *env_args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert inst.returncode == 0, inst.stdout + inst.stderr
    for rel in (
        "etc/krsid/krsid.yaml",
        "etc/systemd/system/krsid.service",
        "usr/lib/systemd/catalog/krsid.catalog",
        "usr/share/krsid/programs/include/krsid.h",
        "usr/share/krsid/programs/file_mprotect.c",
        "usr/share/krsid/programs/file_mprotect.yaml",
        "usr/share/doc/krsid/README.md",
    ):
        assert (dest / rel).is_file(), rel
    for c in PROGRAMS.glob("*.c"):
        assert (dest / "usr/share/krsid/programs" / c.name).is_file()
    un = subprocess.run(["make", "-s", "uninstall", *env_args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert un.returncode == 0, un.stdout + un.stderr
    left = [p for p in dest.rglob("*") if p.is_file()]
    assert not left, left
