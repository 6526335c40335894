"""The C<->Python contract: every number krsid's Python shares with its BPF programs.

Written once, in C: programs/include/krsid.h defines the action codes
(KRSID_ACT_*), rule match bits (KRSID_MATCH_*), field operators (KRSID_FIELD_OP_*),
directory kinds (KRSID_DIR_KIND_*), the sizes (KRSID_RULES_PER_HOOK,
KRSID_POLICY_FIELDS, KRSID_OPTION_SLOTS, KRSID_COMM_LEN, KRSID_DIR_ENTRIES), the
counter slots (enum krsid_counter) and the rule leaf (struct krsid_rule).
:func:`parse_contract` reads them from the header the catalog loads, once, and
refuses a header that lacks one Python relies on; nothing in Python restates them.

What the sidecars restate is checked against C when the catalog loads:
- include/krsid.yaml's ``action`` enum values against KRSID_ACT_* (:func:`check_action_enum`);
- each hook's option and policy-field ``slot:`` against its .c's ``#define
  <PREFIX>_OPT_<NAME> N`` / ``#define <PREFIX>_POLICY_<NAME> N`` (:func:`slot_mismatches`),
  in both directions: a define the sidecar does not declare is an error too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from krsid.errors import CatalogError
from krsid.pipeline.layout import parse_defines

# The names Python implements behaviour for, by group: the header must define exactly
# these (a value may change; a name may not appear or vanish without Python code).
ACTION_NAMES = ("AUDIT", "IGNORE", "DENY", "WOULD_DENY")
MATCH_NAMES = (
    "UID",
    "NOT_UID",
    "COMM",
    "CGROUP",
    "EXE",
    "EXE_PREFIX",
    "FILE_PREFIX",
    "FILE_ANY",
    "FIELD0",
    "EXE_ANY",
)
FIELD_OP_NAMES = ("ALL", "ANY", "EQ", "NE")
DIR_KIND_NAMES = ("FILE", "EXE")
SIZE_NAMES = (
    "KRSID_RULES_PER_HOOK",
    "KRSID_POLICY_FIELDS",
    "KRSID_OPTION_SLOTS",
    "KRSID_COMM_LEN",
    "KRSID_DIR_ENTRIES",
)
COUNTER_ENUM = "krsid_counter"
COUNTER_PREFIX = "KRSID_CNT_"
COUNTER_COUNT = "KRSID_CNT_SLOTS"  # the enum's last entry: how many slots there are
RULE_STRUCT = "krsid_rule"

# In a program's .c: the define that gives an option's or a policy field's slot.
OPTION_DEFINE_MARK = "_OPT_"
POLICY_DEFINE_MARK = "_POLICY_"

_COMMENT_RE = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_IDENT = r"[A-Za-z_]\w*"


@dataclass(frozen=True)
class Contract:
    """The shared constants, as krsid.h defines them.

    Groups are keyed by the C name without its prefix (``match["NOT_UID"]`` is
    KRSID_MATCH_NOT_UID); ``actions`` by the lower-case name the config uses
    (``"would_deny"`` is KRSID_ACT_WOULD_DENY).
    """

    actions: Mapping[str, int]
    match: Mapping[str, int]
    field_ops: Mapping[str, int]
    dir_kinds: Mapping[str, int]
    rules_per_hook: int
    policy_fields: int
    option_slots: int
    comm_len: int
    dir_entries: int
    counters: tuple[str, ...]  # enum krsid_counter in slot order, e.g. "lost_ringbuf"
    rule_members: tuple[str, ...]  # struct krsid_rule's members, in order


def parse_contract(header_text: str, origin: str = "krsid.h") -> Contract:
    """The contract from krsid.h's text; CatalogError naming what is missing or wrong."""
    text = _COMMENT_RE.sub(" ", header_text)
    defines = parse_defines(text)

    def group(prefix: str, names: Iterable[str]) -> dict[str, int]:
        found = {k[len(prefix) :]: v for k, v in defines.items() if k.startswith(prefix)}
        wanted = tuple(names)
        if set(found) != set(wanted):
            missing = [prefix + n for n in wanted if n not in found]
            extra = [prefix + n for n in found if n not in wanted]
            raise CatalogError(
                f"{origin}: the {prefix}* defines must be exactly {', '.join(prefix + n for n in wanted)} "
                f"(krsid's Python implements each); missing: {', '.join(missing) or 'none'}, "
                f"unknown: {', '.join(extra) or 'none'}"
            )
        if len(set(found.values())) != len(found):
            raise CatalogError(f"{origin}: two {prefix}* defines have the same value: {found}")
        return {n: found[n] for n in wanted}

    actions = group("KRSID_ACT_", ACTION_NAMES)
    if 0 in actions.values():
        # An all-zero rule slot ends a hook's list (krsid_decide): no action may be 0.
        raise CatalogError(f"{origin}: KRSID_ACT_* value 0 is reserved for the empty rule slot")
    for name in SIZE_NAMES:
        if name not in defines:
            raise CatalogError(f"{origin}: no numeric #define {name}")
    contract = Contract(
        actions={n.lower(): v for n, v in actions.items()},
        match=group("KRSID_MATCH_", MATCH_NAMES),
        field_ops=group("KRSID_FIELD_OP_", FIELD_OP_NAMES),
        dir_kinds=group("KRSID_DIR_KIND_", DIR_KIND_NAMES),
        rules_per_hook=defines["KRSID_RULES_PER_HOOK"],
        policy_fields=defines["KRSID_POLICY_FIELDS"],
        option_slots=defines["KRSID_OPTION_SLOTS"],
        comm_len=defines["KRSID_COMM_LEN"],
        dir_entries=defines["KRSID_DIR_ENTRIES"],
        counters=_counters(text, origin),
        rule_members=_struct_members(text, RULE_STRUCT, origin),
    )
    if contract.rules_per_hook % 64:
        raise CatalogError(f"{origin}: KRSID_RULES_PER_HOOK must be a multiple of 64 (krsid_dir_rules words)")
    return contract


def _counters(text: str, origin: str) -> tuple[str, ...]:
    """enum krsid_counter's slot names in order; each entry must be its index."""
    m = re.search(rf"\benum\s+{COUNTER_ENUM}\s*\{{([^}}]*)\}}", text)
    if not m:
        raise CatalogError(f"{origin}: no enum {COUNTER_ENUM}")
    names: list[str] = []
    count = -1
    for entry in (e.strip() for e in m.group(1).split(",")):
        if not entry:
            continue
        em = re.fullmatch(rf"({_IDENT})\s*=\s*(0[xX][0-9a-fA-F]+|\d+)", entry)
        if not em or not em.group(1).startswith(COUNTER_PREFIX):
            raise CatalogError(f"{origin}: enum {COUNTER_ENUM}: write each entry as {COUNTER_PREFIX}NAME = N")
        name, value = em.group(1), int(em.group(2), 0)
        if name == COUNTER_COUNT:
            count = value
            continue
        if value != len(names):
            raise CatalogError(f"{origin}: enum {COUNTER_ENUM}: {name} = {value}, expected {len(names)} (in order)")
        names.append(name[len(COUNTER_PREFIX) :].lower())
    if count != len(names):
        raise CatalogError(f"{origin}: enum {COUNTER_ENUM}: {COUNTER_COUNT} must be {len(names)}, the slot count")
    return tuple(names)


def _struct_members(text: str, struct: str, origin: str) -> tuple[str, ...]:
    m = re.search(rf"\bstruct\s+{struct}\s*\{{([^}}]*)\}}", text)
    if not m:
        raise CatalogError(f"{origin}: no definition of struct {struct}")
    names = re.findall(rf"({_IDENT})\s*(?:\[[^\]]*\])?\s*;", m.group(1))
    if not names:
        raise CatalogError(f"{origin}: struct {struct} has no members")
    return tuple(names)


def action_enum_mismatch(values: Mapping[str, int], contract: Contract) -> str:
    """Why krsid.yaml's ``action`` enum values differ from KRSID_ACT_* ("" when they agree)."""
    if dict(values) == dict(contract.actions):
        return ""
    want = ", ".join(f"{n}: {v}" for n, v in contract.actions.items())
    return f"must be exactly the KRSID_ACT_* values of krsid.h ({{{want}}})"


@dataclass(frozen=True)
class SlotDefine:
    name: str
    value: int


def slot_defines(program_text: str, mark: str) -> list[SlotDefine]:
    """The program's numeric ``#define <PREFIX><mark><NAME> N`` lines (option or policy slots)."""
    defines = parse_defines(_COMMENT_RE.sub(" ", program_text))
    return [SlotDefine(n, v) for n, v in defines.items() if mark in n]


def slot_mismatches(
    program_text: str, source_name: str, mark: str, declared: Mapping[str, int], what: str
) -> tuple[dict[str, str], list[str]]:
    """Compare a sidecar's slots (``declared``: name -> slot) with the program's defines.

    Returns (name -> why, for declared entries that are wrong; defines that no
    declared entry claims). A define claims entry NAME when it ends in
    ``<mark><NAME upper-cased>`` (e.g. FILE_MPROTECT_POLICY_REQPROT for reqprot).
    """
    defines = slot_defines(program_text, mark)
    claimed: set[str] = set()
    wrong: dict[str, str] = {}
    for name, slot in declared.items():
        suffix = f"{mark}{name.upper()}"
        hits = [d for d in defines if d.name.endswith(suffix)]
        claimed.update(d.name for d in hits)
        if len(hits) != 1:
            found = "none" if not hits else ", ".join(d.name for d in hits)
            wrong[name] = (
                f"{source_name} must define its slot once, as #define <HOOK>{suffix} {slot} "
                f"(found: {found}); the program reads the {what} from that slot"
            )
        elif hits[0].value != slot:
            wrong[name] = f"slot {slot}, but {source_name} has #define {hits[0].name} {hits[0].value}"
    unclaimed = [
        f"{source_name}: #define {d.name} {d.value} names no {what} of the sidecar"
        for d in defines
        if d.name not in claimed
    ]
    return wrong, unclaimed
