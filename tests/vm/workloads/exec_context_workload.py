#!/usr/bin/env python3
"""Workload for the exec context of bprm_check_security: execs whose circumstances an
attacker creates (a reverse shell's socket stdio, a fileless memfd, a deleted file).

Usage:
  exec_context_workload.py tcp PATH         fds 0, 1, 2 = a TCP connection (127.0.0.1), exec PATH
  exec_context_workload.py tcp6 PATH        the same over ::1
  exec_context_workload.py socketpair PATH  fds 0, 1, 2 = one end of an AF_UNIX socketpair, exec PATH
  exec_context_workload.py memfd PATH       copy PATH into a memfd, fexecve it
  exec_context_workload.py deleted PATH     open PATH, unlink it, exec it through /proc/self/fd/N
  exec_context_workload.py plain PATH       exec PATH (stdio as given)

Prints {"pid": N} (the exec event's tgid: the process replaces itself) before the
exec; if the exec fails, a second line {"pid": N, "errno": E} and exit 1. Output
goes to a copy of the original stdout (close-on-exec), since the socket modes
replace fd 1 first.
"""

from __future__ import annotations

import json
import os
import socket
import sys


def report(out: int, **fields: int) -> None:
    os.write(out, (json.dumps({"pid": os.getpid(), **fields}) + "\n").encode())


def main() -> None:
    mode, path = sys.argv[1:3]
    out = os.dup(1)  # non-inheritable: gone in the new program
    report(out)
    keep: list[socket.socket] = []  # the peers stay open until the exec
    target: str | int = path
    if mode in ("tcp", "tcp6"):
        family, host = (socket.AF_INET, "127.0.0.1") if mode == "tcp" else (socket.AF_INET6, "::1")
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((host, 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname()[:2])
        peer, _ = listener.accept()
        keep += [listener, peer, client]
        stdio = client.fileno()
    elif mode == "socketpair":
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        keep += [a, b]
        stdio = a.fileno()
    elif mode == "memfd":
        fd = os.memfd_create("krsid-payload", 0)  # no MFD_CLOEXEC: fexecve of an ELF either way
        with open(path, "rb") as f:
            os.write(fd, f.read())
        target = fd  # os.execve(fd, ...) is fexecve: execveat(fd, "", AT_EMPTY_PATH)
        stdio = -1
    elif mode == "plain":
        stdio = -1
    elif mode == "deleted":
        fd = os.open(path, os.O_RDONLY)
        os.unlink(path)
        target = f"/proc/self/fd/{fd}"
        stdio = -1
    else:
        raise SystemExit(f"unknown mode {mode}")
    if stdio >= 0:
        for n in (0, 1, 2):
            os.dup2(stdio, n)
    try:
        os.execve(target, [path], {"PATH": "/usr/bin:/bin"})
    except OSError as e:
        report(out, errno=e.errno or 0)
        sys.exit(1)


if __name__ == "__main__":
    main()
