from __future__ import annotations

from pathlib import Path

import pytest

from krsid.catalog import load_catalog
from krsid.config import parse_config
from krsid.errors import ConfigError
from krsid.policy import ACTIONS, MATCH_COMM, MATCH_FIELD0, MATCH_NOT_UID, cgroup_id_and_level, compile_rules

ROOT = Path(__file__).resolve().parents[2]
HEAD = "hooks:\n  file_mprotect: {}\n  bprm_check_security: {}\npolicy:\n  rules:\n"


def cfg(rules: str) -> object:
    return parse_config(HEAD + rules, "p.yaml", catalog=load_catalog(ROOT / "programs"))


def test_rule_parses_and_compiles_to_map_values() -> None:
    c = cfg(
        "    - name: wx\n      hook: file_mprotect\n      action: deny\n"
        "      match: {uid: {not: 0}, comm: java, fields: {reqprot: {all: [EXEC, WRITE]}}}\n"
    )
    (rule,) = c.policy.rules  # type: ignore[attr-defined]
    assert (rule.name, rule.hook, rule.action, rule.not_uid, rule.comm) == ("wx", "file_mprotect", "deny", 0, "java")
    (compiled,) = compile_rules([rule])
    v = compiled.values
    assert v["action"] == ACTIONS["deny"] and v["comm"] == b"java" and v["uid"] == 0
    assert v["match"] == MATCH_NOT_UID | MATCH_COMM | MATCH_FIELD0
    assert v["field_arg"][0] == 0x4 | 0x2 and v["field_op"][0] == 1


def test_cgroup_is_resolved_when_compiled(tmp_path: Path) -> None:
    c = cfg(
        "    - name: unit\n      hook: bprm_check_security\n      action: audit\n"
        "      match: {cgroup: /system.slice/app.service}\n"
    )
    (rule,) = c.policy.rules  # type: ignore[attr-defined]
    (compiled,) = compile_rules([rule], resolve_cgroup=lambda p: (4242, p.count("/")))
    assert (compiled.values["cgroup_id"], compiled.values["cgroup_level"]) == (4242, 2)
    d = tmp_path / "system.slice" / "app.service"
    d.mkdir(parents=True)
    assert cgroup_id_and_level("/system.slice/app.service", tmp_path) == (d.stat().st_ino, 2)
    with pytest.raises(ConfigError, match="cgroup /nope"):
        cgroup_id_and_level("/nope", tmp_path)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("    - {name: a, hook: nope, action: deny}\n", "unknown hook 'nope'"),
        ("    - {name: a, hook: file_mprotect, action: block}\n", "unknown action 'block'"),
        ("    - {name: A B, hook: file_mprotect, action: deny}\n", "rule names are"),
        (
            "    - {name: a, hook: file_mprotect, action: deny}\n    - {name: a, hook: file_mprotect, action: audit}\n",
            "duplicate rule name 'a'",
        ),
        ("    - {name: a, hook: file_mprotect, action: deny, match: {fields: {port: 22}}}\n", "no policy field 'port'"),
        (
            "    - {name: a, hook: file_mprotect, action: deny, match: {fields: {reqprot: {all: [FLY]}}}}\n",
            "unknown value 'FLY'",
        ),
        ("    - {name: a, hook: file_mprotect, action: deny, match: {comm: averyveryverylongcomm}}\n", "1-15 bytes"),
        ("    - {name: a, hook: file_mprotect, action: deny, match: {uid: -1}}\n", "0..4294967295"),
        ("    - {name: a, hook: file_mprotect, action: deny, match: {cgroup: system.slice}}\n", "starting with /"),
        ("    - {hook: file_mprotect, action: deny}\n", "a rule needs 'name'"),
        ("".join(f"    - {{name: r{i}, hook: file_mprotect, action: audit}}\n" for i in range(17)), "at most 16"),
    ],
)
def test_bad_rules_are_config_errors(rules: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        cfg(rules)
    assert str(e.value).startswith("p.yaml:")


def test_shipped_example_policies_are_valid() -> None:
    from krsid.config import load_config

    examples = sorted((ROOT / "etc" / "policies").glob("*.yaml"))
    assert examples, "etc/policies/ ships example policies"
    for example in examples:
        c = load_config(example)
        assert c.policy.rules, example
