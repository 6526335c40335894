"""etc/krsid.yaml -> frozen dataclasses, validated before anything is attached.

Every problem is one ConfigError naming file:line:column and the dotted key, so
`krsid run` can exit 2 without having touched the kernel.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from krsid.catalog import DIRS_MAP as DIRS_MAP_NAME
from krsid.catalog import Catalog, load_catalog, parse_string_set
from krsid.errors import CatalogError, ConfigError
from krsid.pipeline.transport import LANES, PERFBUF, RINGBUF
from krsid.policy import Policy, names_root, parse_policy
from krsid.schema import FORMAT_KRSID, FORMATS
from krsid.watch import WatchConfig, parse_watch
from krsid.yamldoc import MAX_DOCUMENT_CHARS, YamlDoc, expect, expect_mapping, load_yaml, one_line

DEFAULT_CONFIG_PATH = Path("/etc/krsid/krsid.yaml")
INSTALLED_PROGRAMS_DIR = Path("/usr/share/krsid/programs")
SOURCE_PROGRAMS_DIR = Path(__file__).resolve().parent.parent / "programs"
HEADER_MODES = ("auto", "kernel", "btf")
BUFFER_AUTO = "auto"  # a ring buffer where the kernel has one (5.8+), else a perf buffer
BUFFER_KINDS = (BUFFER_AUTO, RINGBUF, PERFBUF)
DEFAULT_WAKEUP_EVENTS = 64
MIN_PRIORITY_PAGES = 16  # buffer.priority_pages: 64 KiB, room for 16+ exec events
# hooks.<hook>.fallback, for hooks whose catalog has a fallback program: auto = the
# fallback only where the kernel lacks the hook; always = the fallback even where it
# has it (one behaviour across a mixed fleet, or to test it); never = skip instead.
FALLBACK_MODES = ("auto", "always", "never")


def default_programs_dir() -> Path:
    """The installed programs, or the source checkout's when running from git."""
    return INSTALLED_PROGRAMS_DIR if INSTALLED_PROGRAMS_DIR.is_dir() else SOURCE_PROGRAMS_DIR


@dataclass(frozen=True)
class HookConfig:
    name: str
    enabled: bool = True
    options: Mapping[str, int | tuple[str, ...]] = field(default_factory=dict)  # option -> value
    rate_limit: int = 0  # events per second, 0 = unlimited
    dedup_window_ms: int = 0  # fold identical events within this window, 0 = off
    fallback: str = "auto"  # one of FALLBACK_MODES; only for hooks that have a fallback


DEFAULT_BACKLOG_MB = 16


@dataclass(frozen=True)
class LaneShare:
    """One lane's fair shares (fair_share.<lane>): a rate of 0 turns that share off."""

    process_rate: int  # events/s one process (tgid) may emit per hook
    process_burst: int  # events a quiet process may emit at once
    uid_rate: int  # events/s one uid may emit in the lane, all its processes and hooks together
    uid_burst: int

    @property
    def enabled(self) -> bool:
        return bool(self.process_rate or self.uid_rate)


@dataclass(frozen=True)
class FairShareConfig:
    """fair_share: how many events a single process and a single uid may emit, per lane
    (token buckets in the kernel, krsid.h); calls over a share are folded into flood
    summaries.

    The priority lane's shares are small because its events are few by design and its
    buffer must never fill: its bursts fit the buffer several times over. The defaults
    were measured against busy benign work (README: Lanes and fair sharing)."""

    priority: LaneShare = LaneShare(process_rate=100, process_burst=200, uid_rate=400, uid_burst=800)
    bulk: LaneShare = LaneShare(process_rate=200, process_burst=2000, uid_rate=1000, uid_burst=5000)
    summary_interval_ms: int = 1000  # a flood summary covers at most this long

    @property
    def enabled(self) -> bool:
        return self.priority.enabled or self.bulk.enabled

    def lane(self, name: str) -> LaneShare:
        share: LaneShare = getattr(self, name)
        return share


@dataclass(frozen=True)
class JournaldConfig:
    enabled: bool = True
    backlog_mb: int = DEFAULT_BACKLOG_MB  # encoded entries waiting for a busy journald


@dataclass(frozen=True)
class JsonlConfig:
    enabled: bool = True
    path: str = "-"  # "-" is stdout
    backlog_mb: int = DEFAULT_BACKLOG_MB
    format: str = "krsid"  # krsid | ocsf | ecs (krsid.schema.FORMATS)


@dataclass(frozen=True)
class PrometheusConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9477


@dataclass(frozen=True)
class IdentityConfig:
    """Process identity (krsid.identity): the process table and the ancestry on exec events."""

    process_table_size: int = 65536  # processes kept (LRU); the oldest are evicted
    ancestors_depth: int = 10  # ancestors on an exec event (parent first; the walk stops at pid 1)
    hash_max_mb: int = 512  # exe_sha256: larger binaries are not read ("too large"); 0: hashing off
    hash_queue: int = 1024  # binaries waiting for the hash worker ("queue full" past it); 0: hashing off


@dataclass(frozen=True)
class Config:
    source: str
    catalog: Catalog
    hooks: tuple[HookConfig, ...]
    programs_dir: Path
    cache_dir: Path = Path("/var/cache/krsid")
    state_dir: Path = Path("/run/krsid")
    headers: str = "auto"
    buffer_kind: str = BUFFER_AUTO
    ringbuf_pages: int = 256  # the bulk lane (buffer.pages)
    priority_pages: int = 256  # the priority lane (buffer.priority_pages)
    # Every N-th event wakes the daemon; the others wait at most poll_timeout_ms.
    # 0: the kernel's default (a wake-up whenever the daemon had caught up).
    wakeup_events: int = DEFAULT_WAKEUP_EVENTS
    poll_timeout_ms: int = 200
    journald: JournaldConfig = JournaldConfig()
    jsonl: JsonlConfig = JsonlConfig()
    prometheus: PrometheusConfig = PrometheusConfig()
    policy: Policy = field(default_factory=Policy)
    bpf_stats: bool = False  # kernel run-time stats per hook program (costs ~20 ns per BPF run, system-wide)
    identity: IdentityConfig = IdentityConfig()
    fair_share: FairShareConfig = FairShareConfig()
    watch: WatchConfig = field(default_factory=WatchConfig)

    @property
    def enabled_hooks(self) -> tuple[HookConfig, ...]:
        return tuple(h for h in self.hooks if h.enabled)


_TOP_KEYS = {
    "programs_dir",
    "cache_dir",
    "state_dir",
    "headers",
    "buffer",
    "poll_timeout_ms",
    "hooks",
    "sinks",
    "policy",
    "bpf_stats",
    "identity",
    "fair_share",
    "watch",
}


MAX_CONFIG_BYTES = MAX_DOCUMENT_CHARS  # a config is a few kB; /dev/zero or a 1 GB file is refused
MAX_SYMLINKS = 40  # as the kernel's path walk (ELOOP)


def _path_walk(path: Path, *, allow_missing: bool = False) -> list[Path]:
    """Every path the kernel visits to reach ``path``: each directory on the way, each
    symlink and each component of where it leads, in order; the last is the file
    itself (or, with allow_missing, the deepest existing directory).

    Checking only the path as given misses a symlink into a world-writable
    directory; checking only the realpath misses a symlink that lies in one (whose
    owner can point it elsewhere). This walk covers both, hop by hop.
    """
    pending = list(Path(path).parts) if Path(path).is_absolute() else [*Path.cwd().parts, *Path(path).parts]
    current = Path("/")
    visited = [current]
    hops = 0
    pending = pending[1:]  # the root
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent  # current is a real directory: its parent was visited
            continue
        candidate = current / part
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            if allow_missing:
                return visited if visited[-1] == current else [*visited, current]
            raise
        visited.append(candidate)
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
            target = Path(os.readlink(candidate))
            if target.is_absolute():
                current = Path("/")
                pending[:0] = list(target.parts[1:])
            else:
                pending[:0] = list(target.parts)
        else:
            current = candidate
    if visited[-1] != current:  # ended on "..": the directory reached
        visited.append(current)
    return visited


def check_trusted(path: Path, what: str, *, may_be_missing: bool = False) -> os.stat_result | None:
    """A root daemon must not take policy or BPF code from files others can change.

    Root-owned and not group/world-writable: the file, every directory above it
    (a writable parent lets others swap the file), every symlink on the way and
    everything those lead through (see _path_walk). A sticky world-writable
    directory (/tmp) is fine above the file: others cannot replace root's entries
    there. may_be_missing (state_dir, cache_dir, which krsid creates): the deepest
    existing directory stands for the path and is checked as if it were the target.
    Checked only when running as root: an unprivileged run cannot load programs
    anyway. Returns the stat of what was checked last (the file), None when not root.
    """
    if os.geteuid() != 0:
        return None
    shown_path = one_line(str(path))
    try:
        walk = _path_walk(Path(path), allow_missing=may_be_missing)
        states = [(node, os.lstat(node)) for node in walk]
    except OSError as e:
        raise ConfigError(one_line(f"{shown_path}: cannot check {what}: {e}")) from None
    target = walk[-1]
    for node, st in states:
        if st.st_uid != 0:
            raise ConfigError(one_line(f"{shown_path}: refusing {what}: {node} is owned by uid {st.st_uid}, not root"))
        if stat.S_ISLNK(st.st_mode):
            continue  # a symlink's own mode bits mean nothing; its target is in the walk
        sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        if st.st_mode & 0o022 and not (node != target and sticky_dir):
            raise ConfigError(
                one_line(
                    f"{shown_path}: refusing {what}: {node} is group/world-writable "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod go-w {node}"
                )
            )
    return states[-1][1]


def load_config(path: Path, *, catalog: Catalog | None = None) -> Config:
    """Read and validate a config file. Raises ConfigError with the place of the problem."""
    return parse_config(read_config_text(Path(path)), str(path), catalog=catalog)


def read_config_text(path: Path) -> str:
    """The config file's text: a regular file of at most MAX_CONFIG_BYTES, in UTF-8,
    trusted (check_trusted), read from the very file that was checked."""
    shown_path = one_line(str(path))

    def refuse(why: str) -> NoReturn:
        raise ConfigError(one_line(f"{shown_path}: cannot read config: {why}"))

    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        refuse(e.strerror or str(e))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            refuse(f"not a regular file ({_file_kind(st.st_mode)})")
        checked = check_trusted(path, "the config file")
        if checked is not None and (checked.st_dev, checked.st_ino) != (st.st_dev, st.st_ino):
            refuse("the file changed while it was checked")
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        refuse(e.strerror or str(e))
    finally:
        os.close(fd)
    if len(raw) > MAX_CONFIG_BYTES:
        refuse(f"larger than {MAX_CONFIG_BYTES} bytes (a config is a few kB)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        refuse(f"not UTF-8 (byte {e.start}: {raw[e.start : e.start + 1]!r})")


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a file"


def parse_config(text: str, origin: str, *, catalog: Catalog | None = None) -> Config:
    doc = load_yaml(text, origin)
    top = expect_mapping(doc, doc.data, (), _TOP_KEYS)

    programs_dir = _path(doc, top, "programs_dir", default_programs_dir(), origin)
    if catalog is None:
        try:
            if programs_dir.is_dir():
                # Every file before any is read: the catalog reads each program's text
                # once, and the compile uses that text (HookSpec.source_text).
                check_trusted(programs_dir, "the programs directory")
                for f in sorted(programs_dir.rglob("*")):
                    check_trusted(f, "a program file")
            catalog = load_catalog(programs_dir)
        except CatalogError as e:
            raise ConfigError(one_line(f"{doc.where(('programs_dir',))}: programs_dir: {e}")) from None
    cache_dir = _path(doc, top, "cache_dir", Path("/var/cache/krsid"), origin)
    state_dir = _path(doc, top, "state_dir", Path("/run/krsid"), origin)
    # cache_dir holds the headers compiled into root's BPF code; state_dir the pid file
    # and the compile marker. Neither may exist yet (krsid creates them).
    for key, directory, what in (
        ("cache_dir", cache_dir, "the cache directory (cache_dir)"),
        ("state_dir", state_dir, "the state directory (state_dir)"),
    ):
        try:
            check_trusted(directory, what, may_be_missing=True)
        except ConfigError as e:
            raise ConfigError(f"{doc.where((key,))}: {key}: {e}") from None

    headers = _choice(doc, top, ("headers",), "auto", HEADER_MODES)
    buffer = expect_mapping(doc, top.get("buffer"), ("buffer",), {"kind", "pages", "priority_pages", "wakeup_events"})
    pages = _pages(doc, buffer, "pages", 256, 1)
    # The priority lane holds at least 16 exec events (~3 KiB each) whatever the bulk lane's size.
    priority_pages = _pages(doc, buffer, "priority_pages", 256, MIN_PRIORITY_PAGES)
    wakeup = buffer.get("wakeup_events", DEFAULT_WAKEUP_EVENTS)
    wakeup_events = _int(doc, wakeup, ("buffer", "wakeup_events"), 0, 1 << 20)

    return Config(
        source=origin,
        catalog=catalog,
        hooks=_hooks(doc, top.get("hooks"), catalog),
        programs_dir=programs_dir,
        cache_dir=cache_dir,
        state_dir=state_dir,
        headers=headers,
        buffer_kind=_choice(doc, buffer, ("buffer", "kind"), BUFFER_AUTO, BUFFER_KINDS),
        ringbuf_pages=pages,
        priority_pages=priority_pages,
        wakeup_events=wakeup_events,
        poll_timeout_ms=_int(doc, top.get("poll_timeout_ms", 200), ("poll_timeout_ms",), 1, 10_000),
        policy=_policy(doc, top.get("policy"), catalog),
        bpf_stats=expect(doc, top.get("bpf_stats", False), ("bpf_stats",), bool, "true or false"),
        identity=_identity(doc, top.get("identity")),
        fair_share=_fair_share(doc, top.get("fair_share")),
        watch=parse_watch(doc, top.get("watch"), catalog.contract),
        **_sinks(doc, top.get("sinks")),
    )


def _pages(doc: YamlDoc, buffer: dict[str, Any], key: str, default: int, lowest: int) -> int:
    pages = _int(doc, buffer.get(key, default), ("buffer", key), lowest, 1 << 16)
    if pages & (pages - 1):
        doc.fail(("buffer", key), f"must be a power of two, got {pages}")
    return pages


def _fair_share(doc: YamlDoc, raw: Any) -> FairShareConfig:
    default = FairShareConfig()
    body = expect_mapping(doc, raw, ("fair_share",), {*LANES, "summary_interval_ms"})
    lanes = {lane: _lane_share(doc, body.get(lane), lane, default.lane(lane)) for lane in LANES}
    interval = _int(doc, body.get("summary_interval_ms", 1000), ("fair_share", "summary_interval_ms"), 100, 3_600_000)
    return FairShareConfig(summary_interval_ms=interval, **lanes)


MAX_ANCESTORS_DEPTH = 64


def _identity(doc: YamlDoc, raw: Any) -> IdentityConfig:
    body = expect_mapping(
        doc, raw, ("identity",), {"process_table_size", "ancestors_depth", "hash_max_mb", "hash_queue"}
    )
    default = IdentityConfig()
    return IdentityConfig(
        process_table_size=_int(
            doc,
            body.get("process_table_size", default.process_table_size),
            ("identity", "process_table_size"),
            1,
            1 << 24,
        ),
        ancestors_depth=_int(
            doc,
            body.get("ancestors_depth", default.ancestors_depth),
            ("identity", "ancestors_depth"),
            0,
            MAX_ANCESTORS_DEPTH,
        ),
        hash_max_mb=_int(doc, body.get("hash_max_mb", default.hash_max_mb), ("identity", "hash_max_mb"), 0, 1 << 20),
        hash_queue=_int(doc, body.get("hash_queue", default.hash_queue), ("identity", "hash_queue"), 0, 1 << 20),
    )


def _lane_share(doc: YamlDoc, raw: Any, lane: str, default: LaneShare) -> LaneShare:
    keys = {f.name for f in dataclasses.fields(LaneShare)}
    body = expect_mapping(doc, raw, ("fair_share", lane), keys)
    values = {
        key: _int(doc, body.get(key, getattr(default, key)), ("fair_share", lane, key), 0, 10_000_000)
        for key in sorted(keys)
    }
    share = LaneShare(**values)
    for kind in ("process", "uid"):
        if getattr(share, f"{kind}_rate") and getattr(share, f"{kind}_burst") < 1:
            doc.fail(("fair_share", lane, f"{kind}_burst"), f"must be at least 1 while {kind}_rate is on")
    return share


def _policy(doc: YamlDoc, raw: Any, catalog: Catalog) -> Policy:
    policy = parse_policy(doc, raw, catalog)
    _check_policy_fits(doc, policy, catalog)
    return policy


def _check_policy_fits(doc: YamlDoc, policy: Policy, catalog: Catalog) -> None:
    """The policy's directories must fit krsid_dirs, at any reload.

    Each distinct (hook, exe/file, directory) of exe_prefix / path_prefix is one
    entry, keyed by the directory's inode as the loader keys it; "/" needs none (it
    becomes "any"). A reload writes the new policy's entries beside the old one's
    (two banks, one map), so one policy may use at most half of the map: a policy
    that fits at check time can always be loaded, and never fails mid-reload.
    """
    capacity = catalog.dirs_map.entries
    if not capacity:
        return
    limit = capacity // 2
    entries: set[tuple[str, str, object]] = set()
    for i, rule in enumerate(policy.rules):
        for key, prefixes in (("exe_prefix", rule.exe_prefix), ("path_prefix", rule.path_prefix)):
            if not prefixes or any(names_root(p) for p in prefixes):  # the root: no entry (ANY)
                continue
            for directory in prefixes:
                try:
                    st = os.stat(directory)
                    identity: object = (st.st_dev, st.st_ino)
                except OSError:
                    identity = os.path.normpath(directory)
                entries.add((rule.hook, key, identity))
            if len(entries) > limit:
                doc.fail(
                    ("policy", "rules", i, "match", key),
                    f"the policy names {len(entries)} directories (exe_prefix / path_prefix, per hook) by "
                    f"here; at most {limit}: half of map {DIRS_MAP_NAME}'s {capacity} entries "
                    f"({catalog.dirs_map.declared}), as a reload writes the new policy beside the old",
                )


def _hooks(doc: YamlDoc, raw: Any, catalog: Catalog) -> tuple[HookConfig, ...]:
    hooks = expect_mapping(doc, raw, ("hooks",))
    if not hooks:
        doc.fail(("hooks",), "no hooks configured; enable at least one of: " + ", ".join(catalog.hooks))
    out: list[HookConfig] = []
    for name, body in hooks.items():
        path = ("hooks", name)
        if name not in catalog:
            doc.fail(
                path,
                f"unknown hook {name!r}: no programs/{name}.c; known: {', '.join(catalog.configurable)}",
                at_key=True,
            )
        spec = catalog[name]
        if spec.fallback_for:
            doc.fail(
                path,
                f"{name} is the fallback program of {spec.fallback_for}, not a hook of its own: enable "
                f"{spec.fallback_for} (it uses {name} where the kernel lacks it; fallback: always forces it)",
                at_key=True,
            )
        has_fallback = catalog.fallback_of(name) is not None
        allowed = {"enabled", "rate_limit", "dedup_window_ms"} | {o.name for o in spec.options}
        if has_fallback:
            allowed.add("fallback")
        body = expect_mapping(doc, body, path, allowed)
        enabled = expect(doc, body.get("enabled", True), (*path, "enabled"), bool, "true or false")
        options: dict[str, int | tuple[str, ...]] = {}
        for opt in spec.options:
            if opt.kind == "daemon_tgid":
                if opt.name in body:
                    doc.fail((*path, opt.name), "set by krsid itself (its own process id), not configurable")
                continue
            if opt.kind == "string_set":
                options[opt.name] = (
                    parse_string_set(doc, body[opt.name], (*path, opt.name), opt.maps)
                    if opt.name in body
                    else opt.default
                )
                continue
            value = body.get(opt.name, bool(opt.default) if opt.kind == "bool" else opt.default)
            if opt.kind == "bool":
                options[opt.name] = int(expect(doc, value, (*path, opt.name), bool, "true or false"))
            else:
                options[opt.name] = _int(doc, value, (*path, opt.name), 0, (1 << 63) - 1)
        rate = _int(doc, body.get("rate_limit", 0), (*path, "rate_limit"), 0, 10_000_000)
        window = _int(doc, body.get("dedup_window_ms", 0), (*path, "dedup_window_ms"), 0, 3_600_000)
        fallback = _choice(doc, body, (*path, "fallback"), "auto", FALLBACK_MODES) if has_fallback else "auto"
        out.append(HookConfig(name, enabled, options, rate, window, fallback))
    if not any(h.enabled for h in out):
        # Would only fail later, in `run`, with exit 1, which systemd restarts forever.
        doc.fail(
            ("hooks",),
            "every hook is disabled (enabled: false): krsid would watch nothing; enable at least one of: "
            + ", ".join(h.name for h in out),
        )
    return tuple(out)


def _sinks(doc: YamlDoc, raw: Any) -> dict[str, Any]:
    sinks = expect_mapping(doc, raw, ("sinks",), {"journald", "jsonl", "prometheus"})
    j = expect_mapping(doc, sinks.get("journald"), ("sinks", "journald"), {"enabled", "backlog_mb"})
    jl = expect_mapping(doc, sinks.get("jsonl"), ("sinks", "jsonl"), {"enabled", "path", "backlog_mb", "format"})
    pr = expect_mapping(doc, sinks.get("prometheus"), ("sinks", "prometheus"), {"enabled", "listen"})
    listen = expect(doc, pr.get("listen", "127.0.0.1:9477"), ("sinks", "prometheus", "listen"), str, "HOST:PORT")
    host, port = _listen(doc, listen)
    jl_path = expect(doc, jl.get("path", "-"), ("sinks", "jsonl", "path"), str, "a path or -")
    if not jl_path:
        doc.fail(("sinks", "jsonl", "path"), "must be a file path or - for stdout")
    jl_format = expect(doc, jl.get("format", FORMAT_KRSID), ("sinks", "jsonl", "format"), str, "a format name")
    if jl_format not in FORMATS:
        doc.fail(("sinks", "jsonl", "format"), f"unknown format {jl_format!r}; one of {', '.join(FORMATS)}")
    return {
        "journald": JournaldConfig(
            _bool(doc, j, ("sinks", "journald", "enabled"), True),
            _int(doc, j.get("backlog_mb", DEFAULT_BACKLOG_MB), ("sinks", "journald", "backlog_mb"), 1, 4096),
        ),
        "jsonl": JsonlConfig(
            _bool(doc, jl, ("sinks", "jsonl", "enabled"), True),
            jl_path,
            _int(doc, jl.get("backlog_mb", DEFAULT_BACKLOG_MB), ("sinks", "jsonl", "backlog_mb"), 1, 4096),
            jl_format,
        ),
        "prometheus": PrometheusConfig(_bool(doc, pr, ("sinks", "prometheus", "enabled"), True), host, port),
    }


def _listen(doc: YamlDoc, listen: str) -> tuple[str, int]:
    path = ("sinks", "prometheus", "listen")
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    # isdigit() alone also takes digits int() refuses (superscripts such as "²").
    port_ok = port_text.isascii() and port_text.isdigit() and len(port_text) <= 5  # int() refuses 4,301+ digits
    if not sep or not port_ok or not 0 < int(port_text) < 65536:
        doc.fail(path, f"expected HOST:PORT (e.g. 127.0.0.1:9477), got {listen!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            doc.fail(path, f"host must be an IP address or localhost, got {host!r}")
    return host, int(port_text)


def _bool(doc: YamlDoc, m: dict[str, Any], path: tuple[object, ...], default: bool) -> bool:
    return expect(doc, m.get(str(path[-1]), default), path, bool, "true or false")


def _int(doc: YamlDoc, value: Any, path: tuple[object, ...], lo: int, hi: int) -> int:
    n = expect(doc, value, path, int, "an integer")
    if not lo <= n <= hi:
        doc.fail(path, f"must be between {lo} and {hi}, got {n}")
    return n


def _choice(doc: YamlDoc, m: dict[str, Any], path: tuple[object, ...], default: str, choices: tuple[str, ...]) -> str:
    value = expect(doc, m.get(str(path[-1]), default), path, str, "one of " + ", ".join(choices))
    if value not in choices:
        doc.fail(path, f"{value!r} is not one of {', '.join(choices)}")
    return value


def _path(doc: YamlDoc, m: dict[str, Any], key: str, default: Path, origin: str) -> Path:
    value = m.get(key)
    if value is None:
        return default
    text = expect(doc, value, (key,), str, "a path")
    if not text.strip():
        doc.fail((key,), "must be a directory path (an empty one would mean the config's own directory)")
    p = Path(text)
    if not p.is_absolute():
        # Relative paths are relative to the config file, not to the daemon's cwd.
        p = Path(origin).resolve().parent / p
    return p
