from __future__ import annotations

from pathlib import Path

import pytest

from krsid.catalog import load_catalog
from krsid.config import parse_config
from krsid.errors import ConfigError, ProgramLoadError
from krsid.policy import CgroupRef, CompiledRule, cgroup_ref, comm_words, compile_rules, kernel_inode
from krsid.policy.banks import BankLayout

ROOT = Path(__file__).resolve().parents[2]
# The codes and sizes shared with C, as the catalog parsed them from krsid.h.
CONTRACT = load_catalog(ROOT / "programs").contract
ACTIONS = CONTRACT.actions
RULES_PER_HOOK = CONTRACT.rules_per_hook
DIR_KIND_EXE, DIR_KIND_FILE = CONTRACT.dir_kinds["EXE"], CONTRACT.dir_kinds["FILE"]
MATCH_UID, MATCH_NOT_UID, MATCH_COMM = CONTRACT.match["UID"], CONTRACT.match["NOT_UID"], CONTRACT.match["COMM"]
MATCH_CGROUP = CONTRACT.match["CGROUP"]
MATCH_EXE, MATCH_EXE_ANY, MATCH_EXE_PREFIX = (CONTRACT.match[k] for k in ("EXE", "EXE_ANY", "EXE_PREFIX"))
MATCH_FILE_ANY, MATCH_FILE_PREFIX = CONTRACT.match["FILE_ANY"], CONTRACT.match["FILE_PREFIX"]
MATCH_FIELD0 = CONTRACT.match["FIELD0"]
HEAD = (
    "hooks:\n  file_mprotect: {}\n  bprm_check_security: {}\n  file_open: {}\n  userns_create: {}\npolicy:\n  rules:\n"
)


def cfg(rules: str) -> object:
    return parse_config(HEAD + rules, "p.yaml", catalog=load_catalog(ROOT / "programs"))


def test_rule_parses_and_compiles_to_map_values() -> None:
    c = cfg(
        "    - name: wx\n      hook: file_mprotect\n      action: deny\n"
        "      match: {uid: {not: 0}, comm: java, fields: {reqprot: {all: [EXEC, WRITE]}}}\n"
    )
    (rule,) = c.policy.rules  # type: ignore[attr-defined]
    assert (rule.name, rule.hook, rule.action, rule.not_uid, rule.comm) == ("wx", "file_mprotect", "deny", 0, "java")
    (compiled,) = compile_rules([rule], CONTRACT)
    v = compiled.values
    assert v["action"] == ACTIONS["deny"] and v["comm"] == [int.from_bytes(b"java", "little"), 0] and v["uid"] == 0
    assert v["match"] == MATCH_NOT_UID | MATCH_COMM | MATCH_FIELD0
    assert v["field_arg"][0] == 0x4 | 0x2 and v["field_op"][0] == 1


def test_cgroup_is_resolved_when_compiled(tmp_path: Path) -> None:
    c = cfg(
        "    - name: unit\n      hook: bprm_check_security\n      action: audit\n"
        "      match: {cgroup: /system.slice/app.service}\n"
    )
    (rule,) = c.policy.rules  # type: ignore[attr-defined]
    (compiled,) = compile_rules([rule], CONTRACT, resolve_cgroup=lambda p: CgroupRef(f"/cg{p}", 7))
    assert compiled.cgroup == CgroupRef("/cg/system.slice/app.service", 7)
    assert compiled.values["match"] == MATCH_CGROUP
    d = tmp_path / "system.slice" / "app.service"
    d.mkdir(parents=True)
    with pytest.raises(ConfigError, match="cgroup v2"):  # a cgroup v1 tree (no cgroup.controllers)
        cgroup_ref("/system.slice/app.service", tmp_path)
    (tmp_path / "cgroup.controllers").touch()
    assert cgroup_ref("/system.slice/app.service/", tmp_path) == CgroupRef(str(d), d.stat().st_ino)
    assert cgroup_ref("/", tmp_path) == CgroupRef(str(tmp_path), tmp_path.stat().st_ino)
    with pytest.raises(ConfigError, match="cgroup /nope"):
        cgroup_ref("/nope", tmp_path)
    (tmp_path / "file").touch()
    with pytest.raises(ConfigError, match="not a directory"):
        cgroup_ref("/file", tmp_path)


def test_each_bank_gives_the_rules_cgroups_slots_of_its_own() -> None:
    """One slot per distinct cgroup in the bank, shared by the rules that name it; the
    rule's cgroup_slot says which. Beyond the bank's slots: refused before any write."""
    layout = BankLayout({"a": 0, "b": 1}, max_hooks=64, rules_per_hook=RULES_PER_HOOK, cgroups_per_bank=2)
    audit = ACTIONS["audit"]
    x, y, z = CgroupRef("/x", 10), CgroupRef("/y", 11), CgroupRef("/z", 12)
    per_hook = {
        "a": [CompiledRule({"action": audit}, cgroup=x), CompiledRule({"action": audit})],
        "b": [CompiledRule({"action": audit}, cgroup=y), CompiledRule({"action": audit}, cgroup=x)],
    }
    assert layout.cgroup_slots(0, per_hook) == {x: 0, y: 1}
    assert layout.cgroup_slots(1, per_hook) == {x: 2, y: 3}
    written = [slot.values.get("cgroup_slot") for slot in layout.rule_slots(1, per_hook) if slot.values]
    assert written == [2, None, 3, 2]
    per_hook["b"].append(CompiledRule({"action": audit}, cgroup=z))
    with pytest.raises(ProgramLoadError, match="3 cgroups in the policy; at most 2"):
        layout.cgroup_slots(0, per_hook)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("    - {name: a, hook: nope, action: deny}\n", "unknown hook 'nope'"),
        ("    - {name: a, hook: file_mprotect, action: block}\n", "unknown action 'block'"),
        ("    - {name: A B, hook: file_mprotect, action: deny}\n", "rule names are"),
        (
            "    - {name: a, hook: file_mprotect, action: deny, match: {}}\n"
            "    - {name: a, hook: file_mprotect, action: audit}\n",
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
        ("    - {name: a, hook: file_mprotect, action: deny, match: {cgroup: /system.slice/../x}}\n", "no . or .."),
        (
            "".join(
                f"    - {{name: r{i}, hook: file_mprotect, action: audit, match: {{cgroup: /c{i}}}}}\n"
                for i in range(CONTRACT.policy_cgroups + 1)
            ),
            f"{CONTRACT.policy_cgroups + 1} different cgroups; at most {CONTRACT.policy_cgroups}",
        ),
        ("    - {hook: file_mprotect, action: deny}\n", "a rule needs 'name'"),
        (
            "".join(f"    - {{name: r{i}, hook: file_mprotect, action: audit}}\n" for i in range(RULES_PER_HOOK + 1)),
            f"at most {RULES_PER_HOOK}",
        ),
        ("    - {name: a, hook: file_open, action: deny, match: {path_prefix: tmp}}\n", "an absolute path"),
        ("    - {name: a, hook: file_open, action: deny, match: {path_prefix: /nonexistent-krsid}}\n", "must exist"),
        ("    - {name: a, hook: file_open, action: deny, match: {path_prefix: /etc/hostname}}\n", "not a directory"),
        ("    - {name: a, hook: file_open, action: deny, match: {path_prefix: []}}\n", "non-empty list"),
        ("    - {name: a, hook: file_open, action: deny, match: {exe_prefix: [/etc, 3]}}\n", "absolute path"),
        ("    - {name: a, hook: file_open, action: deny, match: {exe: /usr}}\n", "is a directory"),
        ("    - {name: a, hook: file_open, action: deny, match: {exe: /nonexistent-krsid}}\n", "must exist"),
        ("    - {name: a, hook: userns_create, action: deny, match: {path_prefix: /tmp}}\n", "has no file"),
        ("    - {name: a, hook: userns_create, action: deny, match: {fields: {unprivileged: 2.5}}}\n", "number"),
    ],
)
def test_bad_rules_are_config_errors(rules: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        cfg(rules)
    assert str(e.value).startswith("p.yaml:")


@pytest.mark.parametrize("action", ["deny", "would_deny"])
@pytest.mark.parametrize(
    ("rule", "where"),
    [
        ("    - {name: all-exec, hook: bprm_check_security, action: ACTION}\n", "policy.rules.0.action"),
        (
            "    - name: all-exec\n      hook: bprm_check_security\n      action: ACTION\n      match:\n",
            "policy.rules.0.match",
        ),
        ("    - {name: all-exec, hook: bprm_check_security, action: ACTION, match: null}\n", "policy.rules.0.match"),
    ],
)
def test_a_blocking_rule_without_match_is_refused(rule: str, where: str, action: str) -> None:
    """Without `match` a deny on bprm_check_security would block every exec, silently."""
    with pytest.raises(ConfigError) as e:
        cfg(rule.replace("ACTION", action))
    message = str(e.value)
    assert message.startswith("p.yaml:") and f"{where}: a {action} rule without 'match'" in message
    assert "every bprm_check_security call" in message and "match: {}" in message


@pytest.mark.parametrize("action", ["deny", "would_deny"])
def test_explicit_empty_match_means_every_call(action: str) -> None:
    c = cfg(f"    - {{name: all-exec, hook: bprm_check_security, action: {action}, match: {{}}}}\n")
    (rule,) = c.policy.rules  # type: ignore[attr-defined]
    (compiled,) = compile_rules([rule], CONTRACT)
    assert compiled.values["match"] == 0 and compiled.values["action"] == ACTIONS[action]


@pytest.mark.parametrize("action", ["audit", "ignore"])
def test_audit_and_ignore_rules_still_need_no_match(action: str) -> None:
    c = cfg(f"    - {{name: every-exec, hook: bprm_check_security, action: {action}}}\n")
    assert [r.action for r in c.policy.rules] == [action]  # type: ignore[attr-defined]


def test_shipped_example_policies_are_valid() -> None:
    from krsid.config import load_config

    examples = sorted((ROOT / "etc" / "policies").glob("*.yaml"))
    assert examples, "etc/policies/ ships example policies"
    for example in examples:
        c = load_config(example)
        assert c.policy.rules, example


def fake_inode(path: str) -> tuple[int, int]:
    return 7, len(path)


def test_exe_and_prefixes_compile_to_inodes_and_directory_bits(tmp_path: Path) -> None:
    c = cfg(
        "    - name: first\n      hook: file_open\n      action: audit\n      match: {uid: 5}\n"
        "    - name: p\n      hook: file_open\n      action: deny\n"
        f"      match: {{exe: /bin/sh, exe_prefix: [/usr, /etc], path_prefix: {tmp_path}}}\n"
    )
    first, rule = c.policy.rules  # type: ignore[attr-defined]
    assert (rule.exe, rule.exe_prefix, rule.path_prefix) == ("/bin/sh", ("/usr", "/etc"), (str(tmp_path),))
    c0, c1 = compile_rules([first, rule], CONTRACT, resolve_inode=fake_inode)
    assert c1.values["match"] == MATCH_EXE | MATCH_EXE_PREFIX | MATCH_FILE_PREFIX
    assert (c1.values["exe_dev"], c1.values["exe_ino"]) == (7, len("/bin/sh"))
    assert c1.dirs == [(DIR_KIND_EXE, 7, 4), (DIR_KIND_EXE, 7, 4), (DIR_KIND_FILE, 7, len(str(tmp_path)))]
    # Slot 0 tells the program what to read for the whole hook; other slots leave it 0.
    assert c0.values["needs"] == MATCH_UID | MATCH_EXE | MATCH_EXE_PREFIX | MATCH_FILE_PREFIX
    assert c1.values["needs"] == 0 and c0.dirs == []
    assert (c0.values["number"], c1.values["number"]) == (1, 2)  # slot + 1: the event's rule


def test_root_prefix_means_any_file_not_a_directory_walk() -> None:
    c = cfg(
        "    - name: any\n      hook: file_open\n      action: would_deny\n"
        "      match: {exe_prefix: /, path_prefix: [/tmp, /]}\n"
    )
    (compiled,) = compile_rules(list(c.policy.rules), CONTRACT, resolve_inode=fake_inode)  # type: ignore[attr-defined]
    assert compiled.values["match"] == MATCH_EXE_ANY | MATCH_FILE_ANY and compiled.dirs == []


def test_kernel_inode_uses_the_kernels_dev_encoding(tmp_path: Path) -> None:
    import os

    st = os.stat(tmp_path)
    assert kernel_inode(str(tmp_path)) == ((os.major(st.st_dev) << 20) | os.minor(st.st_dev), st.st_ino)
    with pytest.raises(ConfigError, match="nope"):
        kernel_inode(str(tmp_path / "nope"))


def test_comm_is_two_nul_padded_little_endian_words() -> None:
    assert comm_words("a", CONTRACT.comm_len) == [0x61, 0]
    assert comm_words("0123456789abcde", CONTRACT.comm_len) == [
        int.from_bytes(b"01234567", "little"),
        int.from_bytes(b"89abcde\0", "little"),
    ]


def test_bool_fields_take_true_and_false_and_values_of_reuses_event_names() -> None:
    c = cfg(
        "    - name: u\n      hook: userns_create\n      action: deny\n      match: {fields: {unprivileged: true}}\n"
        "    - name: w\n      hook: file_open\n      action: deny\n"
        "      match: {fields: {flags: {any: [WRONLY, RDWR]}}}\n"
    )
    u, w = c.policy.rules  # type: ignore[attr-defined]
    assert u.fields[0].arg == 1 and u.fields[0].op == 3
    assert w.fields[0].arg == 0x3


def test_rules_per_hook_matches_the_c_header() -> None:
    """The loader also asserts it at every compile (-DKRSID_RULES_PER_HOOK_EXPECTED)."""
    import re

    header = (ROOT / "programs" / "include" / "krsid.h").read_text()
    m = re.search(r"#define KRSID_RULES_PER_HOOK (\d+)", header)
    assert m and int(m.group(1)) == RULES_PER_HOOK


def test_every_hook_offers_the_policy() -> None:
    """Each program evaluates the policy (the catalog's promise that rules work on any hook)."""
    for spec in load_catalog(ROOT / "programs"):
        text = spec.source.read_text()
        assert "krsid_decide(KRSID_HOOK_ID" in text and "KRSID_SUBMIT_AND_RETURN" in text, spec.name
        if spec.policy_path:
            assert "in.file =" in text, f"{spec.name} declares policy_path but never sets in.file"


def test_cgroups_are_counted_as_compile_resolves_them() -> None:
    """ "/a//b/" and "/a/b" are one cgroup (one krsid_rule_cgroups slot): a policy of the
    maximum of distinct cgroups, one of them spelled twice, is accepted."""
    n = CONTRACT.policy_cgroups
    spellings = [f"/c{i}" for i in range(n)] + ["//c0/"]
    c = cfg(
        "".join(
            f"    - {{name: r{i}, hook: file_mprotect, action: audit, match: {{cgroup: '{p}'}}}}\n"
            for i, p in enumerate(spellings)
        )
    )
    assert len(c.policy.rules) == n + 1  # type: ignore[attr-defined]
