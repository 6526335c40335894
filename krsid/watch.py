"""The file-integrity watch: which files, directories and basenames krsid watches for
writes, creation, renames, links and deletion (and which directories by their names,
wherever they are), which log directories it watches
for truncation, edits in place, deletion and renames, and which basenames (secrets: private keys,
credential files) it watches for reads by anyone but their owner (the config's
``watch:``).

Its one home. The kernel side is krsid.h's krsid_watch_find (the maps
krsid_watch_files, keyed by (device, inode), and krsid_watch_names, keyed by a
NUL-padded basename, and krsid_watch_dirs, keyed by a directory's name, its
parent's and its grandparent's); the hooks that report watched files call it (file_open for
writes, inode_rename, inode_link, inode_unlink). Here: the config section and its
defaults, the resolution of paths to (device, inode) and the append-only table of
watch ids that events carry.

Paths are watched by identity, as the policy's path_prefix: a hard link to a watched
file, a bind mount of a watched directory or a file renamed into one is still the
watched inode or lies below it. A configured path that does not exist is not an
error (a fresh host may have no /etc/cron.d): it is logged and looked up again every
second (the daemon's refresh). Names are for files anywhere (every home's authorized_keys).
Directories by name (``dirs``: ``.config/autostart``, ``.config/systemd/user``) are
for what has no fixed path and may not exist yet: a directory whose last one to three
names match, in any home, the names in it and those one directory below (a unit's
drop-in directory, a target's .wants links).

Each entry reports a set of operations (krsid.h, KRSID_WATCH_OP_*), held in its map
value above the id: ``paths``, ``names`` and ``dirs`` report every change; ``logs`` only those
that destroy what a log holds (truncation of a file with data, deletion, renames), as
the files below it are written all day; ``secrets`` only reads, by a process whose
fsuid is not the file's owner (file_open). Where entries nest, the nearest one decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from krsid.catalog import Contract
from krsid.errors import ConfigError
from krsid.policy import kernel_inode
from krsid.yamldoc import YamlDoc, expect, expect_mapping

# The shipped watch list (README: File-integrity watch), by the attacker behaviour each
# line answers. Directories cover everything below them (16 levels, on their filesystem).
DEFAULT_PATHS: tuple[str, ...] = (
    # dynamic-linker preload and search path: code in every process
    "/etc/ld.so.preload",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    # scheduled and started at boot: cron, systemd units, SysV init, rc.local
    "/etc/crontab",
    "/etc/cron.d",
    "/etc/cron.hourly",
    "/etc/cron.daily",
    "/etc/cron.weekly",
    "/etc/cron.monthly",
    "/var/spool/cron",
    "/etc/systemd/system",
    "/etc/systemd/user",
    "/etc/init.d",
    "/etc/rc.local",
    "/etc/anacrontab",
    "/etc/xdg/autostart",
    # run as root by a service on its own occasion: every login's message of the day
    # (pam_motd), apt's hooks (APT::Update::Pre-Invoke), network changes, sshd's sshrc
    "/etc/update-motd.d",
    "/etc/apt/apt.conf.d",
    "/etc/NetworkManager/dispatcher.d",
    "/etc/ssh/sshrc",
    # accounts, privilege and authentication
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/doas.conf",
    "/etc/polkit-1",
    "/etc/pam.d",
    "/etc/security",
    "/etc/nsswitch.conf",
    "/etc/ssh/sshd_config",
    "/etc/ssh/sshd_config.d",
    "/root/.ssh",
    # shell start-up for every login
    "/etc/profile",
    "/etc/profile.d",
    "/etc/bash.bashrc",
    "/etc/environment",
    # kernel modules, device events and kernel parameters at boot
    "/etc/modprobe.d",
    "/etc/modules",
    "/etc/modules-load.d",
    "/etc/udev/rules.d",
    "/etc/sysctl.conf",
    "/etc/sysctl.d",
    "/etc/initramfs-tools",
    # name resolution
    "/etc/hosts",
)
DEFAULT_NAMES: tuple[str, ...] = (
    # per-user persistence, in any home
    "authorized_keys",
    "authorized_keys2",
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".profile",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zlogin",
    ".bash_logout",
    ".xprofile",
    ".xsessionrc",
    ".pam_environment",
    # anti-forensics: history files deleted, truncated or linked to /dev/null
    ".bash_history",
    ".zsh_history",
    # kernel hand-offs to user space: programs the kernel runs as root (a crash's
    # core_pattern pipe, module autoload's /proc/sys/kernel/modprobe, the uevent helper
    # in /sys/kernel/uevent_helper or /proc/sys/kernel/hotplug, a cgroup v1 release
    # agent). proc, sysfs and cgroupfs inodes are not stable, so these go by name.
    "core_pattern",
    "modprobe",
    "uevent_helper",
    "hotplug",
    "release_agent",
    # a preload file that does not exist yet has no inode to watch
    "ld.so.preload",
)


# Per-user persistence that has no fixed path (ATT&CK T1543.002, T1547.013), in every
# home: a directory by its last names, the directory itself and the files directly in
# it. The user's systemd units (started by the user's manager at login, or at boot
# with lingering: ~/.config/systemd/user, and share/systemd/user for
# ~/.local/share/systemd/user and /usr/local/share/systemd/user), XDG autostart
# entries (run at every desktop login) and the user manager's environment (an
# LD_PRELOAD for every user service). The packages' /usr/lib/systemd/user is not
# matched: three names tell it apart. An entry may end in a file's name, which then
# matches that file (level 0): per-user files whose own names are too common to
# watch anywhere, sshd's ~/.ssh/rc (run at each login of the user, before the shell)
# and ~/.ssh/environment (read at login where PermitUserEnvironment allows it).
DEFAULT_DIRS: tuple[str, ...] = (
    ".config/systemd/user",
    "share/systemd/user",
    ".config/autostart",
    ".config/environment.d",
    ".ssh/rc",
    ".ssh/environment",
)


# Credentials by name, in any home (ATT&CK T1552.004 private keys, T1552.001
# credentials in files, T1552.003 shell history): reported when a process that does
# not own the file opens it for reading (root or a service harvesting users' keys),
# never for the owner's own reads (ssh reading its user's key, git its credentials).
DEFAULT_SECRETS: tuple[str, ...] = (
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    "id_ecdsa_sk",
    "id_ed25519_sk",
    ".git-credentials",
    ".netrc",
    ".pgpass",
    ".my.cnf",
    ".vault-token",
    ".bash_history",
    ".zsh_history",
)


# Log tampering (ATT&CK T1070.002: clearing auth.log, wtmp, the journal): truncation,
# deletion and renames only. logrotate and journald's own rotation are reported too
# (README: File-integrity watch).
DEFAULT_LOGS: tuple[str, ...] = ("/var/log",)


@dataclass(frozen=True)
class WatchConfig:
    paths: tuple[str, ...] = DEFAULT_PATHS
    names: tuple[str, ...] = DEFAULT_NAMES
    logs: tuple[str, ...] = DEFAULT_LOGS
    secrets: tuple[str, ...] = DEFAULT_SECRETS
    dirs: tuple[str, ...] = DEFAULT_DIRS


def parse_watch(doc: YamlDoc, raw: Any, contract: Contract) -> WatchConfig:
    """The ``watch:`` section: ``paths`` and ``logs`` (absolute), ``names`` and
    ``secrets`` (basenames), ``dirs`` (one to three names), each replacing its default
    list when given; ``[]`` turns that part off."""
    body = expect_mapping(doc, raw, ("watch",), {"paths", "names", "logs", "secrets", "dirs"})
    default = WatchConfig()
    paths = _absolute_paths(doc, body.get("paths", list(default.paths)), "paths")
    logs = _absolute_paths(doc, body.get("logs", list(default.logs)), "logs")
    names = _file_names(doc, body.get("names", list(default.names)), "names", contract)
    secrets = _file_names(doc, body.get("secrets", list(default.secrets)), "secrets", contract)
    dirs = _dir_names(doc, body.get("dirs", list(default.dirs)), contract)
    if len(paths) + len(logs) > contract.watch_files:
        doc.fail(
            ("watch", "paths"),
            f"at most {contract.watch_files} paths and logs together (krsid_watch_files), got {len(paths) + len(logs)}",
        )
    if len(distinct := {*names, *secrets}) > contract.watch_names:
        doc.fail(
            ("watch", "names"),
            f"at most {contract.watch_names} distinct names and secrets together (krsid_watch_names), "
            f"got {len(distinct)}",
        )
    if len(set(dirs)) > contract.watch_dirs:
        doc.fail(("watch", "dirs"), f"at most {contract.watch_dirs} dirs (krsid_watch_dirs), got {len(set(dirs))}")
    return WatchConfig(
        paths=tuple(dict.fromkeys(paths)),
        names=tuple(dict.fromkeys(names)),
        logs=tuple(dict.fromkeys(logs)),
        secrets=tuple(dict.fromkeys(secrets)),
        dirs=tuple(dict.fromkeys(dirs)),
    )


def _file_names(doc: YamlDoc, raw: Any, key: str, contract: Contract) -> list[str]:
    names = _strings(doc, raw, key)
    longest = contract.watch_name_len - 2  # the key keeps a NUL, and a cut name must not match
    for i, n in enumerate(names):
        if not n or "/" in n or "\0" in n or n in (".", "..") or len(n.encode()) > longest:
            doc.fail(("watch", key, i), f"must be a file name (no '/') of 1..{longest} bytes, got {n!r}")
    return names


def _dir_names(doc: YamlDoc, raw: Any, contract: Contract) -> list[str]:
    """``dirs`` entries: a directory's last one to three names ("a", "a/b", "a/b/c")."""
    entries = _strings(doc, raw, "dirs")
    longest = contract.watch_dir_name_len - 2  # as _file_names: a NUL, and a cut name must not match
    for i, entry in enumerate(entries):
        names = entry.split("/")
        if not 1 <= len(names) <= 3 or any(
            not n or "\0" in n or n in (".", "..") or len(n.encode()) > longest for n in names
        ):
            doc.fail(
                ("watch", "dirs", i),
                f"must be a directory's last one to three names ('.config/systemd/user'), "
                f"each of 1..{longest} bytes, got {entry!r}",
            )
    return entries


def _absolute_paths(doc: YamlDoc, raw: Any, key: str) -> list[str]:
    paths = _strings(doc, raw, key)
    for i, p in enumerate(paths):
        if not p.startswith("/") or "\0" in p:
            doc.fail(("watch", key, i), f"must be an absolute path, got {p!r}")
    return paths


def _strings(doc: YamlDoc, raw: Any, key: str) -> list[str]:
    items = expect(doc, raw, ("watch", key), list, "a list of strings")
    for i, item in enumerate(items):
        expect(doc, item, ("watch", key, i), str, "a string")
    return list(items)


class WatchTable:
    """Watch ids, as the kernel's maps hold them and events carry them: 1 + an entry's
    index, never reused. Append-only, so an event written before a reload still names
    its entry after it; bounded by the distinct entries ever configured."""

    def __init__(self) -> None:
        self._entries: list[str] = []
        self._ids: dict[str, int] = {}

    def id_of(self, entry: str) -> int:
        known = self._ids.get(entry)
        if known is None:
            self._entries.append(entry)
            known = self._ids[entry] = len(self._entries)
        return known

    def entry(self, watch_id: int) -> str:
        """The configured path or name behind an id; "" for 0 (nothing watched matched)."""
        if 0 < watch_id <= len(self._entries):
            return self._entries[watch_id - 1]
        return "" if watch_id == 0 else f"unknown-{watch_id}"


@dataclass(frozen=True)
class ResolvedWatch:
    """What goes into the kernel's maps: (dev, ino) -> value, basename key -> value and
    directory key (dir_key) -> value, each value an entry's id and its operations
    (map_value)."""

    files: Mapping[tuple[int, int], int]
    names: Mapping[bytes, int]
    dirs: Mapping[bytes, int]
    missing: tuple[str, ...]  # configured paths that do not exist (not watched until a refresh finds them)


def map_value(watch_id: int, ops: int, contract: Contract) -> int:
    """A watch map's value (krsid.h): the id in the low watch_id_bits, the operations above."""
    if not 0 < watch_id < 1 << contract.watch_id_bits:
        raise ValueError(f"watch id {watch_id} does not fit in {contract.watch_id_bits} bits")
    return ops << contract.watch_id_bits | watch_id


def dir_key(entry: str, contract: Contract) -> bytes:
    """A ``dirs`` entry's krsid_watch_dirs key (krsid.h, struct krsid_watch_dir_key): the
    directory's own name, its parent's, its grandparent's ("" past the entry's names),
    each NUL-padded to watch_dir_name_len bytes."""
    names = entry.split("/")[::-1]
    size = contract.watch_dir_name_len
    return b"".join(n.encode()[: size - 1].ljust(size, b"\0") for n in (*names, "", "")[:3])


def name_filter(names: Iterable[bytes], contract: Contract) -> dict[int, int]:
    """The kernel's pre-filter of watched basenames (krsid.h, krsid_watch_name_filter):
    word len * per_len + (first byte >> 6) -> its bits, 1 << (first byte & 63). A
    name counts as its key does: cut to watch_name_len - 1 bytes."""
    return _length_filter(names, contract.watch_name_len, contract)


def dir_filter(keys: Iterable[bytes], contract: Contract) -> dict[int, int]:
    """The same pre-filter of the directories watched by name (krsid_watch_dir_filter),
    by each key's own name (dir_key)."""
    size = contract.watch_dir_name_len
    return _length_filter((k[:size].rstrip(b"\0") for k in keys), size, contract)


def _length_filter(names: Iterable[bytes], key_len: int, contract: Contract) -> dict[int, int]:
    per_length = contract.watch_name_filter_per_len
    words: dict[int, int] = {}
    for name in names:
        name = name[: key_len - 1]
        if name:
            word = len(name) * per_length + (name[0] >> 6)
            words[word] = words.get(word, 0) | 1 << (name[0] & 63)
    return words


def ino_filter(files: Iterable[tuple[int, int]], contract: Contract) -> dict[int, int]:
    """The kernel's pre-filter of watched inode numbers (krsid.h, krsid_watch_ino_filter):
    for each (device, inode), word (ino % bits) >> 6 -> its bits, 1 << (ino % 64)."""
    mask = contract.watch_ino_filter_bits - 1
    words: dict[int, int] = {}
    for _dev, ino in files:
        bit = ino & mask
        words[bit >> 6] = words.get(bit >> 6, 0) | 1 << (bit & 63)
    return words


def resolve_watch(watch: WatchConfig, table: WatchTable, contract: Contract) -> ResolvedWatch:
    """The maps' contents now. A path in both lists is watched as in ``paths`` (every
    operation); two paths of one inode keep the first one's id. A name in ``names``
    and ``secrets`` reports the operations of both."""
    files: dict[tuple[int, int], int] = {}
    missing = []
    for paths, ops in ((watch.paths, contract.watch_ops_all), (watch.logs, contract.watch_ops_logs)):
        for path in paths:
            try:
                identity = kernel_inode(path)
            except ConfigError:
                missing.append(path)
                continue
            if identity not in files:
                files[identity] = map_value(table.id_of(path), ops, contract)
    names = {n.encode(): map_value(table.id_of(n), contract.watch_ops_all, contract) for n in watch.names}
    reads = contract.watch_ops_secrets << contract.watch_id_bits
    for n in watch.secrets:  # a name in both lists keeps its `names` id and adds the reads
        key = n.encode()
        names[key] = (
            names[key] | reads if key in names else map_value(table.id_of(n), contract.watch_ops_secrets, contract)
        )
    dirs = {dir_key(d, contract): map_value(table.id_of(d), contract.watch_ops_all, contract) for d in watch.dirs}
    return ResolvedWatch(files, names, dirs, tuple(missing))


class WatchState:
    """The daemon's side of the watch: its ids, what the kernel's maps hold now
    (None until the first write completes) and the metrics about it."""

    def __init__(self) -> None:
        self.table = WatchTable()
        self.current: ResolvedWatch | None = None

    def metric_families(self) -> Iterator[Metric]:
        current = self.current
        entries = GaugeMetricFamily(
            "krsid_watch_entries",
            "File-integrity watch entries in the kernel's maps: paths and logs resolved to an inode, names "
            "(secrets included) and directories watched by name",
            labels=["kind"],
        )
        entries.add_metric(["path"], len(current.files) if current else 0)
        entries.add_metric(["name"], len(current.names) if current else 0)
        entries.add_metric(["dir"], len(current.dirs) if current else 0)
        yield entries
        yield GaugeMetricFamily(
            "krsid_watch_missing_paths",
            "Configured watch paths that do not exist (not watched; looked up again every second)",
            value=len(current.missing) if current else 0,
        )


def describe(resolved: ResolvedWatch) -> str:
    text = (
        f"{len(resolved.files)} path(s), {len(resolved.names)} name(s) and "
        f"{len(resolved.dirs)} directory name(s) watched"
    )
    if resolved.missing:
        text += f"; not present, not watched: {', '.join(resolved.missing)}"
    return text
