"""A prefix that names the root directory matches everything (the ANY match bit, no
krsid_dirs entry); recognised by the directory's identity, never by its spelling."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from krsid.catalog import MapSize, load_catalog
from krsid.config import parse_config
from krsid.errors import ConfigError
from krsid.policy import compile_rules, kernel_inode, names_root
from krsid.policy.parse import Rule
from tests.support.records import PROGRAMS

CATALOG = load_catalog(PROGRAMS)
CONTRACT = CATALOG.contract
BIN_IS_A_LINK_TO_USR_BIN = os.path.islink("/bin") and os.path.realpath("/bin") == "/usr/bin"


@pytest.mark.parametrize(("path", "root"), [("/", True), ("//", True), ("/usr", False), ("/usr/..", True)])
def test_names_root(path: str, root: bool) -> None:
    assert names_root(path) is root


@pytest.mark.skipif(not BIN_IS_A_LINK_TO_USR_BIN, reason="/bin is no symlink to usr/bin (not merged-/usr)")
def test_bin_dotdot_on_merged_usr_is_usr_not_the_root() -> None:
    assert os.path.normpath("/bin/..") == "/"  # what the spelling says
    assert not names_root("/bin/..")  # what the kernel resolves: /usr


def test_a_symlinked_dotdot_is_judged_by_where_it_leads(tmp_path: Path) -> None:
    """The same case on any system: root/link -> a/b, so root/link/.. is root/a."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to("a/b")
    root = str(tmp_path)
    assert os.path.normpath(f"{root}/link/..") == root
    assert not names_root(f"{root}/link/..", root=root)
    assert names_root(f"{root}/a/..", root=root) and names_root(f"{root}//", root=root)
    assert not names_root(f"{root}/missing", root=root)


def compiled(prefixes: tuple[str, ...]) -> tuple[int, list[tuple[int, int, int]]]:
    (rule,) = compile_rules([Rule("r", "bprm_check_security", "deny", exe_prefix=prefixes)], CONTRACT)
    return rule.values["match"], rule.dirs


def test_double_slash_exe_prefix_is_any_exe() -> None:
    match, dirs = compiled(("//",))
    assert match & CONTRACT.match["EXE_ANY"] and not match & CONTRACT.match["EXE_PREFIX"]
    assert dirs == []


def test_a_dotdot_that_leads_below_the_root_stays_a_prefix() -> None:
    """exe_prefix: /bin/.. names /usr on a merged-/usr system (else the root): as EXE_ANY
    a deny rule would block every exec on the host."""
    path = "/bin/.." if BIN_IS_A_LINK_TO_USR_BIN else "/usr/bin/.."
    match, dirs = compiled((path,))
    assert not match & CONTRACT.match["EXE_ANY"] and match & CONTRACT.match["EXE_PREFIX"]
    assert dirs == [(CONTRACT.dir_kinds["EXE"], *kernel_inode("/usr"))]


def policy_config(*prefixes: str) -> str:
    match = f"{{exe_prefix: [{', '.join(prefixes)}]}}"
    rule = f"{{name: r, hook: file_open, action: audit, match: {match}}}"
    return f"hooks: {{file_open: {{}}}}\npolicy:\n  rules:\n    - {rule}\n"


def test_the_dirs_map_check_counts_by_identity_too() -> None:
    """With room for one directory per policy: a list with the root needs none ("//"
    included); /bin/.. with /etc needs two (on merged /usr it is /usr, not the root)."""
    small = dataclasses.replace(CATALOG, dirs_map=MapSize(2, "2 in a test"))
    assert parse_config(policy_config("//", "/usr", "/etc"), "c.yaml", catalog=small).policy.rules
    below_root = "/bin/.." if BIN_IS_A_LINK_TO_USR_BIN else "/usr/bin/.."
    with pytest.raises(ConfigError, match="the policy names 2 directories"):
        parse_config(policy_config(below_root, "/etc"), "c.yaml", catalog=small)
