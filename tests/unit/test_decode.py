from __future__ import annotations

import pytest

from krsid.memo import DEFAULT_SIZE
from krsid.pipeline.decode import DecodeError, EventDecoder
from tests.support.records import catalog, pack

CAT = catalog()
EXEC, MPROT = CAT["bprm_check_security"], CAT["file_mprotect"]


def decoder() -> EventDecoder:
    return EventDecoder({0: EXEC, 1: MPROT}, boot_to_epoch=1_000_000.0)


def test_exec_event_fields() -> None:
    raw = pack(
        EXEC,
        0,
        seq=7,
        ktime_ns=2_500_000_000,
        pid=41,
        tgid=40,
        ppid=1,
        uid=1000,
        gid=1000,
        euid=0,
        auid=4294967295,
        comm="bash",
        filename="/bin/true",
        interp="/bin/true",
        path="/usr/bin/true",
        flags=0,
    )
    e = decoder().decode(raw)
    assert e.hook == "bprm_check_security" and e.seq == 7
    assert e.values["filename"] == b"/bin/true"
    assert e.values["path"] == b"/usr/bin/true"
    assert e.values["comm"] == b"bash"
    assert (e.values["pid"], e.values["tgid"], e.values["ppid"], e.values["euid"]) == (41, 40, 1, 0)
    assert "hook_id" not in e.values and "path_len" not in e.values  # hidden members
    assert e.values["flags"] == "0"
    assert e.wallclock == pytest.approx(1_000_002.5)


def test_mprotect_flags_hex_and_bool() -> None:
    raw = pack(
        MPROT, 1, vm_start=0x7F0000001000, vm_end=0x7F0000003000, vm_flags=0x73, reqprot=5, prot=5, flags=1, file=""
    )
    v = decoder().decode(raw).values
    assert v["vm_start"] == "0x7f0000001000" and v["vm_end"] == "0x7f0000003000"
    assert v["reqprot"] == "READ|EXEC" and v["prot"] == "READ|EXEC"
    assert v["vm_flags"] == "READ|WRITE|MAYREAD|MAYWRITE|MAYEXEC"
    assert v["anonymous"] is True and v["file"] == b""
    v = decoder().decode(pack(MPROT, 1, reqprot=0, prot=0x104, flags=0, file="libc.so.6")).values
    assert v["reqprot"] == "NONE" and v["prot"] == "EXEC|0x100"  # unknown bits stay visible
    assert v["anonymous"] is False and v["file"] == b"libc.so.6"


def test_memoized_conversions_stay_right_past_their_bound() -> None:
    """Flags, bools and short strings are converted through bounded memos (krsid.memo):
    when one is emptied the answers stay the same, with garbage after a string's NUL."""
    d = decoder()
    n = DEFAULT_SIZE + 500
    for i in range(n):
        name = b"lib%d.so\0stale-bytes" % (i % (DEFAULT_SIZE + 7))
        comm = b"c%d\0junk" % (i % (DEFAULT_SIZE + 3))  # comm: a short string, memoized
        raw = pack(MPROT, 1, reqprot=i % 8, prot=(i % 8) | 0x100 * (i % 50), flags=i % 2, file=name, comm=comm)
        v = d.decode(raw).values
        assert v["file"] == name.split(b"\0")[0] and v["comm"] == comm.split(b"\0")[0]
        assert v["anonymous"] is bool(i % 2)
        assert v["prot"] == _flags_text(i % 8, 0x100 * (i % 50))
    # the same memos serve every later event
    assert d.decode(pack(MPROT, 1, reqprot=4, prot=4, file="x")).values["reqprot"] == "EXEC"


def _flags_text(bits: int, extra: int) -> str:
    names = [name for name, bit in (("READ", 1), ("WRITE", 2), ("EXEC", 4)) if bits & bit]
    if extra:
        names.append(hex(extra))
    return "|".join(names) or "NONE"


def test_strings_are_binary_safe_and_stop_at_nul() -> None:
    hostile = b"a\nKRSID_HOOK=fake\x1b[31m\xff\xfe=x"
    raw = pack(EXEC, 0, filename=hostile + b"\0trailing garbage")
    assert decoder().decode(raw).values["filename"] == hostile


def test_full_length_string_without_nul_is_kept_whole() -> None:
    n = EXEC.layout.member("filename").size
    raw = pack(EXEC, 0, filename=b"x" * n)
    assert decoder().decode(raw).values["filename"] == b"x" * n


def test_short_record_and_unknown_hook_are_decode_errors() -> None:
    d = decoder()
    with pytest.raises(DecodeError, match="shorter than the event header"):
        d.decode(b"\0" * 10)
    with pytest.raises(DecodeError, match="unknown hook id 9"):
        d.decode(pack(EXEC, 9))
    with pytest.raises(DecodeError, match="layout needs"):
        d.decode(pack(MPROT, 1)[:100])
    assert d.hook_of(pack(MPROT, 1)) is MPROT and d.hook_of(b"") is None


def test_trailing_padding_is_accepted() -> None:
    # The perf buffer rounds records up to 8 bytes.
    assert decoder().decode(pack(EXEC, 0, seq=3) + b"\0" * 4).seq == 3


def test_argv_with_empty_arguments_keeps_them() -> None:
    """args carries its byte count (args_len): "" arguments are list items, not the end."""
    argv = b"ssh\0\0host\0\0"  # ssh '' host ''
    raw = pack(EXEC, 0, args=argv, args_len=len(argv), argc=4)
    assert decoder().decode(raw).values["args"] == (b"ssh", b"", b"host", b"")
    one_empty = pack(EXEC, 0, args=b"\0", args_len=1, argc=1)
    assert decoder().decode(one_empty).values["args"] == (b"",)
    assert decoder().decode(pack(EXEC, 0, args=b"", args_len=0)).values["args"] == ()
