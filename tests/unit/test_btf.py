"""krsid.kernel.btf against the running kernel's BTF (cross-checked with bpftool's
own decoding), against small hand-built blobs, and the privilege-free helpers of
krsid.kernel.probe."""

from __future__ import annotations

import dataclasses
import errno
import json
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from krsid.errors import HeaderError, UnsupportedKernelError
from krsid.kernel import probe
from krsid.kernel.btf import (
    KIND_CONST,
    KIND_FUNC,
    KIND_FUNC_PROTO,
    KIND_INT,
    KIND_PTR,
    KIND_STRUCT,
    KIND_UNION,
    VMLINUX_BTF,
    Btf,
    Member,
    lsm_hook_arity,
)
from tests.support.btf import DescribingBtf, mnt_namespace_ns_first, ovl_upperdentry_follows_vfs_inode, struct_size

needs_btf = pytest.mark.skipif(
    not VMLINUX_BTF.exists(), reason=f"{VMLINUX_BTF} absent (kernel without CONFIG_DEBUG_INFO_BTF)"
)
JsonType = dict[str, Any]


# ----------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def btf() -> DescribingBtf:
    if not VMLINUX_BTF.exists():
        pytest.skip(f"{VMLINUX_BTF} absent (kernel without CONFIG_DEBUG_INFO_BTF)")
    return DescribingBtf.load()


@pytest.fixture(scope="module")
def raw() -> dict[int, JsonType]:
    """bpftool's decoding of the same blob, by type id: the independent reference."""
    if not VMLINUX_BTF.exists():
        pytest.skip(f"{VMLINUX_BTF} absent (kernel without CONFIG_DEBUG_INFO_BTF)")
    tool = shutil.which("bpftool") or ("/usr/sbin/bpftool" if Path("/usr/sbin/bpftool").exists() else None)
    if tool is None:
        pytest.skip("bpftool not installed: nothing to cross-check the BTF reader against")
    out = subprocess.run(
        [tool, "-j", "btf", "dump", "file", str(VMLINUX_BTF), "format", "raw"],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    return {t["id"]: t for t in json.loads(out)["types"]}


def _json_flatten(types: dict[int, JsonType], t: JsonType, base: int = 0) -> list[Member]:
    """Flatten anonymous members from bpftool's JSON, written independently of
    Btf._flatten so the comparison is not the code checking itself."""
    out: list[Member] = []
    for m in t["members"]:
        off = base + m["bits_offset"]
        if m["name"] != "(anon)":
            out.append(Member(m["name"], off, m.get("bitfield_size", 0)))
            continue
        inner = types[m["type_id"]]
        while inner["kind"] in ("CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
            inner = types[inner["type_id"]]
        if inner["kind"] in ("STRUCT", "UNION"):
            out.extend(_json_flatten(types, inner, off))
    return out


# ------------------------------------------------------- the real vmlinux BTF
def test_load_is_fast(btf: DescribingBtf) -> None:
    t0 = time.perf_counter()
    again = Btf.load()
    elapsed = time.perf_counter() - t0
    assert again.type_count == btf.type_count > 10_000
    # Indexing only (no per-type objects) keeps this ~0.1 s; a regression to
    # eager decoding would cost seconds on every daemon start.
    assert elapsed < 2.0, f"loading vmlinux BTF took {elapsed:.2f} s"


def test_lsm_hooks(btf: DescribingBtf, raw: dict[int, JsonType]) -> None:
    hooks = btf.lsm_hooks()
    for hook in (
        "bprm_check_security",
        "file_mprotect",
        "file_open",
        "mmap_file",
        "task_alloc",
        "sb_mount",
        "socket_connect",
        "inode_unlink",
    ):
        assert hook in hooks
    assert hooks == sorted(hooks)
    assert not any(h.startswith("bpf_lsm_") for h in hooks)
    expected = sorted(
        {t["name"][len("bpf_lsm_") :] for t in raw.values() if t["kind"] == "FUNC" and t["name"].startswith("bpf_lsm_")}
    )
    assert hooks == expected


def test_func_params_file_mprotect(btf: DescribingBtf) -> None:
    assert btf.func_params("bpf_lsm_file_mprotect") == [
        ("vma", "struct vm_area_struct *"),
        ("reqprot", "long unsigned int"),
        ("prot", "long unsigned int"),
    ]
    assert btf.type_str(btf.func_id("bpf_lsm_file_mprotect")) == (
        "int bpf_lsm_file_mprotect(struct vm_area_struct *, long unsigned int, long unsigned int)"
    )


def test_func_params_other_hooks(btf: DescribingBtf) -> None:
    assert btf.func_params("bpf_lsm_bprm_check_security") == [("bprm", "struct linux_binprm *")]
    params = dict(btf.func_params("bpf_lsm_sb_mount"))
    assert params["dev_name"] == "const char *"
    assert params["path"] == "const struct path *"


def test_func_params_names_match_bpftool(btf: DescribingBtf, raw: dict[int, JsonType]) -> None:
    """Every hook's parameter names, in order, as bpftool decodes them."""
    checked = 0
    for t in raw.values():
        if t["kind"] == "FUNC" and t["name"].startswith("bpf_lsm_"):
            proto = raw[t["type_id"]]
            want = [p["name"] for p in proto["params"]]
            assert [n for n, _ in btf.func_params(t["name"])] == want, t["name"]
            checked += 1
    assert checked == len(btf.lsm_hooks())


def test_hook_arity_is_the_parameter_count_bpftool_sees(raw: dict[int, JsonType]) -> None:
    """lsm_hook_arity (what the programs are built with) counts bpftool's parameters."""
    want = {
        t["name"][len("bpf_lsm_") :]: len(raw[t["type_id"]]["params"])
        for t in raw.values()
        if t["kind"] == "FUNC" and t["name"].startswith("bpf_lsm_")
    }
    assert lsm_hook_arity() == want
    assert want["file_mprotect"] == 3


def test_func_ids_match_bpftool(btf: DescribingBtf, raw: dict[int, JsonType]) -> None:
    first: dict[str, int] = {}
    for tid in sorted(raw):
        if raw[tid]["kind"] == "FUNC":
            first.setdefault(raw[tid]["name"], tid)
    for name, tid in first.items():
        assert btf.func_id(name) == tid, name
    with pytest.raises(HeaderError, match="not in the BTF"):
        btf.func_id("bpf_lsm_no_such_hook")


def test_function_pointer_rendering(btf: DescribingBtf) -> None:
    fops = next(c for c in btf.composites() if c.name == "file_operations")
    rec = btf.starts[fops.type_id]
    members = {
        btf._str(btf.words[rec + 3 + 3 * j]): btf.words[rec + 4 + 3 * j] for j in range(btf.words[rec + 1] & 0xFFFF)
    }
    assert btf.type_str(members["llseek"], "llseek") == ("loff_t (*llseek)(struct file *, loff_t, int)")


def test_task_struct_pid_offset(btf: DescribingBtf, raw: dict[int, JsonType]) -> None:
    ts = next(c for c in btf.composites() if c.name == "task_struct")
    pid = next(m for m in ts.members if m.name == "pid")
    ref = next(t for t in raw.values() if t["kind"] == "STRUCT" and t["name"] == "task_struct")
    want = next(m for m in ref["members"] if m["name"] == "pid")
    assert pid.bit_offset == want["bits_offset"]
    assert pid.bitfield_size == 0
    assert ts.size == ref["size"]


def test_every_composite_matches_bpftool(btf: DescribingBtf, raw: dict[int, JsonType]) -> None:
    """All structs and unions, all (flattened) members: name, bit offset, bitfield size."""
    mine = {c.type_id: c for c in btf.composites()}
    ref = {tid: t for tid, t in raw.items() if t["kind"] in ("STRUCT", "UNION")}
    assert mine.keys() == ref.keys()
    members = 0
    for tid, t in ref.items():
        c = mine[tid]
        assert (c.kind, c.name, c.size) == (t["kind"].lower(), "" if t["name"] == "(anon)" else t["name"], t["size"]), (
            tid
        )
        assert c.members == _json_flatten(raw, t), f"{c.kind} {c.name or tid}"
        members += len(c.members)
    # Broad, not a spot check: vmlinux has >10k composites, >50k members.
    assert len(ref) > 1000 and members > 10_000


def test_anonymous_members_are_flattened(btf: DescribingBtf) -> None:
    # struct page keeps most of its members in anonymous unions/structs.
    page = next(c for c in btf.composites() if c.name == "page")
    names = {m.name for m in page.members}
    assert {"flags", "lru", "mapping", "_refcount"} <= names
    assert "" not in names


def test_enum_values(btf: DescribingBtf) -> None:
    assert btf.enum_values("bpf_prog_type")["BPF_PROG_TYPE_LSM"] == probe.BPF_PROG_TYPE_LSM
    assert btf.enum_values("bpf_prog_type")["BPF_PROG_TYPE_SOCKET_FILTER"] == (probe.BPF_PROG_TYPE_SOCKET_FILTER)
    assert btf.enum_values("bpf_attach_type")["BPF_LSM_MAC"] == probe.BPF_LSM_MAC
    assert btf.enum_values("bpf_map_type")["BPF_MAP_TYPE_RINGBUF"] == probe.BPF_MAP_TYPE_RINGBUF
    assert btf.enum_values("bpf_cmd")["BPF_PROG_LOAD"] == probe.BPF_PROG_LOAD
    assert btf.enum_values("bpf_cmd")["BPF_MAP_CREATE"] == probe.BPF_MAP_CREATE
    with pytest.raises(HeaderError):
        btf.enum_values("no_such_enum_krsid")


def test_probe_bpf_attr_offsets_match_btf(btf: DescribingBtf) -> None:
    """probe.py hardcodes union bpf_attr offsets for its raw syscalls; the kernel's
    own BTF says where they are."""
    attr = next(c for c in btf.composites() if c.name == "bpf_attr")
    offsets = {m.name: m.bit_offset // 8 for m in attr.members}
    for field, off in {**probe.PROG_LOAD_OFFSETS, **probe.MAP_CREATE_OFFSETS}.items():
        assert offsets[field] == off, field
    assert attr.size >= probe.ATTR_SIZE


def test_truncated_vmlinux_blob() -> None:
    if not VMLINUX_BTF.exists():
        pytest.skip(f"{VMLINUX_BTF} absent")
    blob = VMLINUX_BTF.read_bytes()
    for cut in (len(blob) // 2, 100, 23, 0):
        with pytest.raises(HeaderError, match="malformed BTF"):
            Btf.from_bytes(blob[:cut])


# ------------------------------------------------------ hand-built BTF blobs
class _Builder:
    """Builds a tiny BTF blob: enough to test decoding without a kernel."""

    def __init__(self) -> None:
        self.strings = b"\0"
        self.types: list[list[int]] = []

    def s(self, text: str) -> int:
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def add(self, name: str, kind: int, vlen: int, size_or_type: int, *rest: int, kflag: bool = False) -> int:
        info = (int(kflag) << 31) | (kind << 24) | vlen
        self.types.append([self.s(name) if name else 0, info, size_or_type, *rest])
        return len(self.types)

    def blob(self, order: str = "<", *, magic: int = 0xEB9F, version: int = 1, type_len_delta: int = 0) -> bytes:
        types = b"".join(struct.pack(f"{order}{len(t)}I", *t) for t in self.types)
        hdr = struct.pack(
            f"{order}HBBIIIII", magic, version, 0, 24, 0, len(types) + type_len_delta, len(types), len(self.strings)
        )
        return hdr + types + self.strings


def _demo() -> _Builder:
    b = _Builder()
    i = b.add("int", KIND_INT, 0, 4, (1 << 24) | 32)  # 1: signed 32-bit int
    u = b.add("", KIND_UNION, 2, 4, b.s("x"), i, 0, b.s("y"), i, 0)  # 2: anon union
    s = b.add(
        "s",
        KIND_STRUCT,
        3,
        12,
        b.s("a"),
        i,
        0,
        0,
        u,
        32,  # anonymous union at bit 32
        b.s("bf"),
        i,
        (3 << 24) | 64,  # 3-bit bitfield at bit 64
        kflag=True,
    )  # 3
    p = b.add("", KIND_PTR, 0, s)  # 4: struct s *
    c = b.add("", KIND_CONST, 0, p)  # 5: struct s *const
    proto = b.add("", KIND_FUNC_PROTO, 2, i, b.s("p"), p, b.s("q"), c)  # 6
    b.add("bpf_lsm_demo_hook", KIND_FUNC, 1, proto)  # 7
    b.add("other", KIND_FUNC, 1, proto)  # 8
    return b


@pytest.mark.parametrize("order", ["<", ">"])
def test_synthetic_blob(order: str) -> None:
    btf = DescribingBtf.from_bytes(_demo().blob(order))
    assert btf.type_count == 9
    assert btf.lsm_hooks() == ["demo_hook"]
    assert btf.func_id("other") == 8
    assert btf.func_params("bpf_lsm_demo_hook") == [("p", "struct s *"), ("q", "struct s *const")]
    comps = {c.name: c for c in btf.composites()}
    assert comps["s"].members == [Member("a", 0, 0), Member("x", 32, 0), Member("y", 32, 0), Member("bf", 64, 3)]
    assert comps["s"].size == 12 and comps["s"].kind == "struct"
    assert comps[""].kind == "union" and comps[""].members == [Member("x", 0, 0), Member("y", 0, 0)]


def test_old_style_int_bitfield() -> None:
    """Without kind_flag, BTF marks a bitfield by an INT with fewer bits than its size."""
    b = _Builder()
    i3 = b.add("unsigned int", KIND_INT, 0, 4, 3)  # 1: 3 bits in a 4-byte int
    i = b.add("int", KIND_INT, 0, 4, 32)  # 2
    b.add("t", KIND_STRUCT, 2, 8, b.s("f"), i3, 0, b.s("g"), i, 32)
    (t,) = Btf.from_bytes(b.blob()).composites()
    assert t.members == [Member("f", 0, 3), Member("g", 32, 0)]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b: b.blob(magic=0x1234), "bad magic"),
        (lambda b: b.blob(version=2), "version"),
        (lambda b: b.blob(type_len_delta=-4), "runs past|truncated"),
        (lambda b: b.blob(type_len_delta=-2), "multiple of 4"),
        (lambda b: b.blob(type_len_delta=+400), "beyond"),
        (lambda b: b.blob()[:30], "beyond"),
    ],
)
def test_malformed_blobs(mutate: Any, match: str) -> None:
    with pytest.raises(HeaderError, match=match):
        Btf.from_bytes(mutate(_demo()))


def test_unknown_kind_is_unsupported() -> None:
    b = _demo()
    b.add("future", 31, 0, 0)
    with pytest.raises(UnsupportedKernelError, match="kind 31"):
        Btf.from_bytes(b.blob())


def test_bad_string_offset() -> None:
    b = _Builder()
    b.types.append([10_000, KIND_FUNC << 24, 0])
    btf = Btf.from_bytes(b.blob())
    with pytest.raises(HeaderError, match="string offset"):
        btf.name(1)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HeaderError, match="does not exist"):
        Btf.load(tmp_path / "nope")


# ------------------------------------------------- probe.py parsing helpers
def test_parse_kconfig() -> None:
    cfg = probe.parse_kconfig(
        "#\n# comment\nCONFIG_BPF_LSM=y\n# CONFIG_SECURITY_SELINUX is not set\n"
        'CONFIG_LSM="landlock,lockdown,bpf"\nCONFIG_HZ=250\n'
    )
    assert cfg == {
        "CONFIG_BPF_LSM": "y",
        "CONFIG_SECURITY_SELINUX": "n",
        "CONFIG_LSM": "landlock,lockdown,bpf",
        "CONFIG_HZ": "250",
    }
    ok = probe.kconfig_check({"CONFIG_BPF_SYSCALL": "y", "CONFIG_BPF_LSM": "y", "CONFIG_DEBUG_INFO_BTF": "y"}, "x")
    assert ok.ok is True
    bad = probe.kconfig_check({"CONFIG_BPF_SYSCALL": "y", "CONFIG_DEBUG_INFO_BTF": "y"}, "x")
    assert bad.ok is False and "CONFIG_BPF_LSM=y" in bad.remedy
    assert probe.kconfig_check(None, "unreadable").ok is None


def test_parse_cap_eff() -> None:
    status = "Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n"
    capeff = probe.parse_cap_eff(status)
    assert capeff == 0x1FFFEFFFFFF
    assert probe.has_cap(capeff, probe.CAP_BPF) and not probe.has_cap(capeff, probe.CAP_SYS_RESOURCE)
    with pytest.raises(ValueError):
        probe.parse_cap_eff("Name:\tx\n")


def test_capability_check() -> None:
    def bit(*caps: int) -> int:
        return sum(1 << c for c in caps)

    assert probe.capability_check(0x1FFFEFFFFFF, "6.18.44").ok is True
    assert probe.capability_check(bit(probe.CAP_SYS_ADMIN), "6.1.0").ok is True
    assert probe.capability_check(bit(probe.CAP_BPF, probe.CAP_PERFMON), "6.1.0").ok is True
    only_bpf = probe.capability_check(bit(probe.CAP_BPF), "6.1.0")
    assert only_bpf.ok is False and "CAP_PERFMON" in only_bpf.detail
    assert "root" in only_bpf.remedy
    assert probe.capability_check(0, "6.1.0").ok is False
    # Before 5.11 BPF memory counts against RLIMIT_MEMLOCK.
    old = probe.capability_check(bit(probe.CAP_SYS_ADMIN), "5.10.0-20-amd64", memlock=65536)
    assert old.ok is False and "LimitMEMLOCK=infinity" in old.remedy
    assert probe.capability_check(bit(probe.CAP_SYS_ADMIN, probe.CAP_SYS_RESOURCE), "5.10.0", memlock=65536).ok is True


def test_lsm_list_and_check() -> None:
    assert probe.parse_lsm_list("lockdown,capability,landlock,bpf") == ["lockdown", "capability", "landlock", "bpf"]
    assert probe.lsm_active_check(["capability", "bpf"], "securityfs").ok is True
    missing = probe.lsm_active_check(["lockdown", "capability", "yama"], "securityfs")
    assert missing.ok is False
    assert "lsm=lockdown,yama,bpf" in missing.remedy
    unknown = probe.lsm_active_check(None, "securityfs is not mounted")
    assert unknown.ok is None
    assert "mount -t securityfs securityfs /sys/kernel/security" in unknown.remedy


def test_classify_lsm_load() -> None:
    refused = probe.classify_lsm_load(errno.EPERM, "", caps_ok=True, plain_prog_loads=True)
    assert refused.ok is False
    assert refused.detail == (
        "EPERM with an empty verifier log: this kernel refuses trampoline (LSM/fentry) programs before the verifier"
    )
    assert refused.remedy == "run krsid on a kernel that allows BPF-LSM, e.g. tests/vm/run"
    no_caps = probe.classify_lsm_load(errno.EPERM, "", caps_ok=False, plain_prog_loads=None)
    assert no_caps.ok is False and "root" in no_caps.remedy
    blocked = probe.classify_lsm_load(errno.EPERM, "", caps_ok=True, plain_prog_loads=False)
    assert "seccomp" in blocked.detail
    assert probe.classify_lsm_load(0, "", caps_ok=True, plain_prog_loads=None).ok is True
    verifier = probe.classify_lsm_load(
        errno.EINVAL,
        "0: R1=ctx\nattach_btf_id 123 points to wrong type\n",
        caps_ok=True,
        plain_prog_loads=None,
    )
    assert verifier.ok is False and "points to wrong type" in verifier.detail
    old = probe.classify_lsm_load(errno.EINVAL, "", caps_ok=True, plain_prog_loads=None)
    assert "5.7" in old.remedy


def test_kernel_version() -> None:
    assert probe.kernel_version("6.18.44-fc-v669") == (6, 18)
    assert probe.kernel_version("5.10.0-28-amd64") == (5, 10)
    assert probe.kernel_version("garbage") == (0, 0)


def test_run_checks_shape(tmp_path: Path) -> None:
    """run_checks needs no privileges to run (it reports what it cannot do)."""
    checks = probe.run_checks(tmp_path)
    names = [c.name for c in checks]
    assert names == [
        "CONFIG_BPF_LSM",
        "bpf in active LSMs",
        "BTF",
        "capabilities",
        "LSM program load",
        "BPF atomics",
        "BPF ring buffer",
        "bpftool",
        "headers",
    ]
    for c in checks:
        if c.ok is False:
            assert c.remedy, f"{c.name} fails without saying what to do"
    assert not list(tmp_path.iterdir()), "doctor must not build or write anything"


def test_mnt_namespace_ns_first_reads_where_ns_lies(btf: DescribingBtf) -> None:
    """file_open.c's assumption with kernel headers (the VM tests check it on every
    kernel of the matrix): true on this host's kernel, false for a struct whose ns is
    not first."""
    assert mnt_namespace_ns_first(btf) is True

    class Shifted(DescribingBtf):
        def composites(self):  # type: ignore[no-untyped-def]
            for c in super().composites():
                if c.name == "mnt_namespace":
                    c = dataclasses.replace(c, members=[Member(m.name, m.bit_offset + 64, 0) for m in c.members])
                yield c

    shifted = Shifted(btf.path, btf.words, btf.strings, btf.starts)
    assert mnt_namespace_ns_first(shifted) is False


def test_ovl_upperdentry_follows_vfs_inode_reads_the_offsets() -> None:
    """bprm_check_security.c's overlayfs assumption (the VM tests check it in each
    kernel's BTF): 6.12's ovl_inode holds; one with a member between, or none, does not."""
    inode_size = 616
    members = [
        {"name": "(anon)", "type_id": 1, "bits_offset": 0},
        {"name": "redirect", "type_id": 2, "bits_offset": 64},
        {"name": "version", "type_id": 3, "bits_offset": 128},
        {"name": "flags", "type_id": 4, "bits_offset": 192},
        {"name": "vfs_inode", "type_id": 5, "bits_offset": 256},
        {"name": "__upperdentry", "type_id": 6, "bits_offset": 256 + 8 * inode_size},
    ]
    ovl = {"id": 9, "kind": "STRUCT", "name": "ovl_inode", "size": 808, "vlen": len(members), "members": members}
    assert ovl_upperdentry_follows_vfs_inode([{"kind": "INT", "name": "int"}, ovl], inode_size) is True
    shifted = [
        *members[:5],
        {"name": "gap", "type_id": 7, "bits_offset": 256 + 8 * inode_size},
        {**members[5], "bits_offset": 320 + 8 * inode_size},
    ]
    assert ovl_upperdentry_follows_vfs_inode([{**ovl, "members": shifted}], inode_size) is False
    assert ovl_upperdentry_follows_vfs_inode([ovl], inode_size + 8) is False
    assert ovl_upperdentry_follows_vfs_inode([], inode_size) is False


def test_struct_size_of_this_kernels_inode(btf: DescribingBtf) -> None:
    assert 400 < struct_size(btf, "inode") < 2000
    with pytest.raises(HeaderError, match="no_such_struct"):
        struct_size(btf, "no_such_struct")


def test_a_struct_is_found_by_name_and_a_union_or_a_missing_name_is_not(btf: DescribingBtf) -> None:
    inode = btf.struct("inode")
    assert inode is not None and inode.kind == "struct" and inode.name == "inode"
    assert any(m.name == "i_ino" for m in inode.members)
    structs = {c.name for c in btf.composites() if c.kind == "struct"}
    unions = [c.name for c in btf.composites() if c.kind == "union" and c.name and c.name not in structs]
    assert unions and btf.struct(unions[0]) is None  # a union is not a struct
    assert btf.struct("no_such_struct") is None


def test_the_prog_info_layout_is_read_from_btf(btf: DescribingBtf) -> None:
    """krsid.kernel.bpfstats reads bpf_prog_info's run-time stats where BTF puts them
    (a UAPI struct: these offsets are fixed since 5.1)."""
    from krsid.kernel.bpfstats import ProgInfoLayout

    layout = ProgInfoLayout.from_btf(btf)
    assert (layout.run_time_ns, layout.run_cnt) == (192, 200) and layout.size >= 208
