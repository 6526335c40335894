"""The file-integrity watch's config, identity resolution, ids and decoding (krsid.watch)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from krsid.config import parse_config
from krsid.errors import ConfigError
from krsid.pipeline.decode import EventDecoder
from krsid.watch import (
    DEFAULT_DIRS,
    DEFAULT_LOGS,
    DEFAULT_NAMES,
    DEFAULT_PATHS,
    DEFAULT_SECRETS,
    WatchConfig,
    WatchTable,
    describe,
    dir_filter,
    dir_key,
    ino_filter,
    name_filter,
    resolve_watch,
)
from tests.support.records import catalog, pack

CAT = catalog()
HOOKS = "hooks:\n  file_open: {}\n"


def test_without_a_watch_section_the_shipped_lists_apply() -> None:
    watch = parse_config(HOOKS, "t.yaml").watch
    assert watch.paths == DEFAULT_PATHS and watch.names == DEFAULT_NAMES
    assert "/etc/cron.d" in watch.paths and "/etc/sudoers.d" in watch.paths and "/root/.ssh" in watch.paths
    assert "authorized_keys" in watch.names and ".bash_history" in watch.names
    assert watch.logs == DEFAULT_LOGS == ("/var/log",)
    assert watch.secrets == DEFAULT_SECRETS and "id_ed25519" in watch.secrets
    assert watch.dirs == DEFAULT_DIRS and ".config/autostart" in watch.dirs and ".config/systemd/user" in watch.dirs


def test_given_lists_replace_the_defaults_and_empty_lists_turn_them_off() -> None:
    watch = parse_config(HOOKS + "watch:\n  paths: [/opt/app, /opt/app]\n", "t.yaml").watch
    assert watch.paths == ("/opt/app",)  # duplicates folded
    assert watch.names == DEFAULT_NAMES  # the other list keeps its default
    assert parse_config(HOOKS + "watch: {paths: [], names: []}\n", "t.yaml").watch == WatchConfig((), ())
    assert parse_config(HOOKS + "watch: {secrets: [id_x]}\n", "t.yaml").watch == WatchConfig(secrets=("id_x",))
    assert parse_config(HOOKS + "watch: {logs: []}\n", "t.yaml").watch == WatchConfig(logs=())
    assert parse_config(HOOKS + "watch: {dirs: [a/b, c, a/b]}\n", "t.yaml").watch == WatchConfig(dirs=("a/b", "c"))
    assert parse_config(HOOKS + "watch: {dirs: []}\n", "t.yaml").watch == WatchConfig(dirs=())


LONG = "x" * 63
BAD = [
    ("watch:\n  paths: [etc/cron.d]\n", "4:11", "must be an absolute path, got 'etc/cron.d'"),
    ("watch:\n  logs: [var/log]\n", "4:10", "must be an absolute path, got 'var/log'"),
    ("watch:\n  logs: /var/log\n", "4:9", "expected a list"),
    ("watch:\n  names: [.ssh/authorized_keys]\n", "4:11", "must be a file name (no '/') of 1..62 bytes"),
    (f"watch:\n  names: [{LONG}]\n", "4:11", "of 1..62 bytes"),
    ("watch:\n  names: ['..']\n", "4:11", "must be a file name"),
    ("watch:\n  names: ['']\n", "4:11", "must be a file name"),
    ("watch:\n  names: [1]\n", "4:11", "expected a string"),
    ("watch:\n  secrets: [.ssh/id_rsa]\n", "4:13", "must be a file name (no '/') of 1..62 bytes"),
    ("watch:\n  secrets: id_rsa\n", "4:12", "a list of strings"),
    ("watch:\n  paths: /etc\n", "4:10", "expected a list"),
    ("watch:\n  dirs: [home/.config/systemd/user]\n", "4:10", "must be a directory's last one to three names"),
    ("watch:\n  dirs: [/etc/xdg]\n", "4:10", "each of 1..30 bytes, got '/etc/xdg'"),
    ("watch:\n  dirs: [a//b]\n", "4:10", "must be a directory's last"),
    ("watch:\n  dirs: [autostart/]\n", "4:10", "must be a directory's last"),
    ("watch:\n  dirs: [../x]\n", "4:10", "must be a directory's last"),
    (f"watch:\n  dirs: [{'d' * 31}]\n", "4:10", "each of 1..30 bytes"),
    ("watch:\n  dirs: [[a]]\n", "4:10", "expected a string"),
    ("watch:\n  dirs: autostart\n", "4:9", "a list of strings"),
    ("watch:\n  pathz: []\n", "4:3", "unknown key 'pathz'"),
    ("watch: [/etc]\n", "3:8", "expected a mapping, got a list"),
]


@pytest.mark.parametrize(("text", "pos", "message"), BAD)
def test_a_bad_watch_is_a_config_error_naming_the_place(text: str, pos: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(HOOKS + text, "bad.yaml")
    assert f"bad.yaml:{pos}:" in str(e.value)
    assert message in str(e.value)


def test_more_names_than_the_map_holds_is_refused() -> None:
    names = ", ".join(f"n{i}" for i in range(CAT.contract.watch_names + 1))
    with pytest.raises(ConfigError, match=f"at most {CAT.contract.watch_names} distinct names and secrets"):
        parse_config(HOOKS + f"watch:\n  names: [{names}]\n  secrets: []\n", "bad.yaml")
    # Together: both lists share the map; a name in both takes one key.
    half = CAT.contract.watch_names // 2
    names = ", ".join(f"n{i}" for i in range(half))
    secrets = ", ".join(f"s{i}" for i in range(half + 1))
    with pytest.raises(ConfigError, match=f"got {2 * half + 1}"):
        parse_config(HOOKS + f"watch:\n  names: [{names}]\n  secrets: [{secrets}]\n", "bad.yaml")
    parse_config(HOOKS + f"watch:\n  names: [{names}]\n  secrets: [{names}, s0]\n", "ok.yaml")


def test_more_dirs_than_the_map_holds_is_refused() -> None:
    dirs = ", ".join(f"d{i}" for i in range(CAT.contract.watch_dirs + 1))
    with pytest.raises(ConfigError, match=f"bad.yaml:4:9: .*at most {CAT.contract.watch_dirs} dirs"):
        parse_config(HOOKS + f"watch:\n  dirs: [{dirs}]\n", "bad.yaml")


def test_paths_resolve_to_the_kernels_device_and_inode(tmp_path: Path) -> None:
    watched, other = tmp_path / "cron.d", tmp_path / "absent"
    watched.mkdir()
    (tmp_path / "link").symlink_to(watched)
    table = WatchTable()
    config = WatchConfig((str(watched), str(other), str(tmp_path / "link")), ("x",), logs=(), secrets=(), dirs=("a/b",))
    resolved = resolve_watch(config, table, CAT.contract)
    st = os.stat(watched)
    kernel_dev = (os.major(st.st_dev) << 20) | os.minor(st.st_dev)
    # The symlink is the same directory: one entry, under the first name that reached it.
    every_op = CAT.contract.watch_ops_all << CAT.contract.watch_id_bits
    assert resolved.files == {(kernel_dev, st.st_ino): every_op | table.id_of(str(watched))}
    assert resolved.names == {b"x": every_op | table.id_of("x")}
    assert resolved.dirs == {dir_key("a/b", CAT.contract): every_op | table.id_of("a/b")}
    assert resolved.missing == (str(other),)
    want = "1 path(s), 1 name(s) and 1 directory name(s) watched; not present, not watched: " + str(other)
    assert describe(resolved) == want


def test_log_directories_report_only_truncation_rewrites_deletion_and_renames(tmp_path: Path) -> None:
    """A `logs` entry's map value carries krsid.h's KRSID_WATCH_OPS_LOGS, a `paths`
    entry's every operation; a path in both lists is watched as in `paths`."""
    from krsid.csource import parse_defines

    defines = parse_defines((Path(__file__).parents[2] / "programs" / "include" / "krsid.h").read_text())
    ops = {k[len("KRSID_WATCH_OP_") :]: v for k, v in defines.items() if k.startswith("KRSID_WATCH_OP_")}
    c = CAT.contract
    assert c.watch_ops_logs == ops["TRUNCATE"] | ops["DELETE"] | ops["RENAME"] | ops["REWRITE"]
    # REWRITE is always asked with WRITE (file_open), so every-write entries need not list it.
    assert c.watch_ops_all == sum(ops.values()) - ops["READ"] - ops["REWRITE"]
    assert not c.watch_ops_logs & ops["WRITE"]
    assert c.watch_ops_secrets == ops["READ"]  # reads only: every process reads /etc/passwd
    logs, both, cron = tmp_path / "log", tmp_path / "both", tmp_path / "cron.d"
    for d in (logs, both, cron):
        d.mkdir()
    table = WatchTable()
    resolved = resolve_watch(WatchConfig((str(cron), str(both)), (), (str(logs), str(both))), table, c)

    def identity(p: Path) -> tuple[int, int]:
        st = os.stat(p)
        return (os.major(st.st_dev) << 20) | os.minor(st.st_dev), st.st_ino

    assert resolved.files == {
        identity(cron): c.watch_ops_all << c.watch_id_bits | table.id_of(str(cron)),
        identity(both): c.watch_ops_all << c.watch_id_bits | table.id_of(str(both)),
        identity(logs): c.watch_ops_logs << c.watch_id_bits | table.id_of(str(logs)),
    }


def test_more_paths_and_logs_than_the_map_holds_is_refused() -> None:
    half = CAT.contract.watch_files // 2 + 1
    paths = ", ".join(f"/p{i}" for i in range(half))
    logs = ", ".join(f"/l{i}" for i in range(half))
    with pytest.raises(ConfigError, match=f"at most {CAT.contract.watch_files} paths and logs together"):
        parse_config(HOOKS + f"watch:\n  paths: [{paths}]\n  logs: [{logs}]\n", "bad.yaml")


def test_watch_ids_are_never_reused_across_reloads() -> None:
    table = WatchTable()
    first = resolve_watch(WatchConfig((), ("a", "b"), (), (), ()), table, CAT.contract)
    second = resolve_watch(WatchConfig((), ("b", "c"), (), (), ()), table, CAT.contract)
    ids = (1 << CAT.contract.watch_id_bits) - 1  # the id bits of a map value
    assert {k: v & ids for k, v in first.names.items()} == {b"a": 1, b"b": 2}
    assert {k: v & ids for k, v in second.names.items()} == {b"b": 2, b"c": 3}
    # An event written before the reload still names its entry.
    assert (table.entry(1), table.entry(3), table.entry(0), table.entry(9)) == ("a", "c", "", "unknown-9")


def test_a_watch_field_decodes_to_the_watched_entry() -> None:
    spec = CAT["file_open"]
    table = WatchTable()
    watch_id = table.id_of("/etc/cron.d")
    raw = pack(spec, 0, reason=4, access=1, flags=0x241, mode=2, watch=watch_id, watch_level=1, path="/etc/cron.d/x")
    e = EventDecoder({0: spec}, boot_to_epoch=0.0, watch_entry=table.entry).decode(raw)
    assert (e.values["reason"], e.values["watch"], e.values["watch_level"]) == ("WATCH", "/etc/cron.d", 1)
    assert e.values["flags"] == "WRONLY|CREAT|TRUNC"
    # Without a table (a tool decoding records alone) the id is not invented into a path.
    raw0 = pack(spec, 0, reason=2, watch=0, path="/etc/shadow")
    assert EventDecoder({0: spec}, boot_to_epoch=0.0).decode(raw0).values["watch"] == ""


def test_the_readme_lists_the_shipped_watch() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "- paths: " + ", ".join(f"`{p}`" for p in DEFAULT_PATHS) + "\n" in readme
    assert "- names: " + ", ".join(f"`{n}`" for n in DEFAULT_NAMES) + "\n" in readme
    assert "- logs: " + ", ".join(f"`{n}`" for n in DEFAULT_LOGS) + "\n" in readme
    assert "- secrets: " + ", ".join(f"`{n}`" for n in DEFAULT_SECRETS) + "\n" in readme
    assert "- dirs: " + ", ".join(f"`{n}`" for n in DEFAULT_DIRS) + "\n" in readme


def test_the_watch_metrics_say_what_the_maps_hold(tmp_path: Path) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from krsid.watch import WatchState

    state = WatchState()

    class Source:
        def collect(self) -> object:
            return state.metric_families()

    registry = CollectorRegistry()
    registry.register(Source())  # type: ignore[arg-type]
    before = generate_latest(registry).decode()
    assert 'krsid_watch_entries{kind="path"} 0.0' in before and "krsid_watch_missing_paths 0.0" in before
    (tmp_path / "d").mkdir()
    config = WatchConfig((str(tmp_path / "d"), str(tmp_path / "gone")), ("a", "b"), (), (), ("x/y",))
    state.current = resolve_watch(config, state.table, CAT.contract)
    after = generate_latest(registry).decode()
    assert 'krsid_watch_entries{kind="path"} 1.0' in after and 'krsid_watch_entries{kind="name"} 2.0' in after
    assert 'krsid_watch_entries{kind="dir"} 1.0' in after
    assert "krsid_watch_missing_paths 1.0" in after


def test_the_name_pre_filter_has_one_bit_per_length_and_first_byte() -> None:
    """krsid_watch_name_filter (krsid.h): word len * per_len + (first byte >> 6), bit
    (first byte & 63); a name the kernel would see cut counts as cut."""
    contract = CAT.contract
    per = contract.watch_name_filter_per_len
    assert per * 64 == 256
    words = name_filter([b"authorized_keys", b".bashrc", b".zshrc", "é".encode() * 3], contract)
    a, dot, e = ord("a"), ord("."), "é".encode()[0]
    assert words == {
        15 * per + (a >> 6): 1 << (a & 63),
        7 * per + (dot >> 6): 1 << (dot & 63),
        6 * per + (dot >> 6): 1 << (dot & 63),
        6 * per + (e >> 6): 1 << (e & 63),  # a UTF-8 name: its first byte >= 128
    }
    assert name_filter([b".a", b".b"], contract) == {2 * per: 1 << (dot & 63)}  # same length and first byte: one bit
    longest = contract.watch_name_len - 1
    assert name_filter([b"x" * (longest + 10)], contract) == {longest * per + 1: 1 << (ord("x") & 63)}
    assert name_filter([b""], contract) == {}


def test_the_inode_pre_filter_has_one_bit_per_inode_number_modulo_its_size() -> None:
    """krsid_watch_ino_filter (krsid.h): bit ino % bits, in word (ino % bits) >> 6; the
    device plays no part (the hash map's key checks it)."""
    bits = CAT.contract.watch_ino_filter_bits
    assert bits & (bits - 1) == 0 and bits >= 64
    words = ino_filter([(1, 2), (7, 2), (1, 64 + 5), (1, bits + 3)], CAT.contract)
    assert words == {0: 1 << 2 | 1 << 3, 1: 1 << 5}
    assert ino_filter([(1, bits - 1)], CAT.contract) == {bits // 64 - 1: 1 << 63}
    assert ino_filter([], CAT.contract) == {}


def test_a_secret_reports_reads_and_a_name_in_both_lists_reports_both() -> None:
    """`secrets` entries report reads by others only; one also in `names` keeps its
    `names` id and reports every change and the reads."""
    c = CAT.contract
    table = WatchTable()
    resolved = resolve_watch(WatchConfig((), (".bash_history",), (), ("id_rsa", ".bash_history")), table, c)
    assert resolved.names == {
        b".bash_history": (c.watch_ops_all | c.watch_ops_secrets) << c.watch_id_bits | table.id_of(".bash_history"),
        b"id_rsa": c.watch_ops_secrets << c.watch_id_bits | table.id_of("id_rsa"),
    }
    assert table.id_of(".bash_history") == 1 and table.id_of("id_rsa") == 2


def test_a_dir_key_is_the_directorys_name_then_its_parents() -> None:
    """struct krsid_watch_dir_key (krsid.h): name, parent, grandparent, each NUL-padded
    to watch_dir_name_len; an entry of fewer names leaves the rest empty (any)."""
    size = CAT.contract.watch_dir_name_len
    assert size == 32

    def pad(name: str) -> bytes:
        return name.encode().ljust(size, b"\0")

    assert dir_key(".config/systemd/user", CAT.contract) == pad("user") + pad("systemd") + pad(".config")
    assert dir_key(".config/autostart", CAT.contract) == pad("autostart") + pad(".config") + bytes(size)
    assert dir_key("environment.d", CAT.contract) == pad("environment.d") + bytes(2 * size)
    assert dir_key("é/x", CAT.contract) == pad("x") + pad("é") + bytes(size)


def test_the_dir_pre_filter_is_by_the_directorys_own_name() -> None:
    """krsid_watch_dir_filter: the names' filter, of each directory's own name (not its
    parent's, which the kernel reads only after the filter passes)."""
    c = CAT.contract
    per = c.watch_name_filter_per_len
    keys = [dir_key(d, c) for d in ("systemd/user", ".config/autostart", "environment.d", "x/user")]
    u, a, e = ord("u"), ord("a"), ord("e")
    assert dir_filter(keys, c) == {
        4 * per + (u >> 6): 1 << (u & 63),
        9 * per + (a >> 6): 1 << (a & 63),
        13 * per + (e >> 6): 1 << (e & 63),
    }
    assert dir_filter([], c) == {}


def test_dirs_report_every_change_and_not_reads() -> None:
    c = CAT.contract
    table = WatchTable()
    resolved = resolve_watch(WatchConfig((), (), (), (), ("systemd/user",)), table, c)
    assert resolved.dirs == {dir_key("systemd/user", c): c.watch_ops_all << c.watch_id_bits | 1}
    assert table.entry(1) == "systemd/user"
