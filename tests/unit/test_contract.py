"""The C<->Python contract: numbers shared with krsid.h are parsed from it, and what a
sidecar restates (action values, option and policy slots) is checked against C when
the catalog loads. Each seeded defect below is one a person could make by hand;
each must stop the catalog from loading, naming the file, line and define."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from krsid.catalog import load_catalog, parse_contract
from krsid.catalog.contract import COUNTER_NAMES
from krsid.errors import CatalogError
from krsid.policy import compile_rules
from krsid.policy.parse import Rule
from tests.support.csource import struct_members
from tests.support.records import PROGRAMS

HEADER = PROGRAMS / "include" / "krsid.h"


@pytest.fixture
def programs(tmp_path: Path) -> Path:
    dst = tmp_path / "programs"
    shutil.copytree(PROGRAMS, dst)
    return dst


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not once in {path}: the seeded defect would not be seeded"
    path.write_text(text.replace(old, new))


def test_the_contract_is_krsid_h_s_defines() -> None:
    """Every value the contract holds is the one the header defines (not a copy)."""
    text = HEADER.read_text()
    contract = load_catalog(PROGRAMS).contract

    def define(name: str) -> int:
        m = re.search(rf"^#define {name} (\S+)", text, re.M)
        assert m, name
        return int(m.group(1), 0)

    assert contract.actions == {n.lower(): define(f"KRSID_ACT_{n}") for n in ("AUDIT", "IGNORE", "DENY", "WOULD_DENY")}
    assert all(v == define(f"KRSID_MATCH_{k}") for k, v in contract.match.items())
    assert all(v == define(f"KRSID_FIELD_OP_{k}") for k, v in contract.field_ops.items())
    assert all(v == define(f"KRSID_DIR_KIND_{k}") for k, v in contract.dir_kinds.items())
    assert contract.rules_per_hook == define("KRSID_RULES_PER_HOOK")
    assert contract.policy_fields == define("KRSID_POLICY_FIELDS")
    assert contract.option_slots == define("KRSID_OPTION_SLOTS")
    assert contract.comm_len == define("KRSID_COMM_LEN")
    assert load_catalog(PROGRAMS).dirs_map.entries == define("KRSID_DIR_ENTRIES")
    assert contract.counters[:3] == ("invocations", "emitted", "lost_ringbuf")
    assert set(contract.counters) == set(COUNTER_NAMES)
    slots = re.search(r"KRSID_CNT_SLOTS = (\d+)", text)
    assert slots and len(contract.counters) == int(slots.group(1))


def test_counter_order_follows_the_enum() -> None:
    text = HEADER.read_text()
    swapped = text.replace("KRSID_CNT_EMITTED = 1", "KRSID_CNT_EMITTED = 2").replace(
        "KRSID_CNT_LOST_RINGBUF = 2", "KRSID_CNT_LOST_RINGBUF = 1"
    )
    assert swapped != text
    with pytest.raises(CatalogError, match="KRSID_CNT_EMITTED = 2, expected 1"):
        parse_contract(swapped)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("#define KRSID_MATCH_COMM 0x4\n", "", "missing: KRSID_MATCH_COMM"),
        ("#define KRSID_FIELD_OP_NE 4", "#define KRSID_FIELD_OP_NE 3", "same value"),
        ("#define KRSID_ACT_AUDIT 1 ", "#define KRSID_ACT_AUDIT 0 ", "reserved for the empty rule slot"),
        ("#define KRSID_OPTION_SLOTS 8\n", "", "no numeric #define KRSID_OPTION_SLOTS"),
        ("KRSID_CNT_FILTERED = 3,", "KRSID_CNT_FILTERED = 3, KRSID_CNT_KILLED = 4,", "unknown: KRSID_CNT_KILLED"),
        (
            "#define KRSID_ACT_WOULD_DENY 4",
            "#define KRSID_ACT_WOULD_DENY 4\n#define KRSID_ACT_KILL 9",
            "unknown: KRSID_ACT_KILL",
        ),
    ],
)
def test_a_header_without_what_python_implements_is_refused(old: str, new: str, message: str) -> None:
    text = HEADER.read_text()
    assert text.count(old) == 1, old
    with pytest.raises(CatalogError, match=message):
        parse_contract(text.replace(old, new), "krsid.h")


def test_compiled_rules_write_only_members_of_struct_krsid_rule() -> None:
    """Python's member names against the C struct (the loader's writer checks them again)."""
    contract = load_catalog(PROGRAMS).contract
    members = struct_members(HEADER.read_text(), "krsid_rule")
    rule = Rule("r", "file_mprotect", "deny", uid=1, comm="x")
    (compiled,) = compile_rules([rule], contract)
    assert set(compiled.values) <= set(members)
    assert set(members) - set(compiled.values) == {"reserved"}


# -- seeded defects: each must fail the catalog load -------------------------------------


def test_seeded_counter_renamed_consistently_in_krsid_h(programs: Path) -> None:
    """Defect: KRSID_CNT_LOST_RINGBUF renamed everywhere in C (it still compiles); the
    metrics read lost_ringbuf, so krsid_events_lost{stage="ringbuf"} would stay 0."""
    header = programs / "include" / "krsid.h"
    text = header.read_text()
    assert text.count("KRSID_CNT_LOST_RINGBUF") >= 2
    header.write_text(text.replace("KRSID_CNT_LOST_RINGBUF", "KRSID_CNT_RINGBUF_FULL"))
    with pytest.raises(CatalogError, match="missing: KRSID_CNT_LOST_RINGBUF, unknown: KRSID_CNT_RINGBUF_FULL"):
        load_catalog(programs)


def test_seeded_dirs_map_without_a_numeric_size(programs: Path) -> None:
    """Defect: krsid_dirs sized by a define that is gone; the config check could not
    refuse a policy the map would not hold."""
    edit(programs / "include" / "krsid.h", "#define KRSID_DIR_ENTRIES 4096\n", "")
    with pytest.raises(CatalogError, match="declares no krsid_dirs map with a numeric size"):
        load_catalog(programs)


def test_seeded_swapped_policy_slots_in_file_mprotect_yaml(programs: Path) -> None:
    """Defect (a): reqprot and prot swapped in the sidecar; rules would test the wrong value."""
    y = programs / "file_mprotect.yaml"
    text = y.read_text()
    reqprot = "  reqprot:\n    slot: 0\n"
    prot = "  prot:\n    slot: 1\n"
    assert reqprot in text and prot in text
    y.write_text(text.replace(reqprot, "  reqprot:\n    slot: 1\n").replace(prot, "  prot:\n    slot: 0\n"))
    with pytest.raises(CatalogError) as e:
        load_catalog(programs)
    message = str(e.value)
    assert "file_mprotect.yaml:" in message and "policy.reqprot.slot" in message
    assert "#define FILE_MPROTECT_POLICY_REQPROT 0" in message


@pytest.mark.parametrize(
    ("file", "old", "new"),
    [
        ("include/krsid.yaml", "deny: 3", "deny: 5"),
        ("include/krsid.h", "#define KRSID_ACT_DENY 3 ", "#define KRSID_ACT_DENY 5 "),
    ],
)
def test_seeded_action_value_change(programs: Path, file: str, old: str, new: str) -> None:
    """Defect (b): the action enum of the header sidecar and KRSID_ACT_* disagree
    (events would name the wrong action), whichever side was edited."""
    edit(programs / file, old, new)
    with pytest.raises(
        CatalogError, match=r"krsid\.yaml:\d+:\d+: fields\.action\.values: must be exactly the KRSID_ACT_"
    ):
        load_catalog(programs)


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        (
            "file_mprotect.yaml",
            "    slot: 0\n    type: bool",
            "    slot: 1\n    type: bool",
            "slot 1, but file_mprotect.c",
        ),
        (
            "file_mprotect.c",
            "#define FILE_MPROTECT_OPT_EXEC_ONLY 0",
            "#define FILE_MPROTECT_OPT_EXEC_ONLY 2",
            "slot 0, but",
        ),
        ("file_mprotect.c", "#define FILE_MPROTECT_OPT_EXEC_ONLY 0", "#define FILE_MPROTECT_OPT_EXEC 0", "found: none"),
    ],
)
def test_seeded_option_slot_differs_from_the_c_define(
    programs: Path, file: str, old: str, new: str, message: str
) -> None:
    """Defect (c): the config's value would go to a slot the program does not read."""
    edit(programs / file, old, new)
    with pytest.raises(CatalogError, match=message) as e:
        load_catalog(programs)
    assert "file_mprotect.yaml:" in str(e.value) and "options.exec_only.slot" in str(e.value)


def test_a_slot_define_the_sidecar_does_not_declare_is_an_error(programs: Path) -> None:
    """The program reads a policy slot nobody writes: rules could never match it."""
    edit(
        programs / "file_mprotect.c",
        "#define FILE_MPROTECT_POLICY_VM_FLAGS 2\n",
        "#define FILE_MPROTECT_POLICY_VM_FLAGS 2\n#define FILE_MPROTECT_POLICY_PKEY 3\n",
    )
    with pytest.raises(CatalogError, match="FILE_MPROTECT_POLICY_PKEY 3 names no policy field of the sidecar"):
        load_catalog(programs)


def test_every_shipped_slot_matches_its_define() -> None:
    """The shipped programs load: every sidecar slot is its .c define (else the load raises)."""
    catalog = load_catalog(PROGRAMS)
    mprotect = catalog["file_mprotect"]
    assert [(f.name, f.slot) for f in mprotect.policy_fields] == [("reqprot", 0), ("prot", 1), ("vm_flags", 2)]


# -- the field reference takes types from the sidecars --------------------------------


def test_the_rule_field_is_documented_as_the_rule_name_string() -> None:
    """krsid.yaml says `type: rule`: the program writes a number, every sink gets the name."""
    from krsid import docs

    catalog = load_catalog(PROGRAMS)
    (rule,) = [f for f in catalog["file_mprotect"].fields if f.name == "rule"]
    assert rule.kind == "rule"
    assert "| `KRSID_RULE` | `rule` | string (rule name) |" in docs.field_reference(catalog)


def test_the_enriched_fields_are_what_enrich_adds(tmp_path: Path) -> None:
    """The reference lists enrich.ENRICHED_FIELDS; enrich() must add exactly those."""
    from krsid.pipeline.decode import EventDecoder
    from krsid.pipeline.enrich import ENRICHED_FIELDS, Enricher
    from tests.support.records import pack

    spec = load_catalog(PROGRAMS)["file_mprotect"]
    event = EventDecoder({0: spec}, boot_to_epoch=0.0).decode(pack(spec, 0, tgid=1))
    before = set(event.values)
    Enricher(proc_root=tmp_path, cgroup_root=tmp_path).enrich(event)
    assert set(event.values) - before == {name for name, _ in ENRICHED_FIELDS}
