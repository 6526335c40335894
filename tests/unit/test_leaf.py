"""The loader writes map keys and values only through the checked writer
(krsid.pipeline.leaf.write_leaf): a ctypes Structure accepts any attribute name, so a
misspelled C member would otherwise be dropped silently and the kernel read zero."""

from __future__ import annotations

import ctypes as ct
import shutil
from pathlib import Path

import pytest

from krsid.catalog import load_catalog
from krsid.errors import CatalogError, ProgramLoadError
from krsid.pipeline.leaf import LeafError, write_leaf
from tests.support.records import PROGRAMS


class Rule(ct.Structure):
    """A cut of struct krsid_rule, the way bcc builds Leaf types."""

    _fields_ = [("action", ct.c_uint32), ("uid", ct.c_uint32), ("comm", ct.c_uint64 * 2), ("cgroup_id", ct.c_uint64)]


def test_a_misspelled_member_is_refused_with_the_name_and_the_members() -> None:
    leaf = Rule()
    with pytest.raises(LeafError) as e:
        write_leaf(leaf, {"action": 3, "uidd": 5})
    message = str(e.value)
    assert "'uidd'" in message and "action, uid, comm, cgroup_id" in message
    assert leaf.action == 0, "nothing may be written when one name is wrong"
    assert isinstance(e.value, ProgramLoadError)  # a reload that meets it is rejected, not crashed


def test_plain_setattr_would_have_accepted_it() -> None:
    """Why the writer exists: ctypes itself takes the typo without a word."""
    leaf = Rule()
    leaf.uidd = 5
    assert leaf.uid == 0


def test_members_and_arrays_are_written() -> None:
    leaf = Rule()
    write_leaf(leaf, {"action": 3, "uid": 1000, "comm": [1, 2], "cgroup_id": 1 << 40})
    assert (leaf.action, leaf.uid, list(leaf.comm), leaf.cgroup_id) == (3, 1000, [1, 2], 1 << 40)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"uid": 1 << 32}, "does not fit a 32-bit unsigned member"),
        ({"uid": -1}, "does not fit"),
        ({"comm": [1, 2, 3]}, "3 values for a member of length 2"),
        ({"uid": [1]}, "length not an array"),
        ({"comm": [1, "x"]}, "is not an integer"),
    ],
)
def test_values_that_do_not_fit_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(LeafError, match=message):
        write_leaf(Rule(), values)  # type: ignore[arg-type]


def test_only_ctypes_structures_are_written() -> None:
    class NotAStruct:
        action = 0

    with pytest.raises(LeafError, match="not a ctypes Structure"):
        write_leaf(NotAStruct(), {"action": 1})  # type: ignore[arg-type]


def test_the_exec_hook_is_a_sidecar_flag(tmp_path: Path) -> None:
    """enrich.py names no hook: the exec hook's sidecar says which field is the new exe."""
    catalog = load_catalog(PROGRAMS)
    assert catalog["bprm_check_security"].enrich.new_exe == "path"
    assert [h.name for h in catalog if h.enrich.new_exe] == ["bprm_check_security"]
    programs = tmp_path / "programs"
    shutil.copytree(PROGRAMS, programs)
    y = programs / "bprm_check_security.yaml"
    y.write_text(y.read_text().replace("new_exe: path", "new_exe: nosuch"))
    with pytest.raises(CatalogError, match=r"enrich\.new_exe: 'nosuch' is not a string field"):
        load_catalog(programs)


@pytest.mark.parametrize(
    ("replacement", "message"),
    [
        ("new_exe_file: [dev_major, dev_minor, ino]", r"enrich\.new_exe_file: needs 6 fields, in this order"),
        (
            "new_exe_file: [dev_major, dev_minor, ino, size, mtime_ns, path]",
            r"new_exe_file\.5: 'path' is not an integer",
        ),
        ("new_exe_file: [dev_major, dev_minor, ino, size, mtime_ns, {x: 1}]", r"new_exe_file\.5: .* is not an integer"),
        ("new_exe_file: ino", r"enrich\.new_exe_file: expected a list of event field names"),
    ],
)
def test_the_exec_files_identity_fields_are_checked(tmp_path: Path, replacement: str, message: str) -> None:
    """enrich.new_exe_file names the hash cache's key: six integer fields, in order."""
    catalog = load_catalog(PROGRAMS)
    assert catalog["bprm_check_security"].enrich.new_exe_file == (
        "dev_major",
        "dev_minor",
        "ino",
        "size",
        "mtime_ns",
        "ctime_ns",
    )
    programs = tmp_path / "programs"
    shutil.copytree(PROGRAMS, programs)
    y = programs / "bprm_check_security.yaml"
    text = y.read_text()
    line = "new_exe_file: [dev_major, dev_minor, ino, size, mtime_ns, ctime_ns]"
    assert line in text
    y.write_text(text.replace(line, replacement))
    with pytest.raises(CatalogError, match=message):
        load_catalog(programs)
