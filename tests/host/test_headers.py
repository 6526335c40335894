"""The BTF-generated header tree: built and cached right, and BCC reads every
struct member at the offset the kernel's BTF says.

Two different things can go wrong, and each needs its own check:

* The tree's *declarations* can disagree with BTF (bpftool < 7.2 dumps 1-byte
  enums as 4 bytes).  clang's AST layout sees that, so one `_Static_assert(
  __builtin_offsetof(T, m) == N)` per member catches it at compile time.
* BCC's *code generation* can disagree with the declarations: BCC replaces the
  module's data layout after clang built the IR types, so without
  -ffine-grained-bitfield-accesses the storage clang merged for runs of
  `long: 64;` padding becomes 16-byte aligned and member addresses move (bcc
  issue 4890).  offsetof() never sees this (measured: every static assert still
  passes); only generated code does.  So each member's address is also computed
  from a runtime pointer, `(char *)&((T *)b)->m - b`, and compared with N; the
  optimiser folds each chunk's mismatch count to a constant, read back from the
  compiled instructions (`r0 = count; exit`) with BPF.dump_func, nothing loaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from krsid.errors import HeaderError
from krsid.kernel import headers
from krsid.kernel.btf import (
    KIND_ENUM,
    KIND_ENUM64,
    KIND_STRUCT,
    KIND_TYPEDEF,
    KIND_UNION,
    VMLINUX_BTF,
    Btf,
    Composite,
)
from krsid.kernel.headers import (
    BTF_CFLAGS,
    HeaderSource,
    bcc_environment,
    linux_version_code,
    parse_bpftool_version,
    plan_headers,
    resolve_headers,
)

CHUNK_MEMBERS = 1000  # members per generated function: ~60 functions for vmlinux
TIMINGS: dict[str, float] = {}


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def btf() -> Btf:
    if not VMLINUX_BTF.exists():
        pytest.skip(f"{VMLINUX_BTF} absent (kernel without CONFIG_DEBUG_INFO_BTF)")
    t0 = time.perf_counter()
    b = Btf.load()
    TIMINGS["btf_load_s"] = time.perf_counter() - t0
    return b


@pytest.fixture(scope="module")
def cache_dir() -> Iterator[Path]:
    # Not tmp_path_factory: pytest keeps those around, and each tree holds a
    # multi-megabyte vmlinux.h.
    with tempfile.TemporaryDirectory(prefix="krsid-hdr-test-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def tree(btf: Btf, cache_dir: Path) -> HeaderSource:
    try:
        headers.require_bpftool()
    except HeaderError as exc:
        pytest.skip(f"cannot build the BTF tree here: {exc}")
    t0 = time.perf_counter()
    src = resolve_headers(cache_dir, prefer="btf")
    TIMINGS["tree_build_s"] = time.perf_counter() - t0
    return src


@pytest.fixture(scope="module")
def bcc_python() -> str:
    """An interpreter that imports bcc.  The compiles run in a child process: the
    ~60k-member module takes ~20 s of LLVM teardown on exit (skipped with
    os._exit) and ~3 GB, which the pytest process should not keep."""
    if os.geteuid() != 0:
        pytest.skip("BCC compiles need root")
    probe = subprocess.run([sys.executable, "-c", "import bcc"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"bcc not importable ({last}); install python3-bpfcc")
    return sys.executable


# ------------------------------------------------- generating the offset check
@dataclass
class OffsetCheck:
    source: str
    functions: list[str]  # one per chunk
    chunk_types: list[list[str]]  # C spellings of the types each function checks
    members: int = 0
    types: int = 0
    sizes: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def _checkable_members(variants: list[Composite]) -> list[tuple[str, int]]:
    """(member, byte offset) of non-bitfield members, agreed on by every variant.

    bpftool renames colliding tags (foo, foo___2, ...) in an order that is not
    the BTF's, so for a name several types share, only members at the same
    offset in all of them can be checked against the plain name.
    """
    per_variant = [{(m.name, m.bit_offset) for m in c.members if not m.bitfield_size} for c in variants]
    common = set.intersection(*per_variant)
    return [
        (m.name, m.bit_offset // 8)
        for m in variants[0].members
        if (m.name, m.bit_offset) in common and not m.bitfield_size
    ]


def build_offset_check(btf: Btf) -> OffsetCheck:
    # C has one namespace for struct, union and enum tags, and bpftool renames
    # within it; typedef names live in the ordinary identifier namespace.
    tag_count = Counter(
        btf.name(t)
        for t in range(1, btf.type_count)
        if btf.kind(t) in (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64) and btf.name(t)
    )
    typedef_count = Counter(btf.name(t) for t in range(1, btf.type_count) if btf.kind(t) == KIND_TYPEDEF)
    comps = {c.type_id: c for c in btf.composites()}
    by_name: dict[str, list[Composite]] = defaultdict(list)
    for c in comps.values():
        if c.name:
            by_name[c.name].append(c)

    targets: list[tuple[str, list[Composite]]] = []  # (C spelling, variants)
    skipped: Counter[str] = Counter()
    for name, variants in by_name.items():
        if tag_count[name] != len(variants) or len({c.kind for c in variants}) != 1:
            skipped["types whose tag an enum shares (bpftool renames one)"] += 1
            continue
        if len(variants) > 1:
            skipped["types sharing a tag (checked on their common members)"] += 1
        targets.append((f"{variants[0].kind} {name}", variants))
    # Anonymous structs/unions have no tag for offsetof; `typedef struct {...} T`
    # ones can still be named through the typedef.
    named_anon: set[int] = set()
    for t in range(1, btf.type_count):
        if btf.kind(t) == KIND_TYPEDEF:
            target = btf.words[btf.starts[t] + 2]  # the typedef's referenced type
            anon = comps.get(target)
            if anon is not None and not anon.name and target not in named_anon:
                name = btf.name(t)
                if typedef_count[name] == 1:
                    named_anon.add(target)
                    targets.append((name, [anon]))
    skipped["anonymous types without a typedef (members checked in their parents)"] = sum(
        1 for c in comps.values() if not c.name and c.type_id not in named_anon
    )

    asserts: list[str] = [
        "#ifndef KRSID_VMLINUX_H",
        '#error "not compiled against the krsid BTF tree (BCC_KERNEL_SOURCE unset?)"',
        "#endif",
    ]
    functions: list[str] = []
    chunk_types: list[list[str]] = []
    bodies: list[str] = []
    body: list[str] = []
    in_chunk: list[str] = []
    members = 0
    sizes_checked = 0

    def close_chunk() -> None:
        if not body:
            return
        fn = f"krsid_offsets_{len(functions)}"
        functions.append(fn)
        chunk_types.append(list(in_chunk))
        bodies.append(
            f"int {fn}(struct pt_regs *ctx)\n{{\n"
            # A pointer the compiler cannot see through: with a constant one the
            # front end folds the offsets itself and the bug would not show.
            "\tchar *b = (char *)PT_REGS_PARM1(ctx);\n\tlong bad = 0;\n" + "".join(body) + "\treturn bad;\n}\n"
        )
        body.clear()
        in_chunk.clear()

    for spelled, variants in targets:
        checkable = _checkable_members(variants)
        sizes = {c.size for c in variants}
        if len(sizes) > 1:
            skipped["sizeof of same-tag types with different sizes"] += 1
        elif not variants[0].members and variants[0].size:
            # BTF keeps the size of a union whose members pahole dropped
            # (release_pages_arg: 8 bytes), but bpftool can only emit `union {}`,
            # which is 0 bytes.  Parents stay right: bpftool pads around it.
            skipped["sizeof of memberless types BTF gives a size (emitted empty)"] += 1
        else:
            asserts.append(f'_Static_assert(sizeof({spelled}) == {variants[0].size}, "sizeof {spelled}");')
            sizes_checked += 1
        for mname, off in checkable:
            asserts.append(f'_Static_assert(__builtin_offsetof({spelled}, {mname}) == {off}, "{spelled}.{mname}");')
            body.append(f"\tbad += (char *)&(({spelled} *)b)->{mname} - b != {off};\n")
        members += len(checkable)
        in_chunk.append(spelled)
        if len(body) >= CHUNK_MEMBERS:
            close_chunk()
    close_chunk()
    return OffsetCheck(
        source="\n".join(asserts) + "\n\n" + "\n".join(bodies),
        functions=functions,
        chunk_types=chunk_types,
        members=members,
        types=len(targets),
        sizes=sizes_checked,
        skipped=skipped,
    )


@pytest.fixture(scope="module")
def offset_check(btf: Btf) -> OffsetCheck:
    return build_offset_check(btf)


# ------------------------------------------------------------- compiling it
_CHILD = r"""
import json, os, resource, struct, sys, time
src_path, cflags, functions = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
from bcc import BPF
with open(src_path) as f:
    text = f.read()
t0 = time.perf_counter()
out = {"compiled": False, "seconds": 0.0, "counts": {}, "error": ""}
try:
    b = BPF(text=text, cflags=cflags)
    out["compiled"] = True
except Exception as exc:  # BCC raises a bare Exception on compile errors
    out["error"] = str(exc)
out["seconds"] = time.perf_counter() - t0
if out["compiled"]:
    for fn in functions:
        code = b.dump_func(fn.encode())
        # Folded to `r0 = imm32; exit`?  Anything else means the check itself did
        # not reduce to constants and proves nothing: report None.
        ok = len(code) == 16 and code[0] == 0xB7 and code[1] == 0 and code[8] == 0x95
        out["counts"][fn] = struct.unpack_from("<i", code, 4)[0] if ok else None
out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
sys.stdout.write(json.dumps(out))
sys.stdout.flush()
os._exit(0)  # skip ~20 s of LLVM teardown
"""


@dataclass
class CompileResult:
    compiled: bool
    seconds: float
    counts: dict[str, int | None]
    error: str
    stderr: str
    maxrss_mb: int

    @property
    def wrong(self) -> int:
        return sum(v or 0 for v in self.counts.values())


def _start(
    python: str, src: HeaderSource, source_file: Path, cflags: list[str], functions: list[str]
) -> subprocess.Popen[str]:
    env = {**os.environ, **bcc_environment(src)}  # BCC_KERNEL_SOURCE=<tree>
    return subprocess.Popen(
        [python, "-c", _CHILD, str(source_file), json.dumps(cflags), json.dumps(functions)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> CompileResult:
    out, err = proc.communicate(timeout=1800)
    if proc.returncode != 0 or not out:
        pytest.fail(f"BCC child exited {proc.returncode}: {err[-3000:]}")
    d: dict[str, Any] = json.loads(out)
    return CompileResult(
        compiled=d["compiled"],
        seconds=d["seconds"],
        counts=d["counts"],
        error=d["error"],
        stderr=err,
        maxrss_mb=d["maxrss_mb"],
    )


def _mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / (1 << 20)
    return 0.0


@pytest.fixture(scope="module")
def compiled(bcc_python: str, tree: HeaderSource, offset_check: OffsetCheck) -> Iterator[dict[str, CompileResult]]:
    """The same check compiled with the tree's cflags and without the bitfield flag."""
    variants = {"with_flag": list(tree.cflags), "without_flag": []}
    assert "-ffine-grained-bitfield-accesses" in variants["with_flag"]
    with tempfile.TemporaryDirectory(prefix="krsid-offsets-") as d:
        source_file = Path(d) / "offsets.c"
        source_file.write_text(offset_check.source)
        results: dict[str, CompileResult] = {}
        # Each compile peaks near 3 GB; run both at once only when that fits.
        if _mem_available_gib() >= 8:
            procs = {k: _start(bcc_python, tree, source_file, v, offset_check.functions) for k, v in variants.items()}
            results = {k: _finish(p) for k, p in procs.items()}
        else:
            for k, v in variants.items():
                results[k] = _finish(_start(bcc_python, tree, source_file, v, offset_check.functions))
        yield results


# --------------------------------------------------------------- BCC tests
@pytest.mark.bcc
def test_every_member_offset_matches_btf(
    compiled: dict[str, CompileResult], offset_check: OffsetCheck, tree: HeaderSource
) -> None:
    r = compiled["with_flag"]
    TIMINGS["offset_compile_s"] = r.seconds
    print(
        f"\noffset check: {offset_check.members} members of {offset_check.types} types "
        f"(+{offset_check.sizes} sizeof) "
        f"in {len(offset_check.functions)} functions; compile {r.seconds:.1f} s, "
        f"peak RSS {r.maxrss_mb} MB; skipped: {dict(offset_check.skipped)}; "
        f"timings: { {k: round(v, 3) for k, v in TIMINGS.items()} }"
    )
    assert r.compiled, f"{r.error}\n{r.stderr[-5000:]}"
    unfolded = [fn for fn, v in r.counts.items() if v is None]
    assert not unfolded, f"offset checks did not fold to constants: {unfolded[:5]}"
    wrong = {fn: v for fn, v in r.counts.items() if v}
    assert not wrong, "members at wrong offsets in generated code: " + "; ".join(
        f"{v} in one of {offset_check.chunk_types[offset_check.functions.index(fn)][:10]}..." for fn, v in wrong.items()
    )
    assert offset_check.members > 50_000  # the whole kernel, not a sample


@pytest.mark.bcc
def test_check_fails_without_fine_grained_bitfield_accesses(
    compiled: dict[str, CompileResult],
) -> None:
    """The check above can fail: drop the flag and BCC's generated code reads
    members at wrong offsets (measured here: hundreds, in mm_struct, rq,
    netns_ipv4, ...), while every offsetof() static assert still passes."""
    r = compiled["without_flag"]
    assert r.compiled, f"{r.error}\n{r.stderr[-5000:]}"  # the declarations are right
    print(f"\nwithout -ffine-grained-bitfield-accesses: {r.wrong} members at wrong offsets")
    assert r.wrong > 100


@pytest.mark.bcc
def test_static_asserts_can_fail(bcc_python: str, tree: HeaderSource, btf: Btf) -> None:
    """The offsetof() half really checks: a wrong expectation stops the compile."""
    ts = next(c for c in btf.composites() if c.name == "task_struct")
    pid = next(m for m in ts.members if m.name == "pid").bit_offset // 8
    with tempfile.TemporaryDirectory(prefix="krsid-offsets-") as d:
        f = Path(d) / "bad.c"
        f.write_text(
            f'_Static_assert(__builtin_offsetof(struct task_struct, pid) == {pid}, "ok");\n'
            f"_Static_assert(__builtin_offsetof(struct task_struct, pid) == {pid + 4}, "
            '"task_struct.pid");\n'
        )
        r = _finish(_start(bcc_python, tree, f, list(tree.cflags), []))
    assert not r.compiled
    assert "task_struct.pid" in r.stderr
    assert '"ok"' not in r.stderr  # the correct one passed


# ---------------------------------------------------- tree build and caching
def test_tree_contents(tree: HeaderSource) -> None:
    root = tree.path
    assert tree.kind == "btf" and tree.cflags == BTF_CFLAGS
    assert root.name.startswith(os.uname().release + "-")
    assert len(root.name.rsplit("-", 1)[1]) == 16
    assert (root / "include/vmlinux.h").stat().st_size > 1_000_000
    kconfig = (root / "include/linux/kconfig.h").read_text()
    for needle in (
        "CONFIG_BPF_SYSCALL",
        "BPF_NO_PRESERVE_ACCESS_INDEX",
        '"../vmlinux.h"',
        "_UAPI__LINUX_BPF_H__",
        "#define KRSID_VMLINUX_H 1",
    ):
        assert needle in kconfig
    assert kconfig.index('"../vmlinux.h"') < kconfig.index("_UAPI__LINUX_BPF_H__")
    version = (root / "include/linux/version.h").read_text()
    assert f"LINUX_VERSION_CODE {linux_version_code(os.uname().release)}" in version
    assert "KERNEL_VERSION(a, b, c)" in version
    assert list(root.glob("arch/*/include/asm/page.h"))
    for stub in ("include/uapi/linux/bpf.h", "include/uapi/linux/if_packet.h", "include/linux/log2.h"):
        assert (root / stub).read_text() == ""
    assert bcc_environment(tree) == {"BCC_KERNEL_SOURCE": str(root)}
    assert oct(root.stat().st_mode & 0o777) == oct(0o755)


def test_resolve_headers_caches(tree: HeaderSource, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = (tree.path / "include/vmlinux.h").stat()

    def no_rebuild(*_: object) -> None:
        raise AssertionError("resolve_headers rebuilt a cached tree")

    monkeypatch.setattr(headers, "_build_tree", no_rebuild)
    t0 = time.perf_counter()
    again = resolve_headers(cache_dir, prefer="btf")
    TIMINGS["cached_resolve_s"] = time.perf_counter() - t0
    assert again == tree
    after = (tree.path / "include/vmlinux.h").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in cache_dir.iterdir()] == [tree.path.name]  # no temp leftovers


def test_concurrent_creator_is_tolerated(tree: HeaderSource, cache_dir: Path) -> None:
    """A second builder that loses the rename race keeps the winner's tree."""
    ino = tree.path.stat().st_ino
    headers._build_tree(tree.path, os.uname().release, VMLINUX_BTF)
    assert tree.path.stat().st_ino == ino
    assert sorted(p.name for p in cache_dir.iterdir()) == [tree.path.name]


def test_stale_tree_format_is_replaced(tree: HeaderSource) -> None:
    with tempfile.TemporaryDirectory(prefix="krsid-hdr-test-") as d:
        cache = Path(d)
        old = cache / tree.path.name
        shutil.copytree(tree.path, old)
        (old / headers.STAMP).write_text("0\n")  # written by an older krsid
        src = resolve_headers(cache, prefer="btf")
        assert src.path == old
        assert (old / headers.STAMP).read_text().strip() == str(headers.TREE_FORMAT)
        assert [p.name for p in cache.iterdir()] == [old.name]


def test_changed_btf_gets_its_own_tree(tree: HeaderSource, cache_dir: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="krsid-hdr-test-") as d:
        other = Path(d) / "vmlinux"
        blob = bytearray(VMLINUX_BTF.read_bytes())
        blob[-2] ^= 0xFF  # same release, different BTF
        other.write_bytes(bytes(blob))
        src = plan_headers(cache_dir, prefer="btf", btf_path=other)
    assert src.path.parent == tree.path.parent and src.path != tree.path


def test_prefer_kernel_without_headers_raises(tmp_path: Path) -> None:
    with pytest.raises(HeaderError, match=re.escape("linux-headers-0.0.0-krsid-none")):
        resolve_headers(tmp_path, prefer="kernel", release="0.0.0-krsid-none")
    release = os.uname().release
    if headers.kernel_build_dir(release).is_dir():
        return  # this host has real headers; the case above covers the error
    with pytest.raises(HeaderError, match=re.escape(f"no kernel headers for {release}")):
        resolve_headers(tmp_path, prefer="kernel")
    assert not list(tmp_path.iterdir())


def test_auto_prefers_real_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "lib/modules/9.9.9/build"
    fake.mkdir(parents=True)
    monkeypatch.setattr(headers, "kernel_build_dir", lambda release: tmp_path / "lib/modules" / release / "build")
    src = resolve_headers(tmp_path / "cache", release="9.9.9")
    assert src == HeaderSource("kernel", fake, (), f"kernel headers in {fake}")
    assert bcc_environment(src) == {}
    assert not (tmp_path / "cache").exists()


def test_bad_preference(tmp_path: Path) -> None:
    with pytest.raises(HeaderError, match="auto, btf or kernel"):
        resolve_headers(tmp_path, prefer="newest")


def test_old_bpftool_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bpftool"
    fake.write_text("#!/bin/sh\necho 'bpftool v7.1.0'\necho 'using libbpf v1.1'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HeaderError, match="bookworm-backports"):
        headers.require_bpftool()
    if VMLINUX_BTF.exists():
        with pytest.raises(HeaderError, match=re.escape("7.1.0")):
            resolve_headers(tmp_path / "cache", prefer="btf")
        assert not any((tmp_path / "cache").glob("*/include"))


# ------------------------------------------------------------- pure helpers
@pytest.mark.parametrize(
    ("release", "code"),
    [
        ("6.18.44-fc-v669", (6 << 16) + (18 << 8) + 44),
        ("6.1.0-18-amd64", (6 << 16) + (1 << 8)),
        ("5.15.0", (5 << 16) + (15 << 8)),
        ("4.9.300-foo", (4 << 16) + (9 << 8) + 255),  # sublevel clamps like the kernel's
        ("6.8", 6 << 16 | 8 << 8),
    ],
)
def test_linux_version_code(release: str, code: int) -> None:
    assert linux_version_code(release) == code


def test_linux_version_code_rejects_garbage() -> None:
    with pytest.raises(HeaderError):
        linux_version_code("unknown")


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("bpftool v7.5.0\nusing libbpf v1.5\nfeatures:\n", (7, 5, 0)),
        ("bpftool v7.1.0\nusing libbpf v1.1\n", (7, 1, 0)),
        ("/usr/sbin/bpftool v5.10.46\n", (5, 10, 46)),
        ("nonsense", None),
    ],
)
def test_parse_bpftool_version(text: str, version: tuple[int, int, int] | None) -> None:
    assert parse_bpftool_version(text) == version


def test_every_helper_id_bccs_helpers_h_names_can_be_derived() -> None:
    """The tree defines the BPF_FUNC_* ids the kernel's BTF lacks from the uapi bpf.h
    embedded in the same libbcc as helpers.h: every id helpers.h names is there (6.1's
    BTF lacks BPF_FUNC_cgrp_storage_get/_delete, which BCC 0.26's helpers.h names)."""
    library = headers.find_libbcc()
    assert library is not None, "no libbcc.so* (the host tier needs BCC)"
    named = set(re.findall(rb"\(void \*\) ?BPF_FUNC_(\w+)", library.read_bytes()))
    ids = headers.bcc_helper_ids(library)
    assert len(named) > 150, f"helpers.h not found in {library}: {len(named)} names"
    assert {n.decode() for n in named} <= set(ids), sorted({n.decode() for n in named} - set(ids))
    assert (ids["cgrp_storage_get"], ids["cgrp_storage_delete"]) == (210, 211)
