"""Boot the VM's own systemd in a systemd-nspawn container, and get into it.

Used by tests/vm/test_systemd_nspawn.py (the checkout's install over the VM's root,
``--volatile=yes``) and tests/vm/test_deb_package.py (the Debian package in an overlay
root). Why each nspawn option, measured with systemd 252 in the VM, is explained in
test_systemd_nspawn.py's docstring; in short:

* ``--capability=CAP_BPF,CAP_PERFMON``: not in nspawn's default bounding set;
* ``--system-call-filter='bpf perf_event_open'``: nspawn's own seccomp filter
  excludes both, and without them no BPF map can be created;
* ``--register=no --keep-unit``: no machined/host systemd in the VM, so the container
  runs in the cgroup it starts in: its own child cgroup of the VM's cgroup2 root,
  removed afterwards;
* ``systemd.unit=basic.target``: what krsid.service needs, and no more.

Only inside the test VM: the container sits on the machine's own root and cgroups.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

BPF_PROG_TYPE_LSM = 29
CGROUP_ROOT = Path("/sys/fs/cgroup")
BOOT_TIMEOUT = 300.0  # nspawn start to "systemctl is-system-running" = running
START_TIMEOUT = 400.0  # systemctl start krsid: a TCG compile (TimeoutStartSec=180s inside)
INIT_TIMEOUT = 120.0  # nspawn start to the container's PID 1 existing
# What a command run in the container sees of the environment. Not the test's own: it
# carries PYTHONPATH=<checkout> (tests/vm/matrix sets it), and where the checkout is
# visible inside the container, the container's python3 imported the checkout instead
# of the package dpkg installed (seen in CI, clone under /check).
CONTAINER_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def ensure_cgroup2() -> None:
    """cgroup2 at /sys/fs/cgroup, which nspawn and the container's systemd need.

    virtme-ng's init mounts it; another init might not. Then it is mounted in a private
    mount namespace of this process (inherited by nspawn), not for the whole VM."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return
    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, ms_rec, ms_private = 0x00020000, 0x4000, 1 << 18
    for name, args in (
        ("unshare", (clone_newns,)),
        ("mount", (b"none", b"/", None, ms_rec | ms_private, None)),
        ("mount", (b"cgroup2", str(CGROUP_ROOT).encode(), b"cgroup2", 0, None)),
    ):
        if getattr(libc, name)(*args) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{name}{args}: {os.strerror(err)}")


def parse_show(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def bpf_prog_ids_of(host_pid: int) -> dict[int, int]:
    """prog id -> prog type of every BPF program fd the process holds (from fdinfo)."""
    out: dict[int, int] = {}
    fdinfo = Path(f"/proc/{host_pid}/fdinfo")
    for f in fdinfo.iterdir():
        with contextlib.suppress(OSError):
            info = dict(
                line.split(":", 1) for line in f.read_text().splitlines() if ":" in line and not line.startswith("\t")
            )
            if "prog_id" in info and "prog_type" in info:
                out[int(info["prog_id"])] = int(info["prog_type"])
    return out


def loaded_programs() -> dict[int, dict[str, Any]]:
    p = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True, timeout=60)
    return {int(prog["id"]): prog for prog in json.loads(p.stdout or "[]")}


@dataclass
class Container:
    """A booted container and the way into it."""

    nspawn: subprocess.Popen[bytes]
    pid1: int  # the container's PID 1, as the VM sees it
    console: Path
    probe_dir: Path  # the VM's path of the directory the test puts probe binaries in
    metrics_url: str
    headers: str
    dropins: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    boot_state: str = ""
    start: subprocess.CompletedProcess[str] | None = None

    def run(self, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", "--target", str(self.pid1), "--all", *argv],
            env=CONTAINER_ENV,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def show(self, unit: str, *props: str) -> dict[str, str]:
        p = self.run("systemctl", "show", unit, "--property=" + ",".join(props))
        assert p.returncode == 0, p.stderr
        return parse_show(p.stdout)

    def journal(self, *args: str) -> list[dict[str, Any]]:
        p = self.run("journalctl", "--no-pager", "--all", "-o", "json", *args, timeout=120)
        return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]

    def unit_log(self) -> str:
        p = self.run("journalctl", "--no-pager", "-u", "krsid", "-o", "short-monotonic", timeout=120)
        return p.stdout[-12000:] + p.stderr[-2000:]

    def host_pid(self, container_pid: int) -> int:
        """The VM's pid of a process that has `container_pid` in the container."""
        ns = os.stat(f"/proc/{self.pid1}/ns/pid").st_ino
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                nspid = re.search(r"^NSpid:\s+(.*)$", (entry / "status").read_text(), re.M)
                if (
                    nspid
                    and nspid.group(1).split()[-1] == str(container_pid)
                    and os.stat(entry / "ns" / "pid").st_ino == ns
                ):
                    return int(entry.name)
        raise LookupError(f"no process with pid {container_pid} in the container")


def find_container_init(nspawn: subprocess.Popen[bytes], timeout: float) -> int:
    """The container's PID 1: nspawn's child that is pid 1 in its own pid namespace."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and nspawn.poll() is None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                status = (entry / "status").read_text()
                ppid = re.search(r"^PPid:\s+(\d+)$", status, re.M)
                nspid = re.search(r"^NSpid:\s+(.*)$", status, re.M)
                if ppid and nspid and int(ppid.group(1)) == nspawn.pid and nspid.group(1).split()[-1] == "1":
                    return int(entry.name)
        time.sleep(0.3)
    raise RuntimeError("the container's init did not appear")


def stop_nspawn(nspawn: subprocess.Popen[bytes]) -> None:
    """The first SIGTERM asks the container's systemd to halt (which stops krsid, which
    detaches); a second one makes nspawn kill the container; then SIGKILL."""
    for sig, grace in ((signal.SIGTERM, 90), (signal.SIGTERM, 20), (signal.SIGKILL, 30)):
        if nspawn.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGKILL:
                os.killpg(nspawn.pid, sig)
            else:
                nspawn.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            nspawn.wait(grace)


def remove_cgroup(cgroup: Path) -> None:
    for sub in sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        cgroup.rmdir()


@contextlib.contextmanager
def booted_container(
    root: Path,
    *,
    volatile: str | None,
    binds: Sequence[str],
    machine: str,
    cgroup: Path,
    console: Path,
    timings: dict[str, float],
    probe_dir: Path,
    metrics_url: str = "",
    headers: str = "btf",
    dropins: Sequence[str] = (),
) -> Iterator[Container]:
    """systemd-nspawn boots the VM's systemd over `root` (to basic.target) in the new
    child cgroup `cgroup`; yields the booted container, halts it and removes the cgroup
    at the end. Fails the test (with the end of the console output) if it does not boot.

    volatile: nspawn's --volatile= mode (None: none, the root must be writable itself);
    binds: --bind/--bind-ro options; console: file for the container's console output;
    timings: gets "container boot" and "container shutdown" (seconds). probe_dir,
    metrics_url, headers and dropins are the caller's, kept on the Container."""
    with contextlib.ExitStack() as cleanup:
        cgroup.mkdir()
        cleanup.callback(remove_cgroup, cgroup)
        nspawn_argv = [
            "systemd-nspawn",
            f"--directory={root}",
            *([f"--volatile={volatile}"] if volatile else []),
            "--boot",
            "--register=no",
            "--keep-unit",
            "--link-journal=no",
            f"--machine={machine}",
            "--capability=CAP_BPF,CAP_PERFMON",
            "--system-call-filter=bpf perf_event_open",
            "--console=pipe",
            *binds,
            "--",
            "systemd.unit=basic.target",
        ]
        with console.open("wb") as out:
            # The wrapper moves itself into the new cgroup, then becomes nspawn (same pid).
            nspawn = subprocess.Popen(
                ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *nspawn_argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def shutdown() -> None:
            t = time.monotonic()
            stop_nspawn(nspawn)
            timings["container shutdown"] = time.monotonic() - t

        cleanup.callback(shutdown)
        c = Container(nspawn, 0, console, probe_dir, metrics_url, headers, list(dropins), timings)

        t1 = time.monotonic()
        try:
            c.pid1 = find_container_init(nspawn, INIT_TIMEOUT)
        except RuntimeError:
            pytest.fail(f"systemd-nspawn did not start the container:\n{console.read_text()[-4000:]}")
        # systemctl works once PID 1 listens on /run/systemd/private; --wait then blocks
        # until the boot (basic.target) is done.
        deadline = time.monotonic() + BOOT_TIMEOUT
        state = ""
        while time.monotonic() < deadline:
            state = c.run("systemctl", "is-system-running", "--wait", timeout=BOOT_TIMEOUT).stdout.strip()
            # "offline": PID 1 does not answer yet (systemctl could not connect).
            if state in ("running", "degraded", "maintenance", "stopping"):
                break
            time.sleep(1)
        timings["container boot"] = time.monotonic() - t1
        if state not in ("running", "degraded"):
            pytest.fail(f"container did not boot (state {state!r}):\n{console.read_text()[-4000:]}")
        c.boot_state = state
        yield c
