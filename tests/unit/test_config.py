from __future__ import annotations

from pathlib import Path

import pytest

from krsid.config import load_config, parse_config
from krsid.errors import ConfigError
from tests.support.cli import run_krsid

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "etc" / "krsid.yaml"


def test_shipped_config_is_valid() -> None:
    c = load_config(SHIPPED)
    noisy = {h.name for h in c.catalog if h.noisy}
    assert {h.name for h in c.enabled_hooks} == set(c.catalog.configurable) - noisy
    # every hook is listed, noisy ones off; fallback programs are not hooks of their own
    assert {h.name for h in c.hooks} == set(c.catalog.configurable)
    assert set(c.catalog.hooks) - set(c.catalog.configurable) == {"cred_prepare", "file_ioctl"}
    assert noisy == {"mmap_file", "socket_connect"}
    assert dict(next(h for h in c.hooks if h.name == "file_mprotect").options) == {"exec_only": 1}
    assert (c.prometheus.host, c.prometheus.port) == ("127.0.0.1", 9477)
    # Under systemd stdout goes to the journal, which has every event already: JSON
    # lines go to their own file (LogsDirectory=krsid), else each event is logged twice.
    assert c.jsonl.path == "/var/log/krsid/events.jsonl" and c.journald.enabled


def test_option_defaults_come_from_the_sidecar() -> None:
    c = parse_config("hooks:\n  file_mprotect: {}\n", "t.yaml")
    assert dict(c.hooks[0].options) == {"exec_only": 1}
    c = parse_config("hooks:\n  file_mprotect: {exec_only: false}\n", "t.yaml")
    assert dict(c.hooks[0].options) == {"exec_only": 0}


def test_disabled_hook_is_kept_but_not_enabled() -> None:
    c = parse_config("hooks:\n  file_mprotect: {enabled: false}\n  bprm_check_security: {}\n", "t.yaml")
    assert [h.name for h in c.enabled_hooks] == ["bprm_check_security"]


BAD = [
    ("hooks:\n  nope: {}\n", "2:3", "hooks.nope: unknown hook 'nope'"),
    ("hooks:\n  file_mprotect:\n    exec_only: 'yes'\n", "3:16", "expected true or false"),
    ("hooks:\n  file_mprotect:\n    exec_onyl: true\n", "3:5", "unknown key 'exec_onyl'"),
    ("hooks: {}\n", "1:8", "no hooks configured"),
    # all disabled: `run` would fail with exit 1, which systemd restarts; a config error (2) is not
    ("hooks:\n  file_mprotect: {enabled: false}\n  bpf: {enabled: false}\n", "2:3", "every hook is disabled"),
    ("hooks:\n  file_mprotect: {}\nsurprise: 1\n", "3:1", "unknown key 'surprise'"),
    ("hooks:\n  file_mprotect: {}\nbuffer:\n  pages: 100\n", "4:10", "power of two"),
    ("hooks:\n  file_mprotect: {}\nbuffer:\n  pages: true\n", "4:10", "got a boolean"),
    ("hooks:\n  file_mprotect: {}\nbuffer:\n  wakeup_events: -1\n", "4:18", "between 0 and 1048576"),
    ("hooks:\n  file_mprotect: {}\nheaders: maybe\n", "3:10", "'maybe' is not one of auto, kernel, btf"),
    ("hooks:\n  file_mprotect: {}\nsinks:\n  prometheus:\n    listen: 9477\n", "5:13", "HOST:PORT"),
    ("hooks:\n  file_mprotect: {}\nsinks:\n  prometheus:\n    listen: 'example.com:80'\n", "5:13", "IP address"),
    # a digit for str.isdigit() that int() refuses: was a ValueError traceback
    ("hooks:\n  file_mprotect: {}\nsinks:\n  prometheus:\n    listen: '127.0.0.1:9\u00b2'\n", "5:13", "HOST:PORT"),
    ("hooks:\n  file_mprotect: {}\nsinks:\n  syslog: {}\n", "4:3", "unknown key 'syslog'"),
    ("hooks:\n  file_mprotect: {}\n  file_mprotect: {}\n", "3:3", "duplicate key 'file_mprotect'"),
    ("hooks:\n  file_mprotect: [\n", "3:1", "invalid YAML"),
    ("- a\n- b\n", "1:1", "expected a mapping, got a list"),
    ("hooks: [file_mprotect]\n", "1:8", "expected a mapping, got a list"),
]


@pytest.mark.parametrize(("text", "pos", "message"), BAD)
def test_bad_config_names_the_place(text: str, pos: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "bad.yaml")
    assert f"bad.yaml:{pos}:" in str(e.value)
    assert message in str(e.value)


def test_unreadable_config_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "bin.yaml")


def test_bad_programs_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"programs_dir: .*does not exist"):
        parse_config(f"programs_dir: {tmp_path}/none\nhooks:\n  file_mprotect: {{}}\n", "c.yaml")


@pytest.mark.parametrize("command", ["run", "check"])
def test_cli_exits_2_on_bad_config_before_touching_the_kernel(tmp_path: Path, command: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("hooks:\n  nope: {}\n")
    p = run_krsid(command, "--config", str(cfg))
    assert p.returncode == 2, p.stderr
    assert "bad.yaml:2:3: hooks.nope: unknown hook 'nope'" in p.stderr
    assert "Traceback" not in p.stderr
    # Nothing was compiled or attached: no BCC/loader output at all.
    assert "compiled" not in p.stderr and "attached" not in p.stderr


def test_check_config_only_accepts_the_shipped_config() -> None:
    p = run_krsid("check", "--config-only", "--config", str(SHIPPED))
    assert p.returncode == 0, p.stderr
    import yaml

    hooks = yaml.safe_load(SHIPPED.read_text())["hooks"]
    enabled = [h for h, settings in hooks.items() if (settings or {}).get("enabled", True)]
    assert len(enabled) >= 12  # the shipped config keeps every quiet hook on
    assert f"OK ({len(enabled)} hooks enabled)" in p.stdout


needs_root = pytest.mark.skipif(__import__("os").geteuid() != 0, reason="ownership checks apply to root runs")


@needs_root
@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602])
def test_group_or_world_writable_config_is_refused(tmp_path: Path, mode: int) -> None:
    cfg = tmp_path / "krsid.yaml"
    cfg.write_text(SHIPPED.read_text())
    cfg.chmod(mode)
    with pytest.raises(ConfigError, match=r"refusing the config file: .* is group/world-writable"):
        load_config(cfg)


@needs_root
def test_config_not_owned_by_root_is_refused(tmp_path: Path) -> None:
    import os

    cfg = tmp_path / "krsid.yaml"
    cfg.write_text(SHIPPED.read_text())
    os.chown(cfg, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534, not root"):
        load_config(cfg)


@needs_root
def test_writable_programs_dir_is_refused(tmp_path: Path) -> None:
    import shutil

    progs = tmp_path / "programs"
    shutil.copytree(ROOT / "programs", progs)
    (progs / "file_mprotect.c").chmod(0o666)
    cfg = tmp_path / "krsid.yaml"
    cfg.write_text(f"programs_dir: {progs}\nhooks:\n  file_mprotect: {{}}\n")
    with pytest.raises(ConfigError, match=r"refusing a program file: .*file_mprotect.c is group/world-writable"):
        load_config(cfg)


@needs_root
def test_sticky_tmp_parent_is_accepted(tmp_path: Path) -> None:
    # /tmp itself is world-writable but sticky: only its owner can replace our file.
    cfg = tmp_path / "krsid.yaml"
    cfg.write_text(SHIPPED.read_text())
    assert load_config(cfg).hooks


def test_every_top_level_field_of_config_is_a_key() -> None:
    """Each documented top-level key parses (a key missing from the allow-list would be 'unknown')."""
    c = parse_config(
        "hooks:\n  file_mprotect: {rate_limit: 100, dedup_window_ms: 500}\nbpf_stats: true\npoll_timeout_ms: 50\n"
        "policy: {rules: []}\nbuffer: {kind: ringbuf, pages: 64, wakeup_events: 0}\nheaders: btf\n",
        "t.yaml",
    )
    assert c.bpf_stats and c.poll_timeout_ms == 50 and c.ringbuf_pages == 64 and c.headers == "btf"
    assert c.wakeup_events == 0
    assert (c.hooks[0].rate_limit, c.hooks[0].dedup_window_ms) == (100, 500)
