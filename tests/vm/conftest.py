"""One krsid daemon per test session, inside a VM whose kernel loads BPF-LSM programs.

Starting the daemon costs a BCC compile + load + attach (~30-60 s under TCG), so it
is started once, here, and every test triggers behaviour and reads the result from
the sinks (a private journald, a JSON-lines file, the metrics endpoint).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.cli import run_krsid
from tests.support.journald import Journal, private_journald, unavailable_reason
from tests.support.net import free_port as free_port  # re-exported for the VM tests
from tests.support.sinks import complete_jsonl

if TYPE_CHECKING:
    from krsid.catalog import Catalog

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 600.0  # a TCG compile of every hook; generous, this is not a speed test
WORKLOADS = Path(__file__).parent / "workloads"


def run_workload(name: str, *args: str, timeout: float = 60.0) -> dict[str, Any]:
    """Run tests/vm/workloads/<name>.py as a child of this process (so an event's ppid
    is the test's pid) and return what it reports: one JSON object on stdout."""
    out = subprocess.run(
        [sys.executable, str(WORKLOADS / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@functools.cache
def catalog() -> Catalog:
    """The checkout's catalog, read once per session (every test module asks for it)."""
    from krsid.catalog import load_catalog

    return load_catalog(ROOT / "programs")


def message_id(hook: str) -> str:
    """The hook's MESSAGE_ID as its programs/<hook>.yaml declares it (never a copy)."""
    return catalog()[hook].message_id


def lsm_load_problem() -> str | None:
    """None if an LSM program can load here, else why not (from krsid doctor)."""
    if os.geteuid() != 0:
        return "needs root"
    p = run_krsid("doctor", "--require-lsm-load", timeout=120)
    if p.returncode == 0:
        return None
    lines = [line for line in p.stdout.splitlines() if "lsm program load" in line.lower()]
    return lines[0] if lines else p.stdout[-500:]


@pytest.fixture(scope="session")
def lsm_kernel() -> None:
    problem = lsm_load_problem()
    if problem is None:
        return
    if os.environ.get("KRSID_IN_VM") == "1":
        # Inside the test VM a skip would hide a broken VM: fail loudly instead.
        pytest.fail(f"inside the test VM, but BPF-LSM programs cannot load: {problem}")
    pytest.skip(f"this kernel cannot load BPF-LSM programs (run via tests/vm/run): {problem}")


@pytest.fixture(scope="session")
def journal(lsm_kernel: None) -> Iterator[Journal]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with private_journald() as j:
        yield j


@dataclass
class RunningDaemon:
    proc: subprocess.Popen[bytes]
    config: Path
    jsonl: Path
    log: Path
    metrics_url: str
    ready_status: str
    headers: str
    hooks: list[str]

    @property
    def attached(self) -> list[str]:
        for line in self.ready_status.splitlines():
            if line.startswith("STATUS=attached "):
                return [h.strip() for h in line.split(":", 1)[1].split(",")]
        return []

    def records(self) -> list[dict[str, Any]]:
        """Every complete line of the JSON lines output, parsed (the daemon may be writing)."""
        return complete_jsonl(self.jsonl)

    def events(self, predicate: Callable[[dict[str, Any]], bool] = lambda e: True) -> list[dict[str, Any]]:
        return [obj for obj in self.records() if predicate(obj)]

    def assert_seq_order(self) -> int:
        """Every event's seq is unique, and increasing within its lane; returns how many.
        seq is global over both lanes; the daemon reads each lane in order, not the two
        interleaved by seq (README: Lanes). A verdict takes the priority lane on any hook.
        With more than one CPU, records made at the same moment may arrive in either
        order (tests/support/order.py)."""
        from tests.support.order import lane_order_violations

        lane_of = {s.name: s.lane for s in catalog().event_types}
        by_lane: dict[str, list[int]] = {}
        for e in self.events():
            lane = "priority" if e.get("action") in ("deny", "would_deny") else lane_of.get(e["hook"], "priority")
            by_lane.setdefault(lane, []).append(e["seq"])
        seqs = [s for lane_seqs in by_lane.values() for s in lane_seqs]
        assert len(set(seqs)) == len(seqs), "a seq number delivered twice"
        for lane, lane_seqs in by_lane.items():
            late = lane_order_violations(lane_seqs, os.cpu_count() or 1)
            assert not late, f"{lane} lane out of order: (seq, delivered after) {late[:5]}"
        return len(seqs)

    def wait_events(
        self, predicate: Callable[[dict[str, Any]], bool], count: int = 1, timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(predicate)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def scrape(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
            return str(r.read().decode())


OPTIONS_DIR = Path(__file__).parent / "options"


def _wanted_hooks() -> tuple[list[str], list[str]]:
    """(every catalog program, the ones $KRSID_TEST_HOOKS names: [] = all)."""
    every = sorted(catalog().hooks)
    wanted = [h for h in os.environ.get("KRSID_TEST_HOOKS", "").split(",") if h]
    unknown = set(wanted) - set(every)
    if unknown:
        raise pytest.UsageError(f"KRSID_TEST_HOOKS names unknown hooks: {sorted(unknown)}")
    return every, wanted


def session_hooks() -> list[str]:
    """Every hook of the catalog, or those in $KRSID_TEST_HOOKS (comma-separated) while
    iterating on a few: one TCG compile of the whole catalog takes a while. Fallback
    programs (cred_prepare) are not hooks of their own: naming one in KRSID_TEST_HOOKS
    selects its tests, which start their own daemon (see fallback_selected)."""
    configurable = set(catalog().configurable)
    _every, wanted = _wanted_hooks()
    if not wanted:
        return sorted(configurable)
    return sorted(h for h in wanted if h in configurable)  # the daemon attaches (and reports) hooks sorted


def serving_program(hook: str, available: Collection[str]) -> str | None:
    """The program krsid attaches for an enabled hook on a kernel whose LSM hooks are
    `available`: the hook's own; where the kernel lacks it, its fallback (a catalog
    program with fallback_for) if the kernel has that; else none (the hook is skipped)."""
    if hook in available:
        return hook
    fallback = catalog().fallback_of(hook)
    return fallback.name if fallback is not None and fallback.name in available else None


def fallback_selected(program: str) -> bool:
    """Whether this session runs the tests of a fallback program (all do by default)."""
    _every, wanted = _wanted_hooks()
    return not wanted or program in wanted


def write_config(
    tmp: Path,
    headers: str,
    port: int,
    hooks: list[str],
    hook_settings: dict[str, dict[str, Any]] | None = None,
    policy: dict[str, Any] | None = None,
    watch: dict[str, list[str]] | None = None,
) -> Path:
    """The session config: each hook with the options its tests need, from
    tests/vm/options/<hook>.yaml (a mapping of option: value), else defaults;
    hook_settings are added on top (e.g. fallback: always)."""
    import yaml

    hook_cfg = {}
    for h in hooks:
        opt_file = OPTIONS_DIR / f"{h}.yaml"
        hook_cfg[h] = (yaml.safe_load(opt_file.read_text()) or {}) if opt_file.exists() else {}
        hook_cfg[h].update((hook_settings or {}).get(h, {}))
    cfg = tmp / "krsid.yaml"
    body: dict[str, Any] = {
        "headers": headers,
        "cache_dir": str(tmp / "cache"),
        "state_dir": str(tmp / "state"),
        "hooks": hook_cfg,
        "bpf_stats": True,
        # Off for the session: test_overload floods from root on purpose to prove exact
        # books under ring-buffer loss. Fair sharing is tested on the shipped config
        # (test_flood.py, its own daemon).
        "fair_share": {lane: {"process_rate": 0, "uid_rate": 0} for lane in ("priority", "bulk")},
        "sinks": {
            "journald": {"enabled": True},
            "jsonl": {"enabled": True, "path": str(tmp / "events.jsonl")},
            "prometheus": {"enabled": True, "listen": f"127.0.0.1:{port}"},
        },
    }
    if policy:
        body["policy"] = policy
    if watch:
        body["watch"] = watch
    cfg.write_text(yaml.safe_dump(body))
    return cfg


@pytest.fixture
def tmpfs_dir(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of the test's own (in the session's private mount namespace). The guest's
    /tmp is an overlay, where file mappings and unlinks see the upper layer's inode and
    name, not the path: tests that map or run files use this instead."""
    d = tmp_path / "tmpfs"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "krsid-test", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)


@pytest.fixture
def policy(daemon: RunningDaemon) -> Iterator[Any]:
    """A Reloader of the session daemon (tests/vm/test_policy.py): rules applied by hot
    reload, the session's config restored at the end of the test."""
    from tests.vm.test_policy import Reloader  # it imports this module: not at the top

    with Reloader(daemon) as r:
        yield r


@pytest.fixture
def hook_enabled(daemon: RunningDaemon) -> Callable[[str], None]:
    """Call with a hook name at the start of a test: skips (with the reason) when the
    session runs without that hook, fails when the hook should be but is not attached."""

    def check(hook: str) -> None:
        if hook not in daemon.hooks:
            pytest.skip(f"{hook} is not in this session's KRSID_TEST_HOOKS")
        if hook not in daemon.attached:
            pytest.fail(f"{hook} is enabled but not attached:\n{daemon.log.read_text()}")

    return check


@pytest.fixture(scope="session")
def daemon(
    journal: Journal, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[RunningDaemon]:
    tmp = tmp_path_factory.mktemp("krsid")
    headers = str(request.config.getoption("--headers"))
    port = free_port()
    hooks = session_hooks()
    if not hooks:
        pytest.skip("KRSID_TEST_HOOKS names only fallback programs: the session daemon has no hook to attach")
    with watched_tmpfs(tmp / "watch") as watch:
        cfg = write_config(tmp, headers, port, hooks, watch=watch)
        with start_daemon(tmp, cfg, port, headers, hooks, others=set()) as d:
            yield d


# The session's file-integrity watch: the shipped lists plus a tmpfs of the session's
# own (tests/vm/test_watch.py), so no test writes where the shipped watch looks.
WATCHED_NAME = "krsid-watched-name"


@contextlib.contextmanager
def watched_tmpfs(root: Path) -> Iterator[dict[str, list[str]]]:
    """root (a tmpfs, unmounted at the end) holds dir/ and file (watched by identity),
    logs/ (a log directory: truncation, deletion, renames), outside/ (not watched);
    WATCHED_NAME is watched anywhere."""
    from krsid.watch import DEFAULT_LOGS, DEFAULT_NAMES, DEFAULT_PATHS

    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "krsid-watch", str(root)], check=True)
    try:
        for d in ("dir", "logs", "outside"):
            (root / d).mkdir()
        (root / "file").write_text("watched\n")
        yield {
            "paths": [*DEFAULT_PATHS, str(root / "dir"), str(root / "file")],
            "names": [*DEFAULT_NAMES, WATCHED_NAME],
            "logs": [*DEFAULT_LOGS, str(root / "logs")],
        }
    finally:
        subprocess.run(["umount", "--lazy", str(root)], check=False)


@contextlib.contextmanager
def start_daemon(
    tmp: Path, cfg: Path, port: int, headers: str, hooks: list[str], others: set[str], nice: int = 0
) -> Iterator[RunningDaemon]:
    """Run krsid on cfg until READY, as systemd would (at `nice`); stop it and check it cleaned up.

    others: LSM programs (bpftool "id:name") other daemons hold, which may stay loaded
    after this one stops; every other LSM program must be gone (fail-open)."""
    notify_path = tmp / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    log = tmp / "daemon.log"
    # As systemd would run it under WatchdogSec=10s: the poll loop must send WATCHDOG=1.
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="10000000", PYTHONUNBUFFERED="1")
    with log.open("wb") as logf:
        proc = subprocess.Popen(
            [*(["nice", "-n", str(nice)] if nice else []), sys.executable, "-m", "krsid", "run", "--config", str(cfg)],
            cwd=ROOT,
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
    # Read the notify socket all the time, as systemd does: the guest's datagram queue
    # is short (net.unix.max_dgram_qlen), and krsid drops rather than blocks on it.
    messages: list[str] = []
    stop_reader = threading.Event()

    def reader() -> None:
        notify.settimeout(0.2)
        while not stop_reader.is_set():
            with contextlib.suppress(TimeoutError, socket.timeout, OSError):
                messages.append(notify.recv(4096).decode())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    status = ""
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while "READY=1" not in status:
            if proc.poll() is not None:
                pytest.fail(f"krsid exited with {proc.returncode} before READY:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"krsid not READY after {READY_TIMEOUT}s:\n{log.read_text()}")
            time.sleep(0.2)
            status = "\n".join(messages)
        yield RunningDaemon(
            proc,
            cfg,
            tmp / "events.jsonl",
            log,
            f"http://127.0.0.1:{port}/metrics",
            status,
            headers,
            hooks,
        )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stop_reader.set()
        thread.join(5)
        later = "\n".join(messages)
        notify.close()
        sys.stderr.write(f"\n--- krsid daemon log ({headers} headers, {cfg}) ---\n{log.read_text()}\n")
    # After SIGTERM: a clean exit, and nothing of krsid's left attached (fail-open).
    assert proc.returncode == 0, f"krsid exited {proc.returncode}"
    assert "WATCHDOG=1" in later, f"no watchdog keep-alive while running: {later!r}"
    assert later.rstrip().endswith("STOPPING=1"), f"no STOPPING=1 at shutdown: {later!r}"
    left = sorted(set(remaining_krsid_programs()) - others)
    assert not left, f"programs still loaded after krsid stopped: {left}"


def remaining_krsid_programs() -> list[str]:
    """Every LSM program still loaded: in the test VM only krsid loads any. (bpftool
    shows some names without their lsm__ prefix, so no name filter.)"""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True)
    return [f"{p.get('id')}:{p.get('name')}" for p in json.loads(out.stdout) if p.get("type") == "lsm"]
