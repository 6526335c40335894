"""The live policy: which bank is active, the rules in it by hook, and the rule names.

The kernel's hit counters live per bank slot; a reload moves to the other bank, so
the old bank's counts are folded into ``retired`` (keyed by hook, rule name and
action) to keep the Prometheus counters monotonic across reloads. ``rule_name``
turns the rule number a program writes into an event (slot + 1, 0 = none) into the
rule's name; the event pipeline calls it for every event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from krsid.errors import ConfigError
from krsid.policy.compile import CompiledRule, compile_rules
from krsid.policy.parse import Policy, Rule


class PolicyMaps(Protocol):
    """What the live policy needs of the loaded programs (krsid.pipeline.load.LoadedPrograms)."""

    def apply_policy(self, per_hook: Mapping[str, Sequence[CompiledRule]]) -> int:
        """Write the rules into the inactive bank, switch to it; returns the bank now active."""
        ...

    def rule_hits(self, bank: int, hook: str, slot: int) -> int: ...


def compile_policy(policy: Policy, programs: Iterable[str], serves: Mapping[str, str]) -> dict[str, list[CompiledRule]]:
    """Each loaded program's compiled rules, resolving cgroup paths and files to ids now
    (ConfigError if one is gone). A fallback program gets the rules of the hook it
    serves (``serves``: program -> hook; a program missing from it serves itself)."""
    out: dict[str, list[CompiledRule]] = {}
    for program in programs:
        rules = policy.for_hook(serves.get(program, program))
        if rules and policy.contract is None:
            raise ConfigError("policy rules without the catalog they were checked against")  # a bug: say so
        out[program] = compile_rules(rules, policy.contract) if policy.contract is not None else []
    return out


class PolicyState:
    """The active policy's rules by slot, and hit counts carried over from retired banks."""

    def __init__(self) -> None:
        self.bank = 0
        self.rules: dict[str, list[Rule]] = {}
        # What the maps hold, compiled (with the files' inodes and the cgroups' ids):
        # the daemon's refresh compares a fresh compile against it.
        self.compiled: Mapping[str, Sequence[CompiledRule]] = {}
        self.retired: Counter[tuple[str, str, str]] = Counter()

    def rule_name(self, hook: str, rule_no: int) -> str:
        rules = self.rules.get(hook, [])
        return rules[rule_no - 1].name if 0 < rule_no <= len(rules) else ""

    def hits(self, maps: PolicyMaps) -> Counter[tuple[str, str, str]]:
        out = Counter(self.retired)
        for hook, rules in self.rules.items():
            for slot, rule in enumerate(rules):
                out[(hook, rule.name, rule.action)] += maps.rule_hits(self.bank, hook, slot)
        return out

    def install(
        self,
        policy: Policy,
        programs: Sequence[str],
        serves: Mapping[str, str],
        compiled: Mapping[str, Sequence[CompiledRule]],
        maps: PolicyMaps,
    ) -> list[Rule]:
        """Make ``compiled`` (compile_policy's result for ``policy``) the active policy:
        the maps switch banks atomically (a failure there raises and changes nothing
        here). Returns the policy's rules whose hook no loaded program serves."""
        per_hook = {p: policy.for_hook(serves.get(p, p)) for p in programs}
        old = self.hits(maps) if self.rules else Counter()
        self.bank = maps.apply_policy(compiled)
        self.retired = old
        self.rules = {h: rules for h, rules in per_hook.items() if rules}
        self.compiled = compiled
        served = {serves.get(p, p) for p in programs}
        return [r for r in policy.rules if r.hook not in served]
