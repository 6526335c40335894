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
            fields:               # the hook's policy fields
              reqprot: {all: [EXEC]}   # all: / any: flag names or numbers, eq: / not: a value
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krsid.catalog import Catalog, HookSpec
from krsid.errors import ConfigError
from krsid.yamldoc import YamlDoc, expect, expect_mapping

ACTIONS: Mapping[str, int] = {"audit": 1, "ignore": 2, "deny": 3, "would_deny": 4}  # KRSID_ACT_*
RULES_PER_HOOK = 16  # KRSID_RULES_PER_HOOK
COMM_LEN = 16
MATCH_UID, MATCH_NOT_UID, MATCH_COMM, MATCH_CGROUP, MATCH_FIELD0 = 0x1, 0x2, 0x4, 0x8, 0x100
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


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()

    def for_hook(self, hook: str) -> list[Rule]:
        return [r for r in self.rules if r.hook == hook]


_RULE_KEYS = {"name", "hook", "action", "match"}
_MATCH_KEYS = {"uid", "comm", "cgroup", "fields"}


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
    return Rule(name, spec.name, action, uid, not_uid, comm, cgroup, tuple(fields))


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


@dataclass
class CompiledRule:
    """The values of one krsid_rule slot, by C member name."""

    values: dict[str, Any] = field(default_factory=dict)


def compile_rules(
    rules: list[Rule], *, resolve_cgroup: Callable[[str], tuple[int, int]] = cgroup_id_and_level
) -> list[CompiledRule]:
    out = []
    for r in rules:
        match = 0
        v: dict[str, Any] = {
            "action": ACTIONS[r.action],
            "uid": 0,
            "cgroup_id": 0,
            "cgroup_level": 0,
            "comm": b"",
            "field_arg": [0] * 4,
            "field_op": [0] * 4,
        }
        if r.uid is not None:
            match |= MATCH_UID
            v["uid"] = r.uid
        if r.not_uid is not None:
            match |= MATCH_NOT_UID
            v["uid"] = r.not_uid
        if r.comm is not None:
            match |= MATCH_COMM
            v["comm"] = r.comm.encode()
        if r.cgroup is not None:
            match |= MATCH_CGROUP
            v["cgroup_id"], v["cgroup_level"] = resolve_cgroup(r.cgroup)
        for fm in r.fields:
            match |= MATCH_FIELD0 << fm.slot
            v["field_arg"][fm.slot] = fm.arg
            v["field_op"][fm.slot] = fm.op
        v["match"] = match
        out.append(CompiledRule(v))
    return out
