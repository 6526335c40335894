"""The compile guards without a compiler: processes that end the way LLVM ends them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from krsid.pipeline.compile_guard import captured_stderr, isolated_compile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_child(inside: str, after: str = "", *, before: str = "", marker: str = "") -> subprocess.CompletedProcess[str]:
    """In a new process: `inside` runs in `with captured_stderr(watch="the program x") as output:`
    after a compiler-like message to fd 2, `after` once the block has ended; `before`
    runs first (e.g. the daemon's signal handlers), `marker` is the compile marker."""
    script = "\n".join(
        [
            "import os, signal",
            "from pathlib import Path",
            "from krsid.pipeline.compile_guard import captured_stderr",
            textwrap.dedent(before),
            f"marker = Path({marker!r}) if {marker!r} else None",
            'with captured_stderr(watch="the program x", compile_marker=marker) as output:',
            '    os.write(2, b"error: in function lsm__x: Looks like the BPF stack limit is exceeded\\n")',
            textwrap.indent(textwrap.dedent(inside), "    "),
            textwrap.dedent(after),
        ]
    )
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("ending", "returncode"),
    [("os._exit(1)", 1), ("os.abort()", -signal.SIGABRT), ("os.kill(os.getpid(), 11)", -signal.SIGSEGV)],
    ids=["exit(1) as a backend error", "abort() as LLVM ERROR", "a crash"],
)
def test_the_compilers_words_survive_the_process_ending_inside_it(ending: str, returncode: int) -> None:
    p = run_child(ending)
    assert p.returncode == returncode
    assert "krsid: the process ended inside the BPF compiler (clang/LLVM) while compiling the program x" in p.stderr
    assert "error: in function lsm__x: Looks like the BPF stack limit is exceeded" in p.stderr


def test_no_report_when_the_compile_returns_and_the_caller_gets_the_words() -> None:
    p = run_child(
        "words = output()",
        """
        print(words.strip())
        os.write(2, b"stderr is ours again\\n")
        """,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "error: in function lsm__x: Looks like the BPF stack limit is exceeded"
    assert p.stderr == "stderr is ours again\n"


def test_captured_stderr_restores_fd_2() -> None:
    before = os.fstat(2)
    with captured_stderr() as output:
        os.write(2, b"clang says hi\n")
        words = output()
    after = os.fstat(2)
    assert words == "clang says hi\n"
    assert (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino)


def _say_and(then: str) -> None:
    os.write(2, b"what the compiler printed\n")
    if then == "exit":
        os._exit(1)
    if then == "abort":
        os.abort()
    if then == "raise":
        raise RuntimeError("Failed to compile BPF module")


@pytest.mark.parametrize(
    ("then", "ok", "died"),
    [("return", True, ""), ("raise", False, ""), ("exit", False, "exit 1"), ("abort", False, "signal 6")],
)
def test_isolated_compile_tells_how_the_child_ended(then: str, ok: bool, died: str) -> None:
    result = isolated_compile(lambda: _say_and(then))
    assert (result.ok, result.died) == (ok, died)
    assert result.output.startswith("what the compiler printed\n")
    if then == "raise":
        assert "RuntimeError: Failed to compile BPF module" in result.output


# The daemon's way: a Python handler that asks for a stop (it runs only once the compile
# has returned, since LLVM cannot be interrupted).
DAEMON_HANDLERS = """
stop = []
signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
signal.signal(signal.SIGINT, lambda signum, frame: stop.append(signum))
"""


def test_a_stop_then_a_kill_mid_compile_is_reported_as_a_stop_and_clears_the_marker(tmp_path: Path) -> None:
    marker = tmp_path / "compiling"
    marker.write_text("digest\n")
    # SIGTERM arrives mid-compile (systemctl stop), then TimeoutStopSec= runs out: SIGKILL.
    p = run_child(
        "os.kill(os.getpid(), signal.SIGTERM)\nos.kill(os.getpid(), signal.SIGKILL)",
        before=DAEMON_HANDLERS,
        marker=str(marker),
    )
    assert p.returncode == -signal.SIGKILL
    assert "krsid: stopped (SIGTERM) while compiling the program x" in p.stderr, p.stderr
    assert "not a compiler failure" in p.stderr
    assert "ended inside the BPF compiler" not in p.stderr
    assert not marker.exists(), "a stop is no reason to isolate the programs at the next start"


def test_a_crash_without_a_stop_keeps_the_marker(tmp_path: Path) -> None:
    marker = tmp_path / "compiling"
    marker.write_text("digest\n")
    p = run_child("os.abort()", before=DAEMON_HANDLERS, marker=str(marker))
    assert p.returncode == -signal.SIGABRT
    assert "krsid: the process ended inside the BPF compiler" in p.stderr
    assert marker.exists()


def test_a_stop_the_compile_outlives_is_handled_by_the_caller_without_a_report() -> None:
    p = run_child(
        "os.kill(os.getpid(), signal.SIGTERM)",
        "print('stop asked:', stop)",
        before=DAEMON_HANDLERS,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"stop asked: [{int(signal.SIGTERM)}]"
    assert p.stderr == "", p.stderr


def test_the_watcher_survives_a_stop_sent_to_the_whole_group() -> None:
    # systemd stops a unit by signalling its whole cgroup, Ctrl-C signals the whole
    # process group: the watcher must live on to tell what happened. Python's own
    # SIGINT handler (KeyboardInterrupt, as in `krsid check`) would end it otherwise.
    # The "compile" is C code that checks no signal (like LLVM): a long PBKDF2; another
    # process sends SIGINT to the group, then SIGKILL to the compiling process.
    p = run_child(
        """
        import hashlib, subprocess
        stopper = f"sleep 1; kill -INT -{os.getpgid(0)}; sleep 1; kill -KILL {os.getpid()}"
        subprocess.Popen(["sh", "-c", stopper], start_new_session=True)
        hashlib.pbkdf2_hmac("sha256", b"x", b"y", 10**9)
        """,
        before="os.setpgid(0, 0)",
    )
    assert p.returncode == -signal.SIGKILL
    assert "krsid: stopped (SIGINT) while compiling the program x" in p.stderr, p.stderr
