"""Policy rules: YAML -> validated Rule objects -> BPF map slots.

A rule matches on the caller (uid, not-uid, comm, cgroup subtree) and on
hook-specific values the program offers (its sidecar's ``policy:`` fields, e.g.
file_mprotect's ``reqprot``); its action is audit, ignore, deny or would_deny
(a deny in audit-only mode: emitted and counted, not blocked). Rules compile to
entries of the ``krsid_rules`` map (struct krsid_rule in krsid.h): configuration
never becomes C text, and changing rules never recompiles or detaches anything.

Config shape::

    policy:
      rules:
        - name: deny-unprivileged-userns
          hook: userns_create
          action: deny            # audit | ignore | deny | would_deny
          match:
            uid: {not: 0}         # uid: N | {not: N}
            comm: unshare         # exact command name (<= 15 bytes)
            cgroup: /system.slice/app.service   # this cgroup and everything below it
            exe: /usr/bin/unshare # the caller's executable (this inode)
            exe_prefix: /opt/app  # the caller's executable lies below this directory (or a list)
            path_prefix: /tmp     # the hook's file lies below this directory (or a list)
            fields:               # the hook's policy fields
              reqprot: {all: [EXEC]}   # all: / any: flag names or numbers, eq: / not: a value
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krsid.catalog import Catalog, HookSpec
from krsid.errors import ConfigError
from krsid.yamldoc import YamlDoc, expect, expect_mapping

ACTIONS: Mapping[str, int] = {"audit": 1, "ignore": 2, "deny": 3, "would_deny": 4}  # KRSID_ACT_*
# KRSID_RULES_PER_HOOK: every compile asserts the two agree (-DKRSID_RULES_PER_HOOK_EXPECTED).
RULES_PER_HOOK = 128
COMM_LEN = 16
POLICY_FIELDS = 4  # KRSID_POLICY_FIELDS
# KRSID_MATCH_* in krsid.h
MATCH_UID, MATCH_NOT_UID, MATCH_COMM, MATCH_CGROUP = 0x1, 0x2, 0x4, 0x8
MATCH_EXE, MATCH_EXE_PREFIX, MATCH_FILE_PREFIX, MATCH_FILE_ANY = 0x10, 0x20, 0x40, 0x80
MATCH_FIELD0, MATCH_EXE_ANY = 0x100, 0x1000
DIR_KIND_FILE, DIR_KIND_EXE = 0, 1  # KRSID_DIR_KIND_*
FIELD_OPS: Mapping[str, int] = {"all": 1, "any": 2, "eq": 3, "not": 4}  # KRSID_FIELD_OP_*
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(frozen=True)
class FieldMatch:
    slot: int
    op: int
    arg: int


@dataclass(frozen=True)
class Rule:
    name: str
    hook: str
    action: str
    uid: int | None = None
    not_uid: int | None = None
    comm: str | None = None
    cgroup: str | None = None  # a cgroup v2 path, resolved to (id, level) when loaded
    fields: tuple[FieldMatch, ...] = ()
    exe: str | None = None  # a file, resolved to its inode when loaded
    exe_prefix: tuple[str, ...] = ()  # directories, resolved to inodes when loaded
    path_prefix: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()

    def for_hook(self, hook: str) -> list[Rule]:
        return [r for r in self.rules if r.hook == hook]


_RULE_KEYS = {"name", "hook", "action", "match"}
_MATCH_KEYS = {"uid", "comm", "cgroup", "fields", "exe", "exe_prefix", "path_prefix"}


def parse_policy(doc: YamlDoc, raw: Any, catalog: Catalog) -> Policy:
    top = expect_mapping(doc, raw, ("policy",), {"rules"})
    rules_raw = top.get("rules", [])
    if not isinstance(rules_raw, list):
        doc.fail(("policy", "rules"), "expected a list of rules")
    rules: list[Rule] = []
    names: set[str] = set()
    for i, item in enumerate(rules_raw):
        path: tuple[object, ...] = ("policy", "rules", i)
        r = expect_mapping(doc, item, path, _RULE_KEYS)
        for required in ("name", "hook", "action"):
            if required not in r:
                doc.fail(path, f"a rule needs {required!r}")
        name = expect(doc, r["name"], (*path, "name"), str, "a rule name")
        if not name or set(name) - NAME_CHARS or len(name) > 64:
            doc.fail((*path, "name"), "rule names are 1-64 of a-z 0-9 - _ . (they become metric labels)")
        if name in names:
            doc.fail((*path, "name"), f"duplicate rule name {name!r}")
        names.add(name)
        hook = expect(doc, r["hook"], (*path, "hook"), str, "a hook name")
        if hook not in catalog:
            doc.fail((*path, "hook"), f"unknown hook {hook!r}")
        if catalog[hook].fallback_for:
            primary = catalog[hook].fallback_for
            doc.fail(
                (*path, "hook"),
                f"{hook} is the fallback program of {primary}: write the rule for {primary} "
                f"(its rules apply to {hook} wherever {hook} stands in for it)",
            )
        action = expect(doc, r["action"], (*path, "action"), str, "an action")
        if action not in ACTIONS:
            doc.fail((*path, "action"), f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        rules.append(
            _rule(
                doc,
                (*path, "match"),
                expect_mapping(doc, r.get("match"), (*path, "match"), _MATCH_KEYS),
                name,
                catalog[hook],
                action,
            )
        )
    for hook in catalog.hooks:
        n = sum(1 for r in rules if r.hook == hook)
        if n > RULES_PER_HOOK:
            doc.fail(("policy", "rules"), f"{n} rules for {hook}; at most {RULES_PER_HOOK} per hook")
    return Policy(tuple(rules))


def _rule(doc: YamlDoc, path: tuple[object, ...], m: dict[str, Any], name: str, spec: HookSpec, action: str) -> Rule:
    uid = not_uid = None
    if "uid" in m:
        u = m["uid"]
        if isinstance(u, dict):
            neg = expect_mapping(doc, u, (*path, "uid"), {"not"})
            not_uid = _uid(doc, neg.get("not"), (*path, "uid", "not"))
        else:
            uid = _uid(doc, u, (*path, "uid"))
    comm = None
    if "comm" in m:
        comm = expect(doc, m["comm"], (*path, "comm"), str, "a command name")
        if not comm or len(comm.encode()) >= COMM_LEN:
            doc.fail((*path, "comm"), f"a command name is 1-{COMM_LEN - 1} bytes (the kernel truncates comm)")
    cgroup = None
    if "cgroup" in m:
        cgroup = expect(doc, m["cgroup"], (*path, "cgroup"), str, "a cgroup path")
        if not cgroup.startswith("/"):
            doc.fail((*path, "cgroup"), "a cgroup v2 path starting with / (as in /proc/PID/cgroup)")
    fields: list[FieldMatch] = []
    for fname, cond in expect_mapping(doc, m.get("fields"), (*path, "fields")).items():
        fpath = (*path, "fields", fname)
        try:
            pf = spec.policy_field(fname)
        except KeyError:
            known = ", ".join(f.name for f in spec.policy_fields) or "none"
            doc.fail(fpath, f"{spec.name} has no policy field {fname!r} (it has: {known})")
        if not isinstance(cond, dict):
            cond = {"eq": cond}
        c = expect_mapping(doc, cond, fpath, set(FIELD_OPS))
        if len(c) != 1:
            doc.fail(fpath, f"give exactly one of {', '.join(FIELD_OPS)}")
        ((op, arg),) = c.items()
        try:
            if op in ("all", "any"):
                items = arg if isinstance(arg, list) else [arg]
                value = 0
                for it in items:
                    value |= pf.value_of(it)
            else:
                value = pf.value_of(arg)
        except ValueError as e:
            doc.fail((*fpath, op), str(e))
        if not 0 <= value < 1 << 64:
            doc.fail((*fpath, op), "out of range for a 64-bit value")
        fields.append(FieldMatch(pf.slot, FIELD_OPS[op], value))
    exe = None
    if "exe" in m:
        exe = expect(doc, m["exe"], (*path, "exe"), str, "an executable's absolute path")
        _check_path(doc, (*path, "exe"), exe, directory=False)
    exe_prefix = _directories(doc, m, "exe_prefix", path)
    path_prefix = _directories(doc, m, "path_prefix", path)
    if path_prefix and not spec.policy_path:
        with_file = "path_prefix works on hooks with a file"
        doc.fail((*path, "path_prefix"), f"{spec.name} has no file to match; {with_file}")
    return Rule(name, spec.name, action, uid, not_uid, comm, cgroup, tuple(fields), exe, exe_prefix, path_prefix)


def _directories(doc: YamlDoc, m: dict[str, Any], key: str, path: tuple[object, ...]) -> tuple[str, ...]:
    """A directory or a list of them, each absolute and existing (checked again when loaded)."""
    if key not in m:
        return ()
    raw = m[key]
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        doc.fail((*path, key), "give a directory or a non-empty list of directories")
    out: list[str] = []
    for i, item in enumerate(items):
        where = (*path, key, i) if isinstance(raw, list) else (*path, key)
        d = expect(doc, item, where, str, "a directory's absolute path")
        _check_path(doc, where, d, directory=True)
        out.append(d)
    return tuple(out)


def _check_path(doc: YamlDoc, where: tuple[object, ...], p: str, *, directory: bool) -> None:
    what = "directory" if directory else "file"
    if not p.startswith("/"):
        doc.fail(where, f"an absolute path to a {what}, got {p!r}")
    try:
        st = os.stat(p)
    except OSError as e:
        doc.fail(where, f"{p}: {e.strerror} (the {what} must exist: rules match its inode)")
    if directory and not stat.S_ISDIR(st.st_mode):
        doc.fail(where, f"{p} is not a directory (a prefix is a directory; for one file use exe)")
    if not directory and stat.S_ISDIR(st.st_mode):
        doc.fail(where, f"{p} is a directory; exe names one executable file (see exe_prefix)")


def _uid(doc: YamlDoc, v: Any, path: tuple[object, ...]) -> int:
    n = expect(doc, v, path, int, "a numeric uid")
    if not 0 <= n < 1 << 32:
        doc.fail(path, "a uid is 0..4294967295")
    return n


# -- compile -------------------------------------------------------------------------------


def cgroup_id_and_level(path: str, root: Path = Path("/sys/fs/cgroup")) -> tuple[int, int]:
    """cgroup v2 id (the directory's inode number) and depth (/ is level 0)."""
    rel = path.strip("/")
    try:
        ino = os.stat(root / rel).st_ino if rel else os.stat(root).st_ino
    except OSError as e:
        raise ConfigError(f"cgroup {path}: {e.strerror} under {root}") from None
    return ino, len([p for p in rel.split("/") if p])


def kernel_inode(path: str) -> tuple[int, int]:
    """(s_dev as the kernel holds it, inode number) of a path, symlinks followed.

    stat's st_dev is the user-space encoding; the kernel's dev_t is MAJOR << 20 | MINOR.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror} (a policy rule names it)") from None
    return (os.major(st.st_dev) << 20) | os.minor(st.st_dev), st.st_ino


@dataclass
class CompiledRule:
    """The values of one krsid_rule slot, by C member name, and the directories
    (kind, dev, ino) its prefix matchers name (entries of krsid_dirs)."""

    values: dict[str, Any] = field(default_factory=dict)
    dirs: list[tuple[int, int, int]] = field(default_factory=list)


def comm_words(comm: str) -> list[int]:
    """The command name as krsid_rule.comm holds it: NUL-padded to 16 bytes, two little-endian words."""
    raw = comm.encode().ljust(COMM_LEN, b"\0")
    return [int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")]


def compile_rules(
    rules: list[Rule],
    *,
    resolve_cgroup: Callable[[str], tuple[int, int]] = cgroup_id_and_level,
    resolve_inode: Callable[[str], tuple[int, int]] = kernel_inode,
) -> list[CompiledRule]:
    """One hook's rules, in order. Slot 0 also carries ``needs``, the OR of every
    rule's match bits: the program reads the caller's comm, exe or walks
    directories only when some rule needs them."""
    out: list[CompiledRule] = []
    for r in rules:
        match = 0
        dirs: list[tuple[int, int, int]] = []
        v: dict[str, Any] = {
            "action": ACTIONS[r.action],
            "uid": 0,
            "cgroup_id": 0,
            "cgroup_level": 0,
            "comm": [0, 0],
            "exe_dev": 0,
            "exe_ino": 0,
            "needs": 0,
            "field_arg": [0] * POLICY_FIELDS,
            "field_op": [0] * POLICY_FIELDS,
        }
        if r.uid is not None:
            match |= MATCH_UID
            v["uid"] = r.uid
        if r.not_uid is not None:
            match |= MATCH_NOT_UID
            v["uid"] = r.not_uid
        if r.comm is not None:
            match |= MATCH_COMM
            v["comm"] = comm_words(r.comm)
        if r.cgroup is not None:
            match |= MATCH_CGROUP
            v["cgroup_id"], v["cgroup_level"] = resolve_cgroup(r.cgroup)
        for fm in r.fields:
            match |= MATCH_FIELD0 << fm.slot
            v["field_arg"][fm.slot] = fm.arg
            v["field_op"][fm.slot] = fm.op
        if r.exe is not None:
            match |= MATCH_EXE
            v["exe_dev"], v["exe_ino"] = resolve_inode(r.exe)
        for kind, prefixes, any_bit, prefix_bit in (
            (DIR_KIND_EXE, r.exe_prefix, MATCH_EXE_ANY, MATCH_EXE_PREFIX),
            (DIR_KIND_FILE, r.path_prefix, MATCH_FILE_ANY, MATCH_FILE_PREFIX),
        ):
            if not prefixes:
                continue
            if "/" in prefixes or any(os.path.normpath(p) == "/" for p in prefixes):
                # d_parent walks end at each filesystem's root: "/" is "any file" instead.
                match |= any_bit
                continue
            match |= prefix_bit
            dirs += [(kind, *resolve_inode(p)) for p in prefixes]
        v["match"] = match
        v["number"] = len(out) + 1  # the slot + 1: the event's `rule`
        out.append(CompiledRule(v, dirs))
    if out:
        needs = 0
        for c in out:
            needs |= c.values["match"]
        out[0].values["needs"] = needs
    return out
