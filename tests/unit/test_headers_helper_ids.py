"""The BTF header tree defines the BPF helper ids BCC's helpers.h names and the
running kernel's enum bpf_func_id lacks (6.1's BTF has no BPF_FUNC_cgrp_storage_get,
which BCC 0.26's helpers.h names: every compile failed there). Both lists are read,
from libbcc and from vmlinux.h; nothing is restated. No BCC, no root."""

from __future__ import annotations

from pathlib import Path

from krsid.kernel import headers

# The shape of the ___BPF_FUNC_MAPPER in the uapi bpf.h libbcc embeds (BCC 0.26).
LIBBCC = (
    b"\x00junk\x00#define ___BPF_FUNC_MAPPER(FN, ctx...)\t\t\t\\\n"
    b"\tFN(unspec, 0, ##ctx)\t\t\t\t\\\n\tFN(map_lookup_elem, 1, ##ctx)\t\t\\\n"
    b"\tFN(user_ringbuf_drain, 209, ##ctx)\t\t\\\n\tFN(cgrp_storage_get, 210, ##ctx)\t\t\\\n"
    b"\tFN(cgrp_storage_delete, 211, ##ctx)\t\t\\\n\x00more\x00"
)
# What bpftool dumps from 6.1's BTF: the enum stops at user_ringbuf_drain.
VMLINUX_6_1 = """enum bpf_func_id {
\tBPF_FUNC_unspec = 0,
\tBPF_FUNC_map_lookup_elem = 1,
\tBPF_FUNC_user_ringbuf_drain = 209,
\t__BPF_FUNC_MAX_ID = 210,
};
"""


def test_libbcc_helper_ids_are_read_from_its_mapper(tmp_path: Path) -> None:
    lib = tmp_path / "libbcc.so.0"
    lib.write_bytes(LIBBCC)
    assert headers.bcc_helper_ids(lib) == {
        "unspec": 0,
        "map_lookup_elem": 1,
        "user_ringbuf_drain": 209,
        "cgrp_storage_get": 210,
        "cgrp_storage_delete": 211,
    }
    assert headers.bcc_helper_ids(None) == {}
    assert headers.bcc_helper_ids(tmp_path / "gone.so") == {}


def test_only_the_helpers_the_kernel_lacks_are_defined(tmp_path: Path) -> None:
    lib = tmp_path / "libbcc.so.0"
    lib.write_bytes(LIBBCC)
    defines = headers.missing_helper_defines(VMLINUX_6_1, headers.bcc_helper_ids(lib))
    assert defines == "#define BPF_FUNC_cgrp_storage_get 210\n#define BPF_FUNC_cgrp_storage_delete 211\n"
    complete = VMLINUX_6_1.replace(
        "\t__BPF", "\tBPF_FUNC_cgrp_storage_get = 210,\n\tBPF_FUNC_cgrp_storage_delete = 211,\n\t__BPF"
    )
    assert headers.missing_helper_defines(complete, headers.bcc_helper_ids(lib)) == ""


def test_the_defines_follow_the_vmlinux_h_include() -> None:
    """Before the include they would rename the members of the kernel's own enum."""
    defines = "#define BPF_FUNC_cgrp_storage_get 210\n"
    kconfig = headers._tree_files("6.1.0-50-amd64", defines)["include/linux/kconfig.h"]
    include = kconfig.index('#include "../vmlinux.h"')
    assert include < kconfig.index(defines) < kconfig.index("#define _UAPI__LINUX_BPF_H__")
    assert defines not in headers._tree_files("6.1.0-50-amd64")["include/linux/kconfig.h"]


def test_a_tree_of_the_previous_format_is_rebuilt(tmp_path: Path) -> None:
    assert headers.TREE_FORMAT >= 2
    tree = tmp_path / "tree"
    tree.mkdir(mode=0o755)
    (tree / headers.STAMP).write_text("1\n")
    assert not headers._tree_complete(tree)
    (tree / headers.STAMP).write_text(f"{headers.TREE_FORMAT}\n")
    assert headers._tree_complete(tree)


def test_libbcc_is_found_where_this_process_mapped_it_else_in_the_library_dirs(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text(
        "7f0000000000-7f0000001000 r--p 00000000 08:01 42   /usr/lib/x86_64-linux-gnu/libbcc_bpf.so.0.26.0\n"
        "7f0000001000-7f0000002000 r--p 00000000 08:01 43   /opt/bcc/lib/libbcc.so.0.26.0\n"
    )
    assert headers.find_libbcc(maps, []) == Path("/opt/bcc/lib/libbcc.so.0.26.0")
    libdir = tmp_path / "lib"
    libdir.mkdir()
    (libdir / "libbcc_bpf.so.0").write_bytes(b"")
    assert headers.find_libbcc(tmp_path / "no-maps", [libdir]) is None
    (libdir / "libbcc.so.0").write_bytes(b"")
    assert headers.find_libbcc(tmp_path / "no-maps", [libdir]) == libdir / "libbcc.so.0"
