"""Policy, in one place: rules from YAML to the kernel's maps, and the live state.

- ``parse``: the ``policy:`` section -> Rule objects, validated against the catalog;
- ``compile``: Rule -> the members of a ``struct krsid_rule`` slot and its directories;
- ``banks``: the two-bank layout of krsid_rules / krsid_dirs / krsid_rule_hits / krsid_rule_cgroups;
- ``state``: the active bank, its rules by hook, retired hit counts, rule names.

Every code and size comes from the catalog's contract (krsid.h). Writing the maps is
krsid.pipeline.load's job (it alone imports bcc), through the checked leaf writer.
"""

from krsid.policy.banks import BankLayout, DirEntry, RuleSlot
from krsid.policy.compile import (
    CgroupRef,
    CompiledRule,
    cgroup_ref,
    comm_words,
    compile_rules,
    kernel_inode,
    names_root,
)
from krsid.policy.parse import BLOCKING_ACTIONS, FIELD_OPS, FieldMatch, Policy, Rule, parse_policy
from krsid.policy.state import PolicyMaps, PolicyState, compile_policy

__all__ = [
    "BLOCKING_ACTIONS",
    "FIELD_OPS",
    "BankLayout",
    "CgroupRef",
    "CompiledRule",
    "DirEntry",
    "FieldMatch",
    "Policy",
    "PolicyMaps",
    "PolicyState",
    "Rule",
    "RuleSlot",
    "cgroup_ref",
    "comm_words",
    "compile_policy",
    "compile_rules",
    "kernel_inode",
    "names_root",
    "parse_policy",
]
