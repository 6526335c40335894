#!/usr/bin/env python3
"""Workload for netlink_send: send NETLINK_AUDIT requests as auditctl does.

Usage: audit_workload.py COMM OP...
Names itself COMM (prctl PR_SET_NAME), opens one NETLINK_AUDIT socket, then per OP:
  get                                   AUDIT_GET (a query)
  set:MASK:ENABLED:FAILURE:PID:RATE:BACKLOG   AUDIT_SET with that struct audit_status
  route                                 an RTM_GETLINK dump request on a NETLINK_ROUTE socket
Each request asks for an ACK. Prints one JSON object: pid, and results (one {op,
errno, ack} per OP: errno of sendmsg, ack = the kernel's answer (0 = done, negative
errno), None when nothing was read).
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import struct
import sys

PR_SET_NAME = 15
NETLINK_AUDIT = 9
AUDIT_GET, AUDIT_SET = 1000, 1001
RTM_GETLINK = 18
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR = 2
NLMSG_HDR = struct.Struct("=IHHII")


def message(msg_type: int, flags: int, seq: int, payload: bytes) -> bytes:
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), msg_type, flags, seq, 0) + payload


def ack_of(sock: socket.socket, seq: int) -> int | None:
    """The NLMSG_ERROR answer to seq (0 = success), skipping other replies."""
    sock.settimeout(5)
    for _ in range(8):
        data = sock.recv(65536)
        off = 0
        while off + NLMSG_HDR.size <= len(data):
            length, mtype, _flags, mseq, _pid = NLMSG_HDR.unpack_from(data, off)
            if mtype == NLMSG_ERROR and mseq == seq:
                return int(struct.unpack_from("=i", data, off + NLMSG_HDR.size)[0])
            off += max((length + 3) & ~3, NLMSG_HDR.size)
    return None


def main() -> None:
    ctypes.CDLL(None).prctl(PR_SET_NAME, sys.argv[1].encode(), 0, 0, 0)
    audit = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
    route = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    results = []
    for seq, op in enumerate(sys.argv[2:], start=1):
        kind, *args = op.split(":")
        sock = audit
        if kind == "get":
            msg = message(AUDIT_GET, NLM_F_REQUEST | NLM_F_ACK, seq, b"")
        elif kind == "set":
            status = struct.pack("=6I", *(int(a) for a in args)) + bytes(4 * 5)  # lost .. backlog_wait_time_actual
            msg = message(AUDIT_SET, NLM_F_REQUEST | NLM_F_ACK, seq, status)
        elif kind == "route":
            sock = route
            msg = message(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, bytes(16))  # struct ifinfomsg
        else:
            raise SystemExit(f"unknown op {op!r}")
        ack: int | None = None
        try:
            sock.sendto(msg, (0, 0))
            err = 0
            if kind != "route":
                ack = ack_of(sock, seq)
        except OSError as e:
            err = e.errno or -1
        results.append({"op": op, "errno": err, "ack": ack, "len": len(msg)})
    print(json.dumps({"pid": os.getpid(), "results": results}), flush=True)


if __name__ == "__main__":
    main()
