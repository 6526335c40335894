"""Compile-only BCC checks: these run on any host, even one that refuses LSM programs."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from krsid.catalog import load_catalog
from krsid.errors import ProgramLoadError
from tests.support.cli import run_krsid
from tests.support.records import PROGRAMS

ROOT = PROGRAMS.parent

if TYPE_CHECKING:
    from krsid.pipeline.load import BuildSettings

pytestmark = pytest.mark.bcc


@pytest.fixture(scope="module")
def header_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """krsid's cache_dir for these tests: the BTF header tree is generated once."""
    return tmp_path_factory.mktemp("hdrcache")


@pytest.fixture(scope="module")
def settings(header_cache: Path) -> BuildSettings:
    if os.geteuid() != 0:
        pytest.skip("BCC compiles need root")
    try:
        from krsid.pipeline.load import BuildSettings
    except ImportError as e:
        pytest.skip(f"bcc not importable ({e}); install python3-bpfcc")
    from krsid.kernel.btf import lsm_hook_arity
    from krsid.kernel.headers import resolve_headers

    headers = resolve_headers(header_cache, prefer="auto")
    return BuildSettings(headers, lsm_hook_arity())


CATALOG = load_catalog(PROGRAMS)


@pytest.mark.parametrize("hook", sorted(CATALOG.hooks))
def test_each_program_compiles_alone(settings: BuildSettings, hook: str) -> None:
    from krsid.pipeline.load import compile_only

    compile_only(CATALOG, [CATALOG[hook]], settings)


@pytest.mark.parametrize(
    ("perfbuf", "wakeup_events", "cflags"),
    [(False, 0, ()), (False, 64, ()), (True, 0, ()), (False, 64, ("-DKRSID_NO_TASK_BTF",))],
    ids=["ringbuf", "ringbuf-batched-wakeup", "perfbuf", "task-read-by-helpers(<5.11)"],
)
def test_all_programs_compile_as_one_module(
    settings: BuildSettings, perfbuf: bool, wakeup_events: int, cflags: tuple[str, ...]
) -> None:
    """Every variant the kernel or the config can select must compile, including the
    probe-read path that kernels without bpf_get_current_task_btf() (< 5.11) take."""
    from krsid.pipeline.load import compile_only

    headers = dataclasses.replace(settings.header_source, cflags=(*settings.header_source.cflags, *cflags))
    s = dataclasses.replace(settings, use_perfbuf=perfbuf, wakeup_events=wakeup_events, header_source=headers)
    compile_only(CATALOG, list(CATALOG), s)


def test_clang_rejects_a_wrong_layout(settings: BuildSettings) -> None:
    """The per-member _Static_asserts really check: shift one member and compile fails."""
    from krsid.pipeline.load import compile_only

    spec = CATALOG["file_mprotect"]
    members = list(spec.layout.members)
    i = next(n for n, m in enumerate(members) if m.name == "vm_end")
    members[i] = dataclasses.replace(members[i], offset=members[i].offset + 8)
    bad = dataclasses.replace(spec, layout=dataclasses.replace(spec.layout, members=tuple(members)))
    with pytest.raises(ProgramLoadError, match=r"krsid layout: file_mprotect_event\.vm_end"):
        compile_only(CATALOG, [bad], settings)


def test_broken_program_is_reported_with_clang_output(settings: BuildSettings, tmp_path: Path) -> None:
    from krsid.pipeline.load import compile_only

    shutil.copytree(PROGRAMS, tmp_path / "p")
    src = tmp_path / "p" / "file_mprotect.c"
    src.write_text(src.read_text().replace("e->vm_end = vma->vm_end;", "e->vm_end = vma->no_such_member;"))
    cat = load_catalog(tmp_path / "p")
    with pytest.raises(ProgramLoadError, match="no_such_member"):
        compile_only(cat, [cat["file_mprotect"]], settings)


def test_map_calls_in_an_included_header_are_caught_before_load(
    settings: BuildSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BCC leaves map method calls in #included headers as indirect calls; the kernel
    refuses them at load time ("unknown opcode 8d"). compile_only must catch that on
    a host that cannot load LSM programs: compile with krsid.h #included, not inlined."""
    from krsid.pipeline import load

    real = load.module_text
    monkeypatch.setattr(
        load, "module_text", lambda specs, header, nargs, extra="", **kw: real(specs, "", nargs, extra, **kw)
    )
    with pytest.raises(ProgramLoadError, match="indirect call"):
        load.compile_only(CATALOG, list(CATALOG), settings)


def test_compiler_heap_is_returned_after_a_compile(settings: BuildSettings) -> None:
    """clang/LLVM free tens of MB at the end of a compile that glibc would keep resident;
    the daemon calls release_free_heap() after attaching. It must find malloc_trim and
    release something after a compile (False: not bound, or nothing freed)."""
    from krsid.pipeline.load import compile_only, release_free_heap

    compile_only(CATALOG, list(CATALOG), settings)
    assert release_free_heap() is True


def test_transparent_huge_pages_are_disabled_for_the_process() -> None:
    """The daemon turns THP off for itself before the compile (khugepaged would
    otherwise fold the compile's trimmed free chunks back into resident huge pages).
    In a child, so that this test process keeps its own setting."""
    code = (
        "from krsid.pipeline.load import disable_transparent_hugepages as d; ok = d(); "
        "line = [l for l in open('/proc/self/status') if l.startswith('THP_enabled:')]; "
        "print(ok, line[0].split()[1] if line else 'absent')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["True", "0"]


# -- a program that makes LLVM end the process -----------------------------------------
# BCC's LLVM calls exit(1) on BPF backend errors (here: 4 KiB on the 512-byte BPF
# stack) instead of returning them. Each run below is its own process for that reason.
STACK_BUSTER = """
    volatile char krsid_test_too_big[4096];
    krsid_test_too_big[0] = 1;
    if (krsid_test_too_big[prot & 4095])
        return 0;
"""
STACK_LIMIT = "BPF stack limit of 512 bytes is exceeded"


def programs_with_a_stack_buster(tmp_path: Path) -> Path:
    """A copy of programs/ whose file_mprotect puts 4 KiB on the stack."""
    programs = tmp_path / "programs"
    shutil.copytree(PROGRAMS, programs)
    src = programs / "file_mprotect.c"
    text = src.read_text()
    body = text.index("{", text.index("LSM_PROBE(file_mprotect")) + 1
    src.write_text(text[:body] + STACK_BUSTER + text[body:])
    return programs


def two_hook_config(tmp_path: Path, programs: Path, header_cache: Path) -> Path:
    config = tmp_path / "krsid.yaml"
    config.write_text(
        f"programs_dir: {programs}\ncache_dir: {header_cache}\nstate_dir: {tmp_path / 'state'}\n"
        "hooks:\n  bprm_check_security: {enabled: true}\n  file_mprotect: {enabled: true}\n"
    )
    return config


BUILD_ONCE = """
import json, logging, sys
from pathlib import Path
from krsid.config import load_config
from krsid.daemon import Daemon
logging.basicConfig(level=logging.INFO, format="krsid: %(levelname)s: %(message)s")
programs = Daemon(load_config(Path(sys.argv[1]))).build_programs()
print(json.dumps({"compiled": [s.name for s in programs.specs],
                  "left_out": {h: st.error for h, st in programs.status.items()}}))
"""


def build_once(config: Path) -> subprocess.CompletedProcess[str]:
    """The daemon's build step (no load, no attach) in a process of its own."""
    return subprocess.run(
        [sys.executable, "-c", BUILD_ONCE, str(config)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_check_names_the_program_that_ends_the_compiler(
    settings: BuildSettings, tmp_path: Path, header_cache: Path
) -> None:
    config = two_hook_config(tmp_path, programs_with_a_stack_buster(tmp_path), header_cache)
    p = run_krsid("check", "--compile-only", "-c", str(config), timeout=600)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "1 of 2 program(s) do not compile: file_mprotect" in p.stdout
    assert "file_mprotect: the compiler ended the process (exit 1)" in p.stderr
    assert STACK_LIMIT in p.stderr and "lsm__file_mprotect" in p.stderr
    assert "bprm_check_security:" not in p.stderr


def test_the_daemon_reports_a_compiler_exit_then_starts_without_that_program(
    settings: BuildSettings, tmp_path: Path, header_cache: Path
) -> None:
    programs = programs_with_a_stack_buster(tmp_path)
    config = two_hook_config(tmp_path, programs, header_cache)
    marker = tmp_path / "state" / "compiling"

    # 1. LLVM ends the process; its words reach stderr anyway, and the marker stays.
    first = build_once(config)
    assert first.returncode == 1 and first.stdout == "", first.stderr
    assert "the process ended inside the BPF compiler (clang/LLVM) while compiling the programs" in first.stderr
    assert STACK_LIMIT in first.stderr
    assert marker.exists()

    # 2. The next start (systemd restarts on failure) finds the program and leaves it out.
    second = build_once(config)
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)
    assert result["compiled"] == ["bprm_check_security"]
    assert list(result["left_out"]) == ["file_mprotect"] and STACK_LIMIT in result["left_out"]["file_mprotect"]
    assert "file_mprotect: leaving it out: the compiler ended the process (exit 1)" in second.stderr
    assert marker.exists(), "the same module would end the process again: keep isolating"

    # 3. Fixed, the module is new: compiled together again, the marker is gone.
    shutil.copy2(PROGRAMS / "file_mprotect.c", programs / "file_mprotect.c")
    third = build_once(config)
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout) == {"compiled": ["bprm_check_security", "file_mprotect"], "left_out": {}}
    assert "leaving it out" not in third.stderr and not marker.exists()


def test_a_kill_during_a_compile_costs_one_isolated_start_not_every_start(
    settings: BuildSettings, tmp_path: Path, header_cache: Path
) -> None:
    """A marker left by a process killed mid-compile (OOM, SIGKILL), not by a program:
    the next start isolates, finds every program fine, and removes the marker."""
    from krsid.config import load_config
    from krsid.pipeline.load import LoadedPrograms
    from krsid.plan import kernel_hooks, plan_build

    config = two_hook_config(tmp_path, PROGRAMS, header_cache)
    marker = tmp_path / "state" / "compiling"
    loaded = load_config(config)
    specs, build_settings, _ = plan_build(loaded, kernel_hooks())
    marker.parent.mkdir()
    marker.write_text(LoadedPrograms(loaded.catalog, specs, build_settings).module_key() + "\n")

    p = build_once(config)
    assert p.returncode == 0, p.stderr
    assert "an earlier start ended inside the BPF compiler" in p.stderr
    assert json.loads(p.stdout) == {"compiled": ["bprm_check_security", "file_mprotect"], "left_out": {}}
    assert not marker.exists()
