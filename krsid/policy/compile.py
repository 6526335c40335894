"""Policy rules, compiled: Rule -> the members of one ``struct krsid_rule`` slot, plus the
directories (``krsid_dirs`` entries) its prefix matchers name.

Every code written (action, match bits, field operators, directory kinds) is the
catalog contract's, i.e. krsid.h's; files are resolved to the ids the kernel
compares and cgroup paths to their directories and ids (so compiling can fail:
ConfigError when one is gone).
The leaf values are keyed by C member name; the loader writes them through a
checked writer (krsid.pipeline.leaf) that refuses a name the struct lacks.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krsid.catalog import Contract
from krsid.errors import ConfigError
from krsid.policy.parse import Rule

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CgroupRef:
    """A rule's cgroup: its directory as krsid's cgroup namespace shows it, which the
    loader opens to hand the kernel the cgroup itself, and the cgroup's id (the
    directory's inode number), which tells a cgroup made again under the same path
    (systemd does that when a service restarts) from the one the maps hold."""

    directory: str
    id: int


def cgroup_ref(path: str, root: Path | None = None) -> CgroupRef:
    """A rule's cgroup v2 path, resolved under ``root`` (default /sys/fs/cgroup).

    ConfigError if it is missing or not a directory, and if ``root`` is not a cgroup
    v2 tree (no cgroup.controllers): a cgroup v1 directory would be refused by the
    kernel, or worse, name another cgroup."""
    root = CGROUP_ROOT if root is None else root
    if not (root / "cgroup.controllers").exists():
        raise ConfigError(f"cgroup {path}: cgroup rules need cgroup v2 mounted at {root} (this machine has none there)")
    rel = path.strip("/")
    directory = root / rel if rel else root
    try:
        st = os.stat(directory)
    except OSError as e:
        raise ConfigError(f"cgroup {path}: {e.strerror} under {root}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"cgroup {path}: not a directory under {root}")
    return CgroupRef(str(directory), st.st_ino)


def kernel_inode(path: str) -> tuple[int, int]:
    """(s_dev as the kernel holds it, inode number) of a path, symlinks followed.

    stat's st_dev is the user-space encoding; the kernel's dev_t is MAJOR << 20 | MINOR.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror} (a policy rule names it)") from None
    return (os.major(st.st_dev) << 20) | os.minor(st.st_dev), st.st_ino


def names_root(path: str, root: str = "/") -> bool:
    """True if ``path`` is the root directory, by identity (st_dev, st_ino), not by
    spelling: "//" is the root; "/bin/.." is /usr where /bin links to usr/bin (the
    kernel resolves ".." after the link), though os.path.normpath makes it "/".

    A prefix that names the root matches every file (exe_prefix: every executable),
    so it compiles to the match's ANY bit instead of a directory entry. A path that
    cannot be stat'ed is not the root (the policy parser refuses it already).
    ``root``: the directory standing for "/" (tests use a temporary one).
    """
    try:
        st, root_st = os.stat(path), os.stat(root)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (root_st.st_dev, root_st.st_ino)


@dataclass
class CompiledRule:
    """The values of one krsid_rule slot, by C member name, the directories
    (kind, dev, ino) its prefix matchers name (entries of krsid_dirs), and the
    cgroup (an entry of krsid_rule_cgroups; its slot, and so ``cgroup_slot``, is
    the bank layout's to give)."""

    values: dict[str, Any] = field(default_factory=dict)
    dirs: list[tuple[int, int, int]] = field(default_factory=list)
    cgroup: CgroupRef | None = None


def comm_words(comm: str, comm_len: int) -> list[int]:
    """The command name as krsid_rule.comm holds it: NUL-padded to comm_len
    (KRSID_COMM_LEN) bytes, as little-endian 64-bit words."""
    raw = comm.encode().ljust(comm_len, b"\0")
    return [int.from_bytes(raw[i : i + 8], "little") for i in range(0, comm_len, 8)]


def compile_rules(
    rules: list[Rule],
    contract: Contract,
    *,
    resolve_cgroup: Callable[[str], CgroupRef] = cgroup_ref,
    resolve_inode: Callable[[str], tuple[int, int]] = kernel_inode,
) -> list[CompiledRule]:
    """One hook's rules, in order. Slot 0 also carries ``needs``, the OR of every
    rule's match bits: the program reads the caller's comm, exe or walks
    directories only when some rule needs them."""
    bit = contract.match
    kind = contract.dir_kinds
    out: list[CompiledRule] = []
    for r in rules:
        match = 0
        dirs: list[tuple[int, int, int]] = []
        v: dict[str, Any] = {
            "action": contract.actions[r.action],
            "uid": 0,
            "cgroup_slot": 0,
            "comm": comm_words("", contract.comm_len),
            "exe_dev": 0,
            "exe_ino": 0,
            "needs": 0,
            "field_arg": [0] * contract.policy_fields,
            "field_op": [0] * contract.policy_fields,
        }
        if r.uid is not None:
            match |= bit["UID"]
            v["uid"] = r.uid
        if r.not_uid is not None:
            match |= bit["NOT_UID"]
            v["uid"] = r.not_uid
        if r.comm is not None:
            match |= bit["COMM"]
            v["comm"] = comm_words(r.comm, contract.comm_len)
        cgroup = None
        if r.cgroup is not None:
            match |= bit["CGROUP"]
            cgroup = resolve_cgroup(r.cgroup)
        for fm in r.fields:
            match |= bit["FIELD0"] << fm.slot
            v["field_arg"][fm.slot] = fm.arg
            v["field_op"][fm.slot] = fm.op
        if r.exe is not None:
            match |= bit["EXE"]
            v["exe_dev"], v["exe_ino"] = resolve_inode(r.exe)
        for dir_kind, prefixes, any_bit, prefix_bit in (
            (kind["EXE"], r.exe_prefix, bit["EXE_ANY"], bit["EXE_PREFIX"]),
            (kind["FILE"], r.path_prefix, bit["FILE_ANY"], bit["FILE_PREFIX"]),
        ):
            if not prefixes:
                continue
            if any(names_root(p) for p in prefixes):
                # d_parent walks end at each filesystem's root: "/" is "any file" instead.
                match |= any_bit
                continue
            match |= prefix_bit
            dirs += [(dir_kind, *resolve_inode(p)) for p in prefixes]
        v["match"] = match
        v["number"] = len(out) + 1  # the slot + 1: the event's `rule`
        out.append(CompiledRule(v, dirs, cgroup))
    if out:
        needs = 0
        for c in out:
            needs |= c.values["match"]
        out[0].values["needs"] = needs
    return out
