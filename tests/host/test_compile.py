"""Compile-only BCC checks: these run on any host, even one that refuses LSM programs."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from krsid.catalog import load_catalog
from krsid.errors import ProgramLoadError
from tests.support.records import PROGRAMS

if TYPE_CHECKING:
    from krsid.pipeline.load import BuildSettings

pytestmark = pytest.mark.bcc


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> BuildSettings:
    if os.geteuid() != 0:
        pytest.skip("BCC compiles need root")
    try:
        from krsid.pipeline.load import BuildSettings
    except ImportError as e:
        pytest.skip(f"bcc not importable ({e}); install python3-bpfcc")
    from krsid.kernel.btf import lsm_hook_arity
    from krsid.kernel.headers import resolve_headers

    headers = resolve_headers(tmp_path_factory.mktemp("hdrcache"), prefer="auto")
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
    import shutil

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
    monkeypatch.setattr(load, "module_text", lambda specs, header, nargs, extra="": real(specs, "", nargs, extra))
    with pytest.raises(ProgramLoadError, match="indirect call"):
        load.compile_only(CATALOG, list(CATALOG), settings)


def test_compiler_heap_is_returned_after_a_compile(settings: BuildSettings) -> None:
    """clang/LLVM free tens of MB at the end of a compile that glibc would keep resident;
    the daemon calls release_free_heap() after attaching. It must find malloc_trim and
    release something after a compile (False: not bound, or nothing freed)."""
    from krsid.pipeline.load import compile_only, release_free_heap

    compile_only(CATALOG, list(CATALOG), settings)
    assert release_free_heap() is True
