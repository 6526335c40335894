"""krsid events as OCSF 1.x records (``sinks.jsonl.format: ocsf``).

The class and activity come from krsid.schema.mapping; this module fills the
attributes every record has (time, severity, metadata, device, actor, the verdict
as action/disposition/status) and the class's primary object from the target's
subject and roles. Whatever has no OCSF attribute stays under ``unmapped`` by its
krsid field name, so nothing the krsid format carries is lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from krsid import __version__
from krsid.event import Event
from krsid.schema.common import (
    ANCESTORS_FIELD,
    EXE_SHA256_FIELD,
    PARENT_PROCESS_ID_FIELD,
    PROCESS_ID_FIELD,
    UNSET_ID,
    basename,
    enum_number,
    flag_bits,
    integer,
    strings,
    text,
    unmapped,
)
from krsid.schema.host import HostInfo
from krsid.schema.mapping import (
    ACTION_CAPTIONS,
    ACTION_OF_POLICY,
    AUDIT_LOG,
    DISPOSITION_CAPTIONS,
    DRIVER,
    EXEC,
    FILE,
    KERNEL,
    MEMORY,
    MODULE,
    NETWORK,
    OCSF_PROFILES,
    OCSF_VERSION,
    PROCESS_OTHER,
    PROCESS_SELF,
    SEVERITY_CAPTIONS,
    SEVERITY_OF_PRIORITY,
    Target,
    target_of,
)

PROT_BITS = {"READ": 1, "WRITE": 2, "EXEC": 4}
FILE_TYPE_UNKNOWN, FILE_TYPE_REGULAR, FILE_TYPE_FOLDER = 0, 1, 2
SHA256 = 3  # fingerprint.algorithm_id
# socket type -> IANA protocol when the caller left protocol 0 (the family's default)
DEFAULT_PROTOCOL = {"STREAM": 6, "DGRAM": 17}
PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 58: "ipv6-icmp", 132: "sctp", 136: "udplite"}


def _file(path: str = "", name: str = "", type_id: int = FILE_TYPE_UNKNOWN) -> dict[str, Any]:
    f: dict[str, Any] = {"name": name or basename(path), "type_id": type_id}
    if path:
        f["path"] = path
    return f


def _ancestor(a: Mapping[str, object]) -> dict[str, Any]:
    """One of the identity table's ancestors as an OCSF process_entity (its uid, a
    user id, stays in unmapped.ancestors)."""
    pid, process_id, exe, args = a.get("pid"), a.get("process_id"), a.get("exe"), a.get("args")
    entity: dict[str, Any] = {"pid": pid if isinstance(pid, int) else 0}
    if isinstance(process_id, str) and process_id:
        entity["uid"] = process_id
    if isinstance(exe, bytes) and exe:
        entity["path"] = text(exe)
        entity["name"] = basename(entity["path"])
    if isinstance(args, tuple) and args:
        entity["cmd_line"] = text(tuple(x for x in args if isinstance(x, bytes)))
    return entity


class OcsfBuilder:
    def __init__(self, host: HostInfo) -> None:
        self._host = host
        device: dict[str, Any] = {
            "hostname": host.hostname,
            "name": host.hostname,
            "type_id": 0,
            "type": "Unknown",
            "os": {"name": "Linux", "type_id": 200, "type": "Linux", "kernel_release": host.kernel_release},
        }
        if host.machine_id:
            device["uid"] = host.machine_id
        if host.boot_id:
            device["boot_uid"] = host.boot_id
        self._device = device
        self._product = {"name": "krsid", "vendor_name": "krsid", "version": __version__}

    def record(self, event: Event) -> dict[str, Any]:
        v = event.values
        t = target_of(event.hook, v)
        cls = t.ocsf
        severity_id = SEVERITY_OF_PRIORITY.get(event.spec.priority, 1)
        action_id, disposition_id = ACTION_OF_POLICY.get(text(v.get("action")), (1, 1))
        verdict = text(v.get("verdict")) or "0"
        seq = integer(v.get("seq")) or 0
        rec: dict[str, Any] = {
            "class_uid": cls.uid,
            "class_name": cls.caption,
            "category_uid": cls.category_uid,
            "category_name": cls.category_name,
            "activity_id": t.activity_id,
            "activity_name": t.activity,
            "type_uid": cls.uid * 100 + t.activity_id,
            "type_name": f"{cls.caption}: {t.activity}",
            "time": int(event.wallclock * 1000),
            "severity_id": severity_id,
            "severity": SEVERITY_CAPTIONS[severity_id],
            "action_id": action_id,
            "action": ACTION_CAPTIONS[action_id],
            "disposition_id": disposition_id,
            "disposition": DISPOSITION_CAPTIONS[disposition_id],
            "is_alert": action_id == 2 or disposition_id == 15,
            "status_id": 1 if verdict == "0" else 2,
            "status": "Success" if verdict == "0" else "Failure",
            "metadata": {
                "product": self._product,
                "version": OCSF_VERSION,
                "profiles": list(OCSF_PROFILES),
                "log_name": "krsid",
                "event_code": event.hook,
                "sequence": seq,
                "uid": f"{self._host.boot_id}:{seq}",
            },
            "device": self._device,
            "actor": self._actor(event),
        }
        if verdict != "0":
            rec["status_code"] = verdict
        rule = text(v.get("rule"))
        if rule:
            rec["status_detail"] = f"rule {rule}"
        rec.update(self._subject(event, t))
        rec["unmapped"] = unmapped(event)
        return rec

    # --- the actor: the process that called the hook ---

    def _process(self, event: Event) -> dict[str, Any]:
        v = event.values
        proc: dict[str, Any] = {
            "pid": integer(v.get("tgid")) or 0,
            "tid": integer(v.get("pid")) or 0,
            "name": text(v.get("comm")),
            "user": {"uid": str(integer(v.get("uid")) or 0)},
            "parent_process": {"pid": integer(v.get("ppid")) or 0},
        }
        exe = text(v.get("exe"))
        if exe:
            proc["file"] = _file(exe, type_id=FILE_TYPE_REGULAR)
            sha = text(v.get(EXE_SHA256_FIELD))
            if sha and event.spec.enrich.new_exe == "":  # on an exec the hash is the new image's
                proc["file"]["hashes"] = [{"algorithm_id": SHA256, "algorithm": "SHA-256", "value": sha}]
        uid = text(v.get(PROCESS_ID_FIELD))
        if uid:
            proc["uid"] = uid
        parent_uid = text(v.get(PARENT_PROCESS_ID_FIELD))
        if parent_uid:
            proc["parent_process"]["uid"] = parent_uid
        ancestors = v.get(ANCESTORS_FIELD)
        if isinstance(ancestors, tuple) and ancestors:
            proc["ancestry"] = [_ancestor(a) for a in ancestors if isinstance(a, Mapping)]
        return proc

    def _actor(self, event: Event) -> dict[str, Any]:
        v = event.values
        actor: dict[str, Any] = {
            "process": self._process(event),
            "user": {"uid": str(integer(v.get("uid")) or 0)},
        }
        session = integer(v.get("sessionid"))
        if session is not None and session != UNSET_ID:
            actor["session"] = {"uid": str(session)}
            tty = text(v.get("tty"))
            if tty:
                actor["session"]["terminal"] = tty
        return actor

    # --- the class's primary object ---

    def _subject(self, event: Event, t: Target) -> dict[str, Any]:
        v = event.values
        r = t.roles
        s = t.subject
        if s == EXEC:
            path = text(v.get(r["path"]))
            proc = self._process(event)
            proc["name"] = basename(path)
            proc["file"] = _file(path, type_id=FILE_TYPE_REGULAR)
            # The file's identity from the kernel, where the hook sends it: the inode
            # as the File's uid (as the file hooks do), its size and modification time.
            inode = integer(v.get(r["inode"])) if "inode" in r else None
            if inode:  # 0: the kernel sent no identity
                proc["file"]["uid"] = str(inode)
                size = integer(v.get(r["size"])) if "size" in r else None
                if size is not None:
                    proc["file"]["size"] = size
                mtime_ns = integer(v.get(r["mtime_ns"])) if "mtime_ns" in r else None
                if mtime_ns is not None:
                    proc["file"]["modified_time"] = mtime_ns // 1_000_000  # timestamp_t: ms
            sha = text(v.get(EXE_SHA256_FIELD))
            if sha:
                proc["file"]["hashes"] = [{"algorithm_id": SHA256, "algorithm": "SHA-256", "value": sha}]
            args = strings(v.get(r["args"]))
            if args:
                proc["cmd_line"] = text(v.get(r["args"]))
            return {"process": proc, "launch_type_id": 3, "launch_type": "Exec"}
        if s == PROCESS_SELF:
            proc = self._process(event)
            proc["user"] = {"uid": str(integer(v.get(r["user_uid"])) or 0)}
            return {"process": proc}
        if s == PROCESS_OTHER:
            return {
                "process": {
                    "pid": integer(v.get(r["pid"])) or 0,
                    "tid": integer(v.get(r["tid"])) or 0,
                    "name": text(v.get(r["name"])),
                    "user": {"uid": str(integer(v.get(r["uid"])) or 0)},
                }
            }
        if s == FILE:
            type_id = FILE_TYPE_FOLDER if r.get("folder") else FILE_TYPE_UNKNOWN
            if "path" in r:
                f = _file(text(v.get(r["path"])), type_id=type_id)
            else:
                f = _file(name=text(v.get(r["name"])), type_id=type_id)
            if "inode" in r:
                f["uid"] = str(integer(v.get(r["inode"])) or 0)
            return {"file": f}
        if s == DRIVER:
            if "path" in r:
                f = _file(text(v.get(r["path"])), type_id=FILE_TYPE_REGULAR)
            else:
                f = _file(name=text(v.get(r["name"])) if "name" in r else r["name_text"])
            return {"driver": {"file": f}}
        if s == KERNEL:
            name = text(v.get(r["name"])) if "name" in r else r["name_text"]
            kernel: dict[str, Any] = {"name": name, "type_id": 99, "type": r["kind"]}
            if r.get("system_call"):
                kernel = {"name": name, "type_id": 2, "type": r["kind"], "system_call": r["system_call"]}
            return {"kernel": kernel}
        if s == MEMORY:
            out: dict[str, Any] = {"process": self._process(event)}
            if "start" in r:
                start, end = integer(v.get(r["start"])), integer(v.get(r["end"]))
                if start is not None:
                    out["base_address"] = hex(start)
                    if end is not None and end >= start:
                        out["size"] = end - start
            out["requested_permissions"] = flag_bits(v.get(r["prot"]), PROT_BITS)
            return out
        if s == MODULE:
            return {
                "module": {
                    "file": _file(text(v.get(r["path"])), type_id=FILE_TYPE_REGULAR),
                    "load_type_id": 4,
                    "load_type": "Mapped",
                }
            }
        if s == NETWORK:
            return self._network(event, t)
        if s == AUDIT_LOG:
            return {"log_provider": "Linux audit", "log_name": "audit"}
        return {}

    def _network(self, event: Event, t: Target) -> dict[str, Any]:
        v = event.values
        family = text(v.get("family"))
        endpoint: dict[str, Any]
        if family in ("INET", "INET6"):
            ip = text(v.get("addr4" if family == "INET" else "addr6"))
            endpoint = {"ip": ip, "port": integer(v.get("port")) or 0}
        elif family == "UNIX":
            endpoint = {"name": text(v.get("unix_path"))}  # an abstract name is already "@name"; unnamed: ""
        else:
            endpoint = {"name": family.lower()}  # a family with no address krsid decodes (e.g. NETLINK)
        local = t.roles.get("side") == "local"  # a listening socket: its own address, inbound
        conn: dict[str, Any] = (
            {"direction_id": 1, "direction": "Inbound"}
            if local
            else {
                "direction_id": 2,
                "direction": "Outbound",
            }
        )
        if family in ("INET", "INET6"):
            proto = enum_number(event, "protocol") or DEFAULT_PROTOCOL.get(text(v.get("type")), 0)
            conn["protocol_num"] = proto
            if proto in PROTOCOL_NAMES:
                conn["protocol_name"] = PROTOCOL_NAMES[proto]
            conn["protocol_ver_id"] = 4 if family == "INET" else 6
        return {"src_endpoint" if local else "dst_endpoint": endpoint, "connection_info": conn}
