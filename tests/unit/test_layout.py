from __future__ import annotations

import pytest

from krsid.csource import parse_defines
from krsid.errors import CatalogError
from krsid.pipeline.layout import layout_asserts, parse_event_struct
from tests.support.records import PROGRAMS

HEADER = (PROGRAMS / "include" / "krsid.h").read_text()


def struct(body: str, name: str = "t_event") -> str:
    return f"#define NAME_LEN 12\nstruct {name} {{\n    KRSID_EVENT_HEADER\n{body}\n}};\n"


def test_header_layout_matches_c_alignment_rules() -> None:
    body = "    __u8 a;\n    __u64 b;\n    char s[NAME_LEN];\n    __u16 c;"
    layout = parse_event_struct(struct(body), "t_event", HEADER)
    names = [m.name for m in layout.members]
    assert names[:4] == ["seq", "ktime_ns", "cgroup_id", "hook_id"]
    hdr_end = layout.member("tty").offset + 16  # tty is the last header member
    a, b, s, c = (layout.member(n) for n in ("a", "b", "s", "c"))
    assert a.offset == hdr_end
    assert b.offset == (hdr_end + 1 + 7) // 8 * 8  # __u64 aligns to 8
    assert s.offset == b.offset + 8 and s.size == 12 and s.is_string
    assert c.offset == s.offset + 12  # 2-aligned already
    assert layout.size % 8 == 0 and layout.size >= c.offset + 2
    assert layout.unpacker.size == layout.size


def test_unpacker_roundtrip_respects_offsets() -> None:
    layout = parse_event_struct(struct("    __u8 a;\n    __u64 b;"), "t_event", HEADER)
    values = [i + 1 if not m.is_string else b"x" * 3 for i, m in enumerate(layout.members)]
    raw = layout.unpacker.pack(*values)
    assert raw[layout.member("b").offset : layout.member("b").offset + 8] == (len(values)).to_bytes(8, "little")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("    struct foo *p;", "cannot lay out member"),
        ("    float f;", "unsupported type float"),
        ("    __u32 arr[4];", "integer arrays"),
        ("    char s[UNKNOWN];", "not a known constant"),
        ("    char c;", "lone char"),
        ("    __u32 pid;", "duplicate member pid"),
    ],
)
def test_bad_members_are_named(body: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_event_struct(struct(body), "t_event", HEADER, origin="x.c")


def test_header_macro_must_come_first() -> None:
    text = "struct t_event {\n    __u32 x;\n    KRSID_EVENT_HEADER\n};"
    with pytest.raises(CatalogError, match="must be the first member"):
        parse_event_struct(text, "t_event", HEADER)


def test_a_member_group_of_krsid_h_expands_in_place() -> None:
    """KRSID_NEW_NAME_MEMBERS: its members where the macro stands, then the program's own."""
    layout = parse_event_struct(struct("    KRSID_NEW_NAME_MEMBERS\n    __u32 mode;"), "t_event", HEADER)
    names = [m.name for m in layout.members]
    after_header = names[names.index("tty") + 1 :]
    assert after_header == ["dir_ino", "dev_major", "dev_minor", "watch", "watch_level", "dir", "name", "mode"]
    new_name_len = parse_defines(HEADER)["KRSID_NEW_NAME_LEN"]
    assert layout.member("dir").array_len == layout.member("name").array_len == new_name_len
    assert layout.member("mode").offset == layout.member("name").offset + new_name_len


def test_an_unknown_member_group_is_named() -> None:
    with pytest.raises(CatalogError, match=r"krsid\.h: no #define KRSID_NOPE_MEMBERS"):
        parse_event_struct(struct("    KRSID_NOPE_MEMBERS\n    __u32 mode;"), "t_event", HEADER)


def test_a_member_group_before_the_header_is_refused() -> None:
    text = "struct t_event {\n    KRSID_NEW_NAME_MEMBERS\n    KRSID_EVENT_HEADER\n};"
    with pytest.raises(CatalogError, match="must be the first member"):
        parse_event_struct(text, "t_event", HEADER)


def test_missing_struct_is_named() -> None:
    with pytest.raises(CatalogError, match="no definition of struct nope"):
        parse_event_struct("int x;", "nope", HEADER, origin="prog.c")


def test_layout_asserts_cover_every_member() -> None:
    layout = parse_event_struct(struct("    __u32 x;"), "t_event", HEADER)
    text = layout_asserts(layout)
    assert text.count("_Static_assert") == len(layout.members) + 1
    assert f"__builtin_offsetof(struct t_event, x) == {layout.member('x').offset}" in text


def test_parse_defines_reads_numbers_only() -> None:
    d = parse_defines("#define A 16\n#define B 0x10 /* hex */\n#define C foo\n#define D (4)\n")
    assert d == {"A": 16, "B": 16, "D": 4}
