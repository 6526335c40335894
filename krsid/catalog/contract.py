"""The C<->Python contract: every number krsid's Python shares with its BPF programs.

Written once, in C: programs/include/krsid.h defines the action codes
(KRSID_ACT_*), rule match bits (KRSID_MATCH_*), field operators (KRSID_FIELD_OP_*),
directory kinds (KRSID_DIR_KIND_*), the sizes (KRSID_RULES_PER_HOOK,
KRSID_POLICY_FIELDS, KRSID_OPTION_SLOTS, KRSID_COMM_LEN) and the counter slots
(enum krsid_counter, whose entries must be COUNTER_NAMES). The directory map's
capacity is its declaration's (catalog.dirs_map, from the krsid_dirs BPF_HASH).
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

from krsid.csource import IDENT, c_number, parse_defines, strip_comments
from krsid.errors import CatalogError

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
LANE_NAMES = ("PRIORITY", "BULK")  # KRSID_LANE_*: the ring buffers, by the sidecar's `lane:`
LANE_COUNTER_NAMES = ("EMITTED", "LOST")  # KRSID_LANESTAT_*: per-lane slots of krsid_lane_counters
FLOOD_SCOPE_NAMES = ("PROCESS", "UID")  # KRSID_FLOOD_SCOPE_*: whose fair share a flood exceeded
FLOOD_ORIGIN_NAMES = ("KERNEL", "DAEMON")  # KRSID_FLOOD_ORIGIN_*: who wrote a flood summary
SIZE_NAMES = (
    "KRSID_RULES_PER_HOOK",
    "KRSID_POLICY_FIELDS",
    "KRSID_POLICY_CGROUPS",
    "KRSID_OPTION_SLOTS",
    "KRSID_COMM_LEN",
    "KRSID_WATCH_FILES",
    "KRSID_WATCH_NAMES",
    "KRSID_WATCH_NAME_LEN",
    "KRSID_WATCH_DIRS",
    "KRSID_WATCH_DIR_NAME_LEN",
    "KRSID_WATCH_NAME_FILTER_PER_LEN",
    "KRSID_WATCH_INO_FILTER_BITS",
    "KRSID_WATCH_LEVEL_NAME",
    "KRSID_WATCH_ID_BITS",
    "KRSID_WATCH_OPS_ALL",
    "KRSID_WATCH_OPS_LOGS",
    "KRSID_WATCH_OPS_SECRETS",
)
COUNTER_ENUM = "krsid_counter"
COUNTER_PREFIX = "KRSID_CNT_"
COUNTER_COUNT = "KRSID_CNT_SLOTS"  # the enum's last entry: how many slots there are

# The counter slots, by the name Python reads them with (KRSID_CNT_<NAME upper-cased>):
# enum krsid_counter must have exactly these entries (in any order: the enum's values
# give the slots). Whatever reads a kernel counter (metrics, tests) uses these names,
# so a counter renamed in C fails the catalog load instead of reading as 0.
CNT_INVOCATIONS = "invocations"  # every call of the hook program
CNT_EMITTED = "emitted"  # events written to the event buffer
CNT_LOST_RINGBUF = "lost_ringbuf"  # reserve/output failed: ring buffer full
CNT_FILTERED = "filtered"  # dropped by an in-kernel filter
CNT_SUPPRESSED_RATE = "suppressed_rate"  # over the hook's rate limit
CNT_SUPPRESSED_DEDUP = "suppressed_dedup"  # folded into an identical recent event
CNT_SUPPRESSED_FLOOD = "suppressed_flood"  # over its process's or uid's fair share
CNT_FLOOD_SUMMARIES = "flood_summaries"  # summary records the kernel wrote about the hook's floods
COUNTER_NAMES = (
    CNT_INVOCATIONS,
    CNT_EMITTED,
    CNT_LOST_RINGBUF,
    CNT_FILTERED,
    CNT_SUPPRESSED_RATE,
    CNT_SUPPRESSED_DEDUP,
    CNT_SUPPRESSED_FLOOD,
    CNT_FLOOD_SUMMARIES,
)

# In a program's .c: the define that gives an option's or a policy field's slot.
OPTION_DEFINE_MARK = "_OPT_"
POLICY_DEFINE_MARK = "_POLICY_"


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
    policy_cgroups: int  # distinct cgroups the rules of one bank may name (krsid_rule_cgroups)
    option_slots: int
    comm_len: int
    counters: tuple[str, ...]  # enum krsid_counter in slot order: COUNTER_NAMES, as C orders them
    lanes: Mapping[str, int]  # "priority"/"bulk" -> KRSID_LANE_*
    lane_counters: Mapping[str, int]  # "emitted"/"lost" -> KRSID_LANESTAT_* slot
    flood_scopes: Mapping[int, str]  # KRSID_FLOOD_SCOPE_* -> "process"/"uid"
    flood_origins: Mapping[int, str]  # KRSID_FLOOD_ORIGIN_* -> "kernel"/"daemon"
    watch_files: int  # capacity of krsid_watch_files (watched files and directories)
    watch_names: int  # capacity of krsid_watch_names (watched basenames)
    watch_name_len: int  # a basename key's bytes, NUL included
    watch_dirs: int  # capacity of krsid_watch_dirs (directories watched by name)
    watch_dir_name_len: int  # each of a directory key's three names: bytes, NUL included
    watch_name_filter_per_len: int  # krsid_watch_name_filter's words per name length
    watch_ino_filter_bits: int  # krsid_watch_ino_filter's bits (a power of two)
    watch_level_name: int  # the watch_level of a match by basename
    watch_id_bits: int  # a watch map value: the id in these low bits, the entry's operations above
    watch_ops_all: int  # the operations of a `paths` or `names` entry (every change, not reads)
    watch_ops_logs: int  # the operations of a `logs` entry (truncation, edits in place, deletion, renames)
    watch_ops_secrets: int  # the operations of a `secrets` entry (reads by others)


def parse_contract(header_text: str, origin: str = "krsid.h") -> Contract:
    """The contract from krsid.h's text; CatalogError naming what is missing or wrong."""
    text = strip_comments(header_text)
    defines = parse_defines(text, origin=origin)

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
        policy_cgroups=defines["KRSID_POLICY_CGROUPS"],
        option_slots=defines["KRSID_OPTION_SLOTS"],
        comm_len=defines["KRSID_COMM_LEN"],
        counters=_counters(text, origin),
        lanes={n.lower(): v for n, v in group("KRSID_LANE_", LANE_NAMES).items()},
        lane_counters={n.lower(): v for n, v in group("KRSID_LANESTAT_", LANE_COUNTER_NAMES).items()},
        flood_scopes={v: n.lower() for n, v in group("KRSID_FLOOD_SCOPE_", FLOOD_SCOPE_NAMES).items()},
        flood_origins={v: n.lower() for n, v in group("KRSID_FLOOD_ORIGIN_", FLOOD_ORIGIN_NAMES).items()},
        watch_files=defines["KRSID_WATCH_FILES"],
        watch_names=defines["KRSID_WATCH_NAMES"],
        watch_name_len=defines["KRSID_WATCH_NAME_LEN"],
        watch_dirs=defines["KRSID_WATCH_DIRS"],
        watch_dir_name_len=defines["KRSID_WATCH_DIR_NAME_LEN"],
        watch_name_filter_per_len=defines["KRSID_WATCH_NAME_FILTER_PER_LEN"],
        watch_ino_filter_bits=defines["KRSID_WATCH_INO_FILTER_BITS"],
        watch_level_name=defines["KRSID_WATCH_LEVEL_NAME"],
        watch_id_bits=defines["KRSID_WATCH_ID_BITS"],
        watch_ops_all=defines["KRSID_WATCH_OPS_ALL"],
        watch_ops_logs=defines["KRSID_WATCH_OPS_LOGS"],
        watch_ops_secrets=defines["KRSID_WATCH_OPS_SECRETS"],
    )
    if sorted(contract.lanes.values()) != list(range(len(LANE_NAMES))):
        raise CatalogError(f"{origin}: KRSID_LANE_* must number the lanes 0..{len(LANE_NAMES) - 1}")
    if contract.rules_per_hook % 64:
        raise CatalogError(f"{origin}: KRSID_RULES_PER_HOOK must be a multiple of 64 (krsid_dir_rules words)")
    return contract


def _counters(text: str, origin: str) -> tuple[str, ...]:
    """enum krsid_counter's slot names in order; each entry must be its index, and the
    entries must be exactly COUNTER_NAMES (plus the KRSID_CNT_SLOTS count)."""
    m = re.search(rf"\benum\s+{COUNTER_ENUM}\s*\{{([^}}]*)\}}", text)
    if not m:
        raise CatalogError(f"{origin}: no enum {COUNTER_ENUM}")
    entries: list[tuple[str, int]] = []  # (name without the prefix, lower-cased; value)
    count = -1
    for entry in (e.strip() for e in m.group(1).split(",")):
        if not entry:
            continue
        em = re.fullmatch(rf"({IDENT})\s*=\s*(\S+)", entry)
        value = c_number(em.group(2), {}, f"{origin}: enum {COUNTER_ENUM}: {entry}") if em else None
        if em is None or value is None or not em.group(1).startswith(COUNTER_PREFIX):
            raise CatalogError(f"{origin}: enum {COUNTER_ENUM}: write each entry as {COUNTER_PREFIX}NAME = N")
        if em.group(1) == COUNTER_COUNT:
            count = value
        else:
            entries.append((em.group(1)[len(COUNTER_PREFIX) :].lower(), value))
    names = [name for name, _ in entries]
    if sorted(names) != sorted(COUNTER_NAMES):
        missing = [COUNTER_PREFIX + n.upper() for n in COUNTER_NAMES if n not in names]
        extra = [COUNTER_PREFIX + n.upper() for n in names if n not in COUNTER_NAMES]
        raise CatalogError(
            f"{origin}: enum {COUNTER_ENUM} must have exactly the entries "
            f"{', '.join(COUNTER_PREFIX + n.upper() for n in COUNTER_NAMES)} (krsid's Python reads each); "
            f"missing: {', '.join(missing) or 'none'}, unknown: {', '.join(extra) or 'none'}"
        )
    for slot, (name, value) in enumerate(entries):
        if value != slot:
            raise CatalogError(
                f"{origin}: enum {COUNTER_ENUM}: {COUNTER_PREFIX}{name.upper()} = {value}, expected {slot} (in order)"
            )
    if count != len(names):
        raise CatalogError(f"{origin}: enum {COUNTER_ENUM}: {COUNTER_COUNT} must be {len(names)}, the slot count")
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


def slot_defines(program_text: str, mark: str, origin: str = "<program>") -> list[SlotDefine]:
    """The program's numeric ``#define <PREFIX><mark><NAME> N`` lines (option or policy slots)."""
    defines = parse_defines(program_text, origin=origin)
    return [SlotDefine(n, v) for n, v in defines.items() if mark in n]


def slot_mismatches(
    program_text: str, source_name: str, mark: str, declared: Mapping[str, int], what: str
) -> tuple[dict[str, str], list[str]]:
    """Compare a sidecar's slots (``declared``: name -> slot) with the program's defines.

    Returns (name -> why, for declared entries that are wrong; defines that no
    declared entry claims). A define claims entry NAME when it ends in
    ``<mark><NAME upper-cased>`` (e.g. FILE_MPROTECT_POLICY_REQPROT for reqprot).
    """
    defines = slot_defines(program_text, mark, source_name)
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
