"""Decoded events of every hook, as the pipeline hands them to the sinks: the inputs
of the OCSF and ECS schema tests (tests/unit/test_schema.py).

Each hook gets an all-zero record plus the realistic records below, and each record
three header variants (audit / deny / would_deny, with and without enrichment), so
that every mapping target and every verdict is exercised. A hook missing from
SAMPLES still gets its zero record: a new hook is validated from its first day.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from krsid.catalog import HookSpec
from krsid.event import Event
from krsid.pipeline.decode import EventDecoder
from tests.support.records import catalog, pack

CATALOG = catalog()
BOOT_TO_EPOCH = 1_764_900_000.0
BOOT = "b" * 32  # 2025-12-05: any fixed epoch offset


def enum(spec: HookSpec, field: str, name: str) -> int:
    for f in spec.fields:
        if f.name == field:
            return dict(f.values)[name]
    raise KeyError(f"{spec.name}.{field}")


def _ipv4(text: str) -> int:
    return int.from_bytes(ipaddress.IPv4Address(text).packed, "little")


def _strings(*args: bytes) -> dict[str, Any]:
    raw = b"\0".join(args) + b"\0"
    return {"args": raw, "args_len": len(raw), "argc": len(args)}


def _samples() -> dict[str, list[dict[str, Any]]]:
    c = CATALOG
    bpf = c["bpf"]
    sock = c["socket_connect"]
    krf = c["kernel_read_file"]
    kld = c["kernel_load_data"]
    out: dict[str, list[dict[str, Any]]] = {
        "bprm_check_security": [
            {"filename": b"./tool", "interp": b"./tool", "path": b"/home/u/tool", **_strings(b"./tool", b"-x", b"")},
            {"filename": b"/usr/bin/env", "interp": b"/usr/bin/python3", "path": b"/usr/bin/python3", "flags": 0x10},
            {"path": b"/tmp/\xff\xfe-binary", **_strings(b"\xff")},  # undecodable bytes survive
            {  # the executed file's identity (OCSF process.file uid, size, modified_time)
                "path": b"/usr/bin/curl",
                "dev_major": 8,
                "dev_minor": 1,
                "ino": 1835117,
                "size": 313992,
                "mtime_ns": 1_733_400_000_123_456_789,
                "ctime_ns": 1_764_900_000_987_654_321,
                **_strings(b"curl"),
            },
        ],
        "task_fix_setuid": [
            {"old_uid": 1000, "new_uid": 0, "old_euid": 1000, "new_euid": 0, "flags": 1, "changed": 3},
        ],
        "ptrace_access_check": [
            {"target_pid": 812, "target_tgid": 810, "target_uid": 0, "mode": 0x2 | 0x10, "target_comm": b"sshd"},
        ],
        "file_open": [
            {"reason": 2, "access": 0, "path": b"/etc/shadow", "mode": 1},
            {"reason": 1, "access": 1, "path": b"/proc/4242/mem", "target_pid": 4242, "marks": 1},
        ],
        "inode_unlink": [{"name": b"payload", "ino": 131075, "dev_major": 8, "dev_minor": 1, "info": 1}],
        "mmap_file": [
            {"path": b"/usr/lib/x86_64-linux-gnu/libc.so.6", "path_len": 36, "reqprot": 5, "prot": 5, "flags": 2},
            {"reqprot": 7, "prot": 7, "flags": 0x22, "info": 1},  # anonymous RWX
            {"path": b"/var/lib/data.db", "path_len": 16, "reqprot": 3, "prot": 3, "flags": 1},  # no EXEC
        ],
        "file_mprotect": [
            {
                "vm_start": 0x7F12_3456_0000,
                "vm_end": 0x7F12_3457_0000,
                "vm_flags": 0x33,
                "reqprot": 5,
                "prot": 5,
                "flags": 1,
            },
            {
                "vm_start": 0x5600_0000_0000,
                "vm_end": 0x5600_0000_2000,
                "vm_flags": 0x3,
                "reqprot": 4,
                "prot": 4,
                "file": b"jit.cache",
            },
        ],
        "kernel_module_request": [{"kmod_name": b"fs-cramfs"}, {"kmod_name": b"net-pf-38", "flags": 1}],
        "kernel_read_file": [
            {"id": enum(krf, "id", "MODULE"), "path": b"/lib/modules/6.12.0/kernel/fs/cramfs/cramfs.ko"},
            {"id": enum(krf, "id", "FIRMWARE"), "path": b"/lib/firmware/iwlwifi.ucode", "flags": 1},
            {"id": enum(krf, "id", "KEXEC_IMAGE"), "flags": 2},
        ],
        "kernel_load_data": [{"id": enum(kld, "id", "MODULE")}, {"id": enum(kld, "id", "KEXEC_IMAGE")}],
        "bpf": [
            {"cmd": enum(bpf, "cmd", "PROG_LOAD"), "prog_type": 1, "insn_cnt": 12, "name": b"kprobe_x"},
            {"cmd": enum(bpf, "cmd", "MAP_CREATE"), "map_type": 1, "max_entries": 64},
            {"cmd": enum(bpf, "cmd", "MAP_LOOKUP_ELEM")},
            {"cmd": enum(bpf, "cmd", "MAP_DELETE_ELEM")},
            {"cmd": enum(bpf, "cmd", "PROG_ATTACH"), "target_fd": 3, "prog_fd": 4},
        ],
        "sb_mount": [
            {"dev_name": b"/dev/sdb1", "fstype": b"ext4", "target": b"/mnt/usb", "flags": 0x6},
            {"dev_name": b"/", "target": b"/", "flags": 0x20 | 0x1000},  # remount, bind
        ],
        "socket_connect": [
            {
                "family": enum(sock, "family", "INET"),
                "addr4": _ipv4("203.0.113.7"),
                "port": 443,
                "type": 1,
                "protocol": 6,
                "addrlen": 16,
            },
            {
                "family": enum(sock, "family", "INET6"),
                "addr6": ipaddress.IPv6Address("2001:db8::1").packed,
                "port": 53,
                "type": 2,
                "protocol": 0,
                "addrlen": 28,
            },
            {"family": enum(sock, "family", "UNIX"), "unix_path": b"/run/dbus/system_bus_socket", "type": 1},
            {"family": enum(sock, "family", "UNIX"), "unix_path": b"@/tmp/.X11-unix/X0", "type": 1, "flags": 1},
            {"family": enum(sock, "family", "NETLINK"), "type": 3},
        ],
        "userns_create": [{"cred_uid": 1000, "cred_euid": 1000, "parent_level": 0, "flags": 1}],
        "cred_prepare": [{"cred_uid": 1000, "cred_euid": 1000, "clone_flags": 0x10000000, "syscall": 1, "flags": 1}],
    }
    if "socket_listen" in c:
        sl = c["socket_listen"]
        out["socket_listen"] = [
            {
                "family": enum(sl, "family", "INET"),
                "addr4": _ipv4("0.0.0.0"),
                "port": 4444,
                "type": 1,
                "protocol": 6,
                "backlog": 5,
            },
            {
                "family": enum(sl, "family", "INET6"),
                "addr6": ipaddress.IPv6Address("::").packed,
                "port": 8080,
                "type": 1,
                "backlog": 128,
            },
        ]
    if "socket_create" in c:
        sc = c["socket_create"]
        out["socket_create"] = [
            {"family": enum(sc, "family", "PACKET"), "type": 3, "protocol": 768},
            {"family": enum(sc, "family", "ALG"), "type": 5},
            {"family": enum(sc, "family", "INET"), "type": 3, "protocol": 1},
        ]
    if "netlink_send" in c:
        nl = c["netlink_send"]
        audit, route = enum(nl, "protocol", "AUDIT"), enum(nl, "protocol", "ROUTE")
        set_, add_rule = enum(nl, "msg_type", "SET"), enum(nl, "msg_type", "ADD_RULE")
        out["netlink_send"] = [
            {"protocol": audit, "msg_type": set_, "status_mask": 1, "enabled": 0, "msg_len": 56},
            {"protocol": audit, "msg_type": set_, "status_mask": 1, "enabled": 2, "msg_len": 56},
            {"protocol": audit, "msg_type": add_rule, "rule_list": 4, "rule_action": 2, "rule_fields": 3},
            {"protocol": route, "msg_type": 16, "msg_len": 32},
        ]
    if "ptrace_traceme" in c:
        out["ptrace_traceme"] = [{"tracer_pid": 700, "tracer_tgid": 700, "tracer_uid": 1000, "tracer_comm": b"gdb"}]
    for hook, ns in (("inode_setxattr", (1, 3)), ("inode_removexattr", (4, 0))):
        if hook in c:
            out[hook] = [
                {"name": b"security.capability", "file": b"ping", "dir": b"bin", "ino": 77, "namespace": n} for n in ns
            ]
    if "inode_setattr" in c:
        out["inode_setattr"] = [{"file": b"sudo", "dir": b"bin", "ino": 99, "mode": 0o104755, "old_mode": 0o100755}]
    return out


SAMPLES = _samples()

# Header variants: (header members, values the pipeline's later stages add).
HEADERS: tuple[tuple[dict[str, Any], dict[str, Any]], ...] = (
    (
        {"action": 1, "verdict": 0, "sessionid": 3, "auid": 1000, "tty": b"pts/0"},
        {
            "exe": b"/usr/bin/bash",
            "cgroup": "/user.slice/user-1000.slice/session-3.scope",
            "unit": "session-3.scope",
            "container_id": "",
            "rule": "",
            # What the identity enrichment adds (issue 12 items 1-3).
            "process_id": BOOT + ":100:4242",
            "parent_process_id": BOOT + ":50:4200",
            "ancestors": (
                {
                    "process_id": BOOT + ":50:4200",
                    "pid": 4200,
                    "uid": 1000,
                    "exe": b"/usr/bin/bash",
                    "args": (b"-bash",),
                },
                {"process_id": BOOT + ":1:1", "pid": 1, "uid": 0, "exe": b"/usr/lib/systemd/systemd", "args": ()},
            ),
            "exe_sha256": "ab" * 32,
        },
    ),
    (
        {"action": 3, "verdict": -1, "sessionid": 4294967295, "auid": 4294967295},
        {"exe": b"", "cgroup": "/system.slice/x.service", "unit": "x.service", "container_id": "", "rule": "no-x"},
    ),
    (
        {"action": 4, "verdict": 0, "sessionid": 4294967295, "auid": 4294967295},
        {
            "exe": b"/usr/bin/containerd-shim",
            "cgroup": "/system.slice/docker-" + "ab" * 32 + ".scope",
            "unit": "docker-" + "ab" * 32 + ".scope",
            "container_id": "ab" * 32,
            "rule": "watch-x",
        },
    ),
)


def events_of(spec: HookSpec) -> list[Event]:
    """Every sample event of one hook (zero record + SAMPLES) under every header variant."""
    decoder = EventDecoder({0: spec}, boot_to_epoch=BOOT_TO_EPOCH)
    members = {m.name for m in spec.layout.members}
    out: list[Event] = []
    seq = 1
    for sample in [{}, *SAMPLES.get(spec.name, [])]:
        for header, later in HEADERS:
            given = {
                "seq": seq,
                "pid": 4243,
                "tgid": 4242,
                "ppid": 4200,
                "uid": 1000,
                "gid": 1000,
                "euid": 1000,
                "comm": b"worker",
                "ktime_ns": 5_000_000_000 + seq,
                "cgroup_id": 9001,
                **header,
                **sample,
            }
            if "start_ns" in members:
                given.update(start_ns=1_000_000_000, parent_start_ns=500_000_000)
            event = decoder.decode(pack(spec, 0, **{k: v for k, v in given.items() if k in members}))
            event.values.update(later)
            out.append(event)
            seq += 1
    return out


def all_events() -> dict[str, list[Event]]:
    return {spec.name: events_of(spec) for spec in CATALOG}
