"""A reload can never crash the daemon nor leave a half-applied policy active.

The real LoadedPrograms writes into fake BCC maps (FakeBpf) that fail where a test
says: a map that is full (BCC raises a plain Exception), an OSError, the bank switch
itself. After every failure the state the kernel programs read (options, string
sets, limits, the active bank's rules and directories) must be exactly what it was,
the failure counted; and the next good reload must still apply.
"""

from __future__ import annotations

import copy
import ctypes as ct
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("bcc")  # krsid.pipeline.load imports it; no kernel is touched here

from krsid.catalog import load_catalog
from krsid.config import Config, load_config
from krsid.daemon import Daemon
from krsid.errors import ConfigError
from krsid.pipeline.load import LoadedPrograms
from krsid.watch import dir_key

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(ROOT / "programs")
RULES_PER_HOOK = CATALOG.contract.rules_per_hook
HOOKS = ("file_mprotect", "file_open", "bprm_check_security")
SET_CAPACITY = 8  # the fake file_open_names / file_open_paths hold this many keys (BPF_HASH max_entries)
MAP_FULL = "Could not update table: [Errno 7] Argument list too long"  # what BCC raises when a hash map is full


class Injected(Exception):
    """The failure a test makes a map write raise."""


# The map structs of krsid.h as ctypes Structures, like the Key/Leaf types bcc builds:
# the loader's checked writer (krsid.pipeline.leaf) refuses anything else.
class RuleLeaf(ct.Structure):
    _fields_ = [
        ("action", ct.c_uint32),
        ("match", ct.c_uint32),
        ("uid", ct.c_uint32),
        ("cgroup_slot", ct.c_uint32),
        ("comm", ct.c_uint64 * 2),
        ("exe_ino", ct.c_uint64),
        ("exe_dev", ct.c_uint32),
        ("needs", ct.c_uint32),
        ("field_arg", ct.c_uint64 * 4),
        ("field_op", ct.c_uint32 * 4),
        ("number", ct.c_uint32),
        ("reserved", ct.c_uint32),
    ]


class DirKey(ct.Structure):
    _fields_ = [
        ("bank_hook", ct.c_uint32),
        ("kind", ct.c_uint32),
        ("dev", ct.c_uint32),
        ("pad", ct.c_uint32),
        ("ino", ct.c_uint64),
    ]


class DirRules(ct.Structure):
    _fields_ = [("bits", ct.c_uint64 * (RULES_PER_HOOK // 64))]


class WatchFileKey(ct.Structure):
    _fields_ = [("dev", ct.c_uint32), ("pad", ct.c_uint32), ("ino", ct.c_uint64)]


class WatchNameKey(ct.Structure):
    _fields_ = [("name", ct.c_char * CATALOG.contract.watch_name_len)]


class WatchDirKey(ct.Structure):
    _fields_ = [(n, ct.c_char * CATALOG.contract.watch_dir_name_len) for n in ("name", "parent", "grandparent")]


class Limit(ct.Structure):
    _fields_ = [("cost_ns", ct.c_uint64), ("burst_ns", ct.c_uint64), ("window_ns", ct.c_uint64)]


class FairShare(ct.Structure):
    _fields_ = [
        (name, ct.c_uint64) for name in ("proc_cost_ns", "proc_burst_ns", "uid_cost_ns", "uid_burst_ns", "summary_ns")
    ]


def _members(s: ct.Structure) -> dict[str, Any]:
    values = {name: getattr(s, name) for name, *_ in s._fields_}
    return {k: list(v) if isinstance(v, ct.Array) else v for k, v in values.items()}


class FakeTable:
    """The parts of a bcc table LoadedPrograms uses, over a dict."""

    def __init__(
        self, bpf: FakeBpf, name: str, *, key: Any = ct.c_int, leaf: Any = ct.c_uint64, max_entries: int = 1 << 20
    ):
        self.bpf, self.name, self.Key, self.Leaf, self.max_entries = bpf, name, key, leaf, max_entries
        self.data: dict[Any, Any] = {}
        self.key_objects: dict[Any, Any] = {}  # what keys() hands back, as bcc does

    @staticmethod
    def _key(key: Any) -> Any:
        if isinstance(key, ct.Array):
            return bytes(key)
        if isinstance(key, DirKey):
            return (key.bank_hook, key.kind, key.dev, key.ino)
        if isinstance(key, ct.Structure):
            return bytes(key)
        return key.value

    @staticmethod
    def _value(leaf: Any) -> Any:
        return _members(leaf) if isinstance(leaf, ct.Structure) else leaf.value

    def __setitem__(self, key: Any, leaf: Any) -> None:
        self.bpf.written(self.name)
        k = self._key(key)
        if k not in self.data and len(self.data) >= self.max_entries:
            raise Exception(MAP_FULL)
        self.data[k] = self._value(leaf)
        self.key_objects[k] = type(key).from_buffer_copy(key) if isinstance(key, ct.Structure) else key

    def __getitem__(self, key: Any) -> Any:
        return ct.c_uint64(self.data.get(self._key(key), 0))

    def __delitem__(self, key: Any) -> None:
        self.bpf.written(self.name)
        del self.data[self._key(key)]

    def keys(self) -> list[Any]:
        return [self.key_objects[k] for k in self.data]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())

    def clear(self) -> None:
        self.bpf.written(self.name)
        self.data.clear()

    def clearitem(self, key: Any) -> None:
        self.bpf.written(self.name)
        self.data.pop(self._key(key), None)

    def sum(self, key: Any) -> ct.c_uint64:
        return ct.c_uint64(0)


class FakeCgroupTable(FakeTable):
    """krsid_rule_cgroups: bcc's CgroupArray takes an open directory's fd; the fake keeps
    which directory (its inode), as the kernel keeps the cgroup after the fd is closed."""

    def __setitem__(self, key: Any, leaf: Any) -> None:
        assert type(leaf) is int, "bcc's CgroupArray takes an fd (or a path), not a ctypes leaf"
        self.bpf.written(self.name)
        self.data[self._key(key)] = os.fstat(leaf).st_ino
        self.key_objects[self._key(key)] = key


class FakeBpf:
    """The module's maps; `fail_on(map, n)` makes the n-th next write to that map raise."""

    def __init__(self) -> None:
        self.tables: dict[bytes, FakeTable] = {}
        for name in ("krsid_options", "krsid_policy_bank", "krsid_rule_hits"):
            self.tables[name.encode()] = FakeTable(self, name)
        self.tables[b"krsid_limits"] = FakeTable(self, "krsid_limits", leaf=Limit)
        self.tables[b"krsid_fair_share_config"] = FakeTable(self, "krsid_fair_share_config", leaf=FairShare)
        self.tables[b"krsid_rules"] = FakeTable(self, "krsid_rules", leaf=RuleLeaf)
        self.tables[b"krsid_dirs"] = FakeTable(self, "krsid_dirs", key=DirKey, leaf=DirRules)
        self.tables[b"krsid_rule_cgroups"] = FakeCgroupTable(self, "krsid_rule_cgroups")
        self.tables[b"krsid_watch_files"] = FakeTable(self, "krsid_watch_files", key=WatchFileKey, leaf=ct.c_uint32)
        self.tables[b"krsid_watch_names"] = FakeTable(self, "krsid_watch_names", key=WatchNameKey, leaf=ct.c_uint32)
        self.tables[b"krsid_watch_dirs"] = FakeTable(self, "krsid_watch_dirs", key=WatchDirKey, leaf=ct.c_uint32)
        self.tables[b"krsid_watch_dir_filter"] = FakeTable(self, "krsid_watch_dir_filter")
        self.tables[b"krsid_watch_devs"] = FakeTable(self, "krsid_watch_devs", key=ct.c_uint32, leaf=ct.c_uint32)
        self.tables[b"krsid_watch_count"] = FakeTable(self, "krsid_watch_count")
        self.tables[b"krsid_watch_name_filter"] = FakeTable(self, "krsid_watch_name_filter")
        self.tables[b"krsid_watch_ino_filter"] = FakeTable(self, "krsid_watch_ino_filter")
        for hook in HOOKS:
            for opt in CATALOG[hook].options:
                for m in opt.maps:
                    # file_open's sets are the ones the tests fill up; the others hold their defaults.
                    capacity = SET_CAPACITY if hook == "file_open" else 1 << 10
                    self.tables[m.name.encode()] = FakeTable(
                        self, m.name, key=ct.c_ubyte * m.key_size, leaf=ct.c_uint8, max_entries=capacity
                    )
        self.failure: tuple[str, int, BaseException] | None = None

    def __getitem__(self, name: bytes) -> FakeTable:
        return self.tables[name]

    def fail_on(self, table: str, nth: int, error: BaseException) -> None:
        self.failure = (table, nth, error)

    def written(self, table: str) -> None:
        if self.failure is None or self.failure[0] != table:
            return
        name, nth, error = self.failure
        if nth > 1:
            self.failure = (name, nth - 1, error)
            return
        self.failure = None
        raise error

    def cleanup(self) -> None:
        pass


def live_state(programs: LoadedPrograms) -> dict[str, Any]:
    """Everything the kernel programs read: options, sets, limits, the active bank's rules and dirs."""
    bpf: FakeBpf = programs._bpf  # type: ignore[assignment]
    bank = bpf.tables[b"krsid_policy_bank"].data.get(0, 0)
    rules = {}
    for hook in programs.hook_ids:
        slots = []
        for slot in range(RULES_PER_HOOK):
            leaf = bpf.tables[b"krsid_rules"].data.get(programs.rule_index(bank, hook, slot))
            if not leaf or not leaf["action"]:
                break
            slots.append(leaf)
        rules[hook] = slots
    dirs = {k: v for k, v in bpf.tables[b"krsid_dirs"].data.items() if k[0] // programs.max_hooks == bank}
    per_bank = CATALOG.contract.policy_cgroups
    cgroups = {k: v for k, v in bpf.tables[b"krsid_rule_cgroups"].data.items() if k // per_bank == bank}
    sets = {m: dict(bpf.tables[m.encode()].data) for m in ("file_open_names", "file_open_paths")}
    watch_maps = (
        "krsid_watch_files",
        "krsid_watch_names",
        "krsid_watch_dirs",
        "krsid_watch_devs",
        "krsid_watch_count",
        "krsid_watch_name_filter",
        "krsid_watch_dir_filter",
        "krsid_watch_ino_filter",
    )
    # An array's word written back to 0 is the word never written: compared without zeros.
    watch = {m: {k: v for k, v in bpf.tables[m.encode()].data.items() if v} for m in watch_maps}
    return copy.deepcopy(
        {
            "bank": bank,
            "options": bpf.tables[b"krsid_options"].data,
            "limits": bpf.tables[b"krsid_limits"].data,
            "fair_share": bpf.tables[b"krsid_fair_share_config"].data,
            "sets": sets,
            "rules": rules,
            "dirs": dirs,
            "cgroups": cgroups,
            "watch": watch,
        }
    )


def config_text(tmp_path: Path, *, new: bool) -> str:
    """Two configs that differ in every kind of value a reload writes."""
    (tmp_path / "old-dir").mkdir(exist_ok=True)
    (tmp_path / "new-dir").mkdir(exist_ok=True)
    for cgroup in ("old.slice", "new.slice"):
        (tmp_path / "cgroup" / cgroup).mkdir(parents=True, exist_ok=True)
    (tmp_path / "cgroup" / "cgroup.controllers").touch()
    paths = ", ".join(f"/etc/krsid-test-{i}" for i in range(SET_CAPACITY if new else SET_CAPACITY - 2))
    p, comm, d = ("n", "b", tmp_path / "new-dir") if new else ("o", "a", tmp_path / "old-dir")
    cgroup = "/new.slice" if new else "/old.slice"
    rules = [
        f"{{name: {p}-wx, hook: file_mprotect, action: deny, match: {{comm: {comm}}}}}",
        f"{{name: {p}-dir, hook: file_open, action: would_deny, match: {{path_prefix: {d}}}}}",
        f"{{name: {p}-cg, hook: bprm_check_security, action: deny, match: {{cgroup: {cgroup}}}}}",
    ]
    if new:
        rules += [
            "{name: n-exec, hook: bprm_check_security, action: audit, match: {uid: 4242}}",
            "{name: n-exec2, hook: bprm_check_security, action: deny, match: {uid: 4243}}",
        ]
    watch_paths = ", ".join(str(tmp_path / n) for n in (("new-dir", "old-dir") if new else ("old-dir",)))
    return (
        f"state_dir: {tmp_path}/state\n"
        f"watch: {{paths: [{watch_paths}], names: [{'new_name' if new else 'old_name'}], logs: [], secrets: [], "
        f"dirs: [{'cfg/newdir' if new else 'olddir'}]}}\n"
        "hooks:\n"
        f"  file_mprotect: {{exec_only: {'false' if new else 'true'}, rate_limit: {500 if new else 100}}}\n"
        f"  file_open: {{sensitive_paths: [{paths}], dedup_window_ms: {20 if new else 10}}}\n"
        "  bprm_check_security: {}\n"
        f"fair_share: {{bulk: {{process_rate: {300 if new else 200}}}, "
        f"priority: {{uid_burst: {900 if new else 800}}}}}\n"
        "policy:\n  rules:\n" + "".join(f"    - {r}\n" for r in rules)
    )


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Daemon, Path]:
    """A daemon as start() leaves it (maps written, policy applied), on fake maps."""
    monkeypatch.setattr("krsid.policy.compile.CGROUP_ROOT", tmp_path / "cgroup")
    path = tmp_path / "krsid.yaml"
    path.write_text(config_text(tmp_path, new=False))
    config: Config = load_config(path, catalog=CATALOG)
    daemon = Daemon(config, sinks=[], available_hooks=lambda: dict.fromkeys(HOOKS, 1))
    specs = [CATALOG[h] for h in HOOKS]
    programs = LoadedPrograms(CATALOG, specs, settings=None, log=lambda _m: None)  # type: ignore[arg-type]
    programs._bpf = FakeBpf()  # type: ignore[assignment]
    daemon.programs = programs
    daemon.serves = {h: h for h in HOOKS}
    programs.set_options(daemon._hook_options(config))
    programs.set_limits(daemon._hook_limits(config))
    programs.set_fair_share(config.fair_share)
    daemon._refresh_watch(config.watch, strict=True)
    daemon._apply_policy(config.policy)
    path.write_text(config_text(tmp_path, new=True))
    return daemon, path


def fake_bpf(daemon: Daemon) -> FakeBpf:
    assert daemon.programs is not None
    return daemon.programs._bpf  # type: ignore[return-value]


def assert_rejected_then_recovers(daemon: Daemon, before: dict[str, Any], config_before: Config) -> None:
    assert daemon.programs is not None
    assert daemon.reload() is False
    assert daemon.reloads["failure"] == 1 and daemon.reloads["success"] == 0
    assert daemon.config is config_before
    assert live_state(daemon.programs) == before, "a failed reload changed what the kernel programs read"
    assert {r.name for rules in daemon.policy.rules.values() for r in rules} == {"o-wx", "o-dir", "o-cg"}
    # Nothing is left broken: the same reload, without the failure, applies.
    assert daemon.reload() is True
    after = live_state(daemon.programs)
    assert after["bank"] != before["bank"] and after["options"] != before["options"]
    assert after["limits"] != before["limits"] and after["sets"] != before["sets"]
    assert after["fair_share"] != before["fair_share"] and after["watch"] != before["watch"]
    assert len(after["watch"]["krsid_watch_files"]) == 2 and after["watch"]["krsid_watch_count"] == {0: 4}
    # The devices the walk runs on: exactly those of the watched files, with their counts.
    devs = Counter(int.from_bytes(key[:4], "little") for key in after["watch"]["krsid_watch_files"])
    assert after["watch"]["krsid_watch_devs"] == dict(devs) and sum(devs.values()) == 2
    # The names' pre-filter: exactly the new name's (length, first byte) bit, the old one's gone.
    n = ord("n")
    assert after["watch"]["krsid_watch_name_filter"] == {
        len("new_name") * CATALOG.contract.watch_name_filter_per_len + (n >> 6): 1 << (n & 63)
    }
    # The directories by name: the new entry's key and pre-filter bit, the old ones gone.
    assert list(after["watch"]["krsid_watch_dirs"]) == [dir_key("cfg/newdir", CATALOG.contract)]
    assert after["watch"]["krsid_watch_dir_filter"] == {
        len("newdir") * CATALOG.contract.watch_name_filter_per_len + (n >> 6): 1 << (n & 63)
    }
    # The cgroup rule's slot: the new bank's first, holding the new cgroup's directory.
    new_slice = Path(config_before.state_dir).parent / "cgroup" / "new.slice"
    assert after["cgroups"] == {after["bank"] * CATALOG.contract.policy_cgroups: new_slice.stat().st_ino}
    # The inode numbers' pre-filter: exactly the bits of the watched files' inodes.
    mask = CATALOG.contract.watch_ino_filter_bits - 1
    want: dict[int, int] = {}
    for key in after["watch"]["krsid_watch_files"]:
        bit = int.from_bytes(key[8:16], "little") & mask
        want[bit >> 6] = want.get(bit >> 6, 0) | 1 << (bit & 63)
    assert after["watch"]["krsid_watch_ino_filter"] == want != before["watch"]["krsid_watch_ino_filter"]
    assert len(after["sets"]["file_open_paths"]) == SET_CAPACITY
    assert {r.name for rules in daemon.policy.rules.values() for r in rules} == {
        "n-wx",
        "n-dir",
        "n-cg",
        "n-exec",
        "n-exec2",
    }


# (map, which write fails, the error): each stage of a reload's writes
WRITE_FAILURES = [
    ("krsid_options", 1, Exception("Could not update table: [Errno 1] Operation not permitted")),
    ("krsid_options", 2, OSError(5, "Input/output error")),
    ("file_open_paths", 1, Injected("clear failed")),
    ("file_open_paths", SET_CAPACITY - 2, Exception(MAP_FULL)),  # midway through refilling the set
    ("krsid_limits", 2, Exception(MAP_FULL)),
    ("krsid_fair_share_config", 1, Exception(MAP_FULL)),
    ("krsid_rule_cgroups", 1, Exception("Could not update table: [Errno 9] Bad file descriptor")),
    ("krsid_dirs", 1, Exception(MAP_FULL)),
    ("krsid_watch_files", 1, Exception(MAP_FULL)),
    ("krsid_watch_names", 2, Exception(MAP_FULL)),  # the stale name's removal, after the new one
    ("krsid_watch_dirs", 1, Exception(MAP_FULL)),  # the new entry
    ("krsid_watch_dirs", 2, Exception(MAP_FULL)),  # the stale entry's removal, after the new one
    ("krsid_watch_devs", 1, Exception(MAP_FULL)),
    ("krsid_watch_count", 1, Exception("Could not update table")),
    ("krsid_watch_name_filter", 1, Exception("Could not update table")),  # widening, before the names
    ("krsid_watch_name_filter", 2, Exception("Could not update table")),  # narrowing, after them
    ("krsid_watch_dir_filter", 1, Exception("Could not update table")),  # widening, before the dirs
    ("krsid_watch_dir_filter", 2, Exception("Could not update table")),  # narrowing, after them
    ("krsid_watch_ino_filter", 1, Exception("Could not update table")),  # widening, before the files
    ("krsid_rules", 1, Exception(MAP_FULL)),
    ("krsid_rules", 4, RuntimeError("a bug")),
    ("krsid_rule_hits", 3, Exception("Could not clear item")),
    ("krsid_policy_bank", 1, Exception("Could not update table")),  # the switch itself
]


@pytest.mark.parametrize(("table", "nth", "error"), WRITE_FAILURES, ids=[f"{t}-{n}" for t, n, _ in WRITE_FAILURES])
def test_a_failed_map_write_is_a_rejected_reload_with_the_old_state_live(
    running: tuple[Daemon, Path], table: str, nth: int, error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    daemon, _ = running
    assert daemon.programs is not None
    before, config_before = live_state(daemon.programs), daemon.config
    fake_bpf(daemon).fail_on(table, nth, error)
    with caplog.at_level("ERROR", logger="krsid"):
        assert_rejected_then_recovers(daemon, before, config_before)
    assert fake_bpf(daemon).failure is None, "the failure was never reached: the test proves nothing"
    (line,) = [r.getMessage() for r in caplog.records if "reload rejected" in r.getMessage()]
    assert "the previous policy stays in force" in line and type(error).__name__ in line and str(error) in line


def test_sensitive_paths_beyond_the_maps_capacity_is_rejected_not_a_crash(running: tuple[Daemon, Path]) -> None:
    """The issue's case: more strings than the set map holds; BCC raises a plain Exception."""
    daemon, path = running
    assert daemon.programs is not None
    before, config_before = live_state(daemon.programs), daemon.config
    too_many = ", ".join(f"/etc/krsid-many-{i}" for i in range(SET_CAPACITY + 1))
    good = path.read_text()
    path.write_text(good.replace("sensitive_paths: [", f"sensitive_paths: [{too_many}, "))
    assert daemon.reload() is False
    assert daemon.reloads["failure"] == 1 and live_state(daemon.programs) == before
    path.write_text(good)
    assert daemon.config is config_before
    assert daemon.reload() is True and live_state(daemon.programs) != before


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("krsid.daemon.load_config", RecursionError("maximum recursion depth exceeded")),
        ("krsid.daemon.load_config", MemoryError()),
        ("krsid.policy.state.compile_rules", OSError(13, "Permission denied")),
        ("krsid.policy.state.compile_rules", ConfigError("/gone: No such file or directory (a policy rule names it)")),
    ],
)
def test_a_failure_before_any_write_is_a_rejected_reload(
    running: tuple[Daemon, Path], monkeypatch: pytest.MonkeyPatch, target: str, error: BaseException
) -> None:
    daemon, _ = running
    assert daemon.programs is not None
    before, config_before = live_state(daemon.programs), daemon.config

    def fail(*_a: object, **_k: object) -> Any:
        raise error

    with monkeypatch.context() as m:
        m.setattr(target, fail)
        assert daemon.reload() is False
    assert daemon.reloads["failure"] == 1 and daemon.config is config_before
    assert live_state(daemon.programs) == before
    assert daemon.reload() is True


def test_when_even_the_restore_fails_the_old_rules_stay_and_it_is_said(
    running: tuple[Daemon, Path], caplog: pytest.LogCaptureFixture
) -> None:
    daemon, _ = running
    assert daemon.programs is not None
    before = live_state(daemon.programs)
    bpf = fake_bpf(daemon)
    calls: list[str] = []
    real_written: Callable[[str], None] = bpf.written

    def always_fail_limits(table: str) -> None:
        calls.append(table)
        if table == "krsid_limits":
            raise Exception(MAP_FULL)
        real_written(table)

    bpf.written = always_fail_limits  # type: ignore[method-assign]
    with caplog.at_level("ERROR", logger="krsid"):
        assert daemon.reload() is False
    state = live_state(daemon.programs)
    assert (state["bank"], state["rules"], state["dirs"]) == (before["bank"], before["rules"], before["dirs"])
    assert any("could not restore" in r.getMessage() for r in caplog.records)
    assert daemon.reloads["failure"] == 1


def test_a_reload_compiles_against_the_running_programs_catalog(
    running: tuple[Daemon, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Rules are compiled for the programs that run: a reload never reads the catalog
    again (programs changed on disk since the start, say by an upgrade, would give
    other field slots), and a changed programs_dir is a rejected reload."""
    daemon, path = running

    def no_catalog_read(*_a: object, **_k: object) -> Any:
        raise AssertionError("a reload read the catalog again")

    monkeypatch.setattr("krsid.config.load_catalog", no_catalog_read)
    assert daemon.reload() is True
    assert daemon.config.catalog is CATALOG
    elsewhere = path.parent / "programs"
    elsewhere.mkdir()
    path.write_text(path.read_text() + f"programs_dir: {elsewhere}\n")
    config_before = daemon.config
    with caplog.at_level("ERROR", logger="krsid"):
        assert daemon.reload() is False
    assert daemon.config is config_before and daemon.reloads["failure"] == 1
    assert any("programs_dir changed; that needs a restart" in r.getMessage() for r in caplog.records)


def test_fake_maps_see_every_write_of_a_reload(running: tuple[Daemon, Path]) -> None:
    """Guards the fake: a reload writes each map the failure tests inject into."""
    daemon, _ = running
    bpf = fake_bpf(daemon)
    seen: set[str] = set()
    real = bpf.written

    def record(table: str) -> None:
        seen.add(table)
        real(table)

    bpf.written = record  # type: ignore[method-assign]
    assert daemon.reload() is True
    assert {t for t, _, _ in WRITE_FAILURES} <= seen


def _replace_dir(d: Path) -> None:
    """d made again: a new directory renamed over it, so its inode number differs."""
    new = d.with_name(d.name + ".new")
    new.mkdir()
    d.rmdir()
    new.rename(d)


def test_a_cgroup_made_again_or_a_replaced_directory_is_followed_without_a_reload(
    running: tuple[Daemon, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The poll loop's policy refresh: nothing written while nothing changed; a rule's
    cgroup or directory that is a new inode gets the rules written again (bank switch),
    naming the new one; one that is gone keeps the rules as they are, logged once."""
    daemon, _ = running
    assert daemon.programs is not None
    before = live_state(daemon.programs)
    daemon._refresh_policy()
    assert live_state(daemon.programs) == before and daemon.policy_refreshes == 0 and not daemon.policy_stale

    old_slice, old_dir = tmp_path / "cgroup" / "old.slice", tmp_path / "old-dir"
    _replace_dir(old_slice)
    _replace_dir(old_dir)
    daemon._refresh_policy()
    after = live_state(daemon.programs)
    assert daemon.policy_refreshes == 1 and after["bank"] != before["bank"]
    assert after["cgroups"] == {after["bank"] * CATALOG.contract.policy_cgroups: old_slice.stat().st_ino}
    assert {k[3] for k in after["dirs"]} == {old_dir.stat().st_ino} != {k[3] for k in before["dirs"]}

    def bankless(rules: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        return {h: [{k: v for k, v in r.items() if k != "cgroup_slot"} for r in rs] for h, rs in rules.items()}

    assert bankless(after["rules"]) == bankless(before["rules"])  # the same rules, numbers and actions
    assert daemon.reloads == Counter()

    old_slice.rmdir()
    with caplog.at_level("WARNING", logger="krsid"):
        daemon._refresh_policy()
        daemon._refresh_policy()
    assert live_state(daemon.programs) == after and daemon.policy_refreshes == 1
    assert daemon.policy_stale  # krsid_policy_stale: 1 (alert KrsidPolicyStale)
    (line,) = [r.getMessage() for r in caplog.records if "policy:" in r.getMessage()]
    assert "the rules stay as loaded" in line and "cgroup /old.slice" in line
    old_slice.mkdir()  # back, as a new cgroup: followed again
    daemon._refresh_policy()
    assert daemon.policy_refreshes == 2 and not daemon.policy_stale
    assert live_state(daemon.programs)["cgroups"] == {
        live_state(daemon.programs)["bank"] * CATALOG.contract.policy_cgroups: old_slice.stat().st_ino
    }
