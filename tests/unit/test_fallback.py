"""Fallback programs: cred_prepare stands in for userns_create where the kernel lacks it,
file_ioctl for inode_file_setattr (before 6.17).

The kernels at hand all have userns_create, so the selection is tested here with
injected hook lists (what kernel_hooks() reads from BTF), and the VM test forces the
fallback with `fallback: always`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from krsid.catalog import HookSpec, load_catalog
from krsid.config import Config, load_config, parse_config
from krsid.daemon import Daemon
from krsid.errors import CatalogError, ConfigError
from krsid.plan import select_hooks
from krsid.policy import CompiledRule
from tests.support.records import PROGRAMS

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(PROGRAMS)
BOTH = {"bprm_check_security": 1, "userns_create": 1, "cred_prepare": 3}
OLD_KERNEL = {"bprm_check_security": 1, "cred_prepare": 3}  # < 6.1: no userns_create
NEITHER = {"bprm_check_security": 1}


def config(hooks: str, rules: str = "") -> Config:
    return parse_config(f"hooks:\n{hooks}{rules}", "t.yaml", catalog=CATALOG)


USERNS = "  userns_create: {}\n"
DENY = (
    "policy:\n  rules:\n    - name: no-userns\n      hook: userns_create\n      action: deny\n"
    "      match: {uid: {not: 0}}\n"
)


def selected(cfg: Config, available: Mapping[str, int]) -> dict[str, str]:
    return {hook: spec.name for hook, spec in select_hooks(cfg, available).items()}


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_catalog_declares_cred_prepare_as_userns_creates_fallback() -> None:
    fallback = CATALOG.fallback_of("userns_create")
    assert fallback is not None and fallback.name == "cred_prepare"
    assert CATALOG["cred_prepare"].fallback_for == "userns_create"
    assert "cred_prepare" not in CATALOG.configurable and "userns_create" in CATALOG.configurable
    assert CATALOG.fallback_of("file_mprotect") is None
    # Fields a consumer of userns_create reads have the same names and types.
    primary = {f.name: f.kind for f in CATALOG["userns_create"].fields}
    fb = {f.name: f.kind for f in CATALOG["cred_prepare"].fields}
    assert {k: fb.get(k) for k in primary} == primary
    assert CATALOG["cred_prepare"].message_id != CATALOG["userns_create"].message_id


def test_kernel_with_the_hook_gets_the_hook(caplog: pytest.LogCaptureFixture) -> None:
    assert selected(config(USERNS), BOTH) == {"userns_create": "userns_create"}
    assert not warnings(caplog)


def test_kernel_without_the_hook_gets_the_fallback_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert selected(config(USERNS), OLD_KERNEL) == {"userns_create": "cred_prepare"}
    (line,) = warnings(caplog)
    assert "no bpf_lsm_userns_create; using its fallback cred_prepare" in line


def test_kernel_with_neither_skips_the_hook_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    cfg = config("  bprm_check_security: {}\n" + USERNS)
    assert selected(cfg, NEITHER) == {"bprm_check_security": "bprm_check_security"}
    (line,) = warnings(caplog)
    assert "hook userns_create: this kernel has no bpf_lsm_userns_create nor bpf_lsm_cred_prepare" in line
    assert "skipping it" in line


def test_fallback_always_forces_it_and_never_refuses_it(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="krsid"):
        assert selected(config("  userns_create: {fallback: always}\n"), BOTH) == {"userns_create": "cred_prepare"}
    assert any("served by its fallback cred_prepare (fallback: always)" in r.getMessage() for r in caplog.records)
    assert not warnings(caplog)
    assert selected(config("  userns_create: {fallback: never}\n"), BOTH) == {"userns_create": "userns_create"}
    assert selected(config("  userns_create: {fallback: never}\n"), OLD_KERNEL) == {}
    assert selected(config("  userns_create: {fallback: always}\n"), NEITHER) == {}
    assert len(warnings(caplog)) == 2, warnings(caplog)


def test_disabled_hook_is_not_replaced(caplog: pytest.LogCaptureFixture) -> None:
    assert selected(config("  bprm_check_security: {}\n  userns_create: {enabled: false}\n"), OLD_KERNEL) == {
        "bprm_check_security": "bprm_check_security"
    }
    assert not warnings(caplog)


def test_shipped_deny_policy_selects_the_fallback_on_an_old_kernel() -> None:
    cfg = load_config(ROOT / "etc" / "policies" / "deny-unprivileged-userns.yaml")
    assert selected(cfg, OLD_KERNEL) == {"bprm_check_security": "bprm_check_security", "userns_create": "cred_prepare"}
    assert [r.hook for r in cfg.policy.rules] == ["userns_create"]


class FakePrograms:
    """What Daemon._apply_policy / reload use of LoadedPrograms."""

    def __init__(self, specs: Sequence[HookSpec]) -> None:
        self.specs = list(specs)
        self.policy: Mapping[str, Sequence[CompiledRule]] = {}
        self.options: Mapping[str, Any] = {}
        self.limits: Mapping[str, tuple[int, int]] = {}

    def apply_policy(self, per_hook: Mapping[str, Sequence[CompiledRule]]) -> int:
        self.policy = per_hook
        return 1

    def rule_hits(self, bank: int, hook: str, slot: int) -> int:
        return 0

    def set_options(self, options: Mapping[str, Any]) -> None:
        self.options = options

    def set_limits(self, limits: Mapping[str, tuple[int, int]]) -> None:
        self.limits = limits

    def set_fair_share(self, share: Any) -> None:
        self.fair_share = share

    def set_watch(self, resolved: Any) -> None:
        self.watch = resolved


def fallback_daemon(
    cfg: Config, tmp_path: Path, available: Mapping[str, int] = OLD_KERNEL
) -> tuple[Daemon, FakePrograms]:
    d = Daemon(cfg, sinks=[], available_hooks=lambda: available)
    selection = select_hooks(cfg, available)
    programs = FakePrograms(list(selection.values()))
    d.programs = programs  # type: ignore[assignment]
    d.serves = {spec.name: hook for hook, spec in selection.items()}
    return d, programs


def test_userns_create_rules_and_limits_go_to_the_fallback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = config("  userns_create: {rate_limit: 7, dedup_window_ms: 9}\n", DENY)
    d, programs = fallback_daemon(cfg, tmp_path)
    caplog.clear()
    d._apply_policy(cfg.policy)
    (rule,) = programs.policy["cred_prepare"]
    assert rule.values["action"] == 3 and rule.values["uid"] == 0  # deny, not-uid 0
    assert d.policy.rule_name("cred_prepare", 1) == "no-userns"  # the event's KRSID_RULE
    assert not warnings(caplog)  # the rule's hook is served: no "does nothing" warning
    assert d._hook_limits(cfg) == {"cred_prepare": (7, 9)}
    assert d._hook_options(cfg) == {"cred_prepare": {}}


def test_file_ioctl_stands_in_for_inode_file_setattr_with_its_fields_options_and_rules(tmp_path: Path) -> None:
    fallback = CATALOG.fallback_of("inode_file_setattr")
    assert fallback is not None and fallback.name == "file_ioctl"
    assert "file_ioctl" not in CATALOG.configurable
    primary = {f.name: f.kind for f in CATALOG["inode_file_setattr"].fields if f.kind != "hidden"}
    fb = {f.name: f.kind for f in CATALOG["file_ioctl"].fields}
    assert {k: fb.get(k) for k in primary} == primary and fb["cmd"] == "enum"
    new_kernel = {"inode_file_setattr": 2, "file_ioctl": 3}
    cfg = config(
        "  inode_file_setattr: {all: true}\n",
        "policy:\n  rules:\n    - name: no-plus-i\n      hook: inode_file_setattr\n      action: deny\n"
        "      match: {fields: {immutable: ADDED}}\n",
    )
    assert selected(cfg, {"file_ioctl": 3}) == {"inode_file_setattr": "file_ioctl"}
    assert selected(cfg, new_kernel) == {"inode_file_setattr": "inode_file_setattr"}
    d, programs = fallback_daemon(cfg, tmp_path, {"file_ioctl": 3})
    d._apply_policy(cfg.policy)
    (rule,) = programs.policy["file_ioctl"]
    assert rule.values["action"] == 3 and d.policy.rule_name("file_ioctl", 1) == "no-plus-i"
    assert d._hook_options(cfg) == {"file_ioctl": {"all": True}}


def test_reload_refuses_a_fallback_change(tmp_path: Path) -> None:
    path = tmp_path / "k.yaml"
    path.write_text("hooks:\n" + USERNS + DENY)
    cfg = load_config(path)
    d, programs = fallback_daemon(cfg, tmp_path)
    d._apply_policy(cfg.policy)
    path.write_text("hooks:\n  userns_create: {fallback: always}\n")
    assert d.reload() is False
    assert d.reloads["failure"] == 1 and len(programs.policy["cred_prepare"]) == 1  # old policy stays
    path.write_text("hooks:\n" + USERNS)
    assert d.reload() is True
    assert programs.policy["cred_prepare"] == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("  cred_prepare: {}\n", "cred_prepare is the fallback program of userns_create, not a hook of its own"),
        ("  userns_create: {fallback: maybe}\n", "'maybe' is not one of auto, always, never"),
        ("  file_mprotect: {fallback: always}\n", "unknown key 'fallback'"),
        (
            USERNS + "policy:\n  rules:\n    - {name: r, hook: cred_prepare, action: deny}\n",
            "write the rule for userns_create",
        ),
    ],
)
def test_bad_fallback_config_is_a_clean_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"t\.yaml:") as e:
        parse_config("hooks:\n" + text, "t.yaml", catalog=CATALOG)
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nope", "not another hook of this catalog"),
        ("cred_prepare", "not another hook of this catalog"),
        ("file_mprotect", "options must be the same as file_mprotect's"),
    ],
)
def test_bad_fallback_for_is_a_catalog_error(tmp_path: Path, target: str, message: str) -> None:
    programs = tmp_path / "programs"
    shutil.copytree(PROGRAMS, programs)
    sidecar = programs / "cred_prepare.yaml"
    sidecar.write_text(sidecar.read_text().replace("fallback_for: userns_create", f"fallback_for: {target}"))
    with pytest.raises(CatalogError, match=message):
        load_catalog(programs)


def test_a_second_fallback_for_the_same_hook_is_a_catalog_error(tmp_path: Path) -> None:
    programs = tmp_path / "programs"
    shutil.copytree(PROGRAMS, programs)
    for ext in ("c", "yaml"):
        text = (programs / f"cred_prepare.{ext}").read_text()
        (programs / f"cred_prepare2.{ext}").write_text(text.replace("cred_prepare", "cred_prepare2"))
    sidecar = programs / "cred_prepare2.yaml"
    sidecar.write_text(sidecar.read_text().replace("539ae0cc5c81475cb422a23566cd91f3", "ab" * 16))
    with pytest.raises(CatalogError, match="cred_prepare is already its fallback"):
        load_catalog(programs)
