"""The hook catalog: programs/<hook>.c paired with programs/<hook>.yaml.

Adding a hook is adding those two files; nothing here names a hook. The .c file
holds the LSM_PROBE and the event struct (the layout); the .yaml sidecar says how
the event is named (MESSAGE_ID), shown (MESSAGE template, PRIORITY) and decoded
(per-field types), which options the program reads from the krsid_options map and
which values it offers to policy rules. Every number shared with C comes from
include/krsid.h through the catalog's contract (krsid.catalog.contract), and each
sidecar ``slot:`` is checked against its program's ``#define`` here.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from krsid.catalog.contract import (
    OPTION_DEFINE_MARK,
    POLICY_DEFINE_MARK,
    Contract,
    action_enum_mismatch,
    parse_contract,
    slot_mismatches,
)
from krsid.csource import c_number, define_values, is_literal, parse_defines, strip_comments
from krsid.errors import CatalogError, ConfigError
from krsid.event import RECORD_KEYS
from krsid.pipeline.layout import EventLayout, Member, parse_event_struct, read_text
from krsid.yamldoc import YamlDoc, expect, expect_mapping, load_yaml, shown

HOOK_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
MESSAGE_ID_RE = re.compile(r"^[0-9a-f]{32}$")
TEMPLATE_FIELD_RE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
# rule: the __u32 rule number a program writes (slot + 1, 0 = none); the pipeline turns
# it into the rule's name (a string) before any sink sees the event.
# "hook": a hook id, shown as the hook's name (the flood summary's flooded_hook).
# "watch": a watch id (krsid_watch_find), shown as the watched path, name or directory name it stands
# for (krsid.watch.WatchTable); "" when nothing watched matched.
FIELD_TYPES = (
    "int",
    "hex",
    "string",
    "strings",
    "ipv4",
    "ipv6",
    "errno",
    "flags",
    "enum",
    "bool",
    "hidden",
    "rule",
    "hook",
    "watch",
)
# Types read from a char[N] member; the others read an integer member.
BYTES_FIELD_TYPES = ("string", "strings", "ipv6")
# daemon_tgid: not configurable; krsid writes its own process there (its pid and pid
# namespace: krsid.daemon.daemon_process_key, compared by krsid.h's krsid_task_is_process),
# so a hook can leave the daemon's own activity out (e.g. bpf(): krsid reads its maps at
# every scrape) or watch what is done to it (task_kill).
OPTION_TYPES = ("bool", "int", "string_set", "daemon_tgid")
STRING_TRANSFORMS = ("none", "basename", "basename_head")
# basename_head keys: the basename's length in bytes, 4 bytes of padding, its first 8
# bytes NUL-padded (C: struct { __u32 len; __u32 pad; __u64 head; }).
BASENAME_HEAD = struct.Struct("<II8s")
MAP_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")

# syslog priorities, as journald's PRIORITY field takes them (index = number).
PRIORITIES: Mapping[str, int] = {
    "emerg": 0,
    "alert": 1,
    "crit": 2,
    "err": 3,
    "warning": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}

HEADER_FILE = "include/krsid.h"
HEADER_SIDECAR = "include/krsid.yaml"
# The flood summary record (struct krsid_flood_event in krsid.h): an event type that no
# hook program emits by itself (krsid_fair_share_admit writes it), presented like a hook.
FLOOD_EVENT = "flood"
FLOOD_SIDECAR = "include/flood.yaml"
# The map of the policy's directories (exe_prefix / path_prefix), declared in krsid.h.
DIRS_MAP = "krsid_dirs"

# BCC map declarations whose size the catalog reads: macro -> (index of the map name,
# index of max_entries) among its arguments. A map's capacity comes from its C
# declaration, so the config check refuses what the kernel map would not hold.
_MAP_MACROS: Mapping[str, tuple[int, int]] = {"BPF_HASH": (0, 3), "BPF_TABLE": (3, 4), "BPF_F_TABLE": (3, 4)}
_MAP_DECL_RE = re.compile(r"\b(" + "|".join(_MAP_MACROS) + r")\s*\(([^()]*)\)")


@dataclass(frozen=True)
class MapSize:
    """A map's max_entries and where it was declared (for error messages)."""

    entries: int
    declared: str  # e.g. "FILE_OPEN_SET_SIZE = 1024 in file_open.c"


def declared_map_sizes(*sources: tuple[str, str]) -> dict[str, MapSize]:
    """Every BPF_HASH / BPF_TABLE map of these C texts ((file name, text) pairs) whose
    max_entries is a number or a #define of one, by map name. Defines are looked up
    in every text (a program uses krsid.h's); the first text's definition of a name wins."""
    texts = [(name, strip_comments(text)) for name, text in sources]
    defines: dict[str, str] = {}
    for _, text in texts:
        for ident, value in define_values(text).items():
            defines.setdefault(ident, value)
    out: dict[str, MapSize] = {}
    for file_name, text in texts:
        for macro, arg_text in _MAP_DECL_RE.findall(text):
            args = [a.strip() for a in arg_text.split(",")]
            name_at, size_at = _MAP_MACROS[macro]
            if len(args) <= max(name_at, size_at):
                continue
            size_expr = args[size_at]
            entries = c_number(size_expr, defines, f"{file_name}: max_entries of {args[name_at]}")
            if entries is not None:
                shown_as = size_expr if is_literal(size_expr) else f"{size_expr} = {entries}"
                out.setdefault(args[name_at], MapSize(entries, f"{shown_as} in {file_name}"))
    return out


@dataclass(frozen=True)
class FieldSpec:
    """How one event member (or a bit of one) is presented to the sinks."""

    name: str  # JSON key; journald field is KRSID_<NAME>
    member: str  # the struct member it is read from
    kind: str  # one of FIELD_TYPES
    doc: str = ""
    values: tuple[tuple[str, int], ...] = ()  # for flags / enum
    zero: str = ""  # flags: the name shown when no bit is set
    mask: int = 0  # bool: the bit(s) of member that make it true
    empty: str = ""  # string: what MESSAGE shows when the string is empty
    length: str = ""  # strings: the member holding the byte count used (NULs included)

    @property
    def journal_name(self) -> str:
        return "KRSID_" + self.name.upper()


@dataclass(frozen=True)
class SetMap:
    """A BPF hash map a string_set option fills: key = the string (transformed),
    NUL-padded to key_size bytes; value = 1 (a __u8).

    Transforms: ``none``; ``basename``, the part after the last '/';
    ``basename_head``, a fixed 16-byte key of the basename's length and first 8 bytes
    (BASENAME_HEAD): a cheap first filter that a kernel program can build from a
    dentry with one 8-byte read, instead of copying and hashing a whole name.
    """

    name: str
    key_size: int
    transform: str = "none"
    size: MapSize = MapSize(0, "")  # from the program's declaration; 0 entries = not known

    def text(self, value: str) -> str:
        """The part of value the key is made of."""
        return value.rsplit("/", 1)[-1] if self.transform in ("basename", "basename_head") else value

    def key(self, value: str) -> bytes:
        raw = self.text(value).encode()
        if self.transform == "basename_head":
            return BASENAME_HEAD.pack(len(raw), 0, raw[:8])
        return raw

    def fits(self, value: str) -> bool:
        """Whether value's key fits the map's key (string keys keep room for a NUL)."""
        if self.transform == "basename_head":
            return self.key_size == BASENAME_HEAD.size
        return len(self.key(value)) < self.key_size


@dataclass(frozen=True)
class OptionSpec:
    """A per-hook option. bool/int: a u64 the program reads from its slot of
    krsid_options. string_set: a list of strings loaded into the maps named in
    ``maps`` (the program declares them)."""

    name: str
    slot: int
    kind: str
    default: int | tuple[str, ...]
    doc: str = ""
    maps: tuple[SetMap, ...] = ()


@dataclass(frozen=True)
class PolicyField:
    """A hook-specific value the program hands to rules (krsid_policy_input.field[slot])."""

    name: str
    slot: int
    values: tuple[tuple[str, int], ...] = ()  # names usable in rules (flags or enum values)
    doc: str = ""
    boolean: bool = False  # a 0/1 value: rules may say true/false

    def value_of(self, name_or_number: object) -> int:
        if isinstance(name_or_number, bool):
            if self.boolean:
                return int(name_or_number)
            raise ValueError(f"{self.name}: expected a number or one of {', '.join(n for n, _ in self.values)}")
        if isinstance(name_or_number, int):
            return name_or_number
        for n, v in self.values:
            if n == name_or_number:
                return v
        known = ", ".join(n for n, _ in self.values)
        if not known:
            expected = "true, false or a number" if self.boolean else "a number"
            raise ValueError(f"{self.name}: expected {expected}, got {name_or_number!r}")
        raise ValueError(f"{self.name}: unknown value {name_or_number!r}; one of {known} or a number")


@dataclass(frozen=True)
class EnrichSpec:
    """What user-space enrichment learns from a hook's events (sidecar ``enrich:``).

    ``new_exe``: the string field holding the executable the process runs from this
    event on (an exec hook: its path); "" when the hook's events change no process's image.
    ``new_exe_file``: the integer fields that identify that file as stat shows it, in
    the order dev_major, dev_minor, ino, size, mtime_ns, ctime_ns (empty: none): the
    binary-hash cache's key, so that an exec of a binary hashed before carries its
    hash at once.
    """

    new_exe: str = ""
    new_exe_file: tuple[str, ...] = ()


@dataclass(frozen=True)
class HookSpec:
    name: str
    source: Path
    sidecar: Path
    description: str
    message_id: str
    priority: int
    message: str
    layout: EventLayout
    fields: tuple[FieldSpec, ...]
    options: tuple[OptionSpec, ...]
    noisy: bool = False
    policy_fields: tuple[PolicyField, ...] = ()
    # Set on a fallback program: the hook it stands in for where the kernel lacks
    # that hook. It is never enabled on its own; it gets the hook's options and rules.
    fallback_for: str = ""
    policy_path: str = ""  # what path_prefix matches on this hook; "" = the hook has no file
    # The program's C text as read (once) from the checked file: the compile uses this
    # text, never the file again (which may have changed since it was checked).
    source_text: str = ""
    enrich: EnrichSpec = EnrichSpec()
    # The ring buffer its events take (krsid.h: lanes): "priority", or "bulk" for the
    # high-volume hooks. Deny and would-deny events take the priority lane whatever this says.
    lane: str = "priority"

    def policy_field(self, name: str) -> PolicyField:
        for f in self.policy_fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def option(self, name: str) -> OptionSpec:
        for o in self.options:
            if o.name == name:
                return o
        raise KeyError(name)


@dataclass(frozen=True)
class Catalog:
    programs_dir: Path
    include_dir: Path
    header_text: str
    hooks: Mapping[str, HookSpec]
    contract: Contract  # the constants shared with krsid.h, parsed from header_text
    dirs_map: MapSize = MapSize(0, "")  # krsid_dirs, which holds the policy's directories
    flood: HookSpec | None = None  # the flood summary event type (FLOOD_EVENT); set by load_catalog

    def __iter__(self) -> Iterator[HookSpec]:
        return iter(self.hooks.values())

    def __contains__(self, name: object) -> bool:
        return name in self.hooks

    def __getitem__(self, name: str) -> HookSpec:
        return self.hooks[name]

    @property
    def event_types(self) -> tuple[HookSpec, ...]:
        """Every kind of event the daemon can deliver: the hooks', then the flood summary."""
        return (*self.hooks.values(), *((self.flood,) if self.flood is not None else ()))

    @property
    def configurable(self) -> tuple[str, ...]:
        """Hooks a config may enable and write rules for: every program except fallbacks."""
        return tuple(name for name, spec in self.hooks.items() if not spec.fallback_for)

    def fallback_of(self, hook: str) -> HookSpec | None:
        """The program that stands in for ``hook`` where the kernel lacks it, if any."""
        for spec in self.hooks.values():
            if spec.fallback_for == hook:
                return spec
        return None


def load_catalog(programs_dir: Path) -> Catalog:
    """Read every programs/*.c with its sidecar; CatalogError on any inconsistency."""
    programs_dir = Path(programs_dir).resolve()  # BCC's clang does not run in our cwd
    if not programs_dir.is_dir():
        raise CatalogError(f"{programs_dir}: programs directory does not exist")
    header_path = programs_dir / HEADER_FILE
    header_text = read_text(header_path)
    contract = parse_contract(header_text, str(header_path))
    shared = _header_sidecar(programs_dir / HEADER_SIDECAR, contract, header_text)

    sources = {p.stem: p for p in programs_dir.glob("*.c")}
    sidecars = {p.stem: p for p in programs_dir.glob("*.yaml")}
    for stem in sorted(set(sources) ^ set(sidecars)):
        have, missing = (sources, ".yaml") if stem in sources else (sidecars, ".c")
        raise CatalogError(f"{have[stem]}: has no matching {stem}{missing} (programs come in .c + .yaml pairs)")

    hooks: dict[str, HookSpec] = {}
    for name in sorted(sources):
        hooks[name] = _load_hook(name, sources[name], sidecars[name], header_text, shared, contract)
    ids = [h.message_id for h in hooks.values()]
    for h in hooks.values():
        if ids.count(h.message_id) > 1:
            raise CatalogError(f"{h.sidecar}: message_id {h.message_id} is used by another hook")
    _check_fallbacks(hooks)
    dirs_map = declared_map_sizes((HEADER_FILE, header_text)).get(DIRS_MAP)
    if dirs_map is None:
        raise CatalogError(f"{header_path}: declares no {DIRS_MAP} map with a numeric size")
    flood = _load_hook(FLOOD_EVENT, header_path, programs_dir / FLOOD_SIDECAR, header_text, shared, contract)
    for field_name, wanted in (("scope", contract.flood_scopes), ("origin", contract.flood_origins)):
        declared = {v: k for k, v in flood.field(field_name).values}
        if declared != dict(wanted):
            raise CatalogError(f"{flood.sidecar}: {field_name} values {declared} differ from krsid.h's {dict(wanted)}")
    if flood.message_id in ids:
        raise CatalogError(f"{flood.sidecar}: message_id {flood.message_id} is used by a hook")
    return Catalog(programs_dir, programs_dir / "include", header_text, hooks, contract, dirs_map, flood)


def _check_fallbacks(hooks: Mapping[str, HookSpec]) -> None:
    """A fallback stands in for exactly one primary hook, and takes that hook's config
    and rules unchanged: the same options (name, slot, type) and policy fields."""
    served: dict[str, str] = {}
    for h in hooks.values():
        target = h.fallback_for
        if not target:
            continue
        where = f"{h.sidecar}: fallback_for: {target}"
        if target == h.name or target not in hooks:
            raise CatalogError(f"{where}: not another hook of this catalog")
        primary = hooks[target]
        if primary.fallback_for:
            raise CatalogError(f"{where}: {target} is itself a fallback (no chains)")
        if target in served:
            raise CatalogError(f"{where}: {served[target]} is already its fallback")
        served[target] = h.name
        mine = sorted((o.name, o.slot, o.kind) for o in h.options)
        theirs = sorted((o.name, o.slot, o.kind) for o in primary.options)
        if mine != theirs:
            raise CatalogError(f"{where}: options must be the same as {target}'s ({theirs or 'none'})")
        for o in h.options:
            if o.kind != "string_set":
                continue
            # The fallback's maps get the values checked against the primary's maps.
            theirs_maps = primary.option(o.name).maps
            if sorted((m.key_size, m.transform) for m in o.maps) != sorted(
                (m.key_size, m.transform) for m in theirs_maps
            ) or min(m.size.entries for m in o.maps) < min(m.size.entries for m in theirs_maps):
                raise CatalogError(f"{where}: option {o.name}: maps must have {target}'s key sizes and capacity")
        for pf in primary.policy_fields:
            if pf not in h.policy_fields:
                raise CatalogError(f"{where}: must offer {target}'s policy field {pf.name} (same slot and values)")


# The header field that carries the policy action (KRSID_ACT_*): its enum values
# in include/krsid.yaml must be krsid.h's.
ACTION_FIELD = "action"


@dataclass(frozen=True)
class HeaderSidecar:
    """include/krsid.yaml: how the header's fields are shown, and the value sets that
    several sidecars' fields share (``values: mode_bits``: one list of names for
    one set of kernel bits)."""

    fields: dict[str, dict[str, Any]]
    value_sets: dict[str, tuple[tuple[str, int], ...]]


def _header_sidecar(path: Path, contract: Contract, header_text: str) -> HeaderSidecar:
    doc = _load_sidecar_doc(path)
    top = _catalog_mapping(doc, doc.data, (), {"fields", "value_sets"})
    fields = _catalog_mapping(doc, top.get("fields"), ("fields",))
    out = {k: _catalog_mapping(doc, v, ("fields", k)) for k, v in fields.items()}
    value_sets: dict[str, tuple[tuple[str, int], ...]] = {}
    defines: dict[str, int] | None = None
    for set_name, raw in _catalog_mapping(doc, top.get("value_sets"), ("value_sets",)).items():
        path_of_set = ("value_sets", set_name)
        pairs = _catalog_mapping(doc, raw, path_of_set)
        try:
            if set(pairs) == {"c_defines"}:  # written in krsid.h: derived, never restated
                prefix = expect(doc, pairs["c_defines"], (*path_of_set, "c_defines"), str, "a #define prefix")
                if defines is None:
                    defines = parse_defines(header_text, origin=HEADER_FILE)
                found = tuple((k[len(prefix) :], v) for k, v in defines.items() if k.startswith(prefix))
                if not prefix or not found:
                    doc.fail((*path_of_set, "c_defines"), f"{HEADER_FILE} has no #define {prefix}<NAME>")
                value_sets[set_name] = tuple(sorted(found, key=lambda pair: pair[1]))
                continue
            if not pairs:
                doc.fail(path_of_set, "needs values: {NAME: number} or c_defines: <krsid.h prefix>")
            value_sets[set_name] = tuple(
                (k, expect(doc, v, (*path_of_set, k), int, "an integer")) for k, v in pairs.items()
            )
        except ConfigError as e:
            raise CatalogError(str(e)) from None
    action = out.get(ACTION_FIELD, {})
    values = _catalog_mapping(doc, action.get("values"), ("fields", ACTION_FIELD, "values"))
    why = action_enum_mismatch(values, contract)
    if why:
        try:
            doc.fail(("fields", ACTION_FIELD, "values"), why)
        except ConfigError as e:
            raise CatalogError(str(e)) from None
    return HeaderSidecar(out, value_sets)


def _load_sidecar_doc(path: Path) -> YamlDoc:
    try:
        return load_yaml(read_text(path), str(path))
    except ConfigError as e:
        raise CatalogError(str(e)) from None


def _catalog_mapping(
    doc: YamlDoc, value: Any, path: tuple[object, ...], allowed: set[str] | None = None
) -> dict[str, Any]:
    try:
        return expect_mapping(doc, value, path, allowed)
    except ConfigError as e:
        raise CatalogError(str(e)) from None


_SIDECAR_KEYS = {
    "hook",
    "description",
    "message_id",
    "priority",
    "message",
    "event",
    "fields",
    "options",
    "noisy",
    "policy",
    "fallback_for",
    "policy_path",
    "enrich",
    "lane",
}
_POLICY_FIELD_KEYS = {"slot", "values", "values_of", "doc", "type"}
_FIELD_KEYS = {"type", "doc", "values", "zero", "member", "mask", "empty", "length"}
_OPTION_KEYS = {"slot", "type", "default", "doc", "maps"}
_MAP_KEYS = {"name", "key_size", "transform"}
_ENRICH_KEYS = {"new_exe", "new_exe_file"}
# What each name in enrich.new_exe_file stands for, in order.
NEW_EXE_FILE_PARTS = ("dev_major", "dev_minor", "ino", "size", "mtime_ns", "ctime_ns")


def _load_hook(
    name: str,
    source: Path,
    sidecar: Path,
    header_text: str,
    shared: HeaderSidecar,
    contract: Contract,
) -> HookSpec:
    if not HOOK_NAME_RE.match(name):
        raise CatalogError(f"{source}: hook file names must match {HOOK_NAME_RE.pattern}")
    text = read_text(source)
    # The flood event type's struct lives in krsid.h, which has no probe and no slots.
    is_header = source.name == Path(HEADER_FILE).name
    if not is_header and not re.search(rf"\bLSM_PROBE\(\s*{name}\s*,", text):
        raise CatalogError(f"{source}: must define LSM_PROBE({name}, ...) (the file name is the hook name)")

    declared_maps = declared_map_sizes((source.name, text), (HEADER_FILE, header_text))
    doc = _load_sidecar_doc(sidecar)
    try:
        top = expect_mapping(doc, doc.data, (), _SIDECAR_KEYS)
        for required in ("hook", "message_id", "message"):
            if required not in top:
                doc.fail((), f"missing required key {required!r}")
        if expect(doc, top["hook"], ("hook",), str, "a string") != name:
            doc.fail(("hook",), f"names {top['hook']!r} but the file is {name}.yaml")
        message_id = expect(doc, top["message_id"], ("message_id",), str, "32 lower-case hex digits")
        if not MESSAGE_ID_RE.match(message_id):
            doc.fail(("message_id",), "must be 32 lower-case hex digits (journalctl --new-id128)")
        priority_name = expect(doc, top.get("priority", "info"), ("priority",), str, "a syslog level name")
        if priority_name not in PRIORITIES:
            doc.fail(("priority",), f"unknown level {priority_name!r}; one of {', '.join(PRIORITIES)}")
        struct_name = expect(doc, top.get("event", f"{name}_event"), ("event",), str, "a struct name")
        layout = parse_event_struct(text, struct_name, header_text, origin=str(source))
        fields = _fields(doc, layout, shared, expect_mapping(doc, top.get("fields"), ("fields",)))
        options = _options(
            doc, expect_mapping(doc, top.get("options"), ("options",)), source.name, declared_maps, contract
        )
        policy_fields = _policy_fields(doc, expect_mapping(doc, top.get("policy"), ("policy",)), fields, contract)
        if not is_header:
            _check_slots(doc, text, source.name, options, policy_fields)
        message = expect(doc, top["message"], ("message",), str, "a string")
        known = {f.name for f in fields} | {"hook"}
        for ref in TEMPLATE_FIELD_RE.findall(message):
            if ref not in known:
                doc.fail(("message",), f"refers to unknown field {{{ref}}}")
        return HookSpec(
            name=name,
            source=source,
            sidecar=sidecar,
            description=" ".join(str(top.get("description", "")).split()),
            message_id=message_id,
            priority=PRIORITIES[priority_name],
            message=message,
            layout=layout,
            fields=fields,
            options=options,
            noisy=expect(doc, top.get("noisy", False), ("noisy",), bool, "true or false"),
            policy_fields=policy_fields,
            policy_path=" ".join(
                expect(doc, top.get("policy_path", ""), ("policy_path",), str, "what path_prefix matches").split()
            ),
            fallback_for=expect(doc, top.get("fallback_for", ""), ("fallback_for",), str, "a hook name"),
            source_text=text,
            enrich=_enrich(doc, expect_mapping(doc, top.get("enrich"), ("enrich",), _ENRICH_KEYS), fields),
            lane=_lane(doc, top.get("lane", "priority"), contract),
        )
    except ConfigError as e:
        raise CatalogError(str(e)) from None


def _lane(doc: YamlDoc, raw: Any, contract: Contract) -> str:
    lane = expect(doc, raw, ("lane",), str, "a lane name")
    if lane not in contract.lanes:
        doc.fail(("lane",), f"unknown lane {lane!r}; one of {', '.join(contract.lanes)}")
    return lane


def _fields(
    doc: YamlDoc, layout: EventLayout, shared: HeaderSidecar, declared: dict[str, Any]
) -> tuple[FieldSpec, ...]:
    """One FieldSpec per struct member (defaults by C type), plus derived bool fields."""
    header_fields = shared.fields
    header_names = set(header_fields)
    for key in declared:
        if key in header_fields:
            doc.fail(("fields", key), "is a header field; its presentation is set in include/krsid.yaml")
    out: list[FieldSpec] = []
    members = {m.name: m for m in layout.members}
    order = [m.name for m in layout.members] + [k for k in declared if k not in members]
    for fname in order:
        is_header = fname in header_names
        raw = header_fields.get(fname) if is_header else declared.get(fname)
        path = ("fields", fname)
        if fname in RECORD_KEYS:  # a struct member or a declared field
            doc.fail(path, f"is a name every JSON lines record starts with ({', '.join(RECORD_KEYS)}); rename it")
        spec = expect_mapping(doc, raw, path, _FIELD_KEYS)
        member_name = expect(doc, spec.get("member", fname), (*path, "member"), str, "a member name")
        member = members.get(member_name)
        if member is None:
            doc.fail(path, f"no member {member_name!r} in struct {layout.struct_name}")
        kind = expect(doc, spec.get("type", _default_kind(member)), (*path, "type"), str, "a field type")
        if kind not in FIELD_TYPES:
            doc.fail((*path, "type"), f"unknown type {kind!r}; one of {', '.join(FIELD_TYPES)}")
        fits = member.is_string == (kind in BYTES_FIELD_TYPES) or kind == "hidden"
        if kind == "ipv4":
            fits = (member.is_string and member.size == 4) or member.ctype in ("__u32", "u32")
        if kind == "ipv6":
            fits = member.is_string and member.size == 16
        if not fits:
            doc.fail((*path, "type"), f"{kind} does not fit member {member.ctype} {member.name}[{member.size}]")
        values: list[tuple[str, int]] = []
        if kind in ("flags", "enum") and isinstance(spec.get("values"), str):
            set_name = spec["values"]
            if set_name not in shared.value_sets:
                known = ", ".join(sorted(shared.value_sets)) or "none"
                doc.fail((*path, "values"), f"no value set {set_name!r} in {HEADER_SIDECAR} (it has: {known})")
            values.extend(shared.value_sets[set_name])
        elif kind in ("flags", "enum"):
            vmap = expect_mapping(doc, spec.get("values"), (*path, "values"))
            if not vmap:
                doc.fail(path, f"type {kind} needs values: {{NAME: number}} or the name of a value set")
            for vname, v in vmap.items():
                values.append((vname, expect(doc, v, (*path, "values", vname), int, "an integer")))
        mask = 0
        if kind == "bool":
            mask = expect(doc, spec.get("mask", 0), (*path, "mask"), int, "an integer")
        elif member_name != fname:
            doc.fail((*path, "member"), "only bool fields may read another member (with a mask)")
        length = expect(doc, spec.get("length", ""), (*path, "length"), str, "a member name")
        if length:
            counter = members.get(length)
            if kind != "strings":
                doc.fail((*path, "length"), "only strings fields take a length member")
            if counter is None or counter.is_string:
                doc.fail((*path, "length"), f"no integer member {length!r} in struct {layout.struct_name}")
        out.append(
            FieldSpec(
                name=fname,
                member=member_name,
                kind=kind,
                doc=" ".join(str(spec.get("doc", "")).split()),
                values=tuple(values),
                zero=str(spec.get("zero", "")),
                mask=mask,
                empty=str(spec.get("empty", "")),
                length=length,
            )
        )
    return tuple(out)


def _default_kind(member: Member) -> str:
    return "string" if member.is_string else "int"


def _check_slots(
    doc: YamlDoc, text: str, source_name: str, options: tuple[OptionSpec, ...], policy: tuple[PolicyField, ...]
) -> None:
    """Each option's and policy field's ``slot:`` must be the slot the program reads:
    its ``#define <HOOK>_OPT_<NAME>`` / ``<HOOK>_POLICY_<NAME>`` in the .c; and every
    such define must be declared in the sidecar (a slot read but never written reads 0)."""
    for section, mark, declared, what in (
        ("options", OPTION_DEFINE_MARK, {o.name: o.slot for o in options if o.slot >= 0}, "option"),
        ("policy", POLICY_DEFINE_MARK, {f.name: f.slot for f in policy}, "policy field"),
    ):
        wrong, unclaimed = slot_mismatches(text, source_name, mark, declared, what)
        for entry, why in wrong.items():
            doc.fail((section, entry, "slot"), why)
        if unclaimed:
            doc.fail((section,) if section in doc.data else (), "; ".join(unclaimed))


def _enrich(doc: YamlDoc, declared: dict[str, Any], fields: tuple[FieldSpec, ...]) -> EnrichSpec:
    new_exe = expect(doc, declared.get("new_exe", ""), ("enrich", "new_exe"), str, "an event field name")
    if new_exe and not any(f.name == new_exe and f.kind == "string" for f in fields):
        doc.fail(("enrich", "new_exe"), f"{new_exe!r} is not a string field of this hook's event")
    path = ("enrich", "new_exe_file")
    file_fields = expect(doc, declared.get("new_exe_file", []), path, list, "a list of event field names")
    if file_fields:
        if not new_exe:
            doc.fail(path, "needs new_exe: it names the identity of that file")
        if len(file_fields) != len(NEW_EXE_FILE_PARTS):
            doc.fail(path, f"needs {len(NEW_EXE_FILE_PARTS)} fields, in this order: {', '.join(NEW_EXE_FILE_PARTS)}")
        ints = {f.name for f in fields if f.kind == "int"}
        for i, name in enumerate(file_fields):
            if not isinstance(name, str) or name not in ints:
                doc.fail((*path, i), f"{shown(name)} is not an integer field of this hook's event")
    return EnrichSpec(new_exe=new_exe, new_exe_file=tuple(file_fields))


def _options(
    doc: YamlDoc,
    declared: dict[str, Any],
    source_name: str,
    maps_in_source: Mapping[str, MapSize],
    contract: Contract,
) -> tuple[OptionSpec, ...]:
    option_slots = contract.option_slots
    out: list[OptionSpec] = []
    slots: set[int] = set()
    for oname, raw in declared.items():
        path = ("options", oname)
        if oname in ("enabled",):
            doc.fail(path, "'enabled' is reserved")
        spec = expect_mapping(doc, raw, path, _OPTION_KEYS)
        kind = expect(doc, spec.get("type", "bool"), (*path, "type"), str, "bool, int or string_set")
        if kind not in OPTION_TYPES:
            doc.fail((*path, "type"), f"unknown option type {kind!r}; one of {', '.join(OPTION_TYPES)}")
        text_doc = " ".join(str(spec.get("doc", "")).split())
        if kind == "string_set":
            maps = _set_maps(doc, spec.get("maps"), (*path, "maps"), source_name, maps_in_source)
            default = parse_string_set(doc, spec.get("default", []), (*path, "default"), maps)
            out.append(OptionSpec(oname, -1, kind, default, text_doc, maps))
            continue
        slot = expect(doc, spec.get("slot"), (*path, "slot"), int, f"a slot number 0..{option_slots - 1}")
        if not 0 <= slot < option_slots or slot in slots:
            doc.fail((*path, "slot"), f"slot must be unique and within 0..{option_slots - 1}")
        slots.add(slot)
        if kind == "daemon_tgid":
            if "default" in spec:
                doc.fail((*path, "default"), "a daemon_tgid option has no default: krsid fills in its pid")
            out.append(OptionSpec(oname, slot, kind, 0, text_doc))
            continue
        value = spec.get("default", False if kind == "bool" else 0)
        value = expect(doc, value, (*path, "default"), bool if kind == "bool" else int, kind)
        out.append(OptionSpec(oname, slot, kind, int(value), text_doc))
    return tuple(out)


def _set_maps(
    doc: YamlDoc, raw: Any, path: tuple[object, ...], source_name: str, maps_in_source: Mapping[str, MapSize]
) -> tuple[SetMap, ...]:
    if not isinstance(raw, list) or not raw:
        doc.fail(path, "a string_set option needs maps: [{name: MAP, key_size: N}, ...]")
    out = []
    for i, item in enumerate(raw):
        m = expect_mapping(doc, item, (*path, i), _MAP_KEYS)
        name = expect(doc, m.get("name"), (*path, i, "name"), str, "a map name")
        if not MAP_NAME_RE.match(name):
            doc.fail((*path, i, "name"), f"map names must match {MAP_NAME_RE.pattern}")
        size = expect(doc, m.get("key_size"), (*path, i, "key_size"), int, "a key size in bytes")
        if not 1 < size <= 4096:
            doc.fail((*path, i, "key_size"), "must be between 2 and 4096")
        transform = expect(doc, m.get("transform", "none"), (*path, i, "transform"), str, "a transform")
        if transform not in STRING_TRANSFORMS:
            doc.fail((*path, i, "transform"), f"one of {', '.join(STRING_TRANSFORMS)}")
        if transform == "basename_head" and size != BASENAME_HEAD.size:
            doc.fail((*path, i, "key_size"), f"basename_head keys are {BASENAME_HEAD.size} bytes")
        if name not in maps_in_source:
            doc.fail(
                (*path, i, "name"),
                f"{source_name} declares no map {name} with a numeric size (BPF_HASH({name}, KEY, __u8, SIZE))",
            )
        out.append(SetMap(name, size, transform, maps_in_source[name]))
    return tuple(out)


def parse_string_set(doc: YamlDoc, raw: Any, path: tuple[object, ...], maps: tuple[SetMap, ...]) -> tuple[str, ...]:
    """A list of strings that each fit every target map's key (with its NUL), and
    that together fit every map (its declared max_entries, counted in distinct keys:
    a full map makes the daemon's update fail, at a reload as much as at a start)."""
    if not isinstance(raw, list):
        doc.fail(path, "expected a list of strings")
    out: dict[str, None] = {}  # insertion-ordered set: a 40,000-entry list stays linear
    for i, item in enumerate(raw):
        text = expect(doc, item, (*path, i), str, "a string")
        if not text or "\0" in text:
            doc.fail((*path, i), "must be a non-empty string without NUL")
        for m in maps:
            if not m.text(text):
                doc.fail((*path, i), f"{shown(text)} has an empty {m.transform} for map {m.name}")
            if not m.fits(text):
                doc.fail((*path, i), f"{shown(text)} is longer than map {m.name} allows ({m.key_size - 1} bytes)")
        out[text] = None
    for m in maps:
        if m.size.entries and len(keys := {m.key(v) for v in out}) > m.size.entries:
            counted = f"{len(out)} entries" + (f" ({len(keys)} keys of map {m.name})" if len(keys) < len(out) else "")
            doc.fail(path, f"{counted}; map {m.name} holds at most {m.size.entries} ({m.size.declared})")
    return tuple(out)


def _policy_fields(
    doc: YamlDoc, declared: dict[str, Any], event_fields: tuple[FieldSpec, ...], contract: Contract
) -> tuple[PolicyField, ...]:
    """The values a program offers to rules. ``values_of: FIELD`` reuses an event
    field's flag/enum names; ``type: bool`` lets rules say true/false."""
    policy_slots = contract.policy_fields
    out: list[PolicyField] = []
    slots: set[int] = set()
    by_name = {f.name: f for f in event_fields}
    for name, raw in declared.items():
        path = ("policy", name)
        spec = expect_mapping(doc, raw, path, _POLICY_FIELD_KEYS)
        slot = expect(doc, spec.get("slot"), (*path, "slot"), int, f"a slot 0..{policy_slots - 1}")
        if not 0 <= slot < policy_slots or slot in slots:
            doc.fail((*path, "slot"), f"slot must be unique and within 0..{policy_slots - 1}")
        slots.add(slot)
        kind = expect(doc, spec.get("type", "int"), (*path, "type"), str, "int or bool")
        if kind not in ("int", "bool"):
            doc.fail((*path, "type"), "a policy field is int (the default) or bool")
        values = expect_mapping(doc, spec.get("values"), (*path, "values"))
        pairs = tuple((k, expect(doc, v, (*path, "values", k), int, "an integer")) for k, v in values.items())
        if "values_of" in spec:
            source = expect(doc, spec["values_of"], (*path, "values_of"), str, "an event field name")
            if pairs:
                doc.fail((*path, "values_of"), "give values or values_of, not both")
            if source not in by_name or not by_name[source].values:
                doc.fail((*path, "values_of"), f"{source!r} is not an event field with flag or enum values")
            pairs = by_name[source].values
        out.append(PolicyField(name, slot, pairs, " ".join(str(spec.get("doc", "")).split()), kind == "bool"))
    return tuple(out)
