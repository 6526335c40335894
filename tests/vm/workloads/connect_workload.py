#!/usr/bin/env python3
"""Workload: connect() to the given destinations, for the socket_connect hook.

Usage: connect_workload.py DEST [DEST ...]
  tcp4:HOST:PORT  tcp6:HOST:PORT  udp4:HOST:PORT   (tcp6 HOST without brackets: tcp6:::1:PORT)
  unix:PATH       unixabs:NAME (abstract)          netlink (AF_NETLINK to the kernel)
Prints one JSON object: pid and the errno of each connect (0 = connected).
"""

from __future__ import annotations

import json
import os
import socket
import sys


def connect(dest: str) -> int:
    kind, _, rest = dest.partition(":")
    if kind in ("tcp4", "tcp6", "udp4"):
        host, _, port = rest.rpartition(":")
        family = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
        stype = socket.SOCK_DGRAM if kind == "udp4" else socket.SOCK_STREAM
        s = socket.socket(family, stype)
        addr: object = (host, int(port))
    elif kind in ("unix", "unixabs"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr = rest if kind == "unix" else "\0" + rest
    elif kind == "netlink":
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
        addr = (0, 0)
    else:
        raise SystemExit(f"unknown destination {dest!r}")
    with s:
        try:
            s.connect(addr)  # type: ignore[arg-type]
        except OSError as e:
            return e.errno or 0
    return 0


def main() -> None:
    results = [{"dest": d, "errno": connect(d)} for d in sys.argv[1:]]
    print(json.dumps({"pid": os.getpid(), "results": results}), flush=True)


if __name__ == "__main__":
    main()
