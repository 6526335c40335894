"""Where the policy lives in the BPF maps: two banks, switched atomically (krsid.h).

``krsid_rules`` holds 2 x KRSID_MAX_HOOKS x KRSID_RULES_PER_HOOK slots:
index = (bank * max_hooks + hook id) * rules_per_hook + slot; ``krsid_rule_hits``
is indexed the same way. ``krsid_policy_bank[0]`` names the active bank. A hook's
rules fill its slots from 0, followed by one empty slot (all zero) that ends the
list. ``krsid_dirs`` maps (bank * max_hooks + hook id, kind, dev, ino) to the rule
slots (one bit each, in 64-bit words) whose prefix matchers name that directory.
``krsid_rule_cgroups`` holds 2 x KRSID_POLICY_CGROUPS cgroups: each distinct cgroup
the bank's rules name gets index bank * cgroups_per_bank + i, and a rule's
``cgroup_slot`` names its cgroup's.

This module computes what goes where; krsid.pipeline.load performs the writes
(the only place that touches bcc), in the order :meth:`BankLayout.rule_slots` and
:meth:`BankLayout.dir_entries` give.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from krsid.errors import ProgramLoadError
from krsid.policy.compile import CgroupRef, CompiledRule

WORD_BITS = 64
WORD_MASK = (1 << WORD_BITS) - 1


@dataclass(frozen=True)
class RuleSlot:
    """One krsid_rules (and krsid_rule_hits) entry to write: its index and members
    (empty: the all-zero slot that ends the hook's list)."""

    index: int
    values: Mapping[str, Any]


@dataclass(frozen=True)
class DirEntry:
    """One krsid_dirs entry: the key's and the leaf's members, by C member name."""

    key: Mapping[str, int]
    leaf: Mapping[str, list[int]]


@dataclass(frozen=True)
class BankLayout:
    hook_ids: Mapping[str, int]  # loaded program -> hook id (index in the module)
    max_hooks: int  # KRSID_MAX_HOOKS the module was compiled with
    rules_per_hook: int  # KRSID_RULES_PER_HOOK
    cgroups_per_bank: int  # KRSID_POLICY_CGROUPS

    @staticmethod
    def other(bank: int) -> int:
        return 1 - (bank & 1)

    def bank_hook(self, bank: int, hook: str) -> int:
        return bank * self.max_hooks + self.hook_ids[hook]

    def bank_of(self, bank_hook: int) -> int:
        """The bank of a krsid_dirs key's bank_hook."""
        return bank_hook // self.max_hooks

    def rule_index(self, bank: int, hook: str, slot: int) -> int:
        return self.bank_hook(bank, hook) * self.rules_per_hook + slot

    def cgroup_slots(self, bank: int, per_hook: Mapping[str, Sequence[CompiledRule]]) -> dict[CgroupRef, int]:
        """The bank's krsid_rule_cgroups entries: each distinct cgroup the rules name
        (in hook id order, then rule order) -> its index. Raises ProgramLoadError for
        more than the bank holds (the policy parser refuses that first)."""
        cgroups = dict.fromkeys(
            rule.cgroup for hook in self.hook_ids for rule in per_hook.get(hook, ()) if rule.cgroup is not None
        )
        if len(cgroups) > self.cgroups_per_bank:
            raise ProgramLoadError(f"{len(cgroups)} cgroups in the policy; at most {self.cgroups_per_bank}")
        first = bank * self.cgroups_per_bank
        return {cgroup: first + i for i, cgroup in enumerate(cgroups)}

    def rule_slots(self, bank: int, per_hook: Mapping[str, Sequence[CompiledRule]]) -> Iterator[RuleSlot]:
        """The slots to write for a bank, hook by hook (in hook id order): the rules,
        then one empty slot that ends the list (the program stops at it, so older
        entries behind it never count). A rule with a cgroup gets its cgroup_slot
        (cgroup_slots). Raises ProgramLoadError, before that hook's first slot, for a
        hook with more rules than it has slots."""
        cgroups = self.cgroup_slots(bank, per_hook)
        for hook in self.hook_ids:
            compiled = per_hook.get(hook, ())
            if len(compiled) > self.rules_per_hook:
                raise ProgramLoadError(f"{hook}: {len(compiled)} rules, at most {self.rules_per_hook}")
            for slot in range(min(len(compiled) + 1, self.rules_per_hook)):
                values: Mapping[str, Any] = {}
                if slot < len(compiled):
                    rule = compiled[slot]
                    values = rule.values
                    if rule.cgroup is not None:
                        values = {**values, "cgroup_slot": cgroups[rule.cgroup]}
                yield RuleSlot(self.rule_index(bank, hook, slot), values)

    def dir_entries(self, bank: int, per_hook: Mapping[str, Sequence[CompiledRule]]) -> list[DirEntry]:
        """The bank's krsid_dirs entries: each directory a hook's rules name, with
        the bits of the rule slots that name it."""
        bits: dict[tuple[int, int, int, int], int] = {}
        for hook, compiled in per_hook.items():
            if hook not in self.hook_ids:
                continue
            bank_hook = self.bank_hook(bank, hook)
            for slot, rule in enumerate(compiled):
                for kind, dev, ino in rule.dirs:
                    k = (bank_hook, kind, dev, ino)
                    bits[k] = bits.get(k, 0) | (1 << slot)
        words = self.rules_per_hook // WORD_BITS
        return [
            DirEntry(
                {"bank_hook": bank_hook, "kind": kind, "dev": dev, "ino": ino},
                {"bits": [(mask >> (WORD_BITS * w)) & WORD_MASK for w in range(words)]},
            )
            for (bank_hook, kind, dev, ino), mask in bits.items()
        ]
