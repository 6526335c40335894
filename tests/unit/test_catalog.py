from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from krsid.catalog import load_catalog
from krsid.errors import CatalogError
from tests.support.records import PROGRAMS


def test_every_program_has_a_sidecar_and_vice_versa() -> None:
    c_files = {p.stem for p in PROGRAMS.glob("*.c")}
    yaml_files = {p.stem for p in PROGRAMS.glob("*.yaml")}
    assert c_files == yaml_files
    assert {"bprm_check_security", "file_mprotect"} <= c_files
    catalog = load_catalog(PROGRAMS)
    assert set(catalog.hooks) == c_files


def test_message_ids_are_unique_and_well_formed() -> None:
    catalog = load_catalog(PROGRAMS)
    ids = [h.message_id for h in catalog]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) for i in ids)


def test_field_kinds_from_sidecars() -> None:
    catalog = load_catalog(PROGRAMS)
    mp = {f.name: f for f in catalog["file_mprotect"].fields}
    assert mp["vm_start"].kind == "hex"
    assert mp["reqprot"].kind == "flags" and ("EXEC", 4) in mp["reqprot"].values
    assert mp["anonymous"].kind == "bool" and mp["anonymous"].member == "flags"
    assert mp["file"].journal_name == "KRSID_FILE"
    assert catalog["file_mprotect"].option("exec_only").default == 1


@pytest.fixture
def programs(tmp_path: Path) -> Path:
    dst = tmp_path / "programs"
    shutil.copytree(PROGRAMS, dst)
    return dst


def test_c_without_yaml_is_an_error(programs: Path) -> None:
    (programs / "file_mprotect.yaml").unlink()
    with pytest.raises(CatalogError, match=r"file_mprotect\.c: has no matching file_mprotect\.yaml"):
        load_catalog(programs)


def test_yaml_without_c_is_an_error(programs: Path) -> None:
    (programs / "file_mprotect.c").unlink()
    with pytest.raises(CatalogError, match=r"no matching file_mprotect\.c"):
        load_catalog(programs)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("hook: file_mprotect", "hook: other", "names 'other' but the file is file_mprotect.yaml"),
        ("message_id: 8c2f5a7d1e9b4c3a8f6e2d1b7a5c9e02", "message_id: xyz", "32 lower-case hex"),
        ("priority: notice", "priority: loud", "unknown level 'loud'"),
        ("    type: hex\n", "    type: float\n", "unknown type 'float'"),
        ("by {comm}", "by {nosuch}", r"unknown field \{nosuch\}"),
        ("    slot: 0", "    slot: 9", "slot must be unique"),
        ("hook: file_mprotect", "hook: file_mprotect\nsurprise: 1", "unknown key 'surprise'"),
        ("    type: hex\n", "    type: hex\n    length: prot\n", "only strings fields take a length member"),
    ],
)
def test_bad_sidecar_is_named_with_line(programs: Path, old: str, new: str, message: str) -> None:
    p = programs / "file_mprotect.yaml"
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))
    with pytest.raises(CatalogError, match=message) as e:
        load_catalog(programs)
    assert "file_mprotect.yaml:" in str(e.value)


def test_duplicate_message_id_is_an_error(programs: Path) -> None:
    a = (programs / "bprm_check_security.yaml").read_text()
    mid = next(line.split()[1] for line in a.splitlines() if line.startswith("message_id"))
    b = programs / "file_mprotect.yaml"
    b.write_text(b.read_text().replace("8c2f5a7d1e9b4c3a8f6e2d1b7a5c9e02", mid))
    with pytest.raises(CatalogError, match="used by another hook"):
        load_catalog(programs)


def test_a_field_may_not_take_a_record_key(programs: Path) -> None:
    """JSON lines records start with schema_version, time and hook, then the values
    (jsonl.event_line splices them): a field of one of those names would write the key
    twice, so the catalog refuses it."""
    c = programs / "file_mprotect.c"
    c.write_text(c.read_text().replace("__u32 pad0;", "__u32 time;", 1))
    y = programs / "file_mprotect.yaml"
    y.write_text(y.read_text().replace("  pad0:\n", "  time:\n", 1))
    with pytest.raises(CatalogError, match="every JSON lines record starts with") as e:
        load_catalog(programs)
    assert "file_mprotect.yaml:" in str(e.value)


def test_program_must_define_its_lsm_probe(programs: Path) -> None:
    p = programs / "file_mprotect.c"
    p.write_text(p.read_text().replace("LSM_PROBE(file_mprotect,", "LSM_PROBE(file_open,"))
    with pytest.raises(CatalogError, match=r"must define LSM_PROBE\(file_mprotect"):
        load_catalog(programs)


SET_PROGRAM = """#include "krsid.h"
struct demo_set_event {
    KRSID_EVENT_HEADER
    __u32 x;
};
#define DEMO_SET_SIZE 4
BPF_HASH(demo_paths, struct demo_path_key, __u8, DEMO_SET_SIZE);
BPF_HASH(demo_names, struct demo_name_key, __u8, 0x10);
BPF_TABLE("hash", struct demo_head_key, __u8, demo_heads, DEMO_SET_SIZE);
LSM_PROBE(demo_set, struct file *file) { return 0; }
"""
SET_SIDECAR = """hook: demo_set
message_id: 0123456789abcdef0123456789abcdef
message: "demo {x}"
options:
  paths:
    type: string_set
    default: [/etc/shadow, /etc/sudoers]
    maps:
      - {name: demo_paths, key_size: 32}
      - {name: demo_names, key_size: 8, transform: basename}
      - {name: demo_heads, key_size: 16, transform: basename_head}
"""


def test_string_set_option_maps_and_limits(programs: Path) -> None:
    from krsid.config import parse_config

    (programs / "demo_set.c").write_text(SET_PROGRAM)
    (programs / "demo_set.yaml").write_text(SET_SIDECAR)
    cat = load_catalog(programs)
    opt = cat["demo_set"].option("paths")
    assert opt.default == ("/etc/shadow", "/etc/sudoers")
    assert [m.key("/etc/shadow") for m in opt.maps] == [
        b"/etc/shadow",
        b"shadow",
        b"\x06\0\0\0" + b"\0\0\0\0" + b"shadow\0\0",  # length, pad, first 8 bytes
    ]
    assert opt.maps[2].key("/etc/ssh/ssh_host_rsa_key") == b"\x10\0\0\0\0\0\0\0ssh_host"
    c = parse_config("hooks:\n  demo_set:\n    paths: [/a/b, /a/b, /c]\n", "c.yaml", catalog=cat)
    assert c.hooks[0].options["paths"] == ("/a/b", "/c")  # duplicates folded
    from krsid.errors import ConfigError

    with pytest.raises(ConfigError, match=r"c.yaml:3:18: hooks.demo_set.paths.1: '/x/toolongname' is longer"):
        parse_config("hooks:\n  demo_set:\n    paths: [/ok, /x/toolongname]\n", "c.yaml", catalog=cat)
    with pytest.raises(ConfigError, match="expected a list of strings"):
        parse_config("hooks:\n  demo_set:\n    paths: /etc/shadow\n", "c.yaml", catalog=cat)


def test_basename_head_keys_must_be_16_bytes(programs: Path) -> None:
    """The C struct is fixed (length, pad, 8 bytes): another key size cannot match it."""
    (programs / "demo_set.c").write_text(SET_PROGRAM)
    (programs / "demo_set.yaml").write_text(
        SET_SIDECAR.replace("{name: demo_heads, key_size: 16,", "{name: demo_heads, key_size: 64,")
    )
    with pytest.raises(CatalogError, match="basename_head keys are 16 bytes"):
        load_catalog(programs)


def test_file_context_bits_are_krsid_h_s_in_both_sidecars() -> None:
    """krsid.h's krsid_file_context bits (KRSID_FILE_CTX_*) are written once in C and
    named in two sidecars: the exec context of bprm_check_security and the script's
    context of file_open (reason SCRIPT, whose value is file_open.c's)."""
    from krsid.csource import parse_defines

    header = parse_defines((PROGRAMS / "include" / "krsid.h").read_text())
    wanted = {k[len("KRSID_FILE_CTX_") :]: v for k, v in header.items() if k.startswith("KRSID_FILE_CTX_")}
    assert set(wanted) == {"MEMFD", "DELETED", "TMPFS", "WORLD_WRITABLE_DIR", "UPPER_LAYER"}
    catalog = load_catalog(PROGRAMS)
    assert dict(catalog["file_open"].field("context").values) == wanted
    exec_bits = dict(catalog["bprm_check_security"].field("context").values)
    assert {k: exec_bits[k] for k in wanted} == wanted
    file_open = parse_defines((PROGRAMS / "file_open.c").read_text())
    assert dict(catalog["file_open"].field("reason").values)["SCRIPT"] == file_open["FILE_OPEN_REASON_SCRIPT"]


def test_fields_of_one_kernel_bit_set_share_one_value_set() -> None:
    """include/krsid.yaml's value_sets: the mode bits of the four hooks that report a
    mode and the open flags of file_open and file_fcntl are one list each."""
    catalog = load_catalog(PROGRAMS)
    mode_bits = {
        catalog[hook].field(name).values
        for hook, name in (
            ("inode_create", "mode"),
            ("inode_mkdir", "mode"),
            ("inode_mknod", "mode"),
            ("inode_setattr", "mode"),
            ("inode_setattr", "old_mode"),
            ("inode_setattr", "added"),
        )
    }
    assert mode_bits == {
        (
            ("SUID", 0o4000), ("SGID", 0o2000), ("SVTX", 0o1000),
            ("RUSR", 0o400), ("WUSR", 0o200), ("XUSR", 0o100),
            ("RGRP", 0o40), ("WGRP", 0o20), ("XGRP", 0o10),
            ("ROTH", 0o4), ("WOTH", 0o2), ("XOTH", 0o1),
        )
    }  # fmt: skip
    open_flags = catalog["file_open"].field("flags").values
    assert catalog["file_fcntl"].field("flags").values == open_flags
    assert catalog["file_fcntl"].field("new_flags").values == open_flags
    assert ("APPEND", 0o2000) in open_flags and ("EXEC", 0x20) in open_flags
    # Rules name the same bits: inode_create's policy field takes the set's names.
    assert catalog["inode_create"].policy_field("mode").values == catalog["inode_create"].field("mode").values


def test_an_unknown_value_set_is_named_with_line(programs: Path) -> None:
    p = programs / "inode_mkdir.yaml"
    p.write_text(p.read_text().replace("values: mode_bits", "values: mode_bitz", 1))
    message = r"inode_mkdir\.yaml:\d+:\d+: .*no value set 'mode_bitz' in include/krsid\.yaml"
    with pytest.raises(CatalogError, match=message):
        load_catalog(programs)


def test_a_value_set_must_give_numbers(programs: Path) -> None:
    p = programs / "include" / "krsid.yaml"
    p.write_text(p.read_text().replace("SUID: 0x800, ", "SUID: high, ", 1))
    with pytest.raises(CatalogError, match=r"krsid\.yaml:\d+:\d+: .*value_sets\.mode_bits\.SUID.*an integer"):
        load_catalog(programs)


def test_a_value_set_written_in_krsid_h_is_derived_from_its_defines(programs: Path) -> None:
    """xattr_namespaces is `c_defines: KRSID_XATTR_NS_`: a namespace added in C is a
    name rules and events know, with no YAML to edit."""
    assert load_catalog(PROGRAMS)["inode_setxattr"].field("namespace").values == (
        ("OTHER", 0), ("SECURITY", 1), ("TRUSTED", 2), ("USER", 3), ("SYSTEM", 4),
    )  # fmt: skip
    h = programs / "include" / "krsid.h"
    h.write_text(
        h.read_text().replace(
            "#define KRSID_XATTR_NS_SYSTEM 4\n", "#define KRSID_XATTR_NS_SYSTEM 4\n#define KRSID_XATTR_NS_BTRFS 5\n"
        )
    )
    catalog = load_catalog(programs)
    for hook in ("inode_setxattr", "inode_removexattr"):
        assert catalog[hook].field("namespace").values[-1] == ("BTRFS", 5)
        assert catalog[hook].policy_field("namespace").values[-1] == ("BTRFS", 5)


def test_a_value_set_of_no_defines_is_named_with_line(programs: Path) -> None:
    p = programs / "include" / "krsid.yaml"
    p.write_text(p.read_text().replace("c_defines: KRSID_XATTR_NS_", "c_defines: KRSID_XATTR_NAMESPACE_", 1))
    message = r"krsid\.yaml:\d+:\d+: .*include/krsid\.h has no #define KRSID_XATTR_NAMESPACE_<NAME>"
    with pytest.raises(CatalogError, match=message):
        load_catalog(programs)
