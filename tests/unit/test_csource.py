"""krsid.csource: the one reader of C comments and #defines (layout, contract, map sizes)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from krsid.catalog import declared_map_sizes, load_catalog
from krsid.csource import c_number, define_values, parse_defines, strip_comments
from krsid.errors import CatalogError
from krsid.pipeline.layout import parse_event_struct
from tests.support.cli import run_krsid
from tests.support.records import PROGRAMS


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("16", 16),
        ("0", 0),
        ("0x10", 16),
        ("0X1f", 31),
        ("0777", 0o777),
        ("010", 8),
        ("64U", 64),
        ("64u", 64),
        ("0x10UL", 16),
        ("4096ULL", 4096),
        ("0xffULL", 255),
        ("(4)", 4),
        ("((0x20U))", 32),
    ],
)
def test_integer_literals_read_as_c_reads_them(value: str, number: int) -> None:
    assert parse_defines(f"#define X {value}\n") == {"X": number}


def test_non_numbers_are_skipped_and_names_resolve() -> None:
    text = (
        "#define A 16 /* comment */\n"
        "#define B A\n"
        "#define C foo\n"
        "#define D (1U << 25)\n"
        "#define E(x) (x + 1)\n"
        "#define F inline __attribute__((always_inline))\n"
        "// #define G 7\n"
        "/* #define H 8 */\n"
    )
    assert parse_defines(text) == {"A": 16, "B": 16}


def test_a_later_text_overrides_an_earlier_one() -> None:
    assert parse_defines("#define N 4\n#define M N\n", "#define N 8\n") == {"N": 8, "M": 8}


@pytest.mark.parametrize("value", ["08", "0x", "12abc", "1.5", "0xfg"])
def test_a_value_that_looks_numeric_but_is_not_a_c_integer_is_refused(value: str) -> None:
    with pytest.raises(CatalogError, match=rf"prog\.c: #define X {value}: '{value}' is not a C integer"):
        parse_defines(f"#define X {value}\n", origin="prog.c")


def test_comments_become_spaces() -> None:
    assert strip_comments("a/* x\n y */b // c\nd") == "a b  \nd"
    assert define_values("#define A 1 // one\n#define A 2\n") == {"A": "1"}  # the first wins
    assert c_number("B", {"B": "(A)", "A": "0x8u"}) == 8


def test_map_sizes_and_layouts_read_octal_and_suffixed_sizes() -> None:
    """The three readers agree: a map sized 0100 holds 64, an array of N_LEN 0x10U is 16 bytes."""
    sizes = declared_map_sizes(("p.c", "#define N 0100\nBPF_HASH(m, u32, u32, N);\nBPF_HASH(k, u32, u32, 010);\n"))
    assert (sizes["m"].entries, sizes["k"].entries) == (64, 8)
    header = (PROGRAMS / "include" / "krsid.h").read_text()
    program = (
        "#define N_LEN 0x10U\n#define MODE 0777\nstruct t_event {\n    KRSID_EVENT_HEADER\n    char name[N_LEN];\n};\n"
    )
    layout = parse_event_struct(program, "t_event", header, origin="t.c")
    assert layout.member("name").array_len == 16


@pytest.fixture
def programs(tmp_path: Path) -> Path:
    dst = tmp_path / "programs"
    shutil.copytree(PROGRAMS, dst)
    return dst


def test_check_config_only_reads_an_octal_define(programs: Path, tmp_path: Path) -> None:
    """Once a traceback (int('010', 0) is a ValueError): `krsid check --config-only` with a
    programs dir whose krsid.h writes KRSID_OPTION_SLOTS in octal."""
    header = programs / "include" / "krsid.h"
    text = header.read_text()
    assert text.count("#define KRSID_OPTION_SLOTS 8\n") == 1
    header.write_text(text.replace("#define KRSID_OPTION_SLOTS 8\n", "#define KRSID_OPTION_SLOTS 010\n"))
    assert load_catalog(programs).contract.option_slots == 8
    p = check_config_only(programs, tmp_path)
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 0, p.stdout + p.stderr


def check_config_only(programs: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`krsid check --config-only` on a config that takes its programs from `programs`."""
    cfg = tmp_path / "krsid.yaml"
    cfg.write_text(
        f"state_dir: {tmp_path / 'state'}\ncache_dir: {tmp_path / 'cache'}\nprograms_dir: {programs}\n"
        "hooks:\n  file_mprotect: {}\n"
    )
    return run_krsid("check", "--config-only", "-c", str(cfg))


def test_check_config_only_names_a_bad_number(programs: Path, tmp_path: Path) -> None:
    """A define C would refuse (08 is no octal number) is a clear catalog error, not a traceback."""
    source = programs / "file_mprotect.c"
    source.write_text("#define FILE_MPROTECT_BAD_MODE 08\n" + source.read_text())
    p = check_config_only(programs, tmp_path)
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode != 0 and "FILE_MPROTECT_BAD_MODE 08: '08' is not a C integer" in p.stderr, p.stderr
