"""Run a command as root inside a throw-away qemu VM that boots Debian's stock kernel.

Why a VM at all: the kernels of the machines this project is developed on refuse to load
BPF-LSM (trampoline) programs, so everything that attaches an LSM hook has to run under
a kernel that allows it. Debian's own ``linux-image-6.x-amd64`` does; virtme-ng boots it
in qemu over the host's filesystem (9p, read-only, tmpfs overlays), so the guest sees
the same Python, BCC and source tree as the caller without building any image.

What this module adds on top of ``vng``:

* it finds the newest plain ``-amd64`` kernel in ``<codename>-backports`` with apt,
  downloads it once together with its modules and matching ``linux-headers-*`` (+ the
  ``-common`` and ``linux-kbuild-*`` packages they need) and caches the unpacked result
  under ``${KRSID_VM_CACHE:-/var/cache/krsid-vm}/<kernel-version>/`` (built in a temp
  dir, renamed into place when complete);
* it shares the caller's working directory read-write at the same path, runs the
  command there as root with a filtered copy of the caller's environment, streams its
  stdout/stderr through pipes, and returns the command's exit code, which it reads back
  from a file the guest writes (so "the VM never got that far" is told apart from any
  exit code the command itself can return).

Only the standard library is used: this runs from /usr/bin/python3 before any venv of
the project exists, and the test suite imports it (``tests.vm.vmrun``).

Exit codes besides the command's own: 124 when the timeout expired, 125 when the VM
could not be set up, failed to boot or died before the command finished.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

EXIT_TIMEOUT = 124
EXIT_VM_FAILED = 125

DEFAULT_CACHE = Path("/var/cache/krsid-vm")
DEFAULT_MEM_MB = 2048
# One vCPU by default. Under TCG each vCPU is a host thread; when the host is busy (2
# cores here, shared) a descheduled vCPU stalls the other in spinlocks, IPIs and RCU:
# measured with one host core busy, 2 vCPUs booted in 25-33 s and a BCC compile took
# 84 s, against 7.4 s and 14-18 s with 1 vCPU (which is as fast on an idle host).
DEFAULT_CPUS = 1
DEFAULT_TIMEOUT = 1800.0
# Seconds a VM may take to power off after the command's exit code is written; then it
# is killed (a hung shutdown must not hold a run, or the VM lock, until the timeout).
POWEROFF_GRACE = 60.0
VNG_VERSION = "1.42"

# Set in the guest's environment by the runner; in_vm() reads it. The kernel argument is
# a second marker that survives a command clearing its environment.
IN_VM_ENV = "KRSID_IN_VM"
IN_VM_KARG = "krsid_vm=1"

# Debian's kernel enables BPF LSM (CONFIG_BPF_LSM=y) but not in its default LSM order;
# "bpf" has to be named on the command line. The guest then reports
# lockdown,capability,landlock,yama,apparmor,bpf,ima,evm.
LSM_KARG = "lsm=lockdown,capability,landlock,yama,apparmor,bpf"

# Modules udev would load for the q35 board and the CPU under TCG. None matters for the
# tests, and loading (xz-unpacking, relocating) them under TCG costs 2-4 s per boot.
BLACKLIST = (
    "kvm_amd", "kvm_intel", "ccp", "irqbypass",
    "ahci", "libahci", "libata", "sr_mod", "cdrom", "sg",
    "iTCO_wdt", "iTCO_vendor_support", "i6300esb", "lpc_ich", "i2c_i801", "intel_pmc_bxt",
    "psmouse", "pcspkr", "evdev", "serio_raw", "button", "qemu_fw_cfg", "virtio_mmio",
    "crct10dif_pclmul", "crc32_pclmul", "crc32c_intel", "ghash_clmulni_intel",
    "sha1_ssse3", "sha256_ssse3", "sha512_ssse3", "aesni_intel",
)  # fmt: skip

# Host packages vng/qemu need: qemu itself; kmod (depmod, modprobe for the initramfs);
# busybox-static (the initramfs); udev (without it nothing creates /dev/virtio-ports/*,
# the guest falls back to the console and the exit code is lost); file (how virtme reads
# the kernel version out of the image).
HOST_PACKAGES = ("qemu-system-x86", "kmod", "busybox-static", "udev", "file")

# Variables of the caller that reach the command in the guest, besides KRSID_*/PYTEST_*.
PASS_ENV = (
    "PATH", "HOME", "CI", "TERM", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "USER",
    "LOGNAME", "PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",
    "PYTHONHASHSEED", "PYTHONWARNINGS", "PYTHONFAULTHANDLER", "VIRTUAL_ENV",
)  # fmt: skip
PASS_ENV_PREFIXES = ("KRSID_", "PYTEST_")

# vng glues its options into one string for virtme-run and splits it again, and "="
# in --rwdir means guest=host: paths outside this set cannot be shared reliably.
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+@%~:/-]*$")
_IMAGE_NAME = re.compile(r"^linux-image-(\d+\.\d+\.\d+(?:-\d+)?(?:\+[A-Za-z0-9.]+)?-amd64)(-unsigned)?$")

# `--kernel SERIES`: the Debian suite that carries each kernel series the matrix boots.
# 6.12 is what the default (no --kernel) boots on a bookworm host: bookworm-backports.
KERNEL_SERIES: dict[str, str] = {
    "5.10": "bullseye",
    "6.1": "bookworm",
    "6.12": "bookworm-backports",
    "7.2": "sid",
    "7.3": "trixie-backports",
}
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# A private suite's package lists older than this are refreshed (the archive moves;
# KRSID_VM_APT_MAX_AGE overrides, in seconds).
APT_MAX_AGE = 24 * 3600.0


class VMError(RuntimeError):
    """The VM could not be prepared (kernel, packages, vng); the message says why."""


def in_vm() -> bool:
    """Whether this process runs inside a guest started by run_in_vm()."""
    if os.environ.get(IN_VM_ENV) == "1":
        return True
    try:
        return IN_VM_KARG in Path("/proc/cmdline").read_text().split()
    except OSError:
        return False


def cache_root() -> Path:
    return Path(os.environ.get("KRSID_VM_CACHE") or DEFAULT_CACHE)


def _log(msg: str) -> None:
    print(f"krsid-vm: {msg}", file=sys.stderr, flush=True)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "yes", "true", "on")


def _run(argv: Sequence[str], *, cwd: Path | None = None, quiet: bool = False) -> None:
    """Run a setup command; its output goes to stderr so the caller's stdout stays the
    command's alone."""
    out_fd: int = subprocess.PIPE
    if not quiet:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            sys.stderr.flush()
            out_fd = sys.stderr.fileno()  # pytest's capture objects have none
    res = subprocess.run(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=out_fd,
        stderr=subprocess.STDOUT,
        check=False,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    if res.returncode != 0:
        out = res.stdout.decode(errors="replace")[-2000:] if res.stdout else ""
        raise VMError(f"{shlex.join(argv)} failed with exit code {res.returncode}\n{out}")


def _capture(argv: Sequence[str]) -> str:
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if res.returncode != 0:
        raise VMError(f"{shlex.join(argv)} failed: {res.stderr.decode(errors='replace')}")
    return res.stdout.decode()


def _is_root() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Serialise cache writers (several test sessions may start at once)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


# --- host packages ---------------------------------------------------------------------


def ensure_host_packages() -> None:
    """apt-get install what qemu/vng need, only when something is missing."""
    res = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Status}\n", *HOST_PACKAGES],
        capture_output=True,
        text=True,
        check=False,
    )
    ok = {line.split()[0] for line in res.stdout.splitlines() if line.endswith(" installed")}
    missing = [pkg for pkg in HOST_PACKAGES if pkg not in ok]
    if not missing:
        return
    if not _is_root():
        raise VMError(f"missing host packages {' '.join(missing)}; install them as root")
    _log(f"installing host packages: {' '.join(missing)}")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    try:
        _run(install)
    except VMError:
        _run(["apt-get", "update", "-q"])
        _run(install)


# --- virtme-ng -------------------------------------------------------------------------


def find_vng(cache: Path) -> Path:
    """vng of the project's venv, else one on PATH, else a private venv in the cache.

    vng must sit next to virtme-run (it runs it through PATH), so a venv's bin dir is
    what gets put on PATH later.
    """
    candidates = []
    if os.environ.get("KRSID_VNG"):
        candidates.append(Path(os.environ["KRSID_VNG"]))
    repo = Path(__file__).resolve().parents[2]
    candidates.append(repo / ".venv" / "bin" / "vng")
    which = shutil.which("vng")
    if which:
        candidates.append(Path(which))
    private = cache / "tools" / f"virtme-ng-{VNG_VERSION}"
    done = private / ".complete"
    if done.is_file():
        candidates.append(private / "bin" / "vng")
    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    # Nothing installed: make a private venv (PyPI is reachable; stdlib venv + pip).
    # A venv's scripts hard-code its path, so it is built in place, under the lock, and
    # only counts once the marker file exists.
    with _locked(cache):
        if not done.is_file():
            _log(f"installing virtme-ng {VNG_VERSION} into {private}")
            shutil.rmtree(private, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(private)])
            _run([str(private / "bin" / "pip"), "install", "-q", f"virtme-ng=={VNG_VERSION}"])
            done.touch()
    return private / "bin" / "vng"


# --- choosing and caching the kernel ---------------------------------------------------


def _order(c: str) -> int:
    if not c or c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    if c == "~":
        return -1
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    """dpkg's comparison of an upstream version or a revision (lib/dpkg/version.c)."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i] if i < len(a) else "")
            bc = _order(b[j] if j < len(b) else "")
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        first_diff = 0
        while i < len(a) and j < len(b) and a[i].isdigit() and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def compare_debian_versions(a: str, b: str) -> int:
    """<0, 0, >0 like ``dpkg --compare-versions``."""

    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch or 0), upstream, revision

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return ea - eb
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)


def default_suite() -> str:
    """Where the kernel comes from: <codename>-backports unless KRSID_VM_SUITE says."""
    if os.environ.get("KRSID_VM_SUITE"):
        return os.environ["KRSID_VM_SUITE"]
    codename = "bookworm"
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME=") and line.split("=", 1)[1].strip('"'):
                codename = line.split("=", 1)[1].strip('"')
    return f"{codename}-backports"


def _apt_lists_key() -> list[list[object]]:
    """Changes whenever `apt-get update` changed what the host's apt-cache would answer."""
    return Apt(default_suite()).lists_key()


def _newest_image_package(suite: str) -> tuple[str, str] | None:
    """(package, kernel release) of the newest plain 6.x -amd64 image the host's apt
    knows in `suite` (the default kernel's choice)."""
    return newest_image_in(Apt(suite))


@dataclass(frozen=True)
class Kernel:
    """A complete cache entry: <cache>/<version>/ (see _populate for the layout)."""

    version: str
    path: Path

    def kimg(self, headers: bool) -> Path:
        variant = "headers" if headers else "no-headers"
        return self.path / variant / "boot" / f"vmlinuz-{self.version}"

    @property
    def has_headers(self) -> bool:
        """Whether headers/ has build/source (entries made before "headers" existed do)."""
        with contextlib.suppress(OSError, ValueError, AttributeError):
            return bool(json.loads((self.path / "manifest.json").read_text()).get("headers", True))
        return True


def _cached(cache: Path, version: str) -> Kernel | None:
    entry = cache / version
    if (entry / "manifest.json").is_file():
        return Kernel(version, entry)
    return None


def _newest_cached(cache: Path, series: str | None = None) -> Kernel | None:
    """The newest complete cache entry (of `series`, when given): the offline fallback."""
    found = []
    with contextlib.suppress(OSError):
        for entry in cache.iterdir():
            if entry.name.startswith(".") or not (entry / "manifest.json").is_file():
                continue
            if series is not None and series_of(entry.name) != series:
                continue
            with contextlib.suppress(OSError, ValueError, AttributeError):
                data = json.loads((entry / "manifest.json").read_text())
                found.append((str(data.get("image_version", "0")), entry.name))
    if not found:
        return None
    newest = found[0]
    for cand in found[1:]:
        if compare_debian_versions(cand[0], newest[0]) > 0:
            newest = cand
    return Kernel(newest[1], cache / newest[1])


def _resolve(cache: Path, *, refresh: bool = False) -> tuple[str, str]:
    """(image package, kernel release) to use; memoised against the apt lists because
    each apt-cache call parses all lists (~0.4 s here: there is no pkgcache.bin)."""
    suite = default_suite()
    memo = cache / "resolved.json"
    key: list[object] = [suite, _apt_lists_key()]
    if not refresh:
        with contextlib.suppress(OSError, ValueError, KeyError):
            data = json.loads(memo.read_text())
            if data["key"] == json.loads(json.dumps(key)):
                return str(data["package"]), str(data["version"])
    found = _newest_image_package(suite)
    if found is None and _is_root():
        _log(f"no linux-image-6.*-amd64 known in {suite}; running apt-get update")
        _run(["apt-get", "update", "-q"])
        key = [suite, _apt_lists_key()]
        found = _newest_image_package(suite)
    if found is None:
        raise VMError(
            f"apt knows no linux-image-6.*-amd64 in {suite}: add "
            f"'deb http://deb.debian.org/debian {suite} main' to the apt sources "
            "(.ci/install-deps does) and run apt-get update"
        )
    with contextlib.suppress(OSError):
        cache.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".resolved.{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "package": found[0], "version": found[1]}))
        tmp.replace(memo)
    return found


class Apt:
    """apt-cache / apt-get download against the host's sources (the default kernel), or
    against one Debian suite of the kernel matrix with a sources list and package lists
    of its own under <cache>/apt/<suite>/: the host's apt configuration is never
    changed, and a bookworm host can fetch bullseye's, sid's or trixie-backports'
    kernels without mixing those suites into what it installs from."""

    def __init__(self, suite: str, private_dir: Path | None = None) -> None:
        self.suite = suite
        self.dir = private_dir

    @classmethod
    def private(cls, cache: Path, suite: str) -> Apt:
        return cls(suite, cache / "apt" / suite)

    def _options(self) -> list[str]:
        if self.dir is None:
            return []
        return [
            "-o", f"Dir::Etc::SourceList={self.dir / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={self.dir / 'lists'}",
            # No binary cache: the host's pkgcache.bin describes the host's sources.
            "-o", "Dir::Cache::pkgcache=",
            "-o", "Dir::Cache::srcpkgcache=",
            # What the host has installed is irrelevant to downloading a kernel.
            "-o", "Dir::State::status=/dev/null",
            "-o", "Acquire::Languages=none",
        ]  # fmt: skip

    def cache_query(self, *args: str) -> str:
        return _capture(["apt-cache", *self._options(), *args])

    def lists_key(self) -> list[list[object]]:
        """Changes whenever `apt-get update` changed what apt-cache would answer."""
        lists = self.dir / "lists" if self.dir else Path("/var/lib/apt/lists")
        key: list[list[object]] = []
        with contextlib.suppress(OSError):
            for p in sorted(lists.glob("*_Packages*")):
                st = p.stat()
                key.append([p.name, st.st_mtime_ns, st.st_size])
        return key

    def lists_age(self) -> float | None:
        """Seconds since the private lists were fetched; None if there are none."""
        stamp = self.dir / "updated" if self.dir else None
        if stamp is None or not stamp.is_file() or not self.lists_key():
            return None
        return max(0.0, time.time() - stamp.stat().st_mtime)

    def update(self) -> None:
        if self.dir is None:
            _run(["apt-get", "update", "-q"])
            return
        (self.dir / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (self.dir / "sources.list").write_text(f"deb [signed-by={DEBIAN_KEYRING}] {DEBIAN_MIRROR} {self.suite} main\n")
        _run(["apt-get", *self._options(), "update", "-q"], quiet=True)
        (self.dir / "updated").touch()

    def ensure_fresh(self) -> None:
        """Fetch the private suite's lists when missing or older than APT_MAX_AGE; a
        failed refresh of existing lists only warns (offline: use what is there)."""
        if self.dir is None:
            return
        age = self.lists_age()
        max_age = float(os.environ.get("KRSID_VM_APT_MAX_AGE") or APT_MAX_AGE)
        if age is not None and age <= max_age:
            return
        if not _is_root():
            if age is None:
                raise VMError(f"no package lists for {self.suite} in {self.dir}: run as root once")
            return
        _log(f"fetching the package lists of {self.suite} into {self.dir}")
        try:
            self.update()
        except VMError:
            if age is None:
                raise
            _log(f"could not refresh the lists of {self.suite}; using those of {age / 3600:.0f} h ago")

    def download(self, packages: Sequence[str], dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        # apt drops privileges to _apt for downloads and warns when _apt cannot write here.
        with contextlib.suppress(KeyError, OSError, LookupError):
            shutil.chown(dest, user="_apt")
        _run(["apt-get", *self._options(), "download", "-q", *packages], cwd=dest)

    def depends(self, pkg: str) -> list[str]:
        """Direct Depends of pkg (alternatives included); [] if apt does not know it."""
        try:
            out = self.cache_query("depends", pkg)
        except VMError:
            return []
        return [m.group(1) for m in re.finditer(r"^\s*\|?Depends:\s*(\S+)", out, re.M)]

    def known(self, pkg: str) -> bool:
        return bool(self.cache_query("madison", pkg).strip())


def series_of(release: str) -> str:
    """'5.10' of '5.10.0-32-amd64', '7.2' of '7.2.13+deb14-amd64'."""
    return ".".join(release.split(".")[:2])


def newest_image_in(apt: Apt, series: str | None = None) -> tuple[str, str] | None:
    """(package, kernel release) of the newest plain -amd64 image apt knows in apt's
    suite, of `series` when given, else of any 6.x (the default's choice)."""
    prefix = f"linux-image-{series}." if series else "linux-image-6."
    names = [
        n
        for n in apt.cache_query("pkgnames", prefix).split()
        if (m := _IMAGE_NAME.match(n)) and (series is None or series_of(m.group(1)) == series)
    ]
    if not names:
        return None
    best: tuple[str, str, str] | None = None  # version, package, release
    for line in apt.cache_query("madison", *names).splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 3 or f" {apt.suite}/" not in f" {parts[2]}":
            continue
        pkg, version = parts[0], parts[1]
        m = _IMAGE_NAME.match(pkg)
        if not m:
            continue
        # Same version signed and unsigned: prefer the signed one, Debian's default.
        if (
            best is None
            or compare_debian_versions(version, best[0]) > 0
            or (compare_debian_versions(version, best[0]) == 0 and not m.group(2))
        ):
            best = (version, pkg, m.group(1))
    return (best[1], best[2]) if best else None


def _image_packages(apt: Apt, image_pkg: str, version: str) -> list[str]:
    """The image and, from 7.x on, the packages Debian split it into: linux-image-<v> is
    a meta package there, the vmlinuz is in linux-binary-<v> (under
    /usr/lib/modules/<v>/vmlinuz), the modules in linux-modules-<v>, and config,
    System.map and modules.builtin (which modprobe needs to tell a built-in 9p or
    overlay from a missing one) in linux-base-<v>."""
    split = re.compile(rf"^linux-(binary|modules|base)(-unsigned)?-{re.escape(version)}$")
    return [image_pkg, *sorted({d for d in apt.depends(image_pkg) if split.match(d)})]


def _header_packages(version: str, apt: Apt | None = None) -> list[str]:
    """linux-headers-<version> and, transitively, the linux-headers-*-common and
    linux-kbuild-* packages it depends on (names change with every ABI bump); [] when
    the suite has no headers for this kernel."""
    apt = apt or Apt(default_suite())
    first = f"linux-headers-{version}"
    if apt.dir is not None and not apt.known(first):
        return []
    todo, seen = [first], []
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        seen.append(pkg)
        for dep in apt.depends(pkg) if apt.dir is not None else _host_depends(pkg):
            if re.match(r"^linux-(headers|kbuild)-", dep) and dep not in seen:
                todo.append(dep)
    return seen


def _host_depends(pkg: str) -> list[str]:
    """Depends of pkg in the host's apt; an unknown package is an error (as before)."""
    out = _capture(["apt-cache", "depends", pkg])
    return [m.group(1) for m in re.finditer(r"^\s*\|?Depends:\s*(\S+)", out, re.M)]


def _populate(tmp: Path, image_pkg: str, version: str, apt: Apt | None = None) -> dict[str, str]:
    """Fill `tmp` (the future <cache>/<version>/):

    root/        all packages unpacked by dpkg-deb -x (boot/, lib/modules/<v>/, usr/src/…),
                 plus modules.dep & co. from depmod (Debian's postinst makes those);
    headers/     what vng boots for the default mode: boot/vmlinuz-<v> and
                 lib/modules/<v>/ made of symlinks into root/, plus build -> the -amd64
                 headers and source -> the -common headers (BCC uses both when both are
                 there);
    no-headers/  the same without build and source, for code that must cope without
                 kernel headers (BTF);
    manifest.json  package versions; written last, its presence marks a usable entry.

    virtme finds the modules next to the image (<dir>/boot/vmlinuz -> <dir>/lib/modules)
    and links /lib/modules/<v> in the guest to that directory, so choosing the variant
    directory is all it takes to have build/source there or not. Links are relative so
    the entry survives the rename from the temp dir.

    From 7.x the vmlinuz comes as lib/modules/<v>/vmlinuz (linux-binary-<v>); boot/ then
    links to it. A suite without linux-headers-<v> gives a headers/ variant without
    build/source (manifest "headers": false; run_in_vm refuses it unless --no-headers).
    """
    debs, root = tmp / "debs", tmp / "root"
    apt = apt or Apt(default_suite())
    header_pkgs = _header_packages(version, apt)
    packages = [*(_image_packages(apt, image_pkg, version) if apt.dir is not None else [image_pkg]), *header_pkgs]
    if not header_pkgs:
        _log(f"{apt.suite} has no linux-headers-{version}: BTF-generated headers only")
    _log(f"downloading kernel {version}: {' '.join(packages)}")
    t0 = time.monotonic()
    apt.download(packages, debs)
    manifest: dict[str, str] = {}
    for deb in sorted(debs.glob("*.deb")):
        fields = _capture(["dpkg-deb", "-f", str(deb), "Package", "Version"]).splitlines()
        name, ver = (f.split(": ", 1)[1] for f in fields[:2])
        manifest[name] = ver
        _run(["dpkg-deb", "-x", str(deb), str(root)])
    shutil.rmtree(debs)

    if not (root / "lib" / "modules" / version).is_dir() and (root / "usr/lib/modules" / version).is_dir():
        (root / "lib").mkdir(exist_ok=True)
        (root / "lib" / "modules").symlink_to("../usr/lib/modules")
    moddir = root / "lib" / "modules" / version
    kimg = root / "boot" / f"vmlinuz-{version}"
    if not kimg.is_file() and (moddir / "vmlinuz").is_file():
        kimg = moddir / "vmlinuz"  # 7.x: linux-binary-<v>
    if not kimg.is_file() or not moddir.is_dir():
        raise VMError(f"{' '.join(packages)} hold no boot/vmlinuz-{version} or lib/modules/{version}")

    # The headers package ships lib/modules/<v>/{build,source} -> /usr/src/...: note where
    # they point inside root/, then drop them from the shared module tree.
    links: dict[str, Path] = {}
    for name in ("build", "source"):
        link = moddir / name
        if link.is_symlink():
            dest = os.readlink(link)
            links[name] = root / dest.lstrip("/") if dest.startswith("/") else moddir / dest
            link.unlink()
    if header_pkgs:
        links.setdefault("build", root / "usr" / "src" / f"linux-headers-{version}")
    else:
        links.clear()
    for name, target in links.items():
        if not target.is_dir():
            raise VMError(f"headers for {version}: {name} target {target} is missing")

    _run(["depmod", "-b", str(root), version])

    for variant, with_headers in (("headers", True), ("no-headers", False)):
        vmod = tmp / variant / "lib" / "modules" / version
        vmod.mkdir(parents=True)
        for child in sorted(moddir.iterdir()):
            if child.name == "vmlinuz":
                continue  # the image is booted from boot/, not looked up here
            (vmod / child.name).symlink_to(os.path.relpath(child, vmod))
        if with_headers:
            for name, target in links.items():
                (vmod / name).symlink_to(os.path.relpath(target, vmod))
        boot = tmp / variant / "boot"
        boot.mkdir()
        (boot / f"vmlinuz-{version}").symlink_to(os.path.relpath(kimg, boot))

    (tmp / "manifest.json").write_text(
        json.dumps(
            {
                "kernel": version,
                "image_package": image_pkg,
                "image_version": manifest.get(image_pkg, ""),
                "series": series_of(version),
                "headers": bool(header_pkgs),
                "packages": manifest,
                "suite": apt.suite,
                "prepare_seconds": round(time.monotonic() - t0, 1),
            },
            indent=2,
        )
        + "\n"
    )
    return manifest


def _resolve_series(cache: Path, series: str) -> tuple[Apt, str, str]:
    """(private apt of the series' suite, image package, kernel release) of the newest
    plain -amd64 kernel of `series` (a key of KERNEL_SERIES)."""
    if series not in KERNEL_SERIES:
        raise VMError(f"unknown kernel series {series!r}; known: {', '.join(KERNEL_SERIES)}")
    apt = Apt.private(cache, KERNEL_SERIES[series])
    apt.ensure_fresh()
    found = newest_image_in(apt, series)
    if found is None and _is_root():
        _log(f"no linux-image-{series}.*-amd64 in {apt.suite}'s lists; fetching them again")
        apt.update()
        found = newest_image_in(apt, series)
    if found is None:
        raise VMError(f"{apt.suite} has no linux-image-{series}.*-amd64 (lists in {apt.dir})")
    return apt, found[0], found[1]


def _download_kernel(
    cache: Path,
    image_pkg: str,
    version: str,
    *,
    apt: Apt | None,
    refresh: Callable[[], tuple[str, str]] | None,
    fallback_series: str | None,
) -> Kernel:
    """The cache entry of `version` (package `image_pkg`), downloaded under the cache
    lock on first use. A failed download is retried once after `refresh()` (which
    updates the apt lists and chooses again: lists older than the mirror name .debs it
    has dropped); refresh None (a pinned kernel) or not root: no retry. When no
    download works, the newest cached kernel (of `fallback_series`), if there is one."""
    hit = _cached(cache, version)
    if hit:
        return hit
    with _locked(cache):
        hit = _cached(cache, version)  # another session may have made it meanwhile
        if hit:
            return hit
        for stale in cache.glob(".tmp-*"):  # left by an interrupted download; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        for attempt in (1, 2):
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=cache))
            tmp.chmod(0o755)
            try:
                _populate(tmp, image_pkg, version, apt)
                tmp.rename(cache / version)
                return Kernel(version, cache / version)
            except VMError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                if attempt == 2 or refresh is None or not _is_root():
                    fallback = _newest_cached(cache, fallback_series)
                    if fallback is None:
                        raise
                    _log(f"{exc}\nusing the cached kernel {fallback.version}")
                    return fallback
                _log(f"{exc}\nrefreshing the apt lists{f' of {apt.suite}' if apt else ''} and trying again")
                image_pkg, version = refresh()
                hit = _cached(cache, version)
                if hit:
                    return hit
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    raise AssertionError("unreachable")


def ensure_series_kernel(cache: Path, series: str) -> Kernel:
    """The cache entry of the newest Debian kernel of `series` (`--kernel SERIES`),
    fetched with a private apt of its suite on first use; offline, the newest cached
    kernel of that series."""
    try:
        apt, image_pkg, version = _resolve_series(cache, series)
    except VMError as exc:
        fallback = _newest_cached(cache, series)
        if fallback is None:
            raise
        _log(f"{exc}\nusing the cached kernel {fallback.version}")
        return fallback

    def refresh() -> tuple[str, str]:
        apt.update()
        _, package, release = _resolve_series(cache, series)
        return package, release

    return _download_kernel(cache, image_pkg, version, apt=apt, refresh=refresh, fallback_series=series)


def ensure_kernel(cache: Path | None = None, series: str | None = None) -> Kernel:
    """The cache entry for the kernel to boot, downloading it on first use.

    `series` (or KRSID_VM_SERIES), e.g. "5.10": the newest Debian kernel of that series
    from its suite (KERNEL_SERIES). Otherwise KRSID_VM_KERNEL=<release> pins a kernel
    (e.g. 6.12.95+deb12-amd64), else the newest plain -amd64 image in
    <codename>-backports (KRSID_VM_SUITE overrides).
    """
    cache = cache or cache_root()
    series = series or os.environ.get("KRSID_VM_SERIES") or None
    if series:
        return ensure_series_kernel(cache, series)
    pinned = os.environ.get("KRSID_VM_KERNEL")
    if pinned:
        hit = _cached(cache, pinned)
        if hit:
            return hit
        image_pkg, version = f"linux-image-{pinned}", pinned
        if not _capture(["apt-cache", "madison", image_pkg]).strip():
            image_pkg += "-unsigned"
        return _download_kernel(cache, image_pkg, version, apt=None, refresh=None, fallback_series=None)
    try:
        image_pkg, version = _resolve(cache)
    except VMError as exc:
        fallback = _newest_cached(cache)
        if fallback is None:
            raise
        _log(f"{exc}\nusing the cached kernel {fallback.version}")
        return fallback

    def refresh() -> tuple[str, str]:
        _run(["apt-get", "update", "-q"])
        return _resolve(cache, refresh=True)

    return _download_kernel(cache, image_pkg, version, apt=None, refresh=refresh, fallback_series=None)


# --- running ---------------------------------------------------------------------------


def _guest_env(source: Mapping[str, str], extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in source.items() if k in PASS_ENV or k.startswith(PASS_ENV_PREFIXES)}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.setdefault("HOME", "/root")
    env.update(extra or {})
    env[IN_VM_ENV] = "1"
    return {k: v for k, v in env.items() if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k)}


def _guest_script(argv: Sequence[str], cwd: Path, rundir: Path, env: Mapping[str, str]) -> str:
    q = shlex.quote
    assignments = " ".join(q(f"{k}={v}") for k, v in sorted(env.items()))
    return f"""\
# Generated by tests/vm/vmrun.py; run by virtme-ng-init as root in the guest.
# Sent as a file: the kernel command line (which vng would use) holds only 2 KiB.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
rundir={q(str(rundir))}
cat /proc/uptime > "$rundir/started"
# virtme-ng-init mounts securityfs; another init might not (/sys/kernel/security/lsm).
[ -e /sys/kernel/security/lsm ] || mount -t securityfs securityfs /sys/kernel/security
if ! cd {q(str(cwd))}; then
    echo "krsid-vm: cannot enter {q(str(cwd))} in the guest" >&2
    echo {EXIT_VM_FAILED} > "$rundir/rc"
    exit {EXIT_VM_FAILED}
fi
env -i -- {assignments} {shlex.join(argv)}
rc=$?
cat /proc/uptime > "$rundir/finished"
echo "$rc" > "$rundir/rc"
exit "$rc"
"""


def _pump(src: BinaryIO, dst: BinaryIO) -> None:
    """Copy a pipe to the caller's stream as data arrives (no line buffering)."""
    fd = src.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        with contextlib.suppress(OSError, ValueError):
            dst.write(chunk)
            dst.flush()


def _stream(name: str) -> BinaryIO:
    text = sys.stdout if name == "stdout" else sys.stderr
    text.flush()
    buf = getattr(text, "buffer", None)
    if buf is not None:
        return buf  # type: ignore[no-any-return]
    return open(1 if name == "stdout" else 2, "wb", buffering=0, closefd=False)


def _check_path(what: str, path: Path) -> None:
    if not _SAFE_PATH.match(str(path)):
        raise VMError(f"{what} {path} has characters vng cannot pass to qemu (space, '=', ',' …)")
    if path == Path("/") or path.parts[1:2] in (("proc",), ("sys",), ("dev",), ("run",)):
        raise VMError(f"refusing to share {path} read-write with the guest")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End vng, virtme-run and qemu, which run in the process group made for them, and
    wait until all of them are gone: qemu can outlive vng by a moment."""
    pgid = proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is None or _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.05)
            if proc.poll() is not None and not _group_alive(pgid):
                return


def _wait_for_vm(proc: subprocess.Popen[bytes], rundir: Path, *, deadline: float) -> tuple[bool, float | None, bool]:
    """Wait for the VM to end: (timed out, when the command started, lingered). Once
    the guest has written the command's exit code (rundir/rc), the VM gets
    POWEROFF_GRACE seconds to power off; a VM whose shutdown hangs is then left to be
    killed ("lingered") instead of holding the caller, silently, until the deadline."""
    t_cmd: float | None = None
    t_rc: float | None = None
    while proc.poll() is None:
        now = time.monotonic()
        if t_cmd is None and (rundir / "started").exists():
            t_cmd = now
        if t_rc is None:
            with contextlib.suppress(OSError):
                if (rundir / "rc").read_text().strip().isdigit():
                    t_rc = now
        if t_rc is not None and now - t_rc > POWEROFF_GRACE:
            return False, t_cmd, True
        if now > deadline:
            return True, t_cmd, False
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.1)
    return False, t_cmd, False


def run_in_vm(
    argv: list[str],
    *,
    cwd: Path,
    no_headers: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    mem_mb: int = DEFAULT_MEM_MB,
    cpus: int | None = None,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    verbose: bool = False,
    stdout: BinaryIO | None = None,
    stderr: BinaryIO | None = None,
    kernel_series: str | None = None,
) -> int:
    """Run `argv` as root in a fresh VM, in `cwd` (shared read-write at the same path).

    Returns the command's exit code, EXIT_TIMEOUT (124) after `timeout` seconds, or
    EXIT_VM_FAILED (125) if the VM died before the command finished. Raises VMError when
    the VM cannot be prepared. `no_headers` (or KRSID_VM_NO_HEADERS=1) boots without
    /lib/modules/<v>/build. The command sees PATH, HOME, CI, locale, KRSID_*, PYTEST_*
    and a few PYTHON* variables of `env` (default: os.environ), then `extra_env`, and
    KRSID_IN_VM=1. Its stdout/stderr go to `stdout`/`stderr` (default: this process's).
    `timeout` counts from the VM's start; a first-use download comes before it. Default
    1 vCPU (see DEFAULT_CPUS), `mem_mb` MiB of guest RAM. `kernel_series` (or
    KRSID_VM_SERIES), e.g. "5.10", boots the newest Debian kernel of that series
    (KERNEL_SERIES) instead of the default.
    """
    if not argv:
        raise ValueError("run_in_vm: empty argv")
    no_headers = no_headers or _env_flag("KRSID_VM_NO_HEADERS")
    verbose = verbose or _env_flag("KRSID_VM_VERBOSE")
    cwd = Path(os.path.realpath(cwd))  # the guest sees real paths; 9p exports follow them
    _check_path("working directory", cwd)
    cache = cache_root()
    ensure_host_packages()
    vng = find_vng(cache)
    kernel = ensure_kernel(cache, kernel_series)
    if not no_headers and not kernel.has_headers:
        raise VMError(f"Debian has no linux-headers-{kernel.version}: run it with --no-headers (BTF)")
    kimg = kernel.kimg(headers=not no_headers)
    cpus = cpus or DEFAULT_CPUS

    guest_env = _guest_env(os.environ if env is None else env, extra_env)
    guest_env["KRSID_VM_KERNEL"] = kernel.version
    guest_env["KRSID_VM_HEADERS"] = "0" if no_headers else "1"
    guest_env["KRSID_VM_SERIES"] = series_of(kernel.version)

    t_start = time.monotonic()
    # Our own per-run directory: holds the guest script and receives started/finished/rc.
    # vng's temp files go there too (TMPDIR) so a killed run leaves nothing in /tmp.
    rundir = Path(tempfile.mkdtemp(prefix="krsid-vm-"))
    try:
        rundir.chmod(0o755)
        _check_path("temp directory", rundir)
        (rundir / "guest.sh").write_text(_guest_script(argv, cwd, rundir, guest_env))
        shares = [f"--rwdir={cwd}", f"--rwdir={rundir}"]
        # /var/cache (and /var/tmp, /tmp …) are tmpfs or overlays in the guest: export the
        # kernel's cache entry explicitly so /lib/modules/<v> and its links resolve.
        shares.append(f"--rodir={kernel.path}")
        if cache in vng.parents:
            shares.append(f"--rodir={vng.parent.parent}")
        cmd = [
            str(vng),
            "--run",
            str(kimg),
            "--disable-kvm",  # /dev/kvm exists here but does not work (PVM): TCG only
            "--force-9p",  # no virtiofsd in bookworm; skips a 3 s failed attempt per run
            "--memory",
            f"{mem_mb}M",
            "--cpus",
            str(cpus),
            "--name",
            "krsid-vm",
            *shares,
            "--append",
            LSM_KARG,
            "--append",
            "modprobe.blacklist=" + ",".join(BLACKLIST),
            "--append",
            IN_VM_KARG,
            "--",
            "sh",
            str(rundir / "guest.sh"),
        ]
        if _env_flag("KRSID_VM_CONSOLE"):
            cmd.insert(1, "--verbose")  # kernel console (boot log) to stderr
        host_env = dict(os.environ)
        host_env["PATH"] = f"{vng.parent}:{host_env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        host_env["TMPDIR"] = str(rundir)
        if verbose:
            _log(f"kernel {kernel.version} ({'no ' if no_headers else ''}headers), {shlex.join(cmd)}")
        # stdout/stderr must be pipes: qemu opens /proc/self/fd/1 and /2 with O_TRUNC,
        # which would wipe a caller's log file. stdin /dev/null: qemu would put a tty raw.
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=host_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            threading.Thread(target=_pump, args=(proc.stdout, stdout or _stream("stdout")), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, stderr or _stream("stderr")), daemon=True),
        ]
        for t in pumps:
            t.start()
        try:
            timed_out, t_cmd, lingered = _wait_for_vm(proc, rundir, deadline=t_start + timeout)
        finally:
            _kill_group(proc)
            for t in pumps:
                t.join(timeout=5)
        t_end = time.monotonic()

        rc_file = rundir / "rc"
        rc_text = rc_file.read_text().strip() if rc_file.exists() else ""
        if verbose:
            boot = f"{t_cmd - t_start:.1f} s" if t_cmd else "-"
            with contextlib.suppress(OSError, IndexError):
                # The guest's own clock: boot time under TCG, without host-side startup.
                boot += f" (guest uptime {(rundir / 'started').read_text().split()[0]} s)"
            _log(f"vng exit {proc.returncode}; boot to command {boot}, total {t_end - t_start:.1f} s")
        if lingered:
            _log(f"the VM did not power off within {POWEROFF_GRACE:g} s of the command's end; killed it")
        if timed_out and rc_text.isdigit():
            # The command finished; only the VM's shutdown hung.
            _log(f"the VM did not power off within {timeout:g} s; the command had finished")
        elif timed_out:
            _log(f"timeout: {shlex.join(argv)} did not finish within {timeout:g} s; VM killed")
            return EXIT_TIMEOUT
        if not rc_text.isdigit():
            started = (rundir / "started").exists()
            where = "the command finished" if started else "the command started"
            _log(
                f"the VM (kernel {kernel.version}) ended before {where}: vng exit code "
                f"{proc.returncode}; KRSID_VM_CONSOLE=1 shows the guest's kernel console"
            )
            return EXIT_VM_FAILED
        return int(rc_text)
    finally:
        shutil.rmtree(rundir, ignore_errors=True)


# --- command line ----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tests/vm/run",
        description="Run CMD as root in a throw-away qemu VM booting Debian's stock kernel "
        "(BPF-LSM enabled), in the current directory, shared read-write.",
        epilog="Environment: KRSID_VM_CACHE (cache dir, default /var/cache/krsid-vm), "
        "KRSID_VM_NO_HEADERS=1, KRSID_VM_SERIES (as --kernel), KRSID_VM_KERNEL (pin a kernel release), KRSID_VM_SUITE "
        "(apt suite, default <codename>-backports), KRSID_VNG (vng to use), "
        "KRSID_VM_VERBOSE=1, KRSID_VM_CONSOLE=1 (guest kernel console on stderr). "
        "Exit status: CMD's, 124 on timeout, 125 if the VM failed.",
    )
    parser.add_argument(
        "--kernel",
        choices=sorted(KERNEL_SERIES, key=lambda v: tuple(int(x) for x in v.split("."))),
        metavar="SERIES",
        help="boot the newest Debian kernel of SERIES instead of the default: "
        + ", ".join(f"{k} ({v})" for k, v in KERNEL_SERIES.items()),
    )
    parser.add_argument(
        "--no-headers",
        action="store_true",
        help="boot without /lib/modules/<v>/build (code must use BTF)",
    )
    parser.add_argument(
        "--mem",
        type=int,
        default=DEFAULT_MEM_MB,
        metavar="MB",
        help=f"guest memory (default {DEFAULT_MEM_MB})",
    )
    parser.add_argument(
        "--cpus",
        type=int,
        default=None,
        metavar="N",
        help=f"guest CPUs (default {DEFAULT_CPUS}: more is slower under TCG on a busy host)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SEC",
        help=f"kill the VM after SEC seconds (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log vng command, timings")
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="only install/download what the VM needs; print the kernel dir",
    )
    parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD [ARGS...]")
    args = parser.parse_args(argv)
    cmd = list(args.cmd)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]

    # Turn SIGTERM into an exception so run_in_vm's cleanup kills qemu and removes its
    # temp dir (the default action would leave the VM running).
    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        if args.prepare:
            ensure_host_packages()
            find_vng(cache_root())
            print(ensure_kernel(series=args.kernel).path)
            return 0
        if not cmd:
            parser.error("CMD is missing")
        return run_in_vm(
            cmd,
            cwd=Path.cwd(),
            no_headers=args.no_headers,
            timeout=args.timeout,
            mem_mb=args.mem,
            cpus=args.cpus,
            verbose=args.verbose,
            kernel_series=args.kernel,
        )
    except VMError as exc:
        _log(f"error: {exc}")
        return EXIT_VM_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
