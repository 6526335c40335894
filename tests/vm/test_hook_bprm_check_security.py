"""bprm_check_security: argv (and envp with the env option) of execs, in a VM.

tests/vm/options/bprm_check_security.yaml turns the env option on; the env
assertions follow whatever the session config says, so they hold either way.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from krsid.kernel.btf import Btf
from krsid.kernel.headers import find_bpftool
from tests.support.btf import overlay_btf_types, ovl_upperdentry_follows_vfs_inode, struct_size
from tests.support.journald import Journal
from tests.vm.conftest import RunningDaemon, message_id

pytestmark = pytest.mark.vm
HOOK = "bprm_check_security"
WORKLOAD = Path(__file__).parent / "workloads" / "bprm_workload.py"
MESSAGE_ID = message_id("bprm_check_security")
ARGS_CAP = 1023  # bytes of args/env the program keeps (BPRM_CHECK_SECURITY_VEC_CAP)
MAX_STRINGS = 64  # strings per vector (BPRM_CHECK_SECURITY_MAX_STRINGS)
# A newline, both quote kinds, spaces and a byte that is not UTF-8.
ODD_ARGS = [b"two words", b"", b'it\'s "quoted"', b"line1\nline2", b"\xffraw", b""]  # "" must stay an argument


def env_enabled(daemon: RunningDaemon) -> bool:
    cfg = yaml.safe_load(daemon.config.read_text())
    return bool((cfg["hooks"].get(HOOK) or {}).get("env", False))


def as_json(b: bytes) -> str:
    """A kernel string as the JSON lines sink writes it."""
    return b.decode("utf-8", "surrogateescape")


def shell_quote(arg: bytes) -> bytes:
    """The journald sink's quoting of one list element."""
    if arg and all(c not in arg for c in b" \t\n'\"\\$`;&|<>()*?[]{}!#~"):
        return arg
    return b"'" + arg.replace(b"'", b"'\\''") + b"'"


def journal_bytes(value: Any) -> bytes:
    """journalctl -o json gives a value that is not printable UTF-8 as a list of byte values."""
    return bytes(value) if isinstance(value, list) else str(value).encode()


def unique_copy(tmp_path: Path, src: str, stem: str) -> Path:
    exe = tmp_path / f"krsid-{stem}-{uuid.uuid4().hex[:12]}"
    shutil.copy2(src, exe)
    return exe


def exec_events(daemon: RunningDaemon, filename: str, count: int = 1) -> list[dict[str, Any]]:
    found = daemon.wait_events(lambda o: o["hook"] == HOOK and o["filename"] == filename, count)
    return sorted(found, key=lambda o: int(o["seq"]))


def test_argv_with_odd_bytes_and_env(
    daemon: RunningDaemon, journal: Journal, tmp_path: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled(HOOK)
    exe = unique_copy(tmp_path, "/bin/echo", "echo")
    mark = f"KRSID_TEST_MARK={uuid.uuid4().hex}"
    env = {"PATH": "/usr/bin:/bin", "KRSID_TEST_MARK": mark.split("=", 1)[1]}
    argv = [os.fsencode(exe), *ODD_ARGS]
    p = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=True)
    assert p.stdout == b" ".join(ODD_ARGS) + b"\n"

    events = exec_events(daemon, str(exe))
    assert len(events) == 1, events
    o = events[0]
    assert o["argc"] == len(argv)
    assert o["args"] == [as_json(a) for a in argv]
    assert "TRUNCATED" not in o["flags"] and "UNAVAILABLE" not in o["flags"], o["flags"]
    assert o["envc"] == 2
    if env_enabled(daemon):
        assert o["env"] == ["PATH=/usr/bin:/bin", mark]
    else:
        assert o["env"] == []
    assert o["path"] == str(exe) and o["interp"] == str(exe)

    j = journal.wait_for(lambda e: True, f"KRSID_HOOK={HOOK}", f"KRSID_FILENAME={exe}")
    assert len(j) == 1, j
    e = j[0]
    assert e["MESSAGE_ID"] == MESSAGE_ID
    assert e["KRSID_ARGC"] == str(len(argv)) and e["KRSID_ENVC"] == "2"
    # One field, boundaries kept by shell quoting, the raw bytes (newline, 0xff) intact.
    assert journal_bytes(e["KRSID_ARGS"]) == b" ".join(shell_quote(a) for a in argv)
    if env_enabled(daemon):
        assert journal_bytes(e["KRSID_ENV"]) == b"PATH=/usr/bin:/bin " + mark.encode()
    assert f"argv: {exe} 'two words'" in e["MESSAGE"]
    assert "\n" not in e["MESSAGE"]  # control characters are escaped in MESSAGE


def test_long_argv_is_truncated_and_counted(
    daemon: RunningDaemon, tmp_path: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled(HOOK)
    exe = unique_copy(tmp_path, "/bin/true", "true")
    args = [f"argument-{i:04d}-{'x' * 20}" for i in range(200)]  # ~6 KiB: more than fits
    subprocess.run([str(exe), *args], env={}, timeout=30, check=True)
    o = exec_events(daemon, str(exe))[0]
    assert o["argc"] == 1 + len(args)  # exact although the strings are cut
    assert "ARGS_TRUNCATED" in o["flags"]
    got = o["args"]
    want = [str(exe), *args]
    assert 2 < len(got) < len(want)
    assert got[:-1] == want[: len(got) - 1]
    assert want[len(got) - 1].startswith(got[-1])  # the last one may be cut
    assert sum(len(a) + 1 for a in got) <= ARGS_CAP


def test_many_short_args_stop_at_the_string_limit(
    daemon: RunningDaemon, tmp_path: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled(HOOK)
    exe = unique_copy(tmp_path, "/bin/true", "true")
    subprocess.run([str(exe), *["x"] * 300], env={}, timeout=30, check=True)
    o = exec_events(daemon, str(exe))[0]
    assert o["argc"] == 301
    assert "ARGS_TRUNCATED" in o["flags"]
    assert o["args"] == [str(exe), *["x"] * (MAX_STRINGS - 1)]


def test_script_yields_an_interpreter_event_with_the_same_argv(
    daemon: RunningDaemon, tmp_path: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled(HOOK)
    script = tmp_path / f"krsid-script-{uuid.uuid4().hex[:12]}.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    subprocess.run([str(script), "arg one"], env={"PATH": "/usr/bin:/bin"}, timeout=30, check=True)
    first, second = exec_events(daemon, str(script), 2)[:2]
    assert (first["interp"], first["path"]) == (str(script), str(script))
    assert second["interp"] == "/bin/sh"
    assert second["path"] == os.path.realpath("/bin/sh")
    assert first["tgid"] == second["tgid"]
    for o in (first, second):
        # The caller's argv on both, although the kernel's own vector for the
        # interpreter is "/bin/sh SCRIPT arg one" by then.
        assert o["argc"] == 2
        assert o["args"] == [str(script), "arg one"]
        assert "TRUNCATED" not in o["flags"]


def test_script_with_too_many_args_keeps_the_exact_argc(
    daemon: RunningDaemon, tmp_path: Path, hook_enabled: Callable[[str], None]
) -> None:
    """The interpreter event has no exact count of its own: the first pass saves it."""
    hook_enabled(HOOK)
    script = tmp_path / f"krsid-script-{uuid.uuid4().hex[:12]}.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    args = [f"a{i}" for i in range(100)]
    subprocess.run([str(script), *args], env={}, timeout=30, check=True)
    first, second = exec_events(daemon, str(script), 2)[:2]
    assert second["interp"] == "/bin/sh"
    for o in (first, second):
        assert o["argc"] == 1 + len(args)
        assert "ARGS_TRUNCATED" in o["flags"]
        assert o["args"] == [str(script), *args[: MAX_STRINGS - 1]]


def test_execveat_reads_argv_and_envp_from_other_registers(
    daemon: RunningDaemon, tmp_path: Path, hook_enabled: Callable[[str], None]
) -> None:
    hook_enabled(HOOK)
    exe = unique_copy(tmp_path, "/bin/true", "true")
    mark = f"KRSID_TEST_MARK={uuid.uuid4().hex}"
    p = subprocess.run(
        [sys.executable, str(WORKLOAD), "execveat", str(tmp_path), exe.name, "first", "second arg"],
        env={"KRSID_TEST_MARK": mark.split("=", 1)[1]},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    events = daemon.wait_events(lambda o: o["hook"] == HOOK and o["filename"].endswith("/" + exe.name))
    assert len(events) == 1, events
    o = events[0]
    assert o["path"] == str(exe)
    assert re.fullmatch(rf"/dev/fd/\d+/{re.escape(exe.name)}", o["filename"])  # execveat(dirfd, name)
    assert o["argc"] == 2 and o["args"] == ["first", "second arg"]
    assert o["envc"] == 1
    assert o["env"] == ([mark] if env_enabled(daemon) else [])


@pytest.mark.parametrize("mode", ["empty", "null"])
def test_empty_argv_is_argc_zero(
    daemon: RunningDaemon, tmp_path: Path, hook_enabled: Callable[[str], None], mode: str
) -> None:
    """execve(path, {NULL} or NULL, ...): the kernel runs the program with one empty
    argument (the pkexec CVE-2021-4034 pattern); the event shows what the caller did."""
    hook_enabled(HOOK)
    exe = unique_copy(tmp_path, "/bin/true", "true")
    p = subprocess.run([sys.executable, str(WORKLOAD), mode, str(exe)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    events = exec_events(daemon, str(exe))
    assert len(events) == 1, events
    o = events[0]
    assert (o["argc"], o["args"], o["envc"], o["env"]) == (0, [], 0, [])
    assert "TRUNCATED" not in o["flags"] and "UNAVAILABLE" not in o["flags"]


def test_a_program_in_an_overlays_upper_layer_is_flagged(
    daemon: RunningDaemon, tmp_path: Path, tmpfs_dir: Path, hook_enabled: Callable[[str], None]
) -> None:
    """Container drift: an overlay as a container's root is made (its image the lower
    layer; upper and work on the test's tmpfs). The image's own program runs without
    UPPER_LAYER; one written through the overlay, and an image program after a chmod
    (which copies it up), carry it. bprm_check_security.c reads struct ovl_inode's
    __upperdentry right after its vfs_inode: checked here in this kernel's BTF too."""
    hook_enabled(HOOK)
    bpftool = find_bpftool()
    assert bpftool is not None
    assert ovl_upperdentry_follows_vfs_inode(overlay_btf_types(bpftool), struct_size(Btf.load(), "inode"))
    layers = {name: tmpfs_dir / name for name in ("image", "upper", "work")}
    for d in layers.values():
        d.mkdir(mode=0o755)
    for name in ("from-image", "chmod-ed"):
        shutil.copy2("/bin/true", layers["image"] / name)
    root = tmp_path / "root"
    root.mkdir()
    opts = f"lowerdir={layers['image']},upperdir={layers['upper']},workdir={layers['work']}"
    subprocess.run(["mount", "-t", "overlay", "krsid-test-drift", "-o", opts, str(root)], check=True)
    try:
        shutil.copy2("/bin/true", root / "dropped")
        (root / "chmod-ed").chmod(0o750)
        for name in ("from-image", "dropped", "chmod-ed"):
            subprocess.run([str(root / name)], env={}, stdin=subprocess.DEVNULL, capture_output=True, check=True)
        assert sorted(p.name for p in layers["upper"].iterdir()) == ["chmod-ed", "dropped"]
    finally:
        subprocess.run(["umount", str(root)], check=True)
    got = {}
    for name in ("from-image", "dropped", "chmod-ed"):
        (o,) = exec_events(daemon, str(root / name))
        got[name] = o["context"]
    assert got == {"from-image": "NONE", "dropped": "UPPER_LAYER", "chmod-ed": "UPPER_LAYER"}, got
