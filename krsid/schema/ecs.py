"""krsid events as Elastic Common Schema documents (``sinks.jsonl.format: ecs``).

event.category / event.type / event.action come from krsid.schema.mapping. A deny
rule that matched adds the category intrusion_detection with the type denied (the
call was refused, event.outcome failure) or, in audit-only mode (would_deny),
allowed. Fields ECS has no name for are kept under the custom ``krsid`` object by
their krsid field name (ECS reserves no ``krsid.*`` names).
"""

from __future__ import annotations

import time
from typing import Any

from krsid import __version__
from krsid.event import Event
from krsid.schema.common import (
    EXE_SHA256_FIELD,
    PARENT_PROCESS_ID_FIELD,
    PROCESS_ID_FIELD,
    UNSET_ID,
    basename,
    enum_number,
    integer,
    strings,
    text,
    unmapped,
)
from krsid.schema.host import HostInfo
from krsid.schema.mapping import (
    DRIVER,
    ECS_VERSION,
    EXEC,
    FILE,
    KERNEL,
    MEMORY,
    MODULE,
    NETWORK,
    PROCESS_OTHER,
    PROCESS_SELF,
    Target,
    target_of,
)

PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 58: "ipv6-icmp", 132: "sctp", 136: "udplite"}
DEFAULT_PROTOCOL = {"STREAM": 6, "DGRAM": 17}
SYSLOG_LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


def _timestamp(t: float) -> str:
    whole = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((t - whole) * 1e6):06d}Z"


class EcsBuilder:
    def __init__(self, host: HostInfo) -> None:
        self._host = host
        h: dict[str, Any] = {
            "name": host.hostname,
            "hostname": host.hostname,
            "os": {"type": "linux", "kernel": host.kernel_release},
        }
        if host.machine_id:
            h["id"] = host.machine_id
        if host.boot_id:
            h["boot"] = {"id": host.boot_id}
        self._host_fields = h
        self._agent = {"name": "krsid", "type": "krsid", "version": __version__}

    def record(self, event: Event) -> dict[str, Any]:
        v = event.values
        t = target_of(event.hook, v)
        policy = text(v.get("action"))
        verdict = text(v.get("verdict")) or "0"
        category, types = list(t.ecs_category), list(t.ecs_type)
        if policy in ("deny", "would_deny"):
            category.append("intrusion_detection")
            types.append("denied" if policy == "deny" else "allowed")
        priority = event.spec.priority
        ev: dict[str, Any] = {
            "kind": "alert" if policy in ("deny", "would_deny") else "event",
            "category": category,
            "type": types,
            "action": t.ecs_action or event.hook,
            "outcome": "success" if verdict == "0" else "failure",
            "module": "krsid",
            "dataset": f"krsid.{event.hook}",
            "provider": event.hook,
            "sequence": integer(v.get("seq")) or 0,
            "severity": priority,
        }
        if verdict != "0":
            ev["reason"] = f"the hook returned {verdict}"
        doc: dict[str, Any] = {
            "@timestamp": _timestamp(event.wallclock),
            "ecs": {"version": ECS_VERSION},
            "event": ev,
            "host": self._host_fields,
            "agent": self._agent,
            "log": {"syslog": {"severity": {"code": priority, "name": SYSLOG_LEVELS[priority & 7]}}},
            "process": self._process(event),
            "user": {"id": str(integer(v.get("uid")) or 0)},
            "group": {"id": str(integer(v.get("gid")) or 0)},
        }
        rule = text(v.get("rule"))
        if rule:
            doc["rule"] = {"name": rule}
        container = text(v.get("container_id"))
        if container:
            doc["container"] = {"id": container}
        self._subject(event, t, doc)
        doc["krsid"] = unmapped(event)
        return doc

    def _process(self, event: Event) -> dict[str, Any]:
        v = event.values
        proc: dict[str, Any] = {
            "pid": integer(v.get("tgid")) or 0,
            "thread": {"id": integer(v.get("pid")) or 0},
            "name": text(v.get("comm")),
            "parent": {"pid": integer(v.get("ppid")) or 0},
            "real_user": {"id": str(integer(v.get("uid")) or 0)},
            "real_group": {"id": str(integer(v.get("gid")) or 0)},
        }
        euid = integer(v.get("euid"))
        if euid is not None:
            proc["user"] = {"id": str(euid)}
        exe = text(v.get("exe"))
        if exe:
            proc["executable"] = exe
        sha = text(v.get(EXE_SHA256_FIELD))
        if sha:
            proc["hash"] = {"sha256": sha}
        uid = text(v.get(PROCESS_ID_FIELD))
        if uid:
            proc["entity_id"] = uid
        parent_uid = text(v.get(PARENT_PROCESS_ID_FIELD))
        if parent_uid:
            proc["parent"]["entity_id"] = parent_uid
        session = integer(v.get("sessionid"))
        tty = text(v.get("tty"))
        if session is not None and session != UNSET_ID and tty:
            proc["interactive"] = True
        return proc

    def _subject(self, event: Event, t: Target, doc: dict[str, Any]) -> None:
        v = event.values
        r = t.roles
        s = t.subject
        proc = doc["process"]
        if s == EXEC:
            path = text(v.get(r["path"]))
            proc["executable"] = path
            proc["name"] = basename(path)
            args = strings(v.get(r["args"]))
            if args:
                proc["args"] = args
                proc["command_line"] = text(v.get(r["args"]))
            argc = integer(v.get(r["argc"]))
            if argc is not None:
                proc["args_count"] = argc
        elif s == PROCESS_SELF:
            doc["user"]["changes"] = {"id": str(integer(v.get(r["user_uid"])) or 0)}
        elif s == PROCESS_OTHER:
            pass  # ECS has no target process: the target's pid/comm/uid stay under krsid.*
        elif s == FILE:
            if "path" in r:
                path = text(v.get(r["path"]))
                doc["file"] = {"path": path, "name": basename(path)}
            else:
                doc["file"] = {"name": text(v.get(r["name"]))}
            if "inode" in r:
                doc["file"]["inode"] = str(integer(v.get(r["inode"])) or 0)
            if r.get("folder"):
                doc["file"]["type"] = "dir"
        elif s == DRIVER:
            if "path" in r:
                path = text(v.get(r["path"]))
                doc["file"] = {"path": path, "name": basename(path)}
            elif "name" in r:
                doc["file"] = {"name": text(v.get(r["name"]))}
        elif s == MODULE:
            path = text(v.get(r["path"]))
            doc["dll"] = {"path": path, "name": basename(path)}
        elif s == NETWORK:
            self._network(event, doc, local=t.roles.get("side") == "local")
        elif s in (KERNEL, MEMORY):
            pass  # no ECS fields: the hook's own fields under krsid.* say it all

    def _network(self, event: Event, doc: dict[str, Any], *, local: bool) -> None:
        v = event.values
        family = text(v.get("family"))
        end = "source" if local else "destination"  # a listener's own address / the peer
        net: dict[str, Any] = {"direction": "ingress" if local else "egress"}
        if family in ("INET", "INET6"):
            ip = text(v.get("addr4" if family == "INET" else "addr6"))
            port = integer(v.get("port")) or 0
            doc[end] = {"ip": ip, "port": port, "address": ip}
            net["type"] = "ipv4" if family == "INET" else "ipv6"
            proto = enum_number(event, "protocol") or DEFAULT_PROTOCOL.get(text(v.get("type")), 0)
            net["iana_number"] = str(proto)
            if proto in PROTOCOL_NAMES:
                net["transport"] = PROTOCOL_NAMES[proto]
        elif family == "UNIX":
            doc[end] = {"address": text(v.get("unix_path"))}
        doc["network"] = net
