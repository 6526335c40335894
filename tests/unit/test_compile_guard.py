"""The compile guards without a compiler: processes that end the way LLVM ends them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from krsid.pipeline.compile_guard import captured_stderr, isolated_compile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_child(inside: str, after: str = "") -> subprocess.CompletedProcess[str]:
    """In a new process: `inside` runs in `with captured_stderr(watch="the program x") as output:`
    after a compiler-like message to fd 2, `after` once the block has ended."""
    script = "\n".join(
        [
            "import os",
            "from krsid.pipeline.compile_guard import captured_stderr",
            'with captured_stderr(watch="the program x") as output:',
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
