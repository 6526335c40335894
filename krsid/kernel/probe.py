"""The checks behind `krsid doctor`: can this host run krsid, and if not, why.

Each check answers one question with a Check.  Most reasons BPF-LSM does not work
are invisible until a program fails to attach (or silently never runs), so the
checks look at each layer separately: kernel config, the active LSM list, BTF,
privileges, an actual BPF_PROG_LOAD of an LSM program, the BPF atomics every
program uses, ring buffers, and the headers BCC will compile against.

Raw bpf(2) calls go through ctypes rather than BCC: BCC may only be imported by
krsid/pipeline/load.py, costs ~80 MB of LLVM, and its errors hide the errno and
the verifier log that tell the cases apart.  Nothing here is left attached,
mounted or open.

Pure parsing/classification helpers are separate from the I/O so they can be
unit-tested without privileges.
"""

from __future__ import annotations

import ctypes
import errno
import gzip
import os
import platform
import resource
import struct
from dataclasses import dataclass
from pathlib import Path

from krsid.errors import KrsidError
from krsid.kernel import headers
from krsid.kernel.btf import VMLINUX_BTF, Btf

PROBE_HOOK = "file_mprotect"  # any hook works; this one exists since BPF-LSM (5.7)
VM_REMEDY = "run krsid on a kernel that allows BPF-LSM, e.g. tests/vm/run"
TRAMPOLINE_REFUSED = (
    "EPERM with an empty verifier log: this kernel refuses trampoline (LSM/fentry) programs before the verifier"
)

# Capability bits (include/uapi/linux/capability.h).
CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24
CAP_PERFMON = 38
CAP_BPF = 39

# bpf(2) commands and UAPI enum values (include/uapi/linux/bpf.h); cross-checked
# against the kernel's BTF in tests/unit/test_btf.py.
BPF_MAP_CREATE = 0
BPF_PROG_LOAD = 5
BPF_PROG_TYPE_SOCKET_FILTER = 1
BPF_PROG_TYPE_LSM = 29
BPF_LSM_MAC = 27
BPF_MAP_TYPE_RINGBUF = 27
# Offsets inside union bpf_attr (also cross-checked against BTF).
ATTR_SIZE = 144  # covers every field used; the kernel zero-extends shorter attrs
PROG_LOAD_OFFSETS = {
    "prog_type": 0,
    "insn_cnt": 4,
    "insns": 8,
    "license": 16,
    "log_level": 24,
    "log_size": 28,
    "log_buf": 32,
    "expected_attach_type": 68,
    "attach_btf_id": 108,
}
MAP_CREATE_OFFSETS = {"map_type": 0, "key_size": 4, "value_size": 8, "max_entries": 12}
# r0 = 0; exit  -- the smallest valid program; an LSM program returning 0 allows.
TINY_PROG = bytes.fromhex("b7000000000000009500000000000000")
# r1 = 0; *(u64 *)(r10 - 8) = r1; r1 = 1; r1 = atomic_fetch_add((u64 *)(r10 - 8), r1);
# r0 = 0; exit. The fourth instruction is BPF_STX|BPF_ATOMIC|BPF_DW (0xdb) with imm
# BPF_ADD|BPF_FETCH (0x01): what clang emits for __sync_fetch_and_add whose result is
# used, as in krsid_next_seq (krsid.h), in every program. Linux 5.12 added BPF_FETCH;
# older verifiers know only BPF_XADD (imm 0) and refuse it ("BPF_STX uses reserved
# fields" on Debian 11's 5.10), so every krsid program would be rejected after the
# compile. Loading this as a socket filter tells that in milliseconds.
ATOMIC_FETCH_ADD_PROG = bytes.fromhex(
    "b701000000000000" "7b1af8ff00000000" "b701000001000000" "db1af8ff01000000" "b700000000000000" "9500000000000000"
)  # fmt: skip
MIN_ATOMICS_KERNEL = (5, 12)
ATOMICS_REMEDY = (
    "boot Linux 5.12 or newer (on Debian 11, a kernel from bullseye-backports); 5.10 and older are not supported"
)

# bpf(2) differs per architecture; syscalls from 424 on share one number everywhere.
_NR_BPF = {
    "x86_64": 321,
    "i386": 357,
    "i686": 357,
    "aarch64": 280,
    "riscv64": 280,
    "loongarch64": 280,
    "armv7l": 386,
    "ppc64": 361,
    "ppc64le": 361,
    "s390x": 351,
}
NR_LSM_LIST_MODULES = 461  # Linux >= 6.8
# LSM ids (include/uapi/linux/lsm.h, Linux >= 6.8).
LSM_IDS = {
    100: "capability",
    101: "selinux",
    102: "smack",
    103: "tomoyo",
    104: "apparmor",
    105: "yama",
    106: "loadpin",
    107: "safesetid",
    108: "lockdown",
    109: "bpf",
    110: "landlock",
    111: "ima",
    112: "evm",
    113: "ipe",
}
SECURITYFS = Path("/sys/kernel/security")
MOUNT_SECURITYFS = "mount -t securityfs securityfs /sys/kernel/security"


@dataclass(frozen=True)
class Check:
    """One doctor line.  ok None means could not tell, or informational only."""

    name: str
    ok: bool | None
    detail: str
    remedy: str


# ------------------------------------------------------------------ parsing
def parse_kconfig(text: str) -> dict[str, str]:
    """CONFIG_* options of a kernel .config; 'n' for '# CONFIG_X is not set'."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("CONFIG_") and "=" in line:
            key, _, val = line.partition("=")
            out[key] = val.strip('"') if val.startswith('"') else val
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            out[line[2:].split()[0]] = "n"
    return out


def parse_cap_eff(status: str) -> int:
    """The CapEff bitmask from /proc/<pid>/status text."""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split(":", 1)[1].strip(), 16)
    raise ValueError("no CapEff line in the status text")


def parse_lsm_list(text: str) -> list[str]:
    """/sys/kernel/security/lsm: a comma-separated list without a newline."""
    return [s for s in text.strip().split(",") if s]


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a `uname -r` string; (0, 0) if unrecognisable."""
    try:
        code = headers.linux_version_code(release)
    except KrsidError:
        return (0, 0)
    return (code >> 16, (code >> 8) & 0xFF)


def has_cap(capeff: int, cap: int) -> bool:
    return bool(capeff >> cap & 1)


def capability_check(capeff: int, release: str, memlock: int = resource.RLIM_INFINITY) -> Check:
    """Privileges to load LSM programs: (CAP_BPF or CAP_SYS_ADMIN) and (CAP_PERFMON
    or CAP_SYS_ADMIN), which is what bpf_capable() and perfmon_capable() test for
    tracing program types such as LSM.  Before 5.11, BPF memory is charged to
    RLIMIT_MEMLOCK, and raising that needs CAP_SYS_RESOURCE."""
    name = "capabilities"
    admin = has_cap(capeff, CAP_SYS_ADMIN)
    bpf = admin or has_cap(capeff, CAP_BPF)
    perfmon = admin or has_cap(capeff, CAP_PERFMON)
    relevant = {
        "CAP_SYS_ADMIN": CAP_SYS_ADMIN,
        "CAP_BPF": CAP_BPF,
        "CAP_PERFMON": CAP_PERFMON,
        "CAP_SYS_RESOURCE": CAP_SYS_RESOURCE,
    }
    held = [n for n, c in relevant.items() if has_cap(capeff, c)]
    detail = f"CapEff=0x{capeff:016x} ({', '.join(held) or 'none of the relevant ones'})"
    if not (bpf and perfmon):
        missing = [n for n, ok in (("CAP_BPF", bpf), ("CAP_PERFMON", perfmon)) if not ok]
        return Check(
            name,
            False,
            f"{detail}; missing {' and '.join(missing)} (or CAP_SYS_ADMIN)",
            "run krsid as root, or grant CAP_BPF and CAP_PERFMON (systemd: AmbientCapabilities=CAP_BPF CAP_PERFMON)",
        )
    if (
        kernel_version(release) < (5, 11)
        and not has_cap(capeff, CAP_SYS_RESOURCE)
        and (memlock != resource.RLIM_INFINITY)
    ):
        return Check(
            name,
            False,
            f"{detail}; kernel {release} charges BPF memory to RLIMIT_MEMLOCK "
            f"({memlock} bytes) and CAP_SYS_RESOURCE to raise it is missing",
            "grant CAP_SYS_RESOURCE, or set LimitMEMLOCK=infinity in krsid's systemd unit",
        )
    return Check(name, True, detail, "")


def classify_atomics_load(err: int, log: str, release: str) -> Check:
    """The "BPF atomics" check from loading ATOMIC_FETCH_ADD_PROG: (errno, verifier
    log). Where the load cannot tell (no privilege, no bpf()), the kernel version
    decides: BPF_FETCH came with 5.12."""
    name = "BPF atomics"
    if err == 0:
        return Check(name, True, "the verifier accepts atomic fetch-and-add (krsid's event sequence numbers)", "")
    refused = (
        f"kernel {release} has no BPF atomic fetch-and-add (Linux 5.12 or newer): every krsid "
        "program uses it for its event sequence numbers and would be rejected"
    )
    # The verifier's reason is its last line before the "processed N insns" statistics.
    reasons = [line for line in log.strip().splitlines() if line and not line.startswith("processed ")]
    said = reasons[-1] if reasons else errno.errorcode.get(err, str(err))
    if err == errno.EINVAL:
        return Check(name, False, f"{refused} (the verifier says: {said})", ATOMICS_REMEDY)
    if (0, 0) < kernel_version(release) < MIN_ATOMICS_KERNEL:
        return Check(name, False, f"{refused} (by its version; the probe load failed: {said})", ATOMICS_REMEDY)
    return Check(name, None, f"could not tell: the probe load failed ({said})", "see the checks above")


def lsm_active_check(lsms: list[str] | None, source: str, hint: str = "") -> Check:
    """Whether 'bpf' is in the active LSM list.  lsms None: could not read it."""
    name = "bpf in active LSMs"
    if lsms is None:
        return Check(
            name,
            None,
            f"cannot read the active LSM list: {source}" + (f"; {hint}" if hint else ""),
            f"{MOUNT_SECURITYFS}, then rerun krsid doctor",
        )
    if "bpf" in lsms:
        return Check(name, True, f"{','.join(lsms)} (from {source})", "")
    wanted = ",".join([s for s in lsms if s != "capability"] + ["bpf"])
    return Check(
        name,
        False,
        f"{','.join(lsms)} (from {source}): BPF-LSM programs would attach but never run",
        f"boot with lsm={wanted} (Debian: add it to GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub, reboot)",
    )


def classify_lsm_load(err: int, log: str, *, caps_ok: bool, plain_prog_loads: bool | None) -> Check:
    """Turn the outcome of the probe BPF_PROG_LOAD into a Check.  err 0 = loaded."""
    name = "LSM program load"
    if err == 0:
        return Check(name, True, f"loaded (not attached) a BPF_PROG_TYPE_LSM program on {PROBE_HOOK}", "")
    log = log.strip()
    tail = log.splitlines()[-1] if log else ""
    what = f"BPF_PROG_LOAD failed: {errno.errorcode.get(err, str(err))} ({os.strerror(err)})"
    if err == errno.EPERM and not log:
        if not caps_ok:
            return Check(
                name,
                False,
                f"{what} without the capabilities to load BPF programs",
                "run krsid as root (needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)",
            )
        if plain_prog_loads is False:
            # Even a socket filter is refused although the capabilities are there:
            # something in front of bpf() (seccomp, a container runtime) says no.
            return Check(
                name,
                False,
                f"{what} for every program type (a socket filter too) despite the "
                "capabilities: bpf() is blocked, e.g. by a seccomp filter or container policy",
                "run krsid on the host (or with a seccomp profile that allows bpf())",
            )
        return Check(name, False, TRAMPOLINE_REFUSED, VM_REMEDY)
    if err == errno.ENOSYS:
        return Check(name, False, f"{what}: no bpf() syscall", "use a kernel with CONFIG_BPF_SYSCALL=y")
    if err in (errno.EINVAL, errno.E2BIG) and not log:
        return Check(
            name,
            False,
            f"{what} with no verifier log: the kernel does not know BPF_PROG_TYPE_LSM "
            "(added in 5.7) or was built without CONFIG_BPF_LSM",
            "use a kernel >= 5.7 built with CONFIG_BPF_LSM=y (e.g. tests/vm/run)",
        )
    if err == errno.EACCES and "lockdown" in log.lower():
        return Check(name, False, f"{what}: {tail}", "boot without lockdown=confidentiality")
    return Check(
        name,
        False,
        f"{what}; verifier log: {tail or '(empty)'}",
        "check that CONFIG_BPF_LSM=y, that BTF matches the running kernel, and the "
        "full verifier log (`krsid doctor` output above); " + VM_REMEDY,
    )


# ----------------------------------------------------------------- syscalls
class BpfSyscall:
    """Minimal bpf(2) access through libc's syscall()."""

    def __init__(self) -> None:
        self.nr = _NR_BPF.get(platform.machine())
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long

    def call(self, cmd: int, attr: ctypes.Array[ctypes.c_char]) -> tuple[int, int]:
        """(fd or -1, errno)."""
        if self.nr is None:
            return -1, errno.ENOSYS
        ctypes.set_errno(0)
        ret = int(self._libc.syscall(ctypes.c_long(self.nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr))))
        return ret, (0 if ret >= 0 else ctypes.get_errno())

    def prog_load(
        self, prog_type: int, attach_type: int = 0, attach_btf_id: int = 0, program: bytes = TINY_PROG
    ) -> tuple[int, str]:
        """Load `program` (TINY_PROG); returns (errno, verifier log).  A loaded fd is closed."""
        insns = ctypes.create_string_buffer(program, len(program))
        lic = ctypes.create_string_buffer(b"GPL")
        log = ctypes.create_string_buffer(64 * 1024)
        attr = ctypes.create_string_buffer(ATTR_SIZE)
        o = PROG_LOAD_OFFSETS
        struct.pack_into("<I", attr, o["prog_type"], prog_type)
        struct.pack_into("<I", attr, o["insn_cnt"], len(program) // 8)
        struct.pack_into("<Q", attr, o["insns"], ctypes.addressof(insns))
        struct.pack_into("<Q", attr, o["license"], ctypes.addressof(lic))
        struct.pack_into("<I", attr, o["log_level"], 1)
        struct.pack_into("<I", attr, o["log_size"], len(log))
        struct.pack_into("<Q", attr, o["log_buf"], ctypes.addressof(log))
        struct.pack_into("<I", attr, o["expected_attach_type"], attach_type)
        struct.pack_into("<I", attr, o["attach_btf_id"], attach_btf_id)
        fd, err = self.call(BPF_PROG_LOAD, attr)
        if fd >= 0:
            os.close(fd)
        return err, log.value.decode("utf-8", "replace")

    def ringbuf_create(self) -> int:
        """Create and close a ring buffer map; returns errno (0 = worked)."""
        attr = ctypes.create_string_buffer(ATTR_SIZE)
        o = MAP_CREATE_OFFSETS
        struct.pack_into("<I", attr, o["map_type"], BPF_MAP_TYPE_RINGBUF)
        # Ring buffer size must be a power-of-2 multiple of the page size.
        struct.pack_into("<I", attr, o["max_entries"], os.sysconf("SC_PAGE_SIZE"))
        fd, err = self.call(BPF_MAP_CREATE, attr)
        if fd >= 0:
            os.close(fd)
        return err

    def lsm_list_modules(self) -> list[int] | None:
        """Active LSM ids via lsm_list_modules(2) (Linux >= 6.8), None if unavailable.
        Needs no securityfs mount, so doctor never has to mount anything."""
        ids = (ctypes.c_uint64 * 64)()
        size = ctypes.c_uint32(ctypes.sizeof(ids))
        ctypes.set_errno(0)
        n = int(self._libc.syscall(ctypes.c_long(NR_LSM_LIST_MODULES), ids, ctypes.byref(size), ctypes.c_uint32(0)))
        if n < 0:
            return None
        return list(ids[:n])


# ------------------------------------------------------------------ checks
def bpf_lsm_active_check() -> Check:
    """Is `bpf` an active LSM? The daemon asks before compiling: when it is not, every
    program attaches without an error and is never called (krsid would watch nothing,
    silently)."""
    return _lsm_check(BpfSyscall(), None)


def bpf_atomics_check(bpf: BpfSyscall | None = None, release: str | None = None) -> Check:
    """Can this kernel's verifier run krsid's programs' atomic fetch-and-add (5.12+)?
    The daemon asks before compiling, doctor reports it."""
    err, log = (bpf or BpfSyscall()).prog_load(BPF_PROG_TYPE_SOCKET_FILTER, program=ATOMIC_FETCH_ADD_PROG)
    return classify_atomics_load(err, log, release or platform.release())


def _read_kconfig(release: str) -> tuple[dict[str, str] | None, str]:
    for path in (Path("/proc/config.gz"), Path(f"/boot/config-{release}")):
        try:
            raw = path.read_bytes()
            text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8", "replace")
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        return parse_kconfig(text), str(path)
    return None, f"neither /proc/config.gz nor /boot/config-{release} is readable"


def kconfig_check(config: dict[str, str] | None, source: str) -> Check:
    name = "CONFIG_BPF_LSM"
    if config is None:
        return Check(
            name,
            None,
            f"cannot read the kernel config: {source}",
            "modprobe configs (for /proc/config.gz) or install the kernel's /boot/config-*"
            " to let doctor check; the load check below is authoritative",
        )
    needed = ("CONFIG_BPF_SYSCALL", "CONFIG_BPF_LSM", "CONFIG_DEBUG_INFO_BTF")
    missing = [k for k in needed if config.get(k) != "y"]
    if missing:
        return Check(
            name,
            False,
            f"{', '.join(k + '=' + config.get(k, 'n') for k in missing)} (from {source})",
            f"use a kernel built with {', '.join(k + '=y' for k in missing)}",
        )
    return Check(name, True, f"{', '.join(k + '=y' for k in needed)} (from {source})", "")


def _lsm_check(bpf: BpfSyscall, config: dict[str, str] | None) -> Check:
    try:
        return lsm_active_check(parse_lsm_list((SECURITYFS / "lsm").read_text()), "securityfs")
    except OSError:
        pass
    ids = bpf.lsm_list_modules()
    if ids is not None:
        return lsm_active_check(
            [LSM_IDS.get(i, f"id{i}") for i in ids],
            f"lsm_list_modules(2); securityfs is not mounted at {SECURITYFS}",
        )
    # Neither: say what we know from the boot command line / build default.
    try:
        cmdline = Path("/proc/cmdline").read_text().split()
    except OSError:
        cmdline = []
    given = [a.split("=", 1)[1] for a in cmdline if a.startswith("lsm=")]
    if given:
        hint = f"the kernel command line asks for lsm={given[-1]}"
    elif config and config.get("CONFIG_LSM"):
        hint = f"no lsm= on the command line; the built-in default is {config['CONFIG_LSM']}"
    else:
        hint = ""
    return lsm_active_check(None, f"securityfs is not mounted at {SECURITYFS} (and no lsm_list_modules(2))", hint)


def _btf_check(btf_path: Path) -> tuple[Check, Btf | None]:
    name = "BTF"
    try:
        btf = Btf.load(btf_path)
        hooks = btf.lsm_hooks()
    except KrsidError as exc:
        return (
            Check(name, False, str(exc), "use a kernel built with CONFIG_DEBUG_INFO_BTF=y"),
            None,
        )
    if PROBE_HOOK not in hooks:
        return (
            Check(
                name,
                False,
                f"{btf_path} has no bpf_lsm_* hook functions",
                "use a kernel built with CONFIG_BPF_LSM=y",
            ),
            btf,
        )
    return Check(name, True, f"{btf_path}: {btf.type_count} types, {len(hooks)} LSM hooks", ""), btf


def _load_check(bpf: BpfSyscall, btf: Btf | None, *, caps_ok: bool) -> Check:
    name = "LSM program load"
    if btf is None:
        return Check(name, None, "skipped: no usable BTF to find the hook's id", "see BTF above")
    err, log = bpf.prog_load(BPF_PROG_TYPE_LSM, BPF_LSM_MAC, btf.func_id("bpf_lsm_" + PROBE_HOOK))
    plain: bool | None = None
    if err == errno.EPERM and not log.strip():
        # Tell "no privilege for BPF at all" from "refuses this program type".
        plain = bpf.prog_load(BPF_PROG_TYPE_SOCKET_FILTER)[0] == 0
    return classify_lsm_load(err, log, caps_ok=caps_ok, plain_prog_loads=plain)


def ringbuf_available() -> bool:
    """Whether this kernel has BPF ring buffers (Linux >= 5.8), by creating one: the
    same test doctor reports, so `buffer.kind: auto` and doctor never disagree.
    Only "unknown map type" (EINVAL) says no; any other failure shows up at load."""
    return BpfSyscall().ringbuf_create() != errno.EINVAL


def _ringbuf_check(bpf: BpfSyscall) -> Check:
    name = "BPF ring buffer"
    err = bpf.ringbuf_create()
    if err == 0:
        return Check(name, True, "created (and closed) a BPF_MAP_TYPE_RINGBUF map", "")
    what = f"BPF_MAP_CREATE(RINGBUF) failed: {errno.errorcode.get(err, str(err))}"
    if err == errno.EPERM:
        return Check(name, False, what, "run krsid as root (needs CAP_BPF or CAP_SYS_ADMIN)")
    return Check(name, False, f"{what}: kernel without BPF ring buffers", "use a kernel >= 5.8")


def _bpftool_check(release: str) -> Check:
    name = "bpftool"
    needed = not headers.kernel_build_dir(release).is_dir()
    tool = headers.find_bpftool()
    if tool is None:
        if not needed:
            return Check(name, None, "not found; not needed (kernel headers are installed)", "")
        return Check(
            name,
            False,
            "not found; needed to generate headers from BTF",
            "apt-get install bpftool (Debian bookworm: apt-get install -t bookworm-backports bpftool)",
        )
    ver = headers.bpftool_version(tool)
    if ver is None:
        return Check(
            name,
            None if not needed else False,
            f"{tool}: version unknown",
            f"check that `{tool} version` runs",
        )
    vs = ".".join(map(str, ver))
    if ver[:2] < headers.MIN_BPFTOOL:
        return Check(
            name,
            None if not needed else False,
            f"{tool} {vs} dumps 1-byte enums as 4 bytes (wrong struct layouts in vmlinux.h)",
            "install bpftool >= 7.2 (Debian bookworm: apt-get install -t bookworm-backports bpftool)",
        )
    return Check(name, True, f"{tool} {vs}", "")


def _headers_check(cache_dir: Path, release: str, btf_path: Path) -> Check:
    name = "headers"
    try:
        src = headers.plan_headers(cache_dir, release=release, btf_path=btf_path)
    except KrsidError as exc:
        return Check(
            name,
            False,
            str(exc),
            f"install linux-headers-{release}, or fix the BTF/bpftool checks above",
        )
    state = ""
    if src.kind == "btf":
        built = (src.path / headers.STAMP).is_file()
        state = " (cached)" if built else " (generated on first start, well under a second)"
    return Check(name, True, src.description + state, "")


def run_checks(
    cache_dir: Path,
    *,
    btf_path: Path = VMLINUX_BTF,
    release: str | None = None,
) -> list[Check]:
    """All doctor checks, in the order a person would fix them."""
    release = release or platform.release()
    bpf = BpfSyscall()
    config, source = _read_kconfig(release)
    checks: list[Check] = [kconfig_check(config, source), _lsm_check(bpf, config)]

    btf_check, btf = _btf_check(btf_path)
    checks.append(btf_check)

    try:
        capeff = parse_cap_eff(Path("/proc/self/status").read_text())
        memlock = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
        caps = capability_check(capeff, release, memlock)
    except (OSError, ValueError) as exc:
        caps = Check("capabilities", None, f"cannot read /proc/self/status: {exc}", "")
    checks.append(caps)

    checks.append(_load_check(bpf, btf, caps_ok=caps.ok is not False))
    checks.append(bpf_atomics_check(bpf, release))
    checks.append(_ringbuf_check(bpf))
    checks.append(_bpftool_check(release))
    checks.append(_headers_check(cache_dir, release, btf_path))
    return checks
