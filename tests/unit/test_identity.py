"""krsid.identity: process instance ids, the process table, ancestry (issue 12, items 1-2),
and how they reach the sinks (journald OBJECT_SYSTEMD_UNIT, JSON ancestors)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import cast

import pytest

from krsid.config import parse_config
from krsid.errors import ConfigError
from krsid.event import Event, Record
from krsid.identity import BootClock, ProcessTable
from krsid.identity.procfs import parse_stat, read_process
from krsid.identity.table import ORIGIN_EXEC, ORIGIN_GONE, ORIGIN_PARENT, ORIGIN_PROC
from krsid.pipeline.decode import EventDecoder
from krsid.pipeline.enrich import ENRICHED_FIELDS, EXEC_ENRICHED_FIELDS, Enricher
from krsid.sinks.journald import journal_fields, units_of_cgroup
from krsid.sinks.jsonl import event_line
from tests.support.records import catalog, pack

CAT = catalog()
DECODER = EventDecoder({0: CAT["bprm_check_security"], 1: CAT["file_mprotect"]}, boot_to_epoch=0.0)
BOOT = "0123456789abcdef0123456789abcdef"
TICK_NS = 10_000_000  # USER_HZ 100


def clock() -> BootClock:
    return BootClock(boot_id=BOOT, ticks_per_second=100)


def fake_process(proc: Path, pid: int, ppid: int, start_ticks: int, exe: str, args: list[str], uid: int = 0) -> None:
    d = proc / str(pid)
    d.mkdir(parents=True)
    rest = ["S", str(ppid)] + ["0"] * 17 + [str(start_ticks), "0", "0"]
    (d / "stat").write_text(f"{pid} (odd) comm) " + " ".join(rest) + "\n")
    (d / "status").write_text(f"Name:\todd\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in args) + b"\0")
    os.symlink(exe, d / "exe")


def chain(proc: Path) -> None:
    """init(1) -> sshd(100) -> bash(200) -> python3(300)."""
    fake_process(proc, 1, 0, 1, "/usr/lib/systemd/systemd", ["/sbin/init"])
    fake_process(proc, 100, 1, 50, "/usr/sbin/sshd", ["sshd: /usr/sbin/sshd -D"])
    fake_process(proc, 200, 100, 700, "/usr/bin/bash", ["-bash"], uid=1000)
    fake_process(proc, 300, 200, 900, "/usr/bin/python3.11", ["python3", "x.py"], uid=1000)


def event(hook: str, tgid: int, start_ticks: int, ppid: int, parent_ticks: int, **values: object) -> Event:
    spec = CAT[hook]
    raw = pack(
        spec,
        0 if hook == "bprm_check_security" else 1,
        tgid=tgid,
        pid=tgid,
        ppid=ppid,
        start_ns=start_ticks * TICK_NS + 1234,  # ns below the tick do not change the id
        parent_start_ns=parent_ticks * TICK_NS,
        **values,
    )
    return DECODER.decode(raw)


def ancestors_of(e: Event) -> tuple[Record, ...]:
    return cast(tuple[Record, ...], e.values["ancestors"])


def enricher(tmp_path: Path, *, inherit_image: bool = True) -> Enricher:
    table = ProcessTable(proc_root=tmp_path / "proc", clock=clock(), inherit_image=inherit_image)
    return Enricher(proc_root=tmp_path / "proc", cgroup_root=tmp_path, processes=table, ancestors_depth=10)


def test_id_is_boot_start_ticks_tgid_and_matches_proc_stat() -> None:
    c = clock()
    assert c.process_id(c.ticks(123_456_789_012), 4242) == f"{BOOT}:12345:4242"
    # The id of this process from the kernel's nanoseconds equals the one from /proc.
    parsed = parse_stat(Path("/proc/self/stat").read_bytes())
    assert parsed is not None and parsed[0] == os.getppid()
    host = BootClock()
    assert len(host.boot_id) == 32 and "-" not in host.boot_id
    assert host.ticks(parsed[1] * host.ns_per_tick + host.ns_per_tick - 1) == parsed[1]


def test_stat_with_parentheses_in_comm() -> None:
    rest = " ".join(["R", "77"] + ["0"] * 17 + ["31337", "0"])
    assert parse_stat(f"5 (a) b (c)) {rest}".encode()) == (77, 31337)
    assert parse_stat(b"garbage") is None and parse_stat(b"5 (x) R 1") is None


def test_read_process_refuses_a_reused_pid() -> None:
    parsed = parse_stat(Path("/proc/self/stat").read_bytes())
    assert parsed is not None
    me = read_process(Path("/proc"), os.getpid(), parsed[1])
    assert me is not None and me.exe == os.readlink("/proc/self/exe").encode() and me.uid == os.getuid()
    assert me.ppid == os.getppid() and me.args  # argv of pytest
    assert read_process(Path("/proc"), os.getpid(), parsed[1] + 1) is None  # another instance
    assert read_process(Path("/proc"), 2**22 + 7) is None  # no such pid


def test_seed_links_every_process_to_its_parent_instance(tmp_path: Path) -> None:
    chain(tmp_path / "proc")
    table = ProcessTable(proc_root=tmp_path / "proc", clock=clock())
    assert table.seed() == 4 and len(table) == 4
    py = table.get(table.key_of(900 * TICK_NS, 300))
    assert py is not None and py.process_id == f"{BOOT}:900:300" and py.parent_id == f"{BOOT}:700:200"
    assert py.exe == b"/usr/bin/python3.11" and py.args == (b"python3", b"x.py") and py.uid == 1000
    chain_up = table.ancestors(py, 10)
    assert [a["pid"] for a in chain_up] == [200, 100, 1]
    assert [a["exe"] for a in chain_up] == [b"/usr/bin/bash", b"/usr/sbin/sshd", b"/usr/lib/systemd/systemd"]
    assert [a["pid"] for a in table.ancestors(py, 2)] == [200, 100]  # the configured depth


def test_the_seed_of_the_real_proc_knows_this_process_and_its_parent() -> None:
    table = ProcessTable()
    assert table.seed() > 1
    parsed = parse_stat(Path("/proc/self/stat").read_bytes())
    assert parsed is not None
    me = table.get(parsed[1] << 32 | os.getpid())
    assert me is not None and me.origin == ORIGIN_PROC
    parent_stat = parse_stat(Path(f"/proc/{os.getppid()}/stat").read_bytes())
    assert parent_stat is not None
    assert me.parent_id == table.clock.process_id(parent_stat[1], os.getppid())


def test_every_event_carries_ids_and_the_parent(tmp_path: Path) -> None:
    chain(tmp_path / "proc")
    enr = enricher(tmp_path)
    e = event("file_mprotect", 300, 900, 200, 700)
    enr.enrich(e)
    v = e.values
    assert v["process_id"] == f"{BOOT}:900:300" and v["parent_process_id"] == f"{BOOT}:700:200"
    assert v["exe"] == b"/usr/bin/python3.11"
    assert "ancestors" not in v  # exec events only
    assert {n for n, _ in ENRICHED_FIELDS} <= set(v)


def test_exec_event_carries_ancestry_and_updates_the_image(tmp_path: Path) -> None:
    chain(tmp_path / "proc")
    enr = enricher(tmp_path)
    # python3 (300) forked 400, which execs /opt/bin/tool and is gone before krsid reads /proc.
    e = event("bprm_check_security", 400, 950, 300, 900, path="/opt/bin/tool", args=b"tool\0-v\0", args_len=8)
    enr.enrich(e)
    v = e.values
    # The caller's image before the exec: inherited from python3 (fork copies it).
    assert v["exe"] == b"/usr/bin/python3.11" and v["process_id"] == f"{BOOT}:950:400"
    anc = ancestors_of(e)
    assert [a["pid"] for a in anc] == [300, 200, 100, 1]
    assert anc[0] == {
        "process_id": f"{BOOT}:900:300",
        "pid": 300,
        "uid": 1000,
        "exe": b"/usr/bin/python3.11",
        "args": (b"python3", b"x.py"),
    }
    assert {n for n, _ in EXEC_ENRICHED_FIELDS} <= set(v)
    later = event("file_mprotect", 400, 950, 300, 900)
    enr.enrich(later)
    assert later.values["exe"] == b"/opt/bin/tool"
    proc = enr.processes.get(enr.processes.key_of(950 * TICK_NS, 400))
    assert proc is not None and proc.origin == ORIGIN_EXEC and proc.args == (b"tool", b"-v")
    # A child of the tool that never exec'd runs the tool's image.
    child = event("bprm_check_security", 401, 960, 400, 950, path="/bin/true")
    enr.enrich(child)
    assert child.values["exe"] == b"/opt/bin/tool"
    assert [a["pid"] for a in ancestors_of(child)][:2] == [400, 300]


def test_exec_of_an_unknown_process_that_proc_already_shows_after_exec(tmp_path: Path) -> None:
    chain(tmp_path / "proc")
    enr = enricher(tmp_path)
    enr.processes.seed()  # krsid started; then bash forks 500, which execs ls
    fake_process(tmp_path / "proc", 500, 200, 990, "/usr/bin/ls", ["ls"], uid=1000)  # already the new image
    e = event("bprm_check_security", 500, 990, 200, 700, path="/usr/bin/ls")
    enr.enrich(e)
    assert e.values["exe"] == b"/usr/bin/bash"  # who called exec: bash's image


def test_a_denied_exec_leaves_the_image(tmp_path: Path) -> None:
    chain(tmp_path / "proc")
    enr = enricher(tmp_path)
    e = event("bprm_check_security", 300, 900, 200, 700, path="/tmp/evil", action=3, verdict=-1)
    enr.enrich(e)
    later = event("file_mprotect", 300, 900, 200, 700)
    enr.enrich(later)
    assert later.values["exe"] == b"/usr/bin/python3.11"


def test_pid_reuse_in_one_batch_gives_two_instances(tmp_path: Path) -> None:
    chain(tmp_path / "proc")
    enr = enricher(tmp_path)
    first = event("bprm_check_security", 600, 1000, 300, 900, path="/usr/bin/first")
    second = event("file_mprotect", 600, 1500, 200, 700)  # pid 600 again: another process, child of bash
    for e in (first, second):
        enr.enrich(e)
    assert first.values["process_id"] != second.values["process_id"]
    # The second never exec'd: bash's image, not the first one's /usr/bin/first.
    assert second.values["exe"] == b"/usr/bin/bash"
    assert second.values["parent_process_id"] == f"{BOOT}:700:200"


def test_a_gone_parent_is_a_stub_and_the_chain_ends_there(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    enr = enricher(tmp_path)
    e = event("bprm_check_security", 700, 10, 650, 5, path="/bin/true")
    enr.enrich(e)
    v = e.values
    assert v["exe"] == b""
    assert ancestors_of(e) == ({"process_id": f"{BOOT}:5:650", "pid": 650, "uid": -1, "exe": b"", "args": ()},)
    stub = enr.processes.get(enr.processes.key_of(5 * TICK_NS, 650))
    assert stub is not None and stub.origin == ORIGIN_GONE


def test_without_an_exec_hook_images_are_not_inherited(tmp_path: Path) -> None:
    chain(tmp_path / "proc")
    enr = enricher(tmp_path, inherit_image=False)
    e = event("file_mprotect", 800, 1200, 300, 900)
    enr.enrich(e)
    assert e.values["exe"] == b""  # might have exec'd unseen: unknown, not a guess
    assert enr.processes.get(enr.processes.key_of(1200 * TICK_NS, 800)).origin == ORIGIN_GONE  # type: ignore[union-attr]


def test_the_table_is_bounded_and_counts_evictions(tmp_path: Path) -> None:
    chain(tmp_path / "proc")
    table = ProcessTable(proc_root=tmp_path / "proc", clock=clock(), max_entries=3)
    table.seed()
    assert len(table) == 3 and table.evictions == 1
    assert table.get(table.key_of(1 * TICK_NS, 1)) is None  # seeded oldest first: init is the one evicted
    for pid in range(1000, 1100):
        table.observe(pid, 5000 * TICK_NS, 300, 900 * TICK_NS, 0)
    # One eviction per new process; the parent (300) is used by each, so it stays.
    assert len(table) == 3 and table.evictions == 1 + 100 and table.proc_reads == 100
    young = table.observe(1099, 5000 * TICK_NS, 300, 900 * TICK_NS, 0)
    assert young.origin == ORIGIN_PARENT  # still there: the most recently used


def test_ancestry_survives_a_parent_cycle(tmp_path: Path) -> None:
    table = ProcessTable(proc_root=tmp_path, clock=clock())
    a = table.observe(10, 1 * TICK_NS, 11, 2 * TICK_NS, 0)
    table.observe(11, 2 * TICK_NS, 10, 1 * TICK_NS, 0)
    assert [x["pid"] for x in table.ancestors(a, 10)] == [11]


@pytest.mark.parametrize(
    ("path", "system", "user"),
    [
        ("/system.slice/demo.service", "demo.service", ""),
        ("/system.slice/demo.service/worker", "demo.service", ""),
        ("/user.slice/user-1000.slice/session-4.scope", "session-4.scope", ""),
        ("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service", "user@1000.service", "foo.service"),
        ("/init.scope", "init.scope", ""),
        ("/machine.slice/systemd-nspawn@c.service/payload/system.slice/x.service", "systemd-nspawn@c.service", ""),
        ("/", "", ""),
        ("/custom/group", "", ""),
    ],
)
def test_units_of_cgroup_as_journald_derives_them(path: str, system: str, user: str) -> None:
    assert units_of_cgroup(path) == (system, user)


def test_journal_entry_names_the_unit_and_the_ancestry(tmp_path: Path) -> None:
    chain(tmp_path / "proc")
    unit = tmp_path / "system.slice" / "demo.service"
    unit.mkdir(parents=True)
    enr = enricher(tmp_path)
    e = event("bprm_check_security", 300, 900, 200, 700, path="/bin/x", cgroup_id=os.stat(unit).st_ino)
    enr.enrich(e)
    fields = dict(journal_fields(e))
    assert fields[b"OBJECT_SYSTEMD_UNIT"] == b"demo.service" and b"OBJECT_PID" not in fields
    assert fields[b"KRSID_PROCESS_ID"] == f"{BOOT}:900:300".encode()
    assert fields[b"KRSID_PARENT_PROCESS_ID"] == f"{BOOT}:700:200".encode()
    lines = fields[b"KRSID_ANCESTORS"].split(b"\n")
    assert lines[0] == f"{BOOT}:700:200 200 1000 /usr/bin/bash -bash".encode()
    assert lines[1] == f"{BOOT}:50:100 100 0 /usr/sbin/sshd 'sshd: /usr/sbin/sshd -D'".encode()
    record = json.loads(event_line(e))
    assert record["ancestors"][0] == {
        "process_id": f"{BOOT}:700:200",
        "pid": 200,
        "uid": 1000,
        "exe": "/usr/bin/bash",
        "args": ["-bash"],
    }
    assert record["process_id"] == f"{BOOT}:900:300" and record["start_ns"] == 900 * TICK_NS + 1234


def test_identity_config() -> None:
    base = "hooks:\n  file_mprotect: {}\n"
    c = parse_config(base, "t.yaml", catalog=CAT)
    assert (c.identity.process_table_size, c.identity.ancestors_depth) == (65536, 10)
    c = parse_config(base + "identity:\n  process_table_size: 32768\n  ancestors_depth: 3\n", "t.yaml", catalog=CAT)
    assert (c.identity.process_table_size, c.identity.ancestors_depth) == (32768, 3)
    for bad in ("identity:\n  ancestors_depth: 65\n", "identity:\n  process_table_size: 0\n", "identity:\n  nope: 1\n"):
        with pytest.raises(ConfigError):
            parse_config(base + bad, "t.yaml", catalog=CAT)


def test_process_table_metrics() -> None:
    from collections.abc import Iterator

    from prometheus_client import generate_latest
    from prometheus_client.core import Metric
    from prometheus_client.registry import Collector, CollectorRegistry

    from krsid.metrics import _process_table_metrics  # the collector's section

    table = ProcessTable(proc_root=Path("/nonexistent"), clock=clock(), max_entries=2)
    for pid in (1, 2, 3):
        table.observe(pid, pid * TICK_NS, 0, 0, 0)

    class One(Collector):
        def collect(self) -> Iterator[Metric]:
            return iter(_process_table_metrics(table))

    reg = CollectorRegistry()
    reg.register(One())
    text = generate_latest(reg).decode()
    assert "krsid_process_table_entries 2.0" in text and "krsid_process_table_evictions_total 1.0" in text


def test_a_long_fork_chain_stays_within_the_cap(tmp_path: Path) -> None:
    """Each process forks the next and exits: evicted links must not keep the chain alive."""
    import gc

    from krsid.identity.table import Process

    table = ProcessTable(proc_root=tmp_path, clock=clock(), max_entries=100)
    for i in range(10, 2000):
        table.observe(i, i * TICK_NS, i - 1, (i - 1) * TICK_NS, 0)
    gc.collect()
    # What the table keeps alive: the Process objects reachable from it through
    # containers and other Process objects (not every Process in the interpreter:
    # other tests' objects may still be around in a full run).
    containers = (dict, list, tuple, set, frozenset, Process)
    seen: set[int] = set()
    stack: list[object] = [table.__dict__] if hasattr(table, "__dict__") else []
    stack += [getattr(table, s) for s in getattr(type(table), "__slots__", ()) if hasattr(table, s)]
    alive = 0
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, Process):
            alive += 1
        if isinstance(o, containers) or hasattr(o, "move_to_end"):  # OrderedDict is a dict
            stack.extend(gc.get_referents(o))
    assert len(table) == 100 and 100 <= alive <= 2 * 100, alive


def test_100k_processes_keep_the_table_at_its_cap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Issue 12's limit: a host with 100k processes. The seed reads each once, the
    table holds its cap (the default, 65,536) and counts the rest as evicted; the
    newest keep their parents, and 100k more processes seen in events change nothing."""
    from krsid.identity import table as table_module
    from krsid.identity.procfs import ProcInfo
    from krsid.identity.table import DEFAULT_MAX_ENTRIES

    n = 100_000
    reads: list[int] = []

    def fake_read(_root: Path, tgid: int, start_ticks: int | None = None) -> ProcInfo | None:
        reads.append(tgid)
        if tgid > n + 1:
            return None  # an event's process that has already exited
        return ProcInfo(tgid, max(1, tgid - 1), tgid, 0, b"/usr/bin/p%d" % tgid, (b"p",))

    monkeypatch.setattr(table_module, "list_pids", lambda _root: list(range(2, n + 2)))
    monkeypatch.setattr(table_module, "read_process", fake_read)
    table = ProcessTable(proc_root=tmp_path, clock=clock())
    assert table.seed() == n and len(reads) == n
    assert len(table) == DEFAULT_MAX_ENTRIES and table.evictions == n - DEFAULT_MAX_ENTRIES
    newest = table.observe(n + 1, (n + 1) * TICK_NS, n, n * TICK_NS, 0)
    assert newest.exe == b"/usr/bin/p%d" % (n + 1) and len(reads) == n  # known: not read again
    assert [a["pid"] for a in table.ancestors(newest, 3)] == [n, n - 1, n - 2]
    for pid in range(n + 2, 2 * n + 2):  # 100k short-lived processes, each seen once
        table.observe(pid, pid * TICK_NS, n + 1, (n + 1) * TICK_NS, 0)
    assert len(table) == DEFAULT_MAX_ENTRIES and table.evictions == 2 * n - DEFAULT_MAX_ENTRIES


def test_entries_share_equal_values_and_their_parents_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A service's workers: one exe, one argv, one parent. Each entry holds the same
    objects (not 3 copies of each, as /proc reads give them), and a child's parent id
    is its parent's string; values stay right past the sharing cache's bound."""
    from krsid.identity import table as table_module

    proc = tmp_path / "proc"
    fake_process(proc, 10, 1, 5, "/usr/sbin/nginx", ["nginx: master"])
    for pid in (11, 12, 13):
        fake_process(proc, pid, 10, 6, "/usr/sbin/nginx", ["nginx: worker process"])
    t = ProcessTable(proc_root=proc, clock=clock())
    assert t.seed() == 4
    master = t.get(t.key_of(5 * TICK_NS, 10))
    workers = [t.get(t.key_of(6 * TICK_NS, pid)) for pid in (11, 12, 13)]
    assert master is not None and all(w is not None for w in workers)
    assert len({id(w.exe) for w in workers if w}) == 1 and len({id(w.args) for w in workers if w}) == 1
    assert all(w is not None and w.parent_id is master.process_id for w in workers)
    assert workers[0] is not None and workers[0].exe is master.exe  # b"/usr/sbin/nginx" once
    monkeypatch.setattr(table_module, "SHARED_VALUES", 2)
    for i in range(5):
        value = b"/opt/tool-%d" % i
        assert t._shared(value) == value and len(t._values) <= 2
    p = t.observe(20, 7 * TICK_NS, 10, 5 * TICK_NS, 0)  # gone from /proc: its parent's image
    assert p.parent_id is master.process_id and (p.exe, p.args) == (master.exe, master.args)
