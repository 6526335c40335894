"""Field types beyond int/string: strings (argv-like lists), ipv4, ipv6, errno."""

from __future__ import annotations

import io
import json
import shutil
import socket
from pathlib import Path

import pytest

from krsid.catalog import Catalog, load_catalog
from krsid.errors import CatalogError
from krsid.pipeline.decode import EventDecoder
from krsid.sinks.journald import journal_fields, render_message
from krsid.sinks.jsonl import JsonlSink
from tests.support.records import PROGRAMS, pack
from tests.support.sinks import emit_and_flush

PROGRAM = """#include "krsid.h"
struct demo_types_event {
    KRSID_EVENT_HEADER
    __u32 addr4;
    __s32 err;
    char addr6[16];
    char args[64];
};
LSM_PROBE(demo_types, struct file *file) { return 0; }
"""
SIDECAR = """hook: demo_types
message_id: fedcba9876543210fedcba9876543210
message: "{args} -> {addr4} / {addr6}: {err}"
fields:
  addr4: {type: ipv4}
  addr6: {type: ipv6}
  err: {type: errno}
  args: {type: strings}
"""


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    d = tmp_path_factory.mktemp("p") / "programs"
    shutil.copytree(PROGRAMS, d)
    (d / "demo_types.c").write_text(PROGRAM)
    (d / "demo_types.yaml").write_text(SIDECAR)
    return load_catalog(d)


def record(catalog: Catalog, args: bytes) -> bytes:
    spec = catalog["demo_types"]
    addr4 = int.from_bytes(socket.inet_aton("10.1.2.3"), "little")  # as the kernel stores sin_addr
    return pack(spec, 0, addr4=addr4, err=-13, addr6=socket.inet_pton(socket.AF_INET6, "::1"), args=args)


def test_decoded_values(catalog: Catalog) -> None:
    e = EventDecoder({0: catalog["demo_types"]}).decode(record(catalog, b"echo\0a b\0it's\0\xff\0"))
    assert e.values["addr4"] == "10.1.2.3"
    assert e.values["addr6"] == "::1"
    assert e.values["err"] == "-EACCES"
    assert e.values["args"] == (b"echo", b"a b", b"it's", b"\xff")


def test_list_in_sinks_keeps_boundaries(catalog: Catalog) -> None:
    e = EventDecoder({0: catalog["demo_types"]}).decode(record(catalog, b"echo\0a b\0it's\0"))
    fields = dict(journal_fields(e))
    assert fields[b"KRSID_ARGS"] == b"echo 'a b' 'it'\\''s'"
    out = io.StringIO()
    emit_and_flush(JsonlSink(stream=out), e)
    assert json.loads(out.getvalue())["args"] == ["echo", "a b", "it's"]
    assert render_message(e).startswith("echo 'a b' 'it'\"'\"'s' -> 10.1.2.3 / ::1: -EACCES")


def test_empty_list(catalog: Catalog) -> None:
    e = EventDecoder({0: catalog["demo_types"]}).decode(record(catalog, b""))
    assert e.values["args"] == ()


def test_type_must_fit_member(catalog: Catalog, tmp_path: Path) -> None:
    d = tmp_path / "programs"
    shutil.copytree(catalog.programs_dir, d)
    y = d / "demo_types.yaml"
    y.write_text(y.read_text().replace("addr6: {type: ipv6}", "addr6: {type: ipv4}"))
    with pytest.raises(CatalogError, match="ipv4 does not fit member char addr6"):
        load_catalog(d)
