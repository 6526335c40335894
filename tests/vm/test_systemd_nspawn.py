"""The real systemd unit, end to end: systemd-nspawn boots systemd inside the test VM.

What runs: ``make install DESTDIR=<stage> INSTALL_VENV=no`` stages the installed layout
(the shipped unit, /etc/krsid/krsid.yaml, /usr/share/krsid/programs, the journald
catalog); systemd-nspawn boots the host tree's own systemd in a container and
bind-mounts the staged files where ``make install`` puts them, plus the checkout's venv
at /opt/krsid (the unit's ExecStart=/opt/krsid/bin/krsid stays as shipped). Then,
inside the container, through nsenter into its PID 1's namespaces:
``systemctl start krsid`` (Type=notify, so it returns after READY=1), systemctl show,
journalctl, an exec from a transient unit, and ``systemctl stop krsid``.

How the container boots (systemd 252, measured in the VM):

* ``--directory=/`` is refused unless the root is made writable some other way:
  ``--volatile=overlay`` and ``--read-only`` are rejected ("Spawning container on root
  directory is not supported"), ``--volatile=state`` fails on the VM's read-only 9p root
  ("Failed to resolve /run/systemd/nspawn-root/run/host"). ``--volatile=yes`` boots: a
  tmpfs root with the VM's /usr bound read-only (recursively: /usr/lib/modules of the
  VM's kernel comes along); /etc starts empty, which is why systemd-firstboot is masked
  (it fails without a terminal and the system would be "degraded").
* Mount points must exist or be creatable: everything outside /usr is on the tmpfs
  root, but /usr/share/krsid and /usr/lib/systemd/catalog/krsid.catalog have to exist in
  the VM's /usr (a throw-away overlay); the test creates them and removes them after.
* ``--capability=CAP_BPF,CAP_PERFMON``: not in nspawn's default bounding set, and the
  unit's CapabilityBoundingSet/AmbientCapabilities can only keep what the container has.
* ``--system-call-filter='bpf perf_event_open'``: nspawn's own seccomp filter
  "knowingly excludes" both (src/nspawn/nspawn-seccomp.c); without it every map
  creation fails with "could not open bpf map: ... Operation not permitted" (and the
  container's systemd cannot attach its cgroup BPF programs: IPAddressDeny=,
  DevicePolicy=).
* ``--register=no --keep-unit``: no machined/host systemd in the VM. nspawn puts the
  container in the cgroup it starts in, so it starts in its own child cgroup of the
  VM's cgroup2 root (never in the root cgroup itself), removed afterwards.
* ``systemd.unit=basic.target``: what krsid.service needs (DefaultDependencies); the
  host's multi-user services (postgresql, prometheus ...) stay down.

Overrides of the unit: none in --headers=btf runs. With --headers=kernel/auto one
drop-in, tests/vm/nspawn/kernel-headers.conf (ProtectKernelModules=no), because
ProtectKernelModules=yes hides /usr/lib/modules and with it the kernel headers (on
any machine, not only here; the drop-in explains). Every other hardening setting of
systemd/krsid.service is applied as shipped, and the test checks the result on the
running process (capabilities, no_new_privs, seccomp).

Only inside the test VM: the container is booted over the machine's own root and the
test adds mount points to /usr and cgroups to the cgroup tree; on a real machine that
would touch the machine itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import PYTHON3, SETFL_THEN_WRITE
from tests.vm.conftest import ROOT, free_port, message_id
from tests.vm.nspawn_container import (
    BPF_PROG_TYPE_LSM,
    CGROUP_ROOT,
    START_TIMEOUT,
    Container,
    booted_container,
    bpf_prog_ids_of,
    ensure_cgroup2,
    loaded_programs,
)
from tests.vm.vmrun import in_vm

pytestmark = pytest.mark.vm

NSPAWN_DIR = Path(__file__).parent / "nspawn"
HEADERS_DROPIN = NSPAWN_DIR / "kernel-headers.conf"
HOOKS = (
    "bprm_check_security",
    "file_fcntl",
    "file_mprotect",
    "inode_create",
    "inode_mkdir",
    "inode_unlink",
    "task_kill",
)
EXEC_MESSAGE_ID = message_id("bprm_check_security")
# The unit's CapabilityBoundingSet/AmbientCapabilities: DAC_READ_SEARCH, SYS_ADMIN,
# SYS_RESOURCE, PERFMON, BPF.
UNIT_CAPS = (1 << 2) | (1 << 21) | (1 << 24) | (1 << 38) | (1 << 39)

# Path rules under the shipped unit: they resolve /tmp and /home in the service's own
# mount namespace, so a private /tmp or a hidden /home would make them silently miss.
# Scoped to this test's own processes: uid PROBE_UID (used by nothing else in the
# container) and a copy of sh in a directory of this test.
PROBE_UID = 4242
HOME_PROBE_DIR = "/home/krsid-probe"
HOME_SHELL = f"{HOME_PROBE_DIR}/sh"
HOME_KILL = f"{HOME_PROBE_DIR}/kill"
# A slice only this test puts processes in (no dash: "a-b.slice" would nest in a.slice).
PROBE_SLICE = "krsidprobe.slice"
# A log directory only this test writes to, below the shipped watch's /var/log.
PROBE_LOG_DIR = "/var/log/krsid-probe"
POLICY_RULES = [
    {
        "name": "deny-exec-from-tmp",
        "hook": "bprm_check_security",
        "action": "deny",
        "match": {"path_prefix": "/tmp", "uid": PROBE_UID},
    },
    {
        "name": "deny-exec-by-home-shell",
        "hook": "bprm_check_security",
        "action": "deny",
        "match": {"exe": HOME_SHELL},
    },
    # A policy field of a newer hook, below a directory of /home: world-writable
    # directories made there (mode after the umask) are denied.
    {
        "name": "deny-world-writable-dir-in-home-probe",
        "hook": "inode_mkdir",
        "action": "deny",
        "match": {"path_prefix": HOME_PROBE_DIR, "fields": {"mode": {"any": ["WOTH"]}}},
    },
    # The same on inode_create: a world-writable file is refused before its name exists.
    {
        "name": "deny-world-writable-file-in-home-probe",
        "hook": "inode_create",
        "action": "deny",
        "match": {"path_prefix": HOME_PROBE_DIR, "fields": {"mode": {"any": ["WOTH"]}}},
    },
    # A cgroup rule, resolved in the container's own cgroup namespace (as under docker
    # or Kubernetes): execs in the probe slice, which only this test uses, are denied.
    {
        "name": "deny-exec-in-probe-slice",
        "hook": "bprm_check_security",
        "action": "deny",
        "match": {"cgroup": f"/{PROBE_SLICE}"},
    },
    # A program piped into a shell (exec context STDIN_SCRIPT), by PROBE_UID only.
    {
        "name": "deny-piped-shell-by-probe-uid",
        "hook": "bprm_check_security",
        "action": "deny",
        "match": {"uid": PROBE_UID, "fields": {"context": {"any": ["STDIN_SCRIPT"]}}},
    },
    # An edit in place of a log (file_fcntl): F_SETFL taking O_APPEND off a log opened
    # for appending, in this test's own directory below /var/log.
    {
        "name": "deny-append-off-in-probe-logs",
        "hook": "file_fcntl",
        "action": "deny",
        "match": {"path_prefix": PROBE_LOG_DIR, "fields": {"append": "REMOVED"}},
    },
    # Self-protection (README: Policies), scoped to this test's copy of kill: signals
    # to krsid itself are refused.
    {
        "name": "deny-signals-to-krsid-by-home-kill",
        "hook": "task_kill",
        "action": "deny",
        "match": {"exe": HOME_KILL, "fields": {"protected": "DAEMON"}},
    },
]
# The file-integrity watch under the unit: a directory under /root, which the unit
# shows read-only (ProtectHome=read-only); hidden, the watch would never match.
WATCHED_DIR = "/root/.ssh"
# The log directory of the shipped watch (watch.logs), read-only for the unit
# (ProtectSystem=strict, but LogsDirectory=krsid below it).
LOG_DIR = "/var/log"
EACCES_EXIT = 126  # what sh returns when an exec it runs fails with EPERM/EACCES


# --- helpers ------------------------------------------------------------------------


def why_not_here() -> str | None:
    """Why this test cannot run on this machine (None: it can)."""
    if not in_vm():
        return (
            "boots a second systemd over this machine's own root and adds mount points to "
            "/usr and cgroups to the cgroup tree: runs only inside the throw-away test VM "
            "(tests/vm/run)"
        )
    if os.geteuid() != 0:
        return "needs root"
    missing = [t for t in ("systemd-nspawn", "nsenter", "bpftool", "make") if not shutil.which(t)]
    if missing:
        return f"missing {', '.join(missing)} (systemd-nspawn: Debian package systemd-container, .ci/install-deps)"
    if not Path("/lib/systemd/systemd").exists():
        return "no /lib/systemd/systemd to boot"
    return None


def mount_of(path: Path) -> Path:
    """The mount point that holds `path`."""
    p = path
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def kernel_header_binds() -> list[Path]:
    """Mounts outside /usr that /lib/modules/$(uname -r){,/build,/source} lead into.

    In the VM /lib/modules/<release> is a link farm into the runner's kernel cache
    (its own 9p mount under /var/cache): the container must see it at the same path."""
    moddir = Path("/lib/modules") / os.uname().release
    out: list[Path] = []
    for p in (moddir, moddir / "build", moddir / "source"):
        if not p.exists():
            continue
        mnt = mount_of(p.resolve())
        if mnt != Path("/") and not mnt.is_relative_to("/usr") and mnt not in out:
            out.append(mnt)
    return out


# --- the container ------------------------------------------------------------------


def make_mount_point(path: Path, is_dir: bool, cleanup: contextlib.ExitStack) -> None:
    """A mount point in the VM's /usr (the container's /usr is that, read-only),
    removed again at the end if this test made it."""
    if path.exists():
        return
    if is_dir:
        path.mkdir()
        cleanup.callback(path.rmdir)
    else:
        path.touch()
        cleanup.callback(path.unlink)


def stage_install(stage: Path, headers: str, port: int) -> None:
    """The installed layout, from the Makefile's own install target.

    `make install` keeps an existing /etc/krsid/krsid.yaml, so the test config goes in
    first. -o deps: no .ci/install-deps / pip inside the VM (the venv exists)."""
    import yaml

    (stage / "etc/krsid").mkdir(parents=True)
    (stage / "etc/krsid/krsid.yaml").write_text(
        yaml.safe_dump(
            {
                "headers": headers,
                "hooks": {h: {"exec_only": True} if h == "file_mprotect" else {} for h in HOOKS},
                "policy": {"rules": POLICY_RULES},
                "watch": {"paths": [WATCHED_DIR], "names": [], "logs": [LOG_DIR]},
                "sinks": {
                    "journald": {"enabled": True},
                    "jsonl": {"enabled": False},
                    "prometheus": {"enabled": True, "listen": f"127.0.0.1:{port}"},
                },
            }
        )
    )
    make = subprocess.run(
        ["make", "-s", "-o", "deps", "install", f"DESTDIR={stage}", "INSTALL_VENV=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert make.returncode == 0, f"make install failed:\n{make.stdout}\n{make.stderr}"
    for rel in (
        "etc/systemd/system/krsid.service",
        "etc/krsid/krsid.yaml",
        "usr/share/krsid/programs/bprm_check_security.c",
        "usr/lib/systemd/catalog/krsid.catalog",
    ):
        assert (stage / rel).exists(), f"make install did not install /{rel}"
    assert "file_mprotect" in (stage / "etc/krsid/krsid.yaml").read_text(), "make install replaced the config"


def venv_binds(venv: Path) -> list[str]:
    """The checkout's venv at /opt/krsid, where the unit's ExecStart looks for it. Its
    scripts name the venv's python by path and the editable install points into a
    checkout: those are bound at their own paths too (this checkout always is)."""
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import krsid; print(krsid.__file__)"],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    binds = [f"--bind-ro={venv}:/opt/krsid", f"--bind-ro={ROOT}"]
    for extra in (venv, Path(where.stdout.strip()).resolve().parents[1]):
        if not extra.is_relative_to(ROOT):
            binds.append(f"--bind-ro={extra}")
    return binds


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Container]:
    reason = why_not_here()
    if reason:
        pytest.skip(reason)
    venv = Path(sys.prefix)
    # Wherever the checkout lives (CI's clone may be under /tmp or /root): the unit shows
    # the host's /tmp and /home to the service (read-only), which path rules need too.
    if venv == Path(sys.base_prefix) or not (venv / "bin" / "krsid").exists():
        pytest.skip(f"needs the project's venv with krsid installed (make deps); running from {sys.prefix}")
    ensure_cgroup2()
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    headers = str(request.config.getoption("--headers"))
    tag = uuid.uuid4().hex[:10]
    port = free_port()

    stage = tmp_path_factory.mktemp("nspawn-stage")
    stage_install(stage, headers, port)
    dropins: list[str] = []
    dropin_dir = stage / "krsid.service.d"
    dropin_dir.mkdir()
    if headers in ("kernel", "auto"):
        shutil.copy(HEADERS_DROPIN, dropin_dir / HEADERS_DROPIN.name)
        dropins.append(HEADERS_DROPIN.name)
    probe_dir = stage / "probe"
    probe_dir.mkdir()
    binds = [
        f"--bind-ro={stage}/etc/systemd/system/krsid.service:/etc/systemd/system/krsid.service",
        f"--bind-ro={dropin_dir}:/etc/systemd/system/krsid.service.d",
        f"--bind-ro={stage}/etc/krsid:/etc/krsid",
        f"--bind-ro={stage}/usr/share/krsid:/usr/share/krsid",
        f"--bind-ro={stage}/usr/lib/systemd/catalog/krsid.catalog:/usr/lib/systemd/catalog/krsid.catalog",
        *venv_binds(venv),
        f"--bind-ro={probe_dir}:/srv/krsid-probe",
        # Empty /etc (volatile=yes) = first boot: the wizard fails without a terminal.
        "--bind-ro=/dev/null:/etc/systemd/system/systemd-firstboot.service",
    ]
    if headers in ("kernel", "auto"):
        binds += [f"--bind-ro={m}" for m in kernel_header_binds()]
    timings["stage (make install)"] = time.monotonic() - t0

    with contextlib.ExitStack() as cleanup:

        def report() -> None:
            steps = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
            total = time.monotonic() - t0
            sys.stderr.write(
                f"\n--- systemd-nspawn krsid unit: {steps}, total {total:.1f}s "
                f"(headers={headers}, drop-ins: {', '.join(dropins) or 'none'})\n"
            )

        cleanup.callback(report)
        make_mount_point(Path("/usr/share/krsid"), True, cleanup)
        make_mount_point(Path("/usr/lib/systemd/catalog/krsid.catalog"), False, cleanup)
        c = cleanup.enter_context(
            booted_container(
                Path("/"),
                volatile="yes",
                binds=binds,
                machine=f"krsid-{tag}",
                cgroup=CGROUP_ROOT / f"krsid-nspawn-{tag}",
                console=stage / "console.log",
                timings=timings,
                probe_dir=probe_dir,
                metrics_url=f"http://127.0.0.1:{port}/metrics",
                headers=headers,
                dropins=dropins,
            )
        )

        # The exe rule names a file under /home: it must exist when krsid loads the rules
        # (and the watched directory, or krsid looks it up again every second).
        for argv in (
            ("mkdir", "-p", HOME_PROBE_DIR, WATCHED_DIR, PROBE_LOG_DIR),
            ("cp", "/bin/sh", HOME_SHELL),
            ("cp", "/bin/kill", HOME_KILL),
        ):
            made = c.run(*argv)
            assert made.returncode == 0, made.stderr
        # The cgroup rule's slice must exist when krsid loads the rules: a process holds it.
        held = c.run(
            "systemd-run", "--quiet", "--unit=krsid-probe-holder", f"--slice={PROBE_SLICE}", "sleep", "infinity"
        )
        assert held.returncode == 0, held.stderr
        t2 = time.monotonic()
        c.start = c.run("systemctl", "start", "krsid", timeout=START_TIMEOUT)
        timings["systemctl start krsid"] = time.monotonic() - t2
        yield c


@pytest.fixture(scope="module")
def started(container: Container) -> Container:
    """The container with krsid started; fails with the unit's journal if it did not."""
    p = container.start
    assert p is not None
    if p.returncode != 0:
        pytest.fail(f"systemctl start krsid failed ({p.returncode}): {p.stderr}\n{container.unit_log()}")
    return container


# --- the checks, in order: the last one stops the unit -------------------------------


def test_unit_reaches_ready_with_every_hook_attached(started: Container) -> None:
    c = started
    assert c.run("systemctl", "is-active", "krsid").stdout.strip() == "active", c.unit_log()
    s = c.show(
        "krsid",
        "Type",
        "ActiveState",
        "SubState",
        "StatusText",
        "NRestarts",
        "ExecMainStartTimestampMonotonic",
        "ActiveEnterTimestampMonotonic",
        "FragmentPath",
        "DropInPaths",
        "ExecStart",
    )
    assert s["Type"] == "notify"
    assert (s["ActiveState"], s["SubState"]) == ("active", "running"), s
    assert s["StatusText"] == f"attached {len(HOOKS)}/{len(HOOKS)} hooks: {', '.join(HOOKS)}", c.unit_log()
    assert s["NRestarts"] == "0", c.unit_log()
    assert s["FragmentPath"] == "/etc/systemd/system/krsid.service"
    assert "path=/opt/krsid/bin/krsid" in s["ExecStart"], s["ExecStart"]
    assert sorted(Path(p).name for p in s["DropInPaths"].split()) == sorted(c.dropins)

    log = c.unit_log()
    ready = re.search(rf"krsid: INFO: ready in ([0-9.]+)s: attached {len(HOOKS)}/{len(HOOKS)} hooks", log)
    assert ready, log
    for hook in HOOKS:
        assert f"hook {hook}: attached" in log, log
    expected = "header tree generated from" if c.headers == "btf" else "kernel headers in"
    assert expected in log, log
    # Type=notify: systemd made the unit active only at READY=1, which comes after the
    # compile and attach ("ready in N s" counts from before the compile).
    waited = (int(s["ActiveEnterTimestampMonotonic"]) - int(s["ExecMainStartTimestampMonotonic"])) / 1e6
    assert waited >= float(ready.group(1)) - 0.5, (waited, ready.group(0))
    # Nothing else in the container failed (a unit setting it could not apply would).
    assert c.boot_state == "running", c.run("systemctl", "--failed", "--no-pager").stdout
    assert c.run("systemctl", "is-system-running").stdout.strip() == "running", c.run(
        "systemctl", "--failed", "--no-pager"
    ).stdout


def test_hardening_of_the_unit_applies_in_the_container(started: Container) -> None:
    c = started
    main = int(c.show("krsid", "MainPID")["MainPID"])
    status = c.run("cat", f"/proc/{main}/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert int(fields["CapBnd"], 16) == UNIT_CAPS, status
    assert int(fields["CapEff"], 16) == UNIT_CAPS, status
    assert int(fields["CapAmb"], 16) == UNIT_CAPS, status
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"  # SystemCallFilter= is a filter
    # ProtectSystem=strict: / is read-only for it, its RuntimeDirectory is not.
    mounts = c.run("cat", f"/proc/{main}/mountinfo").stdout
    opts = {line.split()[4]: line.split()[5] for line in mounts.splitlines()}
    assert opts.get("/", "").startswith("ro"), mounts
    assert opts.get("/run/krsid", "").startswith("rw"), mounts
    assert c.run("test", "-s", "/run/krsid/krsid.pid").returncode == 0  # RuntimeDirectory=krsid
    # IPAddressDeny=/IPAddressAllow= and DevicePolicy=closed are BPF programs on the
    # unit's cgroup (possible only because the container may call bpf()).
    host_pid = c.host_pid(main)
    cg = Path(f"/proc/{host_pid}/cgroup").read_text().strip().split("::", 1)[1]
    assert cg.endswith("/system.slice/krsid.service"), cg
    p = subprocess.run(
        ["bpftool", "-j", "cgroup", "show", f"{CGROUP_ROOT}{cg}"], capture_output=True, text=True, timeout=60
    )
    attached = {str(a["attach_type"]) for a in json.loads(p.stdout or "[]")}
    assert {"cgroup_inet_ingress", "cgroup_inet_egress", "cgroup_device"} <= attached, (attached, p.stderr)
    # systemd applied every setting of the unit without complaint.
    complaints = [
        str(e.get("MESSAGE"))
        for e in c.journal("_PID=1", "-p", "warning")
        if "krsid" in str(e.get("MESSAGE")) or e.get("UNIT") == "krsid.service"
    ]
    assert not complaints, complaints
    # Its programs are loaded in the (one) kernel: the fds it holds are LSM programs.
    progs = bpf_prog_ids_of(host_pid)
    lsm = [i for i, t in progs.items() if t == BPF_PROG_TYPE_LSM]
    # bpftool names a program by its BTF function name (lsm__<hook>) or by the kernel's
    # name (<hook>, cut to 15 characters).
    names = {str(loaded_programs()[i]["name"]).removeprefix("lsm__") for i in lsm}
    for hook in HOOKS:
        assert any(n and hook.startswith(n) for n in names), (hook, names)


def test_metrics_endpoint_answers_on_localhost(started: Container) -> None:
    # IPAddressDeny=any + IPAddressAllow=localhost: the VM shares the container's network.
    with urllib.request.urlopen(started.metrics_url, timeout=30) as r:
        text = r.read().decode()
    for hook in HOOKS:
        assert f'krsid_program_attached{{hook="{hook}"}} 1.0' in text, text


def test_exec_in_the_container_is_an_audit_event_in_its_journal(started: Container) -> None:
    """The exec of a probe binary by a transient unit: krsid's event in the journal, with
    the unit's cgroup, and in `journalctl -u UNIT` next to the unit's own lines (issue
    12): it carries OBJECT_SYSTEMD_UNIT=<the unit> (from the kernel's cgroup id at the
    hook), which journalctl -u matches on entries from uid-0 senders."""
    c = started
    name = f"krsid-nspawn-true-{uuid.uuid4().hex[:12]}"
    shutil.copy2("/bin/true", c.probe_dir / name)
    path = f"/srv/krsid-probe/{name}"
    unit = f"krsid-probe-{uuid.uuid4().hex[:8]}"
    marker = f"own-line-{uuid.uuid4().hex[:8]}"
    # A transient unit of the container's systemd runs it. krsid resolves a cgroup id by
    # walking /sys/fs/cgroup at most once a second after a miss, and every nsenter'd
    # command of this test is a miss (the VM's root cgroup is outside the container's
    # cgroup namespace): so the exec comes 2 s after the unit's cgroup exists, and the
    # unit lives on until the event is in the journal.
    p = c.run(
        "systemd-run",
        f"--unit={unit}",
        "--property=RuntimeMaxSec=90",
        "/bin/sh",
        "-c",
        f"echo {marker}; sleep 2 && {path} && exec sleep 60",
    )
    assert p.returncode == 0, p.stderr
    try:
        deadline = time.monotonic() + 60
        found: list[dict[str, Any]] = []
        while not found and time.monotonic() < deadline:
            found = c.journal("KRSID_HOOK=bprm_check_security", f"KRSID_FILENAME={path}")
            if not found:
                time.sleep(1)
        cgroup_ino = c.run("stat", "-c", "%i", f"/sys/fs/cgroup/system.slice/{unit}.service").stdout.strip()
        by_unit = c.journal("-u", f"{unit}.service")
    finally:
        c.run("systemctl", "stop", unit)
    assert found, f"no bprm_check_security event for {path}:\n{c.unit_log()}"
    e = found[0]
    assert e["MESSAGE_ID"] == EXEC_MESSAGE_ID
    assert e["SYSLOG_IDENTIFIER"] == "krsid"
    assert e["_SYSTEMD_UNIT"] == "krsid.service"  # journald's own field: sent from the unit
    assert e["KRSID_PATH"] == path
    where = {k: e.get(k) for k in ("KRSID_CGROUP_ID", "KRSID_CGROUP", "KRSID_UNIT", "KRSID_COMM", "KRSID_EXE")}
    assert e["KRSID_CGROUP_ID"] == cgroup_ino, (where, cgroup_ino)
    assert e["KRSID_CGROUP"] == f"/system.slice/{unit}.service", where
    assert e["KRSID_UNIT"] == f"{unit}.service", where
    assert path in e["MESSAGE"]
    assert e["OBJECT_SYSTEMD_UNIT"] == f"{unit}.service" and e["_UID"] == "0", e  # about the unit's process
    assert e["KRSID_PROCESS_ID"] and e["KRSID_PARENT_PROCESS_ID"], e
    # journalctl -u: krsid's event next to the unit's own line.
    krsid_lines = [x for x in by_unit if x.get("SYSLOG_IDENTIFIER") == "krsid" and x.get("KRSID_PATH") == path]
    assert krsid_lines and krsid_lines[0]["MESSAGE_ID"] == EXEC_MESSAGE_ID, by_unit
    own = [x for x in by_unit if x.get("MESSAGE") == marker]
    assert own and own[0]["_SYSTEMD_UNIT"] == f"{unit}.service", "the unit's own line is missing from journalctl -u"
    # The journald catalog from `make install` explains the MESSAGE_ID.
    assert c.run("journalctl", "--update-catalog").returncode == 0
    explained = c.run("journalctl", "--no-pager", "-x", f"KRSID_FILENAME={path}", "-n", "1").stdout
    assert "Subject: krsid bprm_check_security: exec " in explained, explained
    assert f"KRSID_FILENAME={path}: The path as passed to execve" in explained, explained


def _events_in_journal(c: Container, *matches: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = c.journal(*matches)
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"no event {matches}:\n{c.unit_log()}")


def _denial_in_journal(c: Container, rule: str, filename: str) -> dict[str, Any]:
    matches = ("KRSID_HOOK=bprm_check_security", f"KRSID_RULE={rule}", f"KRSID_FILENAME={filename}")
    return _events_in_journal(c, *matches)[0]


def test_path_prefix_tmp_rule_denies_a_host_process_exec_from_tmp(started: Container) -> None:
    """With PrivateTmp=yes this rule resolved krsid's private /tmp and never matched."""
    c = started
    name = f"krsid-tmp-probe-{uuid.uuid4().hex[:8]}"
    tmp_file, elsewhere = f"/tmp/{name}", f"/srv/krsid-probe/{name}"
    shutil.copy2("/bin/true", c.probe_dir / name)
    assert c.run("cp", elsewhere, tmp_file).returncode == 0
    try:
        # setpriv, not systemd-run --uid: the volatile container's /etc has no passwd
        # entry for the uid, which systemd refuses (217/USER) before any exec happens.
        as_probe = ("setpriv", f"--reuid={PROBE_UID}", f"--regid={PROBE_UID}", "--clear-groups", "--")
        denied = c.run(*as_probe, "/bin/sh", "-c", f"{tmp_file}; exit $?")
        allowed = c.run(*as_probe, "/bin/sh", "-c", f"{elsewhere}; exit $?")  # the same binary outside /tmp
        by_root = c.run("/bin/sh", "-c", f"{tmp_file}; exit $?")  # the rule is scoped to PROBE_UID
    finally:
        c.run("rm", "-f", tmp_file)
    assert denied.returncode == EACCES_EXIT, (denied.returncode, denied.stderr, c.unit_log())
    assert allowed.returncode == 0, allowed.stderr
    assert by_root.returncode == 0, by_root.stderr
    e = _denial_in_journal(c, "deny-exec-from-tmp", tmp_file)
    assert (e["KRSID_ACTION"], e["KRSID_VERDICT"], e["KRSID_UID"]) == ("deny", "-EPERM", str(PROBE_UID)), e


def test_exe_rule_under_home_denies_what_that_binary_runs(started: Container) -> None:
    """With ProtectHome=yes, /home was empty for krsid: the rule could not resolve."""
    c = started
    denied = c.run(HOME_SHELL, "-c", "/bin/true; exit $?")
    allowed = c.run("/bin/sh", "-c", "/bin/true; exit $?")
    assert denied.returncode == EACCES_EXIT, (denied.returncode, denied.stderr, c.unit_log())
    assert allowed.returncode == 0, allowed.stderr
    e = _denial_in_journal(c, "deny-exec-by-home-shell", "/bin/true")
    assert (e["KRSID_ACTION"], e["KRSID_VERDICT"]) == ("deny", "-EPERM"), e


@pytest.mark.parametrize(
    ("hook", "make", "rule", "mode"),
    [
        (
            "inode_mkdir",
            "mkdir",
            "deny-world-writable-dir-in-home-probe",
            "RUSR|WUSR|XUSR|RGRP|WGRP|XGRP|ROTH|WOTH|XOTH",
        ),
        ("inode_create", ": >", "deny-world-writable-file-in-home-probe", "RUSR|WUSR|RGRP|WGRP|ROTH|WOTH"),
    ],
)
def test_field_rule_of_a_newer_hook_denies_below_home(
    started: Container, hook: str, make: str, rule: str, mode: str
) -> None:
    """The mode field of inode_mkdir and inode_create and a path_prefix under /home
    (read-only for the unit): a world-writable directory or file is refused there and
    leaves no name (inode_create comes before the name exists); a private one is made."""
    c = started
    name = f"drop-{uuid.uuid4().hex[:8]}"
    denied = c.run("/bin/sh", "-c", f"umask 000; {make} {HOME_PROBE_DIR}/{name}")
    allowed = c.run("/bin/sh", "-c", f"umask 022; {make} {HOME_PROBE_DIR}/{name}-ok")
    assert denied.returncode != 0 and "Operation not permitted" in denied.stderr, (denied.stderr, c.unit_log())
    assert allowed.returncode == 0, allowed.stderr
    assert c.run("test", "-e", f"{HOME_PROBE_DIR}/{name}").returncode == 1
    (e,) = _events_in_journal(c, f"KRSID_HOOK={hook}", f"KRSID_RULE={rule}")
    assert (e["KRSID_ACTION"], e["KRSID_VERDICT"], e["KRSID_NAME"], e["KRSID_DIR"]) == (
        "deny",
        "-EPERM",
        name,
        Path(HOME_PROBE_DIR).name,
    ), e
    assert e["KRSID_MODE"] == mode, e


def test_cgroup_rule_denies_exec_in_its_slice_inside_a_cgroup_namespace(started: Container) -> None:
    """The container has its own cgroup namespace, as docker, Kubernetes and nspawn give
    one: krsid resolves /krsidprobe.slice there, where it is one level deep, while the
    kernel's cgroup tree has it deeper (under the container's cgroup). The rule must
    match the cgroup itself, not the depth of its path in krsid's view."""
    c = started
    own = os.stat("/proc/self/ns/cgroup").st_ino
    assert os.stat(f"/proc/{c.pid1}/ns/cgroup").st_ino != own, "the container shares the VM's cgroup namespace"
    denied = c.run("systemd-run", "--quiet", "--scope", f"--slice={PROBE_SLICE}", "/bin/true")
    allowed = c.run("systemd-run", "--quiet", "--scope", "/bin/true")
    assert denied.returncode != 0 and "Operation not permitted" in denied.stderr, (denied.stderr, c.unit_log())
    assert allowed.returncode == 0, allowed.stderr
    # One denial: the exec in the slice's scope (that scope is gone before krsid could
    # name its cgroup: the event's cgroup path is empty, its cgroup_id is set).
    matches = ("KRSID_HOOK=bprm_check_security", "KRSID_RULE=deny-exec-in-probe-slice", "KRSID_FILENAME=/bin/true")
    (e,) = _events_in_journal(c, *matches)
    assert (e["KRSID_ACTION"], e["KRSID_VERDICT"], e["KRSID_UID"]) == ("deny", "-EPERM", "0"), e
    assert int(e["KRSID_CGROUP_ID"]) > 1, e


def test_watch_under_root_reports_what_is_made_there(started: Container) -> None:
    """The watch resolves /root/.ssh in the unit's own mount namespace (inode_mkdir
    reports directories made in a watched directory; file_open, inode_rename and the
    others look the watch up the same way)."""
    c = started
    name = f"keys-{uuid.uuid4().hex[:8]}"
    p = c.run("mkdir", f"{WATCHED_DIR}/{name}")
    assert p.returncode == 0, p.stderr
    (e,) = _events_in_journal(c, "KRSID_HOOK=inode_mkdir", f"KRSID_NAME={name}")
    assert (e["KRSID_ACTION"], e["KRSID_WATCH"], e["KRSID_WATCH_LEVEL"], e["KRSID_DIR"]) == (
        "audit",
        WATCHED_DIR,
        "1",
        ".ssh",
    ), e


def test_a_log_deleted_under_var_log_is_reported(started: Container) -> None:
    """The log watch resolves /var/log in the unit's mount namespace: a log deleted
    there is reported (inode_unlink), after an append that is not."""
    c = started
    name = f"krsid-probe-{uuid.uuid4().hex[:8]}.log"
    p = c.run("/bin/sh", "-c", f"echo line >> {LOG_DIR}/{name} && rm {LOG_DIR}/{name}")
    assert p.returncode == 0, p.stderr
    (e,) = _events_in_journal(c, "KRSID_HOOK=inode_unlink", f"KRSID_NAME={name}")
    assert (e["KRSID_ACTION"], e["KRSID_WATCH"], e["KRSID_WATCH_LEVEL"], e["KRSID_RUNNING"]) == (
        "audit",
        LOG_DIR,
        "1",
        "0",
    ), e


def test_context_rule_denies_a_program_piped_into_a_shell(started: Container) -> None:
    """A context rule under the unit (STDIN_SCRIPT, scoped to PROBE_UID): `... | sh` by
    that uid is refused; its `sh -c` runs."""
    c = started
    as_probe = f"setpriv --reuid={PROBE_UID} --regid={PROBE_UID} --clear-groups --"
    piped = c.run("/bin/sh", "-c", f"echo 'echo ran' | {as_probe} /bin/sh")
    assert piped.returncode != 0 and "ran" not in piped.stdout, (piped.stdout, piped.stderr, c.unit_log())
    code = c.run("/bin/sh", "-c", f"echo ignored | {as_probe} /bin/sh -c 'echo ran'")
    assert (code.returncode, code.stdout) == (0, "ran\n"), (code.stdout, code.stderr)
    (e,) = _events_in_journal(c, "KRSID_HOOK=bprm_check_security", "KRSID_RULE=deny-piped-shell-by-probe-uid")
    assert (e["KRSID_ACTION"], e["KRSID_VERDICT"], e["KRSID_UID"], e["KRSID_STDIN_TYPE"]) == (
        "deny",
        "-EPERM",
        str(PROBE_UID),
        "PIPE",
    ), e
    assert "STDIN_SCRIPT" in e["KRSID_CONTEXT"].split("|"), e


def test_file_fcntl_rule_denies_taking_o_append_off_a_log(started: Container) -> None:
    """A field rule of file_fcntl under the unit, in a directory of /var/log (read-only
    for the service): taking O_APPEND off the log is refused, the log keeps its bytes,
    and an append to it still works."""
    c = started
    log = f"{PROBE_LOG_DIR}/auth-{uuid.uuid4().hex[:8]}.log"
    wrote = c.run("/bin/sh", "-c", f"echo 'Failed password for root' > {log}")
    assert wrote.returncode == 0, wrote.stderr
    edit = c.run(PYTHON3, "-c", SETFL_THEN_WRITE, log, "0")
    assert (edit.returncode, edit.stdout) == (0, "fcntl-refused\n"), (edit.stdout, edit.stderr, c.unit_log())
    appended = c.run("/bin/sh", "-c", f"echo 'Accepted publickey' >> {log} && cat {log}")
    assert appended.stdout == "Failed password for root\nAccepted publickey\n", appended
    (e,) = _events_in_journal(c, "KRSID_HOOK=file_fcntl", "KRSID_RULE=deny-append-off-in-probe-logs")
    assert (e["KRSID_ACTION"], e["KRSID_VERDICT"], e["KRSID_APPEND"], e["KRSID_FILE"], e["KRSID_WATCH"]) == (
        "deny",
        "-EPERM",
        "REMOVED",
        Path(log).name,
        LOG_DIR,
    ), e
    assert (e["KRSID_FLAGS"], e["KRSID_NEW_FLAGS"]) == ("WRONLY|APPEND|LARGEFILE", "WRONLY|LARGEFILE"), e


def test_systemctl_reload_keeps_the_unit_and_its_rules(started: Container) -> None:
    c = started
    before = c.show("krsid", "MainPID", "NRestarts")
    p = c.run("systemctl", "reload", "krsid", timeout=120)
    assert p.returncode == 0, p.stderr + c.unit_log()
    deadline = time.monotonic() + 60
    while f"reloaded /etc/krsid/krsid.yaml: {len(POLICY_RULES)} policy rule(s) active" not in c.unit_log():
        assert time.monotonic() < deadline, c.unit_log()
        time.sleep(1)
    after = c.show("krsid", "MainPID", "NRestarts", "ActiveState")
    assert (after["MainPID"], after["NRestarts"], after["ActiveState"]) == (before["MainPID"], "0", "active"), after
    assert c.run(HOME_SHELL, "-c", "/bin/true; exit $?").returncode == EACCES_EXIT  # still enforced
    # The unit's ExecReload (kill -HUP $MAINPID) is a signal to krsid: reported, not denied.
    (e,) = _events_in_journal(c, "KRSID_HOOK=task_kill", "KRSID_SIG=HUP")
    assert (e["KRSID_PROTECTED"], e["KRSID_COMM"], e["KRSID_ACTION"], e["KRSID_TARGET_TGID"]) == (
        "DAEMON",
        "kill",
        "audit",
        str(c.host_pid(int(before["MainPID"]))),
    ), e


def test_self_protection_refuses_a_sigkill_of_the_daemon(started: Container) -> None:
    """A task_kill deny rule under the unit: the SIGKILL fails, krsid runs on (same
    MainPID, no restart) and reports the attempt."""
    c = started
    before = c.show("krsid", "MainPID", "NRestarts")
    main = int(before["MainPID"])
    p = c.run(HOME_KILL, "-KILL", str(main))
    assert p.returncode != 0, (p.stdout, p.stderr)
    (e,) = _events_in_journal(c, "KRSID_HOOK=task_kill", "KRSID_RULE=deny-signals-to-krsid-by-home-kill")
    assert (e["KRSID_ACTION"], e["KRSID_VERDICT"], e["KRSID_SIG"], e["KRSID_PROTECTED"], e["KRSID_TARGET_TGID"]) == (
        "deny",
        "-EPERM",
        "KILL",
        "DAEMON",
        str(c.host_pid(main)),
    ), e
    after = c.show("krsid", "MainPID", "NRestarts", "ActiveState")
    assert (after["MainPID"], after["NRestarts"], after["ActiveState"]) == (before["MainPID"], "0", "active"), after


def test_watchdog_is_armed_and_fed(started: Container) -> None:
    c = started
    s = c.show("krsid", "WatchdogUSec", "ActiveEnterTimestampMonotonic", "MainPID")
    watchdog_usec = int(s["WatchdogUSec"]) if s["WatchdogUSec"].isdigit() else 0
    if not watchdog_usec:  # older systemctl prints "30s"
        m = re.fullmatch(r"(\d+)s", s["WatchdogUSec"])
        watchdog_usec = int(m.group(1)) * 1_000_000 if m else 0
    assert watchdog_usec > 0, s
    # Stay past WatchdogSec since READY (CLOCK_MONOTONIC: the VM's is the container's).
    active_since = int(s["ActiveEnterTimestampMonotonic"]) / 1e6
    t = time.monotonic()
    if t < active_since + watchdog_usec / 1e6 + 5:
        time.sleep(active_since + watchdog_usec / 1e6 + 5 - t)
    later = c.show("krsid", "ActiveState", "SubState", "MainPID", "NRestarts", "WatchdogTimestampMonotonic", "Result")
    assert (later["ActiveState"], later["SubState"], later["Result"]) == ("active", "running", "success"), later
    assert later["NRestarts"] == "0" and later["MainPID"] == s["MainPID"], (s, later)
    fed = int(later["WatchdogTimestampMonotonic"]) / 1e6
    assert fed > active_since, "no WATCHDOG=1 since READY"
    assert time.monotonic() - fed < watchdog_usec / 1e6, "the last WATCHDOG=1 is older than WatchdogSec"


def test_stop_detaches_every_program(started: Container) -> None:
    c = started
    main = int(c.show("krsid", "MainPID")["MainPID"])
    ids = {i for i, t in bpf_prog_ids_of(c.host_pid(main)).items() if t == BPF_PROG_TYPE_LSM}
    assert len(ids) >= len(HOOKS), ids
    host_main = c.host_pid(main)
    p = c.run("systemctl", "stop", "krsid", timeout=120)
    assert p.returncode == 0, p.stderr
    s = c.show("krsid", "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    assert s["ActiveState"] == "inactive", s
    assert s["Result"] == "success", s
    assert (s["ExecMainCode"], s["ExecMainStatus"]) == ("1", "0"), s  # exited 0 on SIGTERM
    left = ids & set(loaded_programs())
    assert not left, f"krsid's LSM programs still loaded after systemctl stop: {sorted(left)}"
    # Who stopped it: the SIGTERM from the container's systemd, read before the detach.
    (e,) = _events_in_journal(c, "KRSID_HOOK=task_kill", "KRSID_SIG=TERM")
    assert (e["KRSID_PROTECTED"], e["KRSID_COMM"], e["KRSID_TARGET_TGID"]) == ("DAEMON", "systemd", str(host_main)), e
