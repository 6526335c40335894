from __future__ import annotations

import os
from pathlib import Path

import pytest

from krsid.pipeline.decode import EventDecoder
from krsid.pipeline.enrich import Enricher, container_of, unit_of
from tests.support.records import catalog, pack

CAT = catalog()
DECODER = EventDecoder({0: CAT["bprm_check_security"], 1: CAT["file_mprotect"]}, boot_to_epoch=0.0)


@pytest.mark.parametrize(
    ("path", "unit", "container"),
    [
        ("/system.slice/sshd.service", "sshd.service", ""),
        ("/user.slice/user-1000.slice/session-4.scope", "session-4.scope", ""),
        ("/system.slice/docker-" + "a" * 64 + ".scope", "docker-" + "a" * 64 + ".scope", "a" * 64),
        (
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-"
            + "b" * 64
            + ".scope",
            "cri-containerd-" + "b" * 64 + ".scope",
            "b" * 64,
        ),
        ("/docker/" + "c" * 64, "", "c" * 64),
        ("/", "", ""),
        ("", "", ""),
    ],
)
def test_unit_and_container_from_cgroup_path(path: str, unit: str, container: str) -> None:
    assert unit_of(path) == unit
    assert container_of(path) == container


def fake_tree(tmp: Path) -> tuple[Path, Path, int]:
    proc = tmp / "proc"
    (proc / "42").mkdir(parents=True)
    os.symlink("/usr/bin/victim", proc / "42" / "exe")
    cg = tmp / "cgroup"
    unit_dir = cg / "system.slice" / "demo.service"
    unit_dir.mkdir(parents=True)
    return proc, cg, os.stat(unit_dir).st_ino


def test_exe_and_cgroup_are_added(tmp_path: Path) -> None:
    proc, cg, ino = fake_tree(tmp_path)
    enr = Enricher(proc_root=proc, cgroup_root=cg, rescan_interval=0.0)
    e = DECODER.decode(pack(CAT["file_mprotect"], 1, tgid=42, cgroup_id=ino))
    enr.enrich(e)
    assert e.values["exe"] == b"/usr/bin/victim"
    assert e.values["cgroup"] == "/system.slice/demo.service"
    assert e.values["unit"] == "demo.service" and e.values["container_id"] == ""


def test_gone_process_and_unknown_cgroup_are_empty(tmp_path: Path) -> None:
    proc, cg, _ = fake_tree(tmp_path)
    enr = Enricher(proc_root=proc, cgroup_root=cg, rescan_interval=3600)
    e = DECODER.decode(pack(CAT["file_mprotect"], 1, tgid=7, cgroup_id=1))
    enr.enrich(e)
    assert e.values["exe"] == b"" and e.values["cgroup"] == "" and e.values["unit"] == ""


def test_exec_updates_the_process_exe_after_its_own_event(tmp_path: Path) -> None:
    proc, cg, _ = fake_tree(tmp_path)
    enr = Enricher(proc_root=proc, cgroup_root=cg)
    exec_ev = DECODER.decode(pack(CAT["bprm_check_security"], 0, tgid=42, path="/usr/bin/new"))
    enr.enrich(exec_ev)
    assert exec_ev.values["exe"] == b"/usr/bin/victim"  # who ran the exec
    later = DECODER.decode(pack(CAT["file_mprotect"], 1, tgid=42))
    enr.enrich(later)
    assert later.values["exe"] == b"/usr/bin/new"


def test_a_cgroup_made_after_the_walk_is_taken_from_the_process(tmp_path: Path) -> None:
    """/proc/TGID/cgroup names it, checked by its id: no rescan needed (the next is an
    hour away); a process that moved on, or a path outside the namespace, is not taken."""
    proc, cg, _ = fake_tree(tmp_path)
    enr = Enricher(proc_root=proc, cgroup_root=cg, rescan_interval=3600)
    assert enr.cgroup_of(1 << 40) == ""  # the walk, done now
    new = cg / "system.slice" / "docker-abc.scope"
    new.mkdir()
    ino = os.stat(new).st_ino
    (proc / "42" / "cgroup").write_text("0::/system.slice/docker-abc.scope\n")
    assert enr.cgroup_of(ino) == ""  # without the process: only a rescan would find it
    assert enr.cgroup_of(ino, 42) == "/system.slice/docker-abc.scope"
    (proc / "42" / "cgroup").write_text("0::/system.slice/demo.service\n")
    assert enr.cgroup_of(ino, 42) == ""  # the process is in another cgroup now
    (proc / "42" / "cgroup").write_text("0::/../../outside\n")
    assert enr.cgroup_of(ino, 42) == "" and enr.cgroup_of(ino, 7) == ""  # 7: no such process
    e = DECODER.decode(pack(CAT["file_mprotect"], 1, tgid=42, cgroup_id=ino))
    (proc / "42" / "cgroup").write_text("0::/system.slice/docker-abc.scope\n")
    enr.enrich(e)
    assert (e.values["cgroup"], e.values["unit"]) == ("/system.slice/docker-abc.scope", "docker-abc.scope")


def test_new_cgroup_is_found_by_a_rescan(tmp_path: Path) -> None:
    proc, cg, _ = fake_tree(tmp_path)
    enr = Enricher(proc_root=proc, cgroup_root=cg, rescan_interval=0.0)
    assert enr.cgroup_of(1) == ""
    new = cg / "system.slice" / "late.service"
    new.mkdir()
    assert enr.cgroup_of(os.stat(new).st_ino) == "/system.slice/late.service"
