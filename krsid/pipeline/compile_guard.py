"""Keep the compiler's words when the compiler ends the process.

BCC compiles in-process, and BCC's LLVM does not return every error: a BPF
backend error ("BPF stack limit of 512 bytes is exceeded", "A call to built-in
function 'memcpy' is not supported") calls exit(1), and "LLVM ERROR: ..." calls
abort(). krsid captures fd 2 during a compile, so without help the message
would die with the process and the daemon would exit without a word.

Two guards, both plain Python (no bcc), so unit tests run them without root:

- ``captured_stderr(watch=...)``: fd 2 goes to a temporary file; a forked
  watcher process holds the file and a pipe. The compile finishing closes the
  pipe with "done"; the process dying closes it without, and the watcher then
  writes what the compiler printed to the original stderr (journald under
  systemd). Not an exit hook in the process: a ctypes callback run by exit()
  after Python has finalized segfaults, and abort() or a crash runs no hooks.
- ``isolated_compile(...)``: compile in a forked child and report how it ended,
  so that one program that kills the compiler can be named and left out while
  the others are built in the daemon itself.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

DONE = b"done"
# The compile failed (an exception, clang's diagnostics captured): not a process death.
EXIT_COMPILE_FAILED = 3


@contextlib.contextmanager
def captured_stderr(watch: str = "") -> Iterator[Callable[[], str]]:
    """Send fd 2 (where BCC's C++ side prints clang errors and verifier logs) to a
    temporary file; yields a function that returns what was captured so far.

    With ``watch`` (what is being compiled, for the report), a watcher process
    reports the capture if the process ends before the block does."""
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        watcher = None
        if watch:
            # Without a watcher the compile still runs; only the report would be lost.
            with contextlib.suppress(OSError):
                watcher = _start_watcher(tmp.fileno(), saved, watch)
        os.dup2(tmp.fileno(), 2)

        try:
            yield lambda: _text_of(tmp.fileno())
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if watcher is not None:
                _stop_watcher(*watcher)


def _text_of(fd: int) -> str:
    """What a capture file holds (up to 16 MiB, from its start, whatever its offset)."""
    return os.pread(fd, 1 << 24, 0).decode("utf-8", "replace")


def _start_watcher(captured_fd: int, report_fd: int, what: str) -> tuple[int, int]:
    """Fork the watcher (a fork: ~10 ms under TCG, where starting a new Python took
    ~760 ms); returns its pid and the pipe end that tells it "done"."""
    ctrl_read, ctrl_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the watcher: only os calls, then _exit
        try:
            os.close(ctrl_write)  # else the pipe could never close when the compiler's process ends
            watch(ctrl_read, captured_fd, report_fd, what)
        finally:
            os._exit(0)
    os.close(ctrl_read)
    return pid, ctrl_write


def _stop_watcher(pid: int, ctrl_write: int) -> None:
    with contextlib.suppress(OSError):
        os.write(ctrl_write, DONE)
    os.close(ctrl_write)
    os.waitpid(pid, 0)


def report_text(what: str, captured: str) -> str:
    """What the watcher writes when the process ended inside the compiler."""
    words = captured.strip() or "(the compiler printed nothing)"
    return (
        f"krsid: the process ended inside the BPF compiler (clang/LLVM) while compiling {what}.\n"
        "LLVM ends the process on some errors (BPF stack limit, unsupported built-ins, "
        "LLVM ERROR) instead of returning them; a kill or running out of memory mid-compile "
        "ends here too. What the compiler printed:\n"
        f"{words}\n"
        "krsid compiles each program alone at its next start and leaves out the ones that "
        "fail; `krsid check --compile-only` shows the same.\n"
    )


def watch(ctrl_fd: int, captured_fd: int, report_fd: int, what: str) -> int:
    """The watcher: wait for "done" or for the pipe to close without it."""
    received = b""
    while True:
        chunk = os.read(ctrl_fd, len(DONE))
        if not chunk:
            break
        received += chunk
    if received == DONE:
        return 0
    os.write(report_fd, report_text(what, _text_of(captured_fd)).encode("utf-8", "replace"))
    return 0


@dataclass(frozen=True)
class ChildCompile:
    """How a compile in a child process ended."""

    ok: bool
    output: str  # what the compiler printed
    died: str = ""  # "exit 1", "signal 6": the compiler ended the child; "" otherwise


def isolated_compile(compile_fn: Callable[[], object]) -> ChildCompile:
    """Run ``compile_fn`` (returns = compiled, raises = failed) in a forked child
    with fd 2 captured.

    The child only compiles and exits; nothing it builds comes back, so a caller
    compiles what passed again in its own process."""
    with tempfile.TemporaryFile() as tmp:
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller's code
            code = EXIT_COMPILE_FAILED
            try:
                os.dup2(tmp.fileno(), 2)
                faulthandler.disable()  # a crash here is the parent's to report, not a traceback
                compile_fn()
                code = 0
            except BaseException as e:  # a failed compile raises; say what it said
                os.write(2, f"{type(e).__name__}: {e}\n".encode("utf-8", "replace"))
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        output = _text_of(tmp.fileno())
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) in (0, EXIT_COMPILE_FAILED):
        return ChildCompile(os.WEXITSTATUS(status) == 0, output)
    died = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
    return ChildCompile(False, output, died)
