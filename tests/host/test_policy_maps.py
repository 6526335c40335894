"""The policy's map writes against bcc's real Key/Leaf types (compiled here, never attached).

The checked leaf writer (krsid.pipeline.leaf) refuses a member name its structure
lacks; this proves that every name krsid.policy compiles to is a member of the
struct as clang laid it out (struct krsid_rule, krsid_dir_key/rules, krsid_limit),
and that a misspelled one fails before the bank switch.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from krsid.catalog import load_catalog
from krsid.config import parse_config
from krsid.policy import CgroupRef, CompiledRule, compile_policy
from tests.support.records import PROGRAMS

if TYPE_CHECKING:
    from krsid.pipeline.load import LoadedPrograms

pytestmark = pytest.mark.bcc

CATALOG = load_catalog(PROGRAMS)
HOOKS = ("file_mprotect", "file_open")


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadedPrograms]:
    if os.geteuid() != 0:
        pytest.skip("BCC compiles (and map creation) need root")
    try:
        from krsid.pipeline.load import BuildSettings, LoadedPrograms
    except ImportError as e:
        pytest.skip(f"bcc not importable ({e}); install python3-bpfcc")
    from krsid.kernel.btf import lsm_hook_arity
    from krsid.kernel.headers import resolve_headers

    settings = BuildSettings(resolve_headers(tmp_path_factory.mktemp("hdr"), prefer="auto"), lsm_hook_arity())
    loaded = LoadedPrograms(CATALOG, [CATALOG[h] for h in HOOKS], settings, log=lambda _m: None)
    loaded.build()
    yield loaded
    loaded.close()


def table(programs: LoadedPrograms, name: str) -> Any:
    return programs.table(name)


def test_rules_dirs_and_limits_land_in_the_real_maps(programs: LoadedPrograms, tmp_path: Path) -> None:
    cfg = parse_config(
        "hooks:\n  file_mprotect: {}\n  file_open: {}\npolicy:\n  rules:\n"
        "    - {name: wx, hook: file_mprotect, action: deny, match: {comm: java, uid: {not: 0}, "
        "fields: {reqprot: {all: [EXEC]}}}}\n"
        f"    - {{name: tmp, hook: file_open, action: would_deny, match: {{path_prefix: {tmp_path}}}}}\n",
        "p.yaml",
        catalog=CATALOG,
    )
    compiled = compile_policy(cfg.policy, HOOKS, {})
    before = programs.active_bank()
    bank = programs.apply_policy(compiled)
    assert bank == 1 - before and programs.active_bank() == bank
    leaf = table(programs, "krsid_rules")[ct.c_int(programs.rule_index(bank, "file_mprotect", 0))]
    want = compiled["file_mprotect"][0].values
    assert (leaf.action, leaf.match, leaf.uid, leaf.number) == (
        want["action"],
        want["match"],
        want["uid"],
        want["number"],
    )
    assert list(leaf.comm) == want["comm"] and list(leaf.field_arg) == want["field_arg"]
    dirs = [(k.bank_hook, k.kind, k.dev, k.ino, list(v.bits)) for k, v in table(programs, "krsid_dirs").items()]
    kind, dev, ino = compiled["file_open"][0].dirs[0]
    bank_hook = programs.bank_layout().bank_hook(bank, "file_open")
    assert (bank_hook, kind, dev, ino, [1, 0]) in dirs
    programs.set_limits({"file_open": (100, 5)})
    limit = table(programs, "krsid_limits")[ct.c_int(programs.hook_ids["file_open"])]
    assert limit.window_ns == 5_000_000 and limit.cost_ns > 0


def test_a_misspelled_member_fails_before_the_bank_switch(programs: LoadedPrograms) -> None:
    from krsid.pipeline.leaf import LeafError

    before = programs.active_bank()
    bad = CompiledRule({"action": 3, "numbr": 1})
    with pytest.raises(LeafError, match=r"krsid_rule has no member 'numbr' \(its members: action, match,"):
        programs.apply_policy({"file_mprotect": [bad]})
    assert programs.active_bank() == before


def test_a_cgroup_rule_holds_its_cgroup_and_a_directory_that_is_no_cgroup_is_refused(
    programs: LoadedPrograms, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bcc's CgroupArray through the loader: the rule's slot points at its cgroup (a
    cgroup2 mounted here: this host's own tree may be cgroup v1); a directory that is
    no cgroup is refused by the kernel, before the bank switch."""
    mnt = tmp_path / "cgroup2"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "cgroup2", "krsid-test", str(mnt)], check=True)
    child = mnt / f"krsid-test-{uuid.uuid4().hex[:8]}"
    try:
        child.mkdir()
        monkeypatch.setattr("krsid.policy.compile.CGROUP_ROOT", mnt)
        cfg = parse_config(
            "hooks:\n  file_mprotect: {}\n  file_open: {}\npolicy:\n  rules:\n"
            f"    - {{name: cg, hook: file_mprotect, action: deny, match: {{cgroup: /{child.name}}}}}\n",
            "p.yaml",
            catalog=CATALOG,
        )
        compiled = compile_policy(cfg.policy, HOOKS, {})
        assert compiled["file_mprotect"][0].cgroup == CgroupRef(str(child), child.stat().st_ino)
        bank = programs.apply_policy(compiled)
        leaf = table(programs, "krsid_rules")[ct.c_int(programs.rule_index(bank, "file_mprotect", 0))]
        assert leaf.cgroup_slot == bank * CATALOG.contract.policy_cgroups
        assert leaf.match == CATALOG.contract.match["CGROUP"]

        not_a_cgroup = CompiledRule(
            dict(compiled["file_mprotect"][0].values), cgroup=CgroupRef(str(tmp_path), tmp_path.stat().st_ino)
        )
        with pytest.raises(Exception, match="Could not update table"):
            programs.apply_policy({"file_mprotect": [not_a_cgroup]})
        assert programs.active_bank() == bank
        programs.apply_policy({})  # both banks without the cgroup: its slots emptied
        programs.apply_policy({})
    finally:
        with contextlib.suppress(OSError):
            child.rmdir()
        subprocess.run(["umount", str(mnt)], check=False)
