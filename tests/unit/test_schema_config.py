"""sinks.jsonl.format in the config: krsid by default, ocsf and ecs accepted, anything
else refused with the valid names; the sink writes what the config names."""

from __future__ import annotations

import io
import json

import pytest

from krsid.config import parse_config
from krsid.errors import ConfigError
from krsid.schema import HostInfo
from krsid.sinks.jsonl import JsonlSink
from tests.unit.test_schema_samples import CATALOG, events_of

HOOKS = "hooks:\n  bprm_check_security: {}\n"


def test_format_defaults_to_krsid() -> None:
    assert parse_config(HOOKS, "t.yaml").jsonl.format == "krsid"


@pytest.mark.parametrize("fmt", ["krsid", "ocsf", "ecs"])
def test_format_is_read(fmt: str) -> None:
    c = parse_config(HOOKS + f"sinks:\n  jsonl:\n    format: {fmt}\n", "t.yaml")
    assert c.jsonl.format == fmt


@pytest.mark.parametrize("value", ["OCSF", "cef", "1", "[ocsf]"])
def test_unknown_format_is_refused_with_the_valid_names(value: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(HOOKS + f"sinks:\n  jsonl:\n    format: {value}\n", "t.yaml")
    text = str(e.value)
    assert "sinks.jsonl.format" in text or "format" in text
    if value in ("OCSF", "cef"):
        assert "one of krsid, ocsf, ecs" in text


def test_sink_writes_the_configured_format() -> None:
    c = parse_config(HOOKS + "sinks:\n  jsonl:\n    format: ocsf\n", "t.yaml")
    out = io.StringIO()
    host = HostInfo(hostname="h", machine_id="", boot_id="", kernel_release="6.1")
    sink = JsonlSink(stream=out, format=c.jsonl.format, host=host)
    sink.emit(events_of(CATALOG["bprm_check_security"])[0])
    sink.flush()
    rec = json.loads(out.getvalue())
    assert rec["class_uid"] == 1007 and "uid" not in rec["device"]  # no machine id: no device.uid
