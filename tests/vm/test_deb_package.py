"""The Debian package under real systemd: dpkg -i, start, an event, reload, purge.

What runs: `make deb` on the host builds build/deb/krsid_<version>_all.deb before the
VM starts (the Makefile's test-vm target; KRSID_DEB names another file). Inside the
test VM, systemd-nspawn boots the VM's own systemd in a container whose root is an
overlay: the VM's root file system (the host's tree, where the package's Depends are
installed) below, a tmpfs mounted for this test above, so dpkg can write /usr, /etc
and /var and everything is gone when the test unmounts it. Then, in the container,
through nsenter into its PID 1's namespaces:

* ``dpkg -i``: the postinst enables krsid.service and asks to start it (a
  policy-rc.d that records the request and refuses it: the shipped config would
  compile every default hook under TCG; an admin sets the config first the same way);
  systemd's dpkg trigger on /usr/lib/systemd/catalog loads the journald catalog;
* the conffile /etc/krsid/krsid.yaml is edited (only bprm_check_security, headers
  from BTF: the unit's ProtectKernelModules=yes hides /usr/lib/modules; a free
  metrics port), ``systemctl start krsid`` runs the packaged unit as shipped
  (ExecStart=/usr/bin/krsid, no drop-in);
* an exec in the container is an event in the container's journal (explained by the
  catalog, no manual --update-catalog) and in /var/log/krsid/events.jsonl (the
  shipped config's JSON-lines file, in the unit's LogsDirectory=);
* ``systemctl reload krsid`` reloads without a restart;
* ``apt-get purge -y krsid`` stops it and leaves nothing: no file of ``dpkg -L``, no
  /etc/krsid, /var/log/krsid, /var/cache/krsid, /var/lib/krsid, /run/krsid, no unit
  or enablement symlink, no catalog entry, no program attached.

The container boots as in tests/vm/test_systemd_nspawn.py, through the same
booted_container() of tests/vm/nspawn_container.py (capabilities, system-call filter,
its own child cgroup, basic.target; the reasons are in test_systemd_nspawn.py). The
overlay root replaces that test's ``--volatile=yes``, which binds /usr read-only.

Only inside the test VM: the overlay and the container sit on the machine's own root.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

import krsid
from tests.vm import nspawn_container as nspawn
from tests.vm.conftest import ROOT, free_port, message_id
from tests.vm.vmrun import in_vm

pytestmark = pytest.mark.vm

HOOK = "bprm_check_security"
EXEC_MESSAGE_ID = message_id(HOOK)
# Prints "file PATH" or "dir PATH" for each argument still there (shell builtins only).
STILL_THERE = 'for p in "$@"; do if [ -d "$p" ]; then echo "dir $p"; elif [ -e "$p" ]; then echo "file $p"; fi; done'
# Where the package puts things (debian/, the unit's *Directory= settings).
RUNTIME_DIRS = ("/etc/krsid", "/var/log/krsid", "/var/cache/krsid", "/var/lib/krsid", "/run/krsid")
JSONL = "/var/log/krsid/events.jsonl"
DEB_IN_CONTAINER = "/srv/krsid-deb/krsid.deb"
PROBE_DIR_IN_CONTAINER = "/srv/krsid-probe"
POLICY_LOG = "/root/krsid-policy-rc.d.log"
DPKG_TIMEOUT = 600.0  # dpkg -i / apt-get purge under TCG: py3compile, man-db, triggers
# dpkg and apt as an admin's root shell runs them: the caller's PATH (a pyenv or venv
# python first) is not the container's business.
AS_ADMIN = ("env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "DEBIAN_FRONTEND=noninteractive")


def deb_path() -> Path:
    """The .deb this test installs: KRSID_DEB, else where `make deb` puts it."""
    named = os.environ.get("KRSID_DEB")
    return Path(named) if named else ROOT / "build" / "deb" / f"krsid_{krsid.__version__}_all.deb"


def why_not_here() -> str | None:
    """Why this test cannot run on this machine (None: it can)."""
    if not in_vm():
        return (
            "boots a second systemd over this machine's own root (through an overlay) and "
            "adds cgroups: runs only inside the throw-away test VM (tests/vm/run)"
        )
    if os.geteuid() != 0:
        return "needs root"
    missing = [t for t in ("systemd-nspawn", "nsenter", "bpftool", "mount", "umount") if not shutil.which(t)]
    if missing:
        return f"missing {', '.join(missing)} (systemd-nspawn: Debian package systemd-container, .ci/install-deps)"
    return None


def run_checked(*argv: str, timeout: float = 60.0) -> None:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert p.returncode == 0, f"{' '.join(argv)}: exit {p.returncode}: {p.stdout}{p.stderr}"


@contextlib.contextmanager
def writable_root() -> Iterator[Path]:
    """An overlay of the VM's / (read-only below) and a fresh tmpfs (above), mounted
    at a directory of this test; the tmpfs takes every write and goes with the test."""
    base = Path(tempfile.mkdtemp(prefix="krsid-deb-root-", dir="/run"))
    merged = base / "root"
    mounted: list[Path] = []
    try:
        run_checked("mount", "-t", "tmpfs", "-o", "mode=0755", "krsid-deb-upper", str(base))
        mounted.append(base)
        for d in ("upper", "work", "root"):
            (base / d).mkdir()
        run_checked(
            "mount",
            "-t",
            "overlay",
            "krsid-deb-root",
            "-o",
            f"lowerdir=/,upperdir={base / 'upper'},workdir={base / 'work'}",
            str(merged),
        )
        mounted.append(merged)
        yield merged
    finally:
        for m in reversed(mounted):
            p = subprocess.run(["umount", str(m)], capture_output=True, timeout=60, check=False)
            if p.returncode != 0:  # something still holds it open: detach it anyway
                subprocess.run(["umount", "--lazy", str(m)], capture_output=True, timeout=60, check=False)
        with contextlib.suppress(OSError):
            base.rmdir()


def prepare_root(root: Path, deb: Path) -> None:
    """What the container needs before it boots: the package, a place for the probe,
    a policy-rc.d that records and refuses service starts (removed before the test
    starts krsid itself), and no fstab (the host's is not the container's)."""
    (root / DEB_IN_CONTAINER.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(deb, root / DEB_IN_CONTAINER.lstrip("/"))
    (root / PROBE_DIR_IN_CONTAINER.lstrip("/")).mkdir(parents=True, exist_ok=True)
    # Written in the overlay's upper layer only: a policy-rc.d of the host's own (e.g. a
    # container image's "exit 101") stays untouched below, and is hidden in the
    # container once the test removes its own (a normal machine has none).
    policy = root / "usr/sbin/policy-rc.d"
    policy.unlink(missing_ok=True)
    policy.write_text(f'#!/bin/sh\necho "$*" >> {POLICY_LOG}\nexit 101\n')
    policy.chmod(0o755)
    (root / "etc/fstab").write_text("# krsid test container: nothing to mount\n")


@dataclass
class Installed:
    """The container, and what the install left to compare the purge against."""

    c: nspawn.Container
    root: Path  # the container's / as the VM sees it
    deb: Path
    install: subprocess.CompletedProcess[str] | None = None
    files: list[str] = field(default_factory=list)  # dpkg -L krsid after the install
    catalog_before: str = ""
    start: subprocess.CompletedProcess[str] | None = None
    lsm_prog_ids: set[int] = field(default_factory=set)


@pytest.fixture(scope="module")
def installed(request: pytest.FixtureRequest) -> Iterator[Installed]:
    reason = why_not_here()
    if reason:
        pytest.skip(reason)
    deb = deb_path()
    if not deb.is_file():
        # Inside the VM a skip would hide a missing build step: the Makefile's test-vm
        # target builds the package on the host first.
        pytest.fail(
            f"no Debian package at {deb}: build it on the host first with `make deb` "
            "(make test-vm does), or name one with KRSID_DEB="
        )
    nspawn.ensure_cgroup2()
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    tag = uuid.uuid4().hex[:10]

    with contextlib.ExitStack() as cleanup:

        def report() -> None:
            steps = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
            sys.stderr.write(f"\n--- krsid .deb in systemd-nspawn: {steps}, total {time.monotonic() - t0:.1f}s\n")

        cleanup.callback(report)
        root = cleanup.enter_context(writable_root())
        prepare_root(root, deb)
        c = cleanup.enter_context(
            nspawn.booted_container(
                root,
                volatile=None,
                binds=(),
                machine=f"krsid-deb-{tag}",
                cgroup=nspawn.CGROUP_ROOT / f"krsid-deb-{tag}",
                console=root.parent / "console.log",
                timings=timings,
                probe_dir=root / PROBE_DIR_IN_CONTAINER.lstrip("/"),
            )
        )

        inst = Installed(c, root, deb)
        inst.catalog_before = c.run("journalctl", "--list-catalog", EXEC_MESSAGE_ID).stdout
        t2 = time.monotonic()
        inst.install = c.run(*AS_ADMIN, "dpkg", "-i", DEB_IN_CONTAINER, timeout=DPKG_TIMEOUT)
        timings["dpkg -i"] = time.monotonic() - t2
        if inst.install.returncode == 0:
            # Without "/.", dpkg's name for the root directory.
            inst.files = [f for f in c.run("dpkg", "-L", "krsid").stdout.splitlines() if f != "/."]
        # From here on service starts and stops run (the purge's prerm stops krsid).
        (root / "usr/sbin/policy-rc.d").unlink()
        assert not (root / "usr/sbin/policy-rc.d").exists()
        yield inst


@pytest.fixture(scope="module")
def started(installed: Installed) -> Installed:
    """krsid started from the package's unit on the edited conffile (once per module)."""
    inst = installed
    c = inst.c
    assert inst.install is not None
    if inst.install.returncode != 0:
        pytest.fail(f"dpkg -i failed ({inst.install.returncode}):\n{inst.install.stdout}{inst.install.stderr}")
    if inst.start is None:
        conffile = inst.root / "etc/krsid/krsid.yaml"
        config: dict[str, Any] = yaml.safe_load(conffile.read_text())
        config["headers"] = "btf"
        config["hooks"] = {HOOK: {}}
        config["sinks"]["prometheus"]["listen"] = f"127.0.0.1:{free_port()}"
        conffile.write_text(yaml.safe_dump(config))
        t = time.monotonic()
        inst.start = c.run("systemctl", "start", "krsid", timeout=nspawn.START_TIMEOUT)
        c.timings["systemctl start krsid"] = time.monotonic() - t
    if inst.start.returncode != 0:
        pytest.fail(f"systemctl start krsid failed ({inst.start.returncode}): {inst.start.stderr}\n{c.unit_log()}")
    return inst


# --- the checks, in order: the last one purges the package ------------------------------


def test_dpkg_install_enables_the_unit_and_loads_the_catalog(installed: Installed) -> None:
    inst = installed
    c = inst.c
    assert inst.install is not None
    assert inst.install.returncode == 0, inst.install.stdout + inst.install.stderr
    for path in (
        "/usr/bin/krsid",
        "/usr/share/krsid/programs/bprm_check_security.c",
        "/usr/share/krsid/programs/include/krsid.h",
        "/usr/lib/systemd/catalog/krsid.catalog",
        "/etc/krsid/krsid.yaml",
        "/etc/logrotate.d/krsid",
    ):
        assert path in inst.files, f"{path} not in dpkg -L krsid: {inst.files}"
    # Enabled per Debian policy (deb-systemd-helper), and a start was asked for.
    wants = c.run("readlink", "/etc/systemd/system/multi-user.target.wants/krsid.service")
    assert wants.returncode == 0 and wants.stdout.strip().endswith("/systemd/system/krsid.service"), wants
    assert c.show("krsid", "UnitFileState")["UnitFileState"] == "enabled"
    asked = c.run("cat", POLICY_LOG).stdout.split("\n")
    assert "krsid.service start" in asked, f"the postinst did not ask to start krsid.service: {asked}"
    # systemd's dpkg trigger ran journalctl --update-catalog: nobody else did.
    assert EXEC_MESSAGE_ID not in inst.catalog_before, inst.catalog_before
    listed = c.run("journalctl", "--list-catalog", EXEC_MESSAGE_ID).stdout
    assert f"{EXEC_MESSAGE_ID} krsid: krsid {HOOK}: " in listed, listed  # the catalog's Subject
    # The Python package is the one dpkg installed, for Debian's python3.
    where = c.run("/usr/bin/python3", "-c", "import krsid, sys; print(krsid.__file__, krsid.__version__)")
    assert where.stdout.split() == ["/usr/lib/python3/dist-packages/krsid/__init__.py", krsid.__version__], where


def test_packaged_unit_starts_as_shipped(started: Installed) -> None:
    c = started.c
    props = ("ActiveState", "SubState", "StatusText", "NRestarts", "FragmentPath", "DropInPaths", "ExecStart")
    s = c.show("krsid", *props)
    assert (s["ActiveState"], s["SubState"]) == ("active", "running"), c.unit_log()
    assert s["StatusText"] == f"attached 1/1 hooks: {HOOK}", c.unit_log()
    assert s["NRestarts"] == "0", c.unit_log()
    assert s["FragmentPath"] in ("/lib/systemd/system/krsid.service", "/usr/lib/systemd/system/krsid.service"), s
    assert s["DropInPaths"] == "", s
    assert "path=/usr/bin/krsid" in s["ExecStart"], s["ExecStart"]
    assert "header tree generated from" in c.unit_log(), c.unit_log()
    main = int(c.show("krsid", "MainPID")["MainPID"])
    progs = nspawn.bpf_prog_ids_of(c.host_pid(main))
    started.lsm_prog_ids = {i for i, t in progs.items() if t == nspawn.BPF_PROG_TYPE_LSM}
    assert started.lsm_prog_ids, progs


def test_exec_is_an_event_in_the_journal_and_the_jsonl_file(started: Installed) -> None:
    c = started.c
    name = f"krsid-deb-true-{uuid.uuid4().hex[:12]}"
    shutil.copy2("/bin/true", c.probe_dir / name)
    path = f"{PROBE_DIR_IN_CONTAINER}/{name}"
    unit = f"krsid-probe-{uuid.uuid4().hex[:8]}"
    # As in test_systemd_nspawn.py: the exec comes 2 s after the transient unit's cgroup
    # exists (krsid looks an unknown cgroup id up at most once a second).
    p = c.run("systemd-run", f"--unit={unit}", "--property=RuntimeMaxSec=90", "/bin/sh", "-c", f"sleep 2 && {path}")
    assert p.returncode == 0, p.stderr
    found: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (found and lines):
        found = c.journal(f"KRSID_HOOK={HOOK}", f"KRSID_FILENAME={path}")
        jsonl = c.run("cat", JSONL).stdout
        records = [json.loads(line) for line in jsonl.splitlines() if line.endswith("}")]
        lines = [r for r in records if r["hook"] == HOOK and r.get("filename") == path]
        if not (found and lines):
            time.sleep(1)
    assert found, f"no {HOOK} event for {path} in the container's journal:\n{c.unit_log()}"
    assert found[0]["_SYSTEMD_UNIT"] == "krsid.service"
    assert found[0]["MESSAGE_ID"] == EXEC_MESSAGE_ID
    assert lines, f"no {HOOK} event for {path} in {JSONL}:\n{c.run('ls', '-l', JSONL).stdout}\n{c.unit_log()}"
    assert lines[0]["seq"] == int(found[0]["KRSID_SEQ"]), (lines[0], found[0])
    # The catalog the package installed explains it (the trigger loaded it).
    explained = c.run("journalctl", "--no-pager", "-x", f"KRSID_FILENAME={path}", "-n", "1").stdout
    assert f"Subject: krsid {HOOK}: exec " in explained, explained


def test_systemctl_reload_reloads_without_a_restart(started: Installed) -> None:
    c = started.c
    before = c.show("krsid", "MainPID", "NRestarts")
    since = c.run("date", "+%Y-%m-%d %H:%M:%S").stdout.strip()
    p = c.run("systemctl", "reload", "krsid", timeout=120)
    assert p.returncode == 0, p.stderr + c.unit_log()
    deadline = time.monotonic() + 60
    log = ""
    while time.monotonic() < deadline:
        log = c.run("journalctl", "--no-pager", "-u", "krsid", "--since", since, "-o", "cat").stdout
        if re.search(r"reloaded .*: \d+ policy rule", log):
            break
        time.sleep(1)
    assert re.search(r"reloaded /etc/krsid/krsid.yaml: \d+ policy rule", log), log + c.unit_log()
    after = c.show("krsid", "ActiveState", "SubState", "MainPID", "NRestarts")
    assert (after["ActiveState"], after["SubState"]) == ("active", "running"), after
    assert (after["MainPID"], after["NRestarts"]) == (before["MainPID"], before["NRestarts"]), (before, after)


def test_apt_purge_leaves_nothing(started: Installed) -> None:
    inst = started
    c = inst.c
    assert inst.files, "no dpkg -L list from the install"
    t = time.monotonic()
    p = c.run(*AS_ADMIN, "apt-get", "purge", "-y", "krsid", timeout=DPKG_TIMEOUT)
    c.timings["apt-get purge"] = time.monotonic() - t
    assert p.returncode == 0, p.stdout + p.stderr
    status = c.run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "krsid")
    assert status.stdout.strip() in ("", "un"), status  # "unknown": purged from dpkg's database
    # Every file of the package is gone; a directory may stay only if another package owns it.
    # One shell and one dpkg-query for the whole list (a process per path took ~3 min under TCG).
    present = c.run("sh", "-c", STILL_THERE, "sh", *inst.files)
    assert present.returncode == 0, present.stderr
    left_files = [line[5:] for line in present.stdout.splitlines() if line.startswith("file ")]
    assert not left_files, left_files
    dirs = [line[4:] for line in present.stdout.splitlines() if line.startswith("dir ")]
    # An absolute path is an exact match for dpkg-query -S; each owned one prints "pkgs: PATH".
    # Exit 1 means some path has no owner; 2 would be an error.
    owners = c.run("dpkg-query", "-S", *dirs, timeout=DPKG_TIMEOUT) if dirs else None
    assert owners is None or owners.returncode in (0, 1), owners
    owned = {
        line.split(": ", 1)[1]
        for line in (owners.stdout if owners else "").splitlines()
        if ": " in line and not line.startswith("diversion")
    }
    left_dirs = [d for d in dirs if d not in owned]
    assert not left_dirs, left_dirs
    left_runtime = [d for d in RUNTIME_DIRS if c.run("test", "-e", d).returncode == 0]
    assert not left_runtime, left_runtime
    links = c.run("find", "/etc/systemd/system", "-name", "krsid*").stdout.split()
    assert not links, links
    helper_state = c.run("find", "/var/lib/systemd/deb-systemd-helper-enabled", "-name", "krsid*").stdout.split()
    assert not helper_state, helper_state
    assert c.show("krsid", "LoadState")["LoadState"] == "not-found"
    # The removal fired the catalog trigger again.
    listed = c.run("journalctl", "--list-catalog", EXEC_MESSAGE_ID).stdout
    assert EXEC_MESSAGE_ID not in listed, listed
    # The prerm stopped the daemon: its programs are detached.
    still = inst.lsm_prog_ids & set(nspawn.loaded_programs())
    assert not still, f"krsid's LSM programs still loaded after the purge: {sorted(still)}"
