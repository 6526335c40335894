"""Policy rules, parsed: YAML -> validated Rule objects (compile.py makes them map leaves).

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

A deny or would_deny rule must have ``match``; ``match: {}`` (every call of the
hook) has to be written out, so a forgotten ``match`` never blocks every call.

Action names and their codes, the comm length and the number of policy fields come
from the catalog's contract (krsid.h), never from here.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from krsid.catalog import Catalog, Contract, HookSpec
from krsid.yamldoc import YamlDoc, expect, expect_mapping

# Actions that (would) block a call: each needs an explicit `match` (`match: {}` for every call).
BLOCKING_ACTIONS = ("deny", "would_deny")
# A field condition's YAML word -> the KRSID_FIELD_OP_<NAME> it compiles to.
FIELD_OPS: Mapping[str, str] = {"all": "ALL", "any": "ANY", "eq": "EQ", "not": "NE"}
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
    # The constants of the catalog the rules were checked against (None: no policy
    # section, so no rules to compile).
    contract: Contract | None = None

    def for_hook(self, hook: str) -> list[Rule]:
        return [r for r in self.rules if r.hook == hook]


_RULE_KEYS = {"name", "hook", "action", "match"}
_MATCH_KEYS = {"uid", "comm", "cgroup", "fields", "exe", "exe_prefix", "path_prefix"}


def parse_policy(doc: YamlDoc, raw: Any, catalog: Catalog) -> Policy:
    contract = catalog.contract
    actions = contract.actions
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
        if action not in actions:
            doc.fail((*path, "action"), f"unknown action {action!r}; one of {', '.join(actions)}")
        if action in BLOCKING_ACTIONS and r.get("match") is None:
            # A rule without matchers matches every call of its hook: a deny on
            # bprm_check_security would block every exec on the machine. Forgetting
            # `match:` (or leaving it empty) must not do that silently.
            doc.fail(
                (*path, "match") if "match" in r else (*path, "action"),
                f"a {action} rule without 'match' applies to every {hook} call on this machine; "
                "add matchers under 'match', or write 'match: {}' if you really mean every call",
            )
        rules.append(
            _rule(
                doc,
                (*path, "match"),
                expect_mapping(doc, r.get("match"), (*path, "match"), _MATCH_KEYS),
                name,
                catalog[hook],
                action,
                contract,
            )
        )
    for hook in catalog.hooks:
        n = sum(1 for r in rules if r.hook == hook)
        if n > contract.rules_per_hook:
            doc.fail(("policy", "rules"), f"{n} rules for {hook}; at most {contract.rules_per_hook} per hook")
    # As compile resolves them: "/a//b/" is /a/b (krsid_rule_cgroups holds each once).
    cgroups = {tuple(filter(None, r.cgroup.split("/"))) for r in rules if r.cgroup is not None}
    if len(cgroups) > contract.policy_cgroups:
        doc.fail(("policy", "rules"), f"{len(cgroups)} different cgroups; at most {contract.policy_cgroups}")
    return Policy(tuple(rules), contract)


def _rule(
    doc: YamlDoc,
    path: tuple[object, ...],
    m: dict[str, Any],
    name: str,
    spec: HookSpec,
    action: str,
    contract: Contract,
) -> Rule:
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
        if not comm or len(comm.encode()) >= contract.comm_len:
            doc.fail((*path, "comm"), f"a command name is 1-{contract.comm_len - 1} bytes (the kernel truncates comm)")
    cgroup = None
    if "cgroup" in m:
        cgroup = expect(doc, m["cgroup"], (*path, "cgroup"), str, "a cgroup path")
        if not cgroup.startswith("/"):
            doc.fail((*path, "cgroup"), "a cgroup v2 path starting with / (as in /proc/PID/cgroup)")
        if {".", ".."} & set(cgroup.split("/")):
            doc.fail((*path, "cgroup"), "a cgroup path with no . or .. in it (it must stay under /sys/fs/cgroup)")
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
        fields.append(FieldMatch(pf.slot, contract.field_ops[FIELD_OPS[op]], value))
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
