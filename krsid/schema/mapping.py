"""The one table that says what each hook's events are in OCSF and ECS.

Each hook maps to one or more ``Target``s: an OCSF class and activity, the ECS
event.category / event.type / event.action, and the kind of object the event is
about (``subject``) with the krsid fields that fill it (``roles``). A hook with more
than one target picks one per event (``choose``), e.g. kernel_read_file is a kernel
module load for id MODULE and a file read otherwise.

A hook missing here is written with ``GENERIC`` (OCSF Base Event, activity Other;
ECS host / info) so that the daemon never fails on a new program, and
tests/unit/test_schema.py fails until the hook has its row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from krsid.event import Value

OCSF_VERSION = "1.7.0"  # the schema the records follow and the tests validate against
ECS_VERSION = "9.4.0"
# OCSF profiles the records use: host (actor/device on Network Activity) and
# security_control (action_id, disposition_id, is_alert).
OCSF_PROFILES = ("host", "security_control")


@dataclass(frozen=True)
class OcsfClass:
    uid: int
    caption: str
    category_uid: int
    category_name: str
    activities: Mapping[int, str]


OCSF_CLASSES: dict[str, OcsfClass] = {
    "base_event": OcsfClass(0, "Base Event", 0, "Uncategorized", {0: "Unknown", 99: "Other"}),
    "file_activity": OcsfClass(
        1001,
        "File System Activity",
        1,
        "System Activity",
        {
            1: "Create",
            2: "Read",
            3: "Update",
            4: "Delete",
            5: "Rename",
            6: "Set Attributes",
            7: "Set Security",
            12: "Mount",
            14: "Open",
            99: "Other",
        },
    ),
    "kernel_extension_activity": OcsfClass(
        1002, "Kernel Extension Activity", 1, "System Activity", {1: "Load", 2: "Unload", 99: "Other"}
    ),
    "kernel_activity": OcsfClass(
        1003, "Kernel Activity", 1, "System Activity", {1: "Create", 2: "Read", 3: "Delete", 4: "Invoke", 99: "Other"}
    ),
    "memory_activity": OcsfClass(
        1004,
        "Memory Activity",
        1,
        "System Activity",
        {1: "Allocate Page", 2: "Modify Page", 9: "Map View", 99: "Other"},
    ),
    "event_log_actvity": OcsfClass(  # sic: the schema's class name has this spelling
        1008, "Event Log Activity", 1, "System Activity", {9: "Enable", 10: "Disable", 99: "Other"}
    ),
    "module_activity": OcsfClass(1005, "Module Activity", 1, "System Activity", {1: "Load", 2: "Unload", 99: "Other"}),
    "process_activity": OcsfClass(
        1007,
        "Process Activity",
        1,
        "System Activity",
        {1: "Launch", 2: "Terminate", 3: "Open", 4: "Inject", 5: "Set User ID", 99: "Other"},
    ),
    "network_activity": OcsfClass(
        4001, "Network Activity", 4, "Network Activity", {1: "Open", 7: "Listen", 99: "Other"}
    ),
}

# Object kinds (Target.subject): what the OCSF class's primary object and the ECS
# fields are built from. Roles name the krsid fields that fill them.
EXEC = "exec"  # the new image: process (OCSF) / process.executable, args (ECS); roles path, args, argc;
# inode, size, mtime_ns (optional: the executed file's identity, OCSF process.file)
PROCESS_SELF = "process_self"  # the caller itself is the object; role user_uid: its new uid (setuid)
PROCESS_OTHER = "process_other"  # another process; roles pid, tid, name, uid
FILE = "file"  # roles path | name (one of), inode, folder ("1": a directory)
KERNEL = "kernel"  # a kernel resource; roles name (a field) or name_text (a constant), kind (caption)
DRIVER = "driver"  # a kernel module; roles path | name
MEMORY = "memory"  # a mapping: roles start, end, prot
MODULE = "module"  # code mapped from a file: role path
NETWORK = "network"  # family, addr4/addr6, port, type, protocol; role side: "local" (listen) else the peer
AUDIT_LOG = "audit_log"  # the kernel's audit subsystem (log_provider / log_name)
NONE = "none"  # nothing beyond the actor


@dataclass(frozen=True)
class Target:
    ocsf_class: str  # a key of OCSF_CLASSES
    activity_id: int
    ecs_category: tuple[str, ...]
    ecs_type: tuple[str, ...]
    ecs_action: str
    subject: str = NONE
    roles: Mapping[str, str] = field(default_factory=dict)
    activity_name: str = ""  # for activity 99 (Other): what the source calls it
    when: str = ""  # the condition, for the documentation

    @property
    def ocsf(self) -> OcsfClass:
        return OCSF_CLASSES[self.ocsf_class]

    @property
    def activity(self) -> str:
        return self.activity_name or self.ocsf.activities[self.activity_id]


Values = Mapping[str, Value]


@dataclass(frozen=True)
class HookMapping:
    targets: tuple[Target, ...]  # the first is the default
    choose: Callable[[Values], Target] | None = None

    def target(self, values: Values) -> Target:
        return self.choose(values) if self.choose is not None else self.targets[0]


GENERIC = Target("base_event", 99, ("host",), ("info",), "", activity_name="Other")


def _has_flag(value: Value | None, name: str) -> bool:
    return isinstance(value, str) and name in value.split("|")


# --- hooks with a choice --------------------------------------------------------

_BPF_CREATE = {"MAP_CREATE", "PROG_LOAD", "BTF_LOAD", "LINK_CREATE", "RAW_TRACEPOINT_OPEN", "ITER_CREATE"}
_BPF_CREATE |= {"TOKEN_CREATE", "OBJ_PIN"}
_BPF_DELETE = {"MAP_DELETE_ELEM", "MAP_DELETE_BATCH", "MAP_LOOKUP_AND_DELETE_ELEM", "MAP_LOOKUP_AND_DELETE_BATCH"}
_BPF_DELETE |= {"PROG_DETACH", "LINK_DETACH"}
_BPF_INVOKE = {"PROG_ATTACH", "PROG_TEST_RUN", "MAP_UPDATE_ELEM", "MAP_UPDATE_BATCH", "LINK_UPDATE"}
_BPF_INVOKE |= {"MAP_FREEZE", "ENABLE_STATS", "PROG_BIND_MAP"}
_BPF_ROLES = {"name": "cmd", "kind": "System Call", "system_call": "bpf"}
BPF_CREATE = Target(
    "kernel_activity",
    1,
    ("host",),
    ("change",),
    "bpf-create",
    KERNEL,
    _BPF_ROLES,
    when="cmd creates a BPF object (PROG_LOAD, MAP_CREATE, BTF_LOAD, LINK_CREATE, ...)",
)
BPF_DELETE = Target(
    "kernel_activity",
    3,
    ("host",),
    ("change",),
    "bpf-delete",
    KERNEL,
    _BPF_ROLES,
    when="cmd deletes map elements or detaches (MAP_DELETE_ELEM, PROG_DETACH, LINK_DETACH, ...)",
)
BPF_INVOKE = Target(
    "kernel_activity",
    4,
    ("host",),
    ("change",),
    "bpf-modify",
    KERNEL,
    _BPF_ROLES,
    when="cmd attaches, runs or updates (PROG_ATTACH, PROG_TEST_RUN, MAP_UPDATE_ELEM, ...)",
)
BPF_READ = Target(
    "kernel_activity",
    2,
    ("host",),
    ("access",),
    "bpf-read",
    KERNEL,
    _BPF_ROLES,
    when="any other cmd (lookups, GET_NEXT_ID, GET_FD_BY_ID, OBJ_GET_INFO_BY_FD, PROG_QUERY, ...)",
)


def _bpf(v: Values) -> Target:
    cmd = v.get("cmd")
    if cmd in _BPF_CREATE:
        return BPF_CREATE
    if cmd in _BPF_DELETE:
        return BPF_DELETE
    if cmd in _BPF_INVOKE:
        return BPF_INVOKE
    return BPF_READ


MMAP_MODULE = Target(
    "module_activity",
    1,
    ("library",),
    ("start",),
    "mmap-exec",
    MODULE,
    {"path": "path"},
    when="a file mapped with PROT_EXEC (how ld.so loads a library)",
)
MMAP_ANON = Target(
    "memory_activity",
    1,
    ("process",),
    ("change",),
    "mmap-anonymous",
    MEMORY,
    {"prot": "reqprot"},
    when="anonymous memory (no file)",
)
MMAP_FILE = Target(
    "file_activity",
    99,
    ("file",),
    ("access",),
    "mmap",
    FILE,
    {"path": "path"},
    activity_name="Map",
    when="a file mapped without PROT_EXEC",
)


def _mmap(v: Values) -> Target:
    if v.get("anonymous") is True:
        return MMAP_ANON
    return MMAP_MODULE if _has_flag(v.get("reqprot"), "EXEC") else MMAP_FILE


READ_MODULE = Target(
    "kernel_extension_activity",
    1,
    ("driver",),
    ("start",),
    "module-load",
    DRIVER,
    {"path": "path"},
    when="id MODULE (finit_module)",
)
READ_OTHER = Target(
    "file_activity",
    2,
    ("file",),
    ("access",),
    "kernel-read-file",
    FILE,
    {"path": "path"},
    when="any other id (FIRMWARE, KEXEC_IMAGE, KEXEC_INITRAMFS, POLICY, X509_CERTIFICATE)",
)
LOAD_MODULE = Target(
    "kernel_extension_activity",
    1,
    ("driver",),
    ("start",),
    "module-load",
    DRIVER,
    {"name_text": "(memory)"},
    when='id MODULE (init_module from memory: no file, driver.file.name is "(memory)")',
)
LOAD_OTHER = Target(
    "kernel_activity",
    1,
    ("host",),
    ("change",),
    "kernel-load-data",
    KERNEL,
    {"name": "id", "kind": "Kernel Data"},
    when="any other id (FIRMWARE, KEXEC_IMAGE, POLICY, ...)",
)


def _kernel_read_file(v: Values) -> Target:
    return READ_MODULE if v.get("id") == "MODULE" else READ_OTHER


def _kernel_load_data(v: Values) -> Target:
    return LOAD_MODULE if v.get("id") == "MODULE" else LOAD_OTHER


_XATTR_ROLES = {"name": "file", "inode": "ino"}
SETXATTR_SECURITY = Target(
    "file_activity",
    7,
    ("file",),
    ("change",),
    "xattr-set",
    FILE,
    _XATTR_ROLES,
    when="namespace SECURITY or SYSTEM (capabilities, security labels, POSIX ACLs)",
)
SETXATTR_OTHER = Target(
    "file_activity",
    6,
    ("file",),
    ("change",),
    "xattr-set",
    FILE,
    _XATTR_ROLES,
    when="any other namespace (TRUSTED, USER, OTHER)",
)
REMOVEXATTR_SECURITY = Target(
    "file_activity",
    7,
    ("file",),
    ("change",),
    "xattr-remove",
    FILE,
    _XATTR_ROLES,
    when=SETXATTR_SECURITY.when,
)
REMOVEXATTR_OTHER = Target(
    "file_activity",
    6,
    ("file",),
    ("change",),
    "xattr-remove",
    FILE,
    _XATTR_ROLES,
    when=SETXATTR_OTHER.when,
)


def _security_xattr(v: Values) -> bool:
    return v.get("namespace") in ("SECURITY", "SYSTEM")


def _setxattr(v: Values) -> Target:
    return SETXATTR_SECURITY if _security_xattr(v) else SETXATTR_OTHER


def _removexattr(v: Values) -> Target:
    return REMOVEXATTR_SECURITY if _security_xattr(v) else REMOVEXATTR_OTHER


AUDIT_DISABLE = Target(
    "event_log_actvity",
    10,
    ("configuration",),
    ("change",),
    "audit-disable",
    AUDIT_LOG,
    when="protocol AUDIT, AUDIT_SET turning auditing off (enabled 0)",
)
AUDIT_ENABLE = Target(
    "event_log_actvity",
    9,
    ("configuration",),
    ("change",),
    "audit-enable",
    AUDIT_LOG,
    when="protocol AUDIT, AUDIT_SET turning auditing on or locking it (enabled 1 or 2)",
)
AUDIT_CHANGE = Target(
    "event_log_actvity",
    99,
    ("configuration",),
    ("change",),
    "audit-config-change",
    AUDIT_LOG,
    activity_name="Configuration Change",
    when="any other AUDIT message (rules added/deleted, rate, backlog, ...)",
)
NETLINK_OTHER = Target(
    "kernel_activity",
    4,
    ("host",),
    ("change",),
    "netlink-send",
    KERNEL,
    {"name": "protocol", "kind": "Netlink"},
    when="any other netlink protocol",
)


def _netlink_send(v: Values) -> Target:
    if v.get("protocol") != "AUDIT":
        return NETLINK_OTHER
    if v.get("msg_type") == "SET" and _has_flag(v.get("status_mask"), "ENABLED"):
        return AUDIT_DISABLE if v.get("enabled") == 0 else AUDIT_ENABLE
    return AUDIT_CHANGE


_USERNS = Target(
    "kernel_activity",
    1,
    ("process",),
    ("change",),
    "userns-create",
    KERNEL,
    {"name_text": "user namespace", "kind": "User Namespace"},
)

# inode_file_setattr and its fallback file_ioctl: chattr's flags are file attributes.
_FILE_FLAGS = Target(
    "file_activity", 6, ("file",), ("change",), "file-flags", FILE, {"name": "file", "inode": "ino"}
)

# --- the table --------------------------------------------------------------------

HOOK_MAPPINGS: dict[str, HookMapping] = {
    "bprm_check_security": HookMapping(
        (
            Target(
                "process_activity",
                1,
                ("process",),
                ("start",),
                "exec",
                EXEC,
                {
                    "path": "path",
                    "args": "args",
                    "argc": "argc",
                    "inode": "ino",
                    "size": "size",
                    "mtime_ns": "mtime_ns",
                },
            ),
        )
    ),
    "task_fix_setuid": HookMapping(
        (Target("process_activity", 5, ("process",), ("change",), "uid-change", PROCESS_SELF, {"user_uid": "new_uid"}),)
    ),
    "ptrace_access_check": HookMapping(
        (
            Target(
                "process_activity",
                3,
                ("process",),
                ("access",),
                "ptrace",
                PROCESS_OTHER,
                {"pid": "target_tgid", "tid": "target_pid", "name": "target_comm", "uid": "target_uid"},
            ),
        )
    ),
    "ptrace_traceme": HookMapping(
        (
            Target(
                "process_activity",
                99,
                ("process",),
                ("access",),
                "ptrace-traceme",
                PROCESS_OTHER,
                {"pid": "tracer_tgid", "tid": "tracer_pid", "name": "tracer_comm", "uid": "tracer_uid"},
                activity_name="Trace Me",
            ),
        )
    ),
    "task_kill": HookMapping(
        (
            Target(
                "process_activity",
                99,
                ("process",),
                ("info",),
                "signal",
                PROCESS_OTHER,
                {"pid": "target_tgid", "tid": "target_pid", "name": "target_comm", "uid": "target_uid"},
                activity_name="Signal",
            ),
        )
    ),
    "userns_create": HookMapping((_USERNS,)),
    "cred_prepare": HookMapping((_USERNS,)),  # the fallback of userns_create: same events
    "file_open": HookMapping((Target("file_activity", 14, ("file",), ("access",), "open", FILE, {"path": "path"}),)),
    "inode_unlink": HookMapping(
        (Target("file_activity", 4, ("file",), ("deletion",), "unlink", FILE, {"name": "name", "inode": "ino"}),)
    ),
    "inode_rename": HookMapping(
        (Target("file_activity", 5, ("file",), ("change",), "rename", FILE, {"name": "new_name", "inode": "ino"}),)
    ),
    "inode_link": HookMapping(
        (Target("file_activity", 1, ("file",), ("creation",), "link", FILE, {"name": "new_name", "inode": "ino"}),)
    ),
    "inode_symlink": HookMapping(
        (Target("file_activity", 1, ("file",), ("creation",), "symlink", FILE, {"name": "name"}),)
    ),
    "inode_mkdir": HookMapping(
        (Target("file_activity", 1, ("file",), ("creation",), "mkdir", FILE, {"name": "name"}),)
    ),
    "inode_mknod": HookMapping(
        (Target("file_activity", 1, ("file",), ("creation",), "mknod", FILE, {"name": "name"}),)
    ),
    "inode_create": HookMapping(
        (Target("file_activity", 1, ("file",), ("creation",), "create", FILE, {"name": "name"}),)
    ),
    "inode_rmdir": HookMapping(
        (Target("file_activity", 4, ("file",), ("deletion",), "rmdir", FILE, {"name": "name", "inode": "ino"}),)
    ),
    "inode_setattr": HookMapping(
        (Target("file_activity", 6, ("file",), ("change",), "setattr", FILE, {"name": "file", "inode": "ino"}),)
    ),
    "inode_file_setattr": HookMapping((_FILE_FLAGS,)),
    "file_ioctl": HookMapping((_FILE_FLAGS,)),  # the fallback of inode_file_setattr: same events
    "file_fcntl": HookMapping(
        (Target("file_activity", 6, ("file",), ("change",), "fcntl", FILE, {"name": "file", "inode": "ino"}),)
    ),
    "inode_set_acl": HookMapping(
        (Target("file_activity", 7, ("file",), ("change",), "acl-set", FILE, {"name": "file", "inode": "ino"}),)
    ),
    "inode_setxattr": HookMapping((SETXATTR_SECURITY, SETXATTR_OTHER), _setxattr),
    "inode_removexattr": HookMapping((REMOVEXATTR_SECURITY, REMOVEXATTR_OTHER), _removexattr),
    "mmap_file": HookMapping((MMAP_MODULE, MMAP_ANON, MMAP_FILE), _mmap),
    "file_mprotect": HookMapping(
        (
            Target(
                "memory_activity",
                2,
                ("process",),
                ("change",),
                "mprotect",
                MEMORY,
                {"start": "vm_start", "end": "vm_end", "prot": "reqprot"},
            ),
        )
    ),
    "kernel_module_request": HookMapping(
        (
            Target(
                "kernel_extension_activity", 1, ("driver",), ("start",), "module-request", DRIVER, {"name": "kmod_name"}
            ),
        )
    ),
    "kernel_read_file": HookMapping((READ_MODULE, READ_OTHER), _kernel_read_file),
    "kernel_load_data": HookMapping((LOAD_MODULE, LOAD_OTHER), _kernel_load_data),
    "bpf": HookMapping((BPF_CREATE, BPF_DELETE, BPF_INVOKE, BPF_READ), _bpf),
    "sb_mount": HookMapping(
        (Target("file_activity", 12, ("file",), ("change",), "mount", FILE, {"path": "target", "folder": "1"}),)
    ),
    "socket_listen": HookMapping(
        (
            Target(
                "network_activity",
                7,
                ("network",),
                ("start",),
                "listen",
                NETWORK,
                {"side": "local"},
            ),
        )
    ),
    "socket_create": HookMapping(
        (
            Target(
                "kernel_activity",
                1,
                ("network",),
                ("info",),
                "socket-create",
                KERNEL,
                {"name": "family", "kind": "Socket"},
            ),
        )
    ),
    "netlink_send": HookMapping((AUDIT_DISABLE, AUDIT_ENABLE, AUDIT_CHANGE, NETLINK_OTHER), _netlink_send),
    "socket_connect": HookMapping(
        (Target("network_activity", 1, ("network",), ("connection", "start"), "connect", NETWORK),)
    ),
}


def target_of(hook: str, values: Values) -> Target:
    mapping = HOOK_MAPPINGS.get(hook)
    return mapping.target(values) if mapping is not None else GENERIC


# syslog priority (the hook's sidecar `priority`) -> OCSF severity_id
SEVERITY_OF_PRIORITY = {0: 6, 1: 5, 2: 5, 3: 4, 4: 3, 5: 2, 6: 1, 7: 1}
SEVERITY_CAPTIONS = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical", 6: "Fatal"}

# krsid's policy action -> (OCSF action_id, disposition_id); the call was allowed
# unless a deny rule denied it. would_deny: a deny rule in audit-only mode matched.
ACTION_OF_POLICY = {"audit": (1, 1), "ignore": (1, 16), "deny": (2, 2), "would_deny": (1, 15)}
ACTION_CAPTIONS = {1: "Allowed", 2: "Denied"}
DISPOSITION_CAPTIONS = {1: "Allowed", 2: "Blocked", 15: "Detected", 16: "No Action"}


def mapping_markdown() -> str:
    """The per-hook table for README.md (one row per target)."""
    rows = [
        "| hook | when | OCSF class (class_uid) | activity (activity_id) | ECS event.category | ECS event.type "
        "| ECS event.action |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for hook in sorted(HOOK_MAPPINGS):
        m = HOOK_MAPPINGS[hook]
        for t in m.targets:
            c = t.ocsf
            rows.append(
                f"| {hook} | {t.when or 'always'} | {c.caption} ({c.uid}) | {t.activity} ({t.activity_id}) "
                f"| {', '.join(t.ecs_category)} | {', '.join(t.ecs_type)} | {t.ecs_action} |"
            )
    g = GENERIC
    rows.append(
        f"| any other hook | not yet mapped | {g.ocsf.caption} ({g.ocsf.uid}) | Other (99) "
        f"| {', '.join(g.ecs_category)} | {', '.join(g.ecs_type)} | the hook name |"
    )
    return "\n".join(rows) + "\n"
