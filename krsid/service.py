"""The systemd service protocol, both sides of it.

In the daemon: sd_notify (READY, STATUS, WATCHDOG, STOPPING) without libsystemd,
the sequence-number state file that keeps seq monotonic across restarts, and the
pid file. For `krsid reload` / `krsid reopen`: find the running daemon from that
pid file and signal it, but only once /proc says the pid really is a `krsid run`
that handles the signal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from krsid.errors import KrsidError

log = logging.getLogger("krsid")

# After an unclean stop the state file may lag the kernel's counter; jumping ahead
# by this much keeps seq strictly increasing (a visible gap, never a repeat).
SEQ_CRASH_JUMP = 1 << 24


class Notifier:
    """sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET, if any."""

    def __init__(self, socket_path: str | None = None) -> None:
        path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET", "")
        if path.startswith("@"):
            path = "\0" + path[1:]  # abstract namespace
        self._path = path
        usec = os.environ.get("WATCHDOG_USEC", "")
        wd_pid = os.environ.get("WATCHDOG_PID", "")
        mine = not wd_pid or wd_pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and mine else 0.0

    def notify(self, state: str) -> None:
        if not self._path:
            return
        # MSG_DONTWAIT: a full receiver queue must never stall the poll loop.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s, contextlib.suppress(OSError):
            s.sendto(state.encode(), socket.MSG_DONTWAIT, self._path)


@dataclass
class SeqState:
    """last seq per boot in state_dir/seq: 'BOOT_ID SEQ clean|running'."""

    path: Path

    @staticmethod
    def boot_id() -> str:
        try:
            return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            return "unknown"

    def load(self) -> int:
        try:
            boot, seq, state = self.path.read_text().split()
        except (OSError, ValueError):
            return 0
        if boot != self.boot_id():
            return 0
        return int(seq) if state == "clean" else int(seq) + SEQ_CRASH_JUMP

    def save(self, seq: int, *, clean: bool) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(f"{self.boot_id()} {seq} {'clean' if clean else 'running'}\n")
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("cannot save sequence state to %s: %s", self.path, e)


def pid_file_of(state_dir: Path) -> Path:
    """Where the daemon with this state_dir writes its pid (and reload/reopen read it)."""
    return state_dir / "krsid.pid"


def write_pid_file(path: Path) -> None:
    """Written once the daemon is ready: `krsid reload` and `krsid reopen` read it."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(f"{os.getpid()}\n")
    except OSError as e:
        log.warning("cannot write %s (krsid reload needs it): %s", path, e)


def remove_pid_file(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


# Options of the Python interpreter that take a separate value (`python -X dev -m krsid`).
_PYTHON_OPTIONS_WITH_VALUE = {"-X", "-W", "--check-hash-based-pycs"}


def is_krsid_daemon(argv: Sequence[str]) -> bool:
    """Is this command line (of /proc/PID/cmdline) the krsid daemon, `krsid run`?

    Accepted: a Python interpreter running ``-m krsid`` or a script named krsid (the
    console-script entry point: the kernel runs its shebang's interpreter with the
    script's path), or an executable named krsid; then krsid's own options (-v) and
    the command ``run``.
    """
    if not argv:
        return False
    program = os.path.basename(argv[0])
    rest: Sequence[str] | None = None
    if program == "krsid":
        rest = argv[1:]
    elif program.startswith("python"):
        i = 1
        while i < len(argv):
            arg = argv[i]
            if arg in ("-m", "-mkrsid"):
                module_at = i + 1 if arg == "-m" else i
                if arg == "-mkrsid" or (module_at < len(argv) and argv[module_at] == "krsid"):
                    rest = argv[module_at + 1 :]
                break
            if arg.startswith("-c") or arg == "-":  # code from the command line or stdin: no krsid script
                break
            if arg in _PYTHON_OPTIONS_WITH_VALUE:
                i += 2
                continue
            if arg.startswith("-"):  # -u, -I, -B, ...
                i += 1
                continue
            if os.path.basename(arg) == "krsid":
                rest = argv[i + 1 :]
            break
    if rest is None:
        return False
    command = next((a for a in rest if not a.startswith("-")), None)
    return command == "run"


def _command_line(pid: int, proc: Path) -> list[str]:
    raw = (proc / str(pid) / "cmdline").read_bytes()
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")] if raw else []


def _catches(pid: int, sig: signal.Signals, proc: Path) -> bool | None:
    """Whether the process has a handler for sig (SigCgt in /proc/PID/status); None if unknown."""
    try:
        for line in (proc / str(pid) / "status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def signal_daemon(pid_file: Path, sig: signal.Signals, *, proc: Path = Path("/proc")) -> int:
    """Send ``sig`` to the krsid daemon whose pid is in ``pid_file``; returns its pid.

    The pid is only trusted once /proc says it is a running `krsid run` that handles
    the signal: a pid file outlives a daemon that was killed (kill -9, OOM), and its
    pid may since belong to any other process, which SIGHUP or SIGUSR1 would end (as
    they would end a krsid that has no handler for them yet). A pidfd, opened before the
    check, makes the signal reach the checked process or none (no pid reuse between
    check and kill). KrsidError (exit 1) with what is wrong otherwise.
    """
    try:
        text = pid_file.read_text()
    except FileNotFoundError:
        raise KrsidError(
            f"no running daemon: {pid_file} does not exist (is krsid running, with this config's state_dir?)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise KrsidError(f"cannot read the daemon's pid file {pid_file}: {e}") from None
    try:
        pid = int(text.strip())
        if pid <= 0:
            raise ValueError(pid)
    except ValueError:
        raise KrsidError(f"{pid_file} does not hold a process id: {text[:40]!r}") from None
    stale = (
        f"no running daemon: {pid_file} names pid {pid}, which is not running "
        "(krsid ended without removing its pid file)"
    )
    pidfd = -1
    try:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise KrsidError(stale) from None
        except (OSError, AttributeError):  # kernel < 5.3 or no os.pidfd_open: plain kill below
            pidfd = -1
        try:
            argv = _command_line(pid, proc)
        except (FileNotFoundError, ProcessLookupError):
            raise KrsidError(stale) from None
        except OSError as e:
            raise KrsidError(f"cannot check that pid {pid} (from {pid_file}) is krsid: {e}") from None
        if not is_krsid_daemon(argv):
            shown = " ".join(argv)[:200] or "(no command line: a zombie or kernel thread)"
            raise KrsidError(
                f"refusing to signal pid {pid} from {pid_file}: it is not a running krsid daemon but "
                f"`{shown}`; the pid file is stale (krsid is not running, or its pid was reused)"
            )
        if _catches(pid, sig, proc) is False:
            # Unhandled, SIGHUP and SIGUSR1 end a process: the daemon installs its handlers
            # while starting, and a krsid older than `reopen` has none for SIGUSR1.
            raise KrsidError(
                f"refusing to send {sig.name} to krsid (pid {pid}): it does not handle {sig.name} yet "
                "(still starting, or a version without it) and would end; try again once it is ready, "
                "or restart it"
            )
        if pidfd >= 0:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        raise KrsidError(stale) from None
    except PermissionError as e:
        raise KrsidError(f"not allowed to signal the daemon (pid {pid}): {e.strerror}; run as root") from None
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    return pid
