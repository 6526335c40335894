#!/usr/bin/env python3
"""Workload for socket_create / socket_listen: create sockets, listen on them.

Usage: socket_workload.py COMM OP...
Names itself COMM (prctl PR_SET_NAME) first, then runs each OP:
  create:FAMILY:TYPE:PROTO    socket(FAMILY, TYPE, PROTO) (numbers), closed at once
  listen:tcp4:ADDR:PORT       bind an IPv4 TCP socket (PORT 0 = the kernel picks), listen(5)
  listen:tcp6:ADDR:PORT       the same over IPv6
  listen:tcp4-unbound         listen(5) without bind: the kernel picks address and port
  listen:unix:PATH            bind an AF_UNIX stream socket to PATH, listen(5)
Prints one JSON object: pid, and results (one {op, errno, port} per OP; port = the
local port after listen, 0 otherwise).
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys

PR_SET_NAME = 15
BACKLOG = 5


def run(op: str) -> int:
    kind, *args = op.split(":")
    if kind == "create":
        family, type_, proto = (int(a) for a in args)
        socket.socket(family, type_, proto).close()
        return 0
    if kind != "listen":
        raise SystemExit(f"unknown op {op!r}")
    what = args[0]
    if what == "unix":
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(args[1])
            s.listen(BACKLOG)
        return 0
    family = socket.AF_INET6 if what == "tcp6" else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if what != "tcp4-unbound":
            s.bind((":".join(args[1:-1]), int(args[-1])))
        s.listen(BACKLOG)
        port: int = s.getsockname()[1]
        return port


def main() -> None:
    ctypes.CDLL(None).prctl(PR_SET_NAME, sys.argv[1].encode(), 0, 0, 0)
    results = []
    for op in sys.argv[2:]:
        try:
            port = run(op)
            err = 0
        except OSError as e:
            port, err = 0, e.errno or -1
        results.append({"op": op, "errno": err, "port": port})
    print(json.dumps({"pid": os.getpid(), "results": results}), flush=True)


if __name__ == "__main__":
    main()
