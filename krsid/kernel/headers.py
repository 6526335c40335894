"""Find the kernel headers BCC compiles krsid's programs against.

BCC wants a kernel build tree (/lib/modules/<release>/build).  Many hosts have
none, and headers of another kernel version compile fine but read wrong offsets
(measured: Debian's 6.12 headers on 6.18 put task_struct.comm at 2976 instead of
1752), so krsid never falls back to "some" headers.  Instead it builds a minimal
tree around a vmlinux.h generated from the running kernel's own BTF, which has
the exact layouts of this kernel, and points BCC at it with BCC_KERNEL_SOURCE.

Two measured traps shape this module (see the project notes):
* bpftool < 7.2 (bookworm's 7.1) dumps 1-byte enums as 4 bytes, shifting every
  member after one (struct inode from i_write_hint on), so the version is checked.
* vmlinux.h pads with `long: 64;`; without -ffine-grained-bitfield-accesses BCC's
  clang gives that padding 16-byte aligned storage on the BPF target and ~1,000
  members in ~110 structs land at wrong offsets, silently (bcc issue 4890).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from krsid.errors import HeaderError, UnsupportedKernelError
from krsid.kernel.btf import VMLINUX_BTF

log = logging.getLogger("krsid")

BTF_CFLAGS: tuple[str, ...] = ("-ffine-grained-bitfield-accesses",)
MIN_BPFTOOL = (7, 2)
BPFTOOL_FALLBACK_DIRS = (Path("/usr/sbin"), Path("/usr/local/sbin"), Path("/sbin"))
# Bump when the generated tree changes, so trees cached by an older krsid are
# replaced instead of silently reused.
TREE_FORMAT = 2  # 2: kconfig.h defines the BPF helper ids BCC knows and the kernel lacks
STAMP = ".krsid-tree"

_BPFTOOL_HINT = (
    "install bpftool >= 7.2 (on Debian bookworm: "
    "apt-get install -t bookworm-backports bpftool; bookworm's own 7.1 dumps "
    "1-byte enums as 4 bytes and would give wrong struct layouts)"
)

# `uname -m` -> the kernel's arch/ directory, where BCC looks for asm/ headers.
_ARCH_DIRS = {
    "x86_64": "x86",
    "i386": "x86",
    "i686": "x86",
    "aarch64": "arm64",
    "armv7l": "arm",
    "ppc64le": "powerpc",
    "ppc64": "powerpc",
    "s390x": "s390",
    "riscv64": "riscv",
    "loongarch64": "loongarch",
}


@dataclass(frozen=True)
class HeaderSource:
    """Where BCC gets kernel headers, and the extra cflags that source needs."""

    kind: str  # 'kernel' | 'btf'
    path: Path
    cflags: tuple[str, ...]
    description: str


# ---------------------------------------------------------------- helpers
def linux_version_code(release: str) -> int:
    """LINUX_VERSION_CODE for a `uname -r` string such as '6.18.44-fc-v669'."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if not m:
        raise HeaderError(f"cannot read a kernel version from release {release!r}")
    major, minor, patch = int(m[1]), int(m[2]), int(m[3] or 0)
    # The kernel clamps the sublevel to 255 (KERNEL_VERSION's c > 255 ? 255 : c)
    # since 4.9.256 overflowed into the minor number; do the same.
    return (major << 16) + (minor << 8) + min(patch, 255)


def parse_bpftool_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) from `bpftool version` output, or None if unrecognised.

    'bpftool v7.5.0' today.  bpftool built from kernel trees before 6.0 printed
    the kernel's version ('v5.10.46'); those predate the enum-size fix of 7.2 and
    compare as older, which is the right answer.
    """
    m = re.search(r"\bv?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return int(m[1]), int(m[2]), int(m[3] or 0)


def find_bpftool() -> Path | None:
    """bpftool on PATH, else in the sbin directories that root's PATH usually has
    but a service's or a test runner's PATH may not."""
    found = shutil.which("bpftool")
    if found:
        return Path(found)
    for d in BPFTOOL_FALLBACK_DIRS:
        p = d / "bpftool"
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


def bpftool_version(bpftool: Path) -> tuple[int, int, int] | None:
    try:
        proc = subprocess.run([str(bpftool), "version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_bpftool_version(proc.stdout) if proc.returncode == 0 else None


def require_bpftool() -> Path:
    """A bpftool new enough to dump vmlinux.h correctly, or HeaderError."""
    tool = find_bpftool()
    if tool is None:
        raise HeaderError("bpftool not found (needed to build headers from BTF): " + _BPFTOOL_HINT)
    ver = bpftool_version(tool)
    if ver is None:
        raise HeaderError(f"cannot tell the version of {tool} (`{tool} version` failed)")
    if ver[:2] < MIN_BPFTOOL:
        raise HeaderError(f"{tool} is version {'.'.join(map(str, ver))}: " + _BPFTOOL_HINT)
    return tool


def btf_digest(btf_path: Path) -> str:
    """First 16 hex of the sha256 of the BTF blob: the cache key, so a kernel
    rebuilt under the same release string never reuses a stale tree."""
    try:
        return hashlib.sha256(btf_path.read_bytes()).hexdigest()[:16]
    except FileNotFoundError:
        raise UnsupportedKernelError(
            f"{btf_path} does not exist and there are no kernel headers: the kernel "
            "needs CONFIG_DEBUG_INFO_BTF=y (or install the headers for this kernel)"
        ) from None
    except OSError as exc:
        raise HeaderError(f"cannot read {btf_path}: {exc.strerror}") from exc


def kernel_build_dir(release: str) -> Path:
    return Path("/lib/modules") / release / "build"


def bcc_environment(src: HeaderSource) -> dict[str, str]:
    """Environment variables to set before BCC compiles against `src`.

    For real headers nothing: BCC finds /lib/modules/<release>/build itself and
    knows Debian's split source/build layout, which BCC_KERNEL_SOURCE would
    bypass.
    """
    if src.kind == "btf":
        return {"BCC_KERNEL_SOURCE": str(src.path)}
    return {}


# ------------------------------------------------- BPF helper ids BCC names
# BCC's helpers.h (embedded in libbcc) declares every helper of the uapi bpf.h BCC was
# built with, as `(void *)BPF_FUNC_<name>`. With kernel headers those names come from
# BCC's own copy of that bpf.h; in a BTF tree they come from the kernel's
# enum bpf_func_id, which on an older kernel lacks the newer ones (6.1 has no
# BPF_FUNC_cgrp_storage_get, 6.2+, named by BCC 0.26), and every compile fails. The
# ids are append-only upstream, so defining the missing names with BCC's values is
# exact; a program calling one of them is still refused by the kernel's verifier.
# Both lists are read, not restated: BCC's from the ___BPF_FUNC_MAPPER in libbcc
# (`FN(cgrp_storage_get, 210, ##ctx)`, the form of uapi bpf.h since 6.1), the kernel's
# from vmlinux.h.
_BCC_HELPER_ENTRY = re.compile(rb"\bFN\((\w+), (\d+), ##ctx\)")
_KERNEL_HELPER_ENTRY = re.compile(r"\bBPF_FUNC_(\w+) = (\d+)")
_LIBBCC_GLOB = "libbcc.so*"


def _library_dirs() -> list[Path]:
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = [Path("/usr/lib") / multiarch] if multiarch else []
    return dirs + [Path(d) for d in ("/usr/lib64", "/usr/lib", "/usr/local/lib", "/usr/local/lib64")]


def find_libbcc(maps: Path = Path("/proc/self/maps"), library_dirs: list[Path] | None = None) -> Path | None:
    """The libbcc BCC compiles with: the one already mapped into this process if BCC
    is loaded, else the first libbcc.so* in the system library directories."""
    with contextlib.suppress(OSError):
        for line in maps.read_text().splitlines():
            fields = line.split(maxsplit=5)  # address perms offset dev inode path
            if len(fields) == 6 and re.search(r"/libbcc\.so[.\d]*$", fields[5]):
                return Path(fields[5])
    for d in library_dirs if library_dirs is not None else _library_dirs():
        for candidate in sorted(glob.glob(str(d / _LIBBCC_GLOB))):
            if re.search(r"/libbcc\.so[.\d]*$", candidate) and Path(candidate).is_file():
                return Path(candidate)
    return None


def bcc_helper_ids(library: Path | None) -> dict[str, int]:
    """Helper name -> id from the uapi bpf.h embedded in libbcc; {} if unreadable."""
    if library is None:
        return {}
    try:
        blob = library.read_bytes()
    except OSError as exc:
        log.debug("cannot read %s for BPF helper ids: %s", library, exc.strerror)
        return {}
    return {m[1].decode(): int(m[2]) for m in _BCC_HELPER_ENTRY.finditer(blob)}


def missing_helper_defines(vmlinux_h: str, bcc_ids: dict[str, int]) -> str:
    """`#define BPF_FUNC_<name> <id>` for each helper BCC knows and the kernel's enum
    bpf_func_id (in vmlinux.h) lacks, ordered by id; '' when none is missing."""
    kernel_names = {m[1] for m in _KERNEL_HELPER_ENTRY.finditer(vmlinux_h)}
    missing = sorted((helper_id, name) for name, helper_id in bcc_ids.items() if name not in kernel_names)
    return "".join(f"#define BPF_FUNC_{name} {helper_id}\n" for helper_id, name in missing)


# ---------------------------------------------------------------- resolution
def plan_headers(
    cache_dir: Path,
    *,
    prefer: str = "auto",
    release: str | None = None,
    btf_path: Path = VMLINUX_BTF,
) -> HeaderSource:
    """The HeaderSource resolve_headers() would return, without building anything.

    Every precondition of the build (BTF readable, bpftool new enough) is checked
    here, so `krsid doctor` reports the same failure the daemon would hit.
    """
    if prefer not in ("auto", "btf", "kernel"):
        raise HeaderError(f"headers preference must be auto, btf or kernel, not {prefer!r}")
    release = release or platform.release()
    build = kernel_build_dir(release)
    if prefer in ("auto", "kernel") and build.is_dir():
        return HeaderSource("kernel", build, (), f"kernel headers in {build}")
    if prefer == "kernel":
        raise HeaderError(
            f"no kernel headers for {release}: {build} does not exist; install them "
            f"(Debian/Ubuntu: apt-get install linux-headers-{release}; Fedora: "
            f"dnf install kernel-devel-{release}), or let krsid generate headers from the "
            "kernel's BTF (headers preference auto or btf)"
        )
    tree = Path(cache_dir) / f"{release}-{btf_digest(btf_path)}"
    if not _tree_complete(tree):
        require_bpftool()  # only needed when the tree has still to be built
    return HeaderSource(
        "btf",
        tree,
        BTF_CFLAGS,
        f"header tree generated from {btf_path} in {tree}",
    )


def resolve_headers(
    cache_dir: Path,
    *,
    prefer: str = "auto",
    release: str | None = None,
    btf_path: Path = VMLINUX_BTF,
) -> HeaderSource:
    """Pick (and for 'btf', build once and cache) the headers BCC should use."""
    release = release or platform.release()
    src = plan_headers(cache_dir, prefer=prefer, release=release, btf_path=btf_path)
    if src.kind == "btf" and not _tree_complete(src.path):
        _build_tree(src.path, release, btf_path)
    return src


def _tree_complete(tree: Path) -> bool:
    try:
        stamp = (tree / STAMP).read_text()
    except OSError:
        return False
    if stamp.strip() != str(TREE_FORMAT):
        return False
    # BCC compiles whatever this tree includes into programs run in the kernel as
    # root; one that another user could have written must not be trusted.
    st = tree.stat()
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _tree_files(release: str, helper_defines: str = "") -> dict[str, str]:
    """Everything in the tree except vmlinux.h (dumped by bpftool). helper_defines:
    missing_helper_defines() of that vmlinux.h, placed right after its include."""
    page_size = os.sysconf("SC_PAGE_SIZE")
    page_shift = page_size.bit_length() - 1
    arch = _ARCH_DIRS.get(platform.machine(), platform.machine())
    return {
        # BCC force-includes include/linux/kconfig.h first in every compile, which
        # makes it the one place to pull in vmlinux.h before BCC's own headers.
        "include/linux/kconfig.h": (
            "/* Generated by krsid: BCC force-includes this first. */\n"
            "#ifndef KRSID_KCONFIG_H\n"
            "#define KRSID_KCONFIG_H\n"
            "#define CONFIG_BPF_SYSCALL 1\n"
            "/* vmlinux.h would otherwise tag every type preserve_access_index (CO-RE\n"
            "   relocations), which BCC does not process. */\n"
            "#define BPF_NO_PRESERVE_ACCESS_INDEX\n"
            '#include "../vmlinux.h"\n'
            "/* BPF helper ids BCC's helpers.h names and this kernel's enum bpf_func_id\n"
            "   lacks (upstream values, from libbcc). */\n"
            f"{helper_defines}"
            "/* vmlinux.h already has every uapi bpf type; make BCC's embedded copy of\n"
            "   uapi/linux/bpf.h a no-op so they are not defined twice. */\n"
            "#define _UAPI__LINUX_BPF_H__\n"
            "/* Lets programs know they compile against BTF types, not kernel headers\n"
            "   (no macros such as EPERM or PROT_EXEC come with it). */\n"
            "#define KRSID_VMLINUX_H 1\n"
            "#endif\n"
        ),
        "include/linux/version.h": (
            f"#define LINUX_VERSION_CODE {linux_version_code(release)}\n"
            "#define KERNEL_VERSION(a, b, c) "
            "(((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))\n"
        ),
        f"arch/{arch}/include/asm/page.h": (
            "#ifndef KRSID_ASM_PAGE_H\n#define KRSID_ASM_PAGE_H\n"
            f"#define PAGE_SHIFT {page_shift}\n"
            "#define PAGE_SIZE (1UL << PAGE_SHIFT)\n"
            "#define PAGE_MASK (~(PAGE_SIZE - 1))\n#endif\n"
        ),
        # Included by BCC's helpers; their content is in vmlinux.h already.
        "include/uapi/linux/bpf.h": "",
        "include/uapi/linux/if_packet.h": "",
        "include/linux/log2.h": "",
        STAMP: f"{TREE_FORMAT}\n",
    }


def _build_tree(tree: Path, release: str, btf_path: Path) -> None:
    """Build the tree beside its final place and rename it in, so a reader never
    sees half a tree and concurrent krsid starts do not corrupt each other."""
    bpftool = require_bpftool()
    tree.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{tree.name}.", dir=tree.parent))
    try:
        vmlinux_h = tmp / "include" / "vmlinux.h"
        vmlinux_h.parent.mkdir(parents=True)
        with vmlinux_h.open("wb") as out:
            proc = subprocess.run(
                [str(bpftool), "btf", "dump", "file", str(btf_path), "format", "c"],
                stdout=out,
                stderr=subprocess.PIPE,
                timeout=300,
                check=False,
            )
        if proc.returncode != 0 or vmlinux_h.stat().st_size == 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise HeaderError(f"`{bpftool} btf dump file {btf_path} format c` failed: {err}")
        library = find_libbcc()
        helper_defines = missing_helper_defines(vmlinux_h.read_text(errors="replace"), bcc_helper_ids(library))
        if helper_defines:
            log.info(
                "header tree for %s: %d BPF helper id(s) BCC names are not in this kernel's BTF; defined from %s",
                release,
                helper_defines.count("\n"),
                library,
            )
        files = _tree_files(release, helper_defines)
        stamp = files.pop(STAMP)
        for rel, text in files.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        # The stamp goes in last: _tree_complete() trusts a tree only with it.
        (tmp / STAMP).write_text(stamp)
        tmp.chmod(0o755)  # mkdtemp makes it 0700; BCC may run as another root user
        _install(tmp, tree)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _install(tmp: Path, tree: Path) -> None:
    try:
        os.rename(tmp, tree)
        return
    except OSError:
        if _tree_complete(tree):
            return  # a concurrent krsid won the race; its tree is as good as ours
        if not tree.exists():
            raise
    # A stale or foreign tree is in the way (older TREE_FORMAT, wrong owner):
    # move it aside, then swap ours in.  Rename keeps this atomic for readers.
    trash = Path(tempfile.mkdtemp(prefix=f".{tree.name}.old.", dir=tree.parent))
    try:
        with contextlib.suppress(FileNotFoundError):
            os.rename(tree, trash / "tree")
        try:
            os.rename(tmp, tree)
        except OSError:
            if not _tree_complete(tree):
                raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)
