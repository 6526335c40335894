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
import select
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

DONE = b"done"
# The compile failed (an exception, clang's diagnostics captured): not a process death.
EXIT_COMPILE_FAILED = 3


def capture_file() -> int:
    """An anonymous in-memory file for a capture (memfd: no writable /tmp needed, which
    the shipped unit does not give: ProtectSystem=strict, and no PrivateTmp)."""
    return os.memfd_create("krsid-compiler-output", os.MFD_CLOEXEC)


@contextlib.contextmanager
def captured_stderr(watch: str = "", *, compile_marker: Path | None = None) -> Iterator[Callable[[], str]]:
    """Send fd 2 (where BCC's C++ side prints clang errors and verifier logs) to an
    in-memory file; yields a function that returns what was captured so far.

    With ``watch`` (what is being compiled, for the report), a watcher process
    reports the capture if the process ends before the block does, and tells a stop
    (SIGTERM/SIGINT arrived, then the process was killed before the compile returned)
    from a compiler crash; after a stop it also removes ``compile_marker``, so the
    next start does not treat the programs as suspects."""
    capture = capture_file()
    try:
        saved = os.dup(2)
        watcher = None
        if watch:
            # Without a watcher the compile still runs; only the report would be lost.
            with contextlib.suppress(OSError):
                watcher = _start_watcher(capture, saved, watch, compile_marker)
        os.dup2(capture, 2)

        try:
            yield lambda: _text_of(capture)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if watcher is not None:
                watcher.stop()
    finally:
        os.close(capture)


def _text_of(fd: int) -> str:
    """What a capture file holds (up to 16 MiB, from its start, whatever its offset)."""
    return os.pread(fd, 1 << 24, 0).decode("utf-8", "replace")


@dataclass
class _Watcher:
    """The parent's side of a running watcher."""

    pid: int
    ctrl_write: int  # "done" goes here when the compile returns
    signals_write: int  # Python's C-level signal handler writes each signal number here
    previous_wakeup_fd: int | None  # None: this thread may not touch the wakeup fd

    def stop(self) -> None:
        if self.previous_wakeup_fd is not None:
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(self.previous_wakeup_fd)
        with contextlib.suppress(OSError):
            os.write(self.ctrl_write, DONE)
        os.close(self.ctrl_write)
        os.close(self.signals_write)
        os.waitpid(self.pid, 0)


def _start_watcher(captured_fd: int, report_fd: int, what: str, marker: Path | None) -> _Watcher:
    """Fork the watcher (a fork: ~10 ms under TCG, where starting a new Python took
    ~760 ms).

    LLVM cannot be interrupted: a SIGTERM during the compile waits in Python's signal
    machinery until the compile returns. signal.set_wakeup_fd makes that machinery
    write the signal's number to a pipe at once, from C, which is how the watcher
    learns that a stop was asked for even if the process is then killed mid-compile."""
    ctrl_read, ctrl_write = os.pipe()
    signals_read, signals_write = os.pipe()
    os.set_blocking(signals_write, False)  # set_wakeup_fd requires it
    pid = os.fork()
    if pid == 0:  # the watcher: only os calls, then _exit
        try:
            # The stop signals of a unit (its whole cgroup) or of Ctrl-C (the whole
            # process group) reach the watcher too: it stays to tell what happened.
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
            os.close(ctrl_write)  # else the pipe could never close when the compiler's process ends
            os.close(signals_write)
            watch(ctrl_read, captured_fd, report_fd, what, signals_fd=signals_read, marker=marker)
        finally:
            os._exit(0)
    os.close(ctrl_read)
    os.close(signals_read)
    previous: int | None = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.set_wakeup_fd(signals_write, warn_on_full_buffer=False)
    return _Watcher(pid, ctrl_write, signals_write, previous)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_report_text(what: str, signals: set[int]) -> str:
    """What the watcher writes when the process was stopped, then killed, mid-compile."""
    names = ", ".join(sorted(signal.Signals(s).name for s in signals))
    return (
        f"krsid: stopped ({names}) while compiling {what}; the compile cannot be interrupted, "
        "so the process was killed before it returned (e.g. TimeoutStopSec= ran out). Nothing "
        "was attached. This is not a compiler failure: the next start compiles as usual.\n"
    )


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


def watch(
    ctrl_fd: int, captured_fd: int, report_fd: int, what: str, *, signals_fd: int = -1, marker: Path | None = None
) -> int:
    """The watcher: wait for "done" or for the pipe to close without it, noting the
    stop signals the process received meanwhile (signals_fd)."""
    received = b""
    signals: set[int] = set()
    open_fds = [ctrl_fd] + ([signals_fd] if signals_fd >= 0 else [])
    while ctrl_fd in open_fds:
        readable, _, _ = select.select(open_fds, [], [])
        for fd in readable:
            chunk = os.read(fd, 64)
            if not chunk:
                open_fds.remove(fd)
            elif fd == ctrl_fd:
                received += chunk
            else:
                signals.update(n for n in chunk if n in STOP_SIGNALS)
    if received == DONE:
        return 0
    if signals:
        if marker is not None:
            with contextlib.suppress(OSError):
                marker.unlink()
        os.write(report_fd, stop_report_text(what, signals).encode())
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
    capture = capture_file()
    try:
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller's code
            code = EXIT_COMPILE_FAILED
            try:
                os.dup2(capture, 2)
                faulthandler.disable()  # a crash here is the parent's to report, not a traceback
                compile_fn()
                code = 0
            except BaseException as e:  # a failed compile raises; say what it said
                os.write(2, f"{type(e).__name__}: {e}\n".encode("utf-8", "replace"))
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        output = _text_of(capture)
    finally:
        os.close(capture)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) in (0, EXIT_COMPILE_FAILED):
        return ChildCompile(os.WEXITSTATUS(status) == 0, output)
    died = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
    return ChildCompile(False, output, died)
