"""sinks.jsonl.format: krsid (unchanged), ocsf and ecs records, checked against the
published schemas.

OCSF: the official 1.7.0 schema as exported by the OCSF server (schema.ocsf.io
/1.7.0/export/schema), shipped in the PyPI package ocsf-json-schema, which turns a
class into a JSON Schema (draft 2020-12: types, enums, required attributes, no
unknown attributes, at_least_one/just_one constraints); the ``jsonschema``
package validates every record against it. The OCSF project's own library
(ocsf-lib) reads the same export, and the class/activity/type uids and the
captions we write are checked against its model.

ECS: ecs_flat.yml of ECS 9.4.0 (elastic/ecs, generated/ecs/ecs_flat.yml at tag
v9.4.0), vendored gzipped under tests/data/ (no PyPI package carries it): every
field must be an ECS field of a matching type or sit under the custom ``krsid``
object, and event.kind/category/type/outcome must be allowed values, each type
expected for one of the event's categories.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import ipaddress
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import ocsf_json_schema  # type: ignore[import-untyped]  # no stubs, no py.typed
import pytest
import yaml
from ocsf.schema import OcsfSchema
from ocsf.util import get_schema

from krsid.event import Event
from krsid.schema import FORMATS, HostInfo, record_builder
from krsid.schema.mapping import (
    ECS_VERSION,
    GENERIC,
    HOOK_MAPPINGS,
    OCSF_CLASSES,
    OCSF_PROFILES,
    OCSF_VERSION,
    mapping_markdown,
    target_of,
)
from krsid.sinks.jsonl import JsonlSink, event_line
from tests.unit.test_schema_samples import CATALOG, SAMPLES, all_events, events_of

DATA = Path(__file__).resolve().parents[1] / "data"
ECS_FLAT = DATA / "ecs_flat-9.4.0.yml.gz"
# git blob id of generated/ecs/ecs_flat.yml at elastic/ecs tag v9.4.0: the vendored
# file, uncompressed, is that file byte for byte.
ECS_FLAT_GIT_BLOB = "8c7c4017b3501652ed14687f10c96c1163f9d8b8"

HOST = HostInfo(hostname="node-1", machine_id="0" * 31 + "1", boot_id="b" * 32, kernel_release="6.12.0-test")
EVENTS = all_events()


def _line_records(fmt: str, events: list[Event]) -> list[dict[str, Any]]:
    """What the JSON lines sink writes for these events, parsed back."""
    out = io.StringIO()
    sink = JsonlSink(stream=out, format=fmt, host=HOST)
    for e in events:
        sink.emit(e)
    sink.flush()
    return [json.loads(line) for line in out.getvalue().splitlines()]


# --- the table --------------------------------------------------------------------


def test_every_hook_of_the_catalog_has_a_mapping_row() -> None:
    """A new programs/<hook>.c fails here until krsid/schema/mapping.py maps it (until
    then its events go out as OCSF Base Event / ECS host:info)."""
    missing = sorted(set(CATALOG.hooks) - set(HOOK_MAPPINGS))
    assert not missing, f"add these hooks to krsid/schema/mapping.py HOOK_MAPPINGS: {missing}"


def test_no_mapping_row_for_a_hook_that_does_not_exist() -> None:
    assert sorted(set(HOOK_MAPPINGS) - set(CATALOG.hooks)) == []


def test_every_target_of_a_hook_is_reached_by_a_sample() -> None:
    """Hooks with several targets (bpf, mmap_file, kernel_read_file, ...): the samples
    reach each, so each is validated below."""
    for hook, mapping in HOOK_MAPPINGS.items():
        reached = {id(target_of(hook, e.values)) for e in EVENTS[hook]}
        for t in mapping.targets:
            assert id(t) in reached, f"{hook}: no sample reaches {t.ocsf_class}/{t.activity} ({t.when})"


def test_an_unmapped_hook_falls_back_to_the_generic_target() -> None:
    assert target_of("no_such_hook", {}) is GENERIC


def test_mapping_markdown_has_a_row_per_target() -> None:
    md = mapping_markdown()
    assert md.count("\n") == 2 + sum(len(m.targets) for m in HOOK_MAPPINGS.values()) + 1
    assert "| bprm_check_security | always | Process Activity (1007) | Launch (1) | process | start | exec |" in md


# --- krsid format: unchanged ------------------------------------------------------


def test_krsid_format_is_byte_for_byte_the_native_line() -> None:
    events = [e for evs in EVENTS.values() for e in evs]
    for fmt_kwargs in ({}, {"format": "krsid"}):
        out = io.StringIO()
        sink = JsonlSink(stream=out, **fmt_kwargs)  # type: ignore[arg-type]
        for e in events:
            sink.emit(e)
        sink.flush()
        assert out.getvalue().encode("ascii") == b"".join(event_line(e) for e in events)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="one of krsid, ocsf, ecs"):
        JsonlSink(stream=io.StringIO(), format="cef")
    assert FORMATS == ("krsid", "ocsf", "ecs")


# --- OCSF -------------------------------------------------------------------------


@functools.cache
def _ocsf_export() -> dict[str, Any]:
    return ocsf_json_schema.get_ocsf_schema(version=OCSF_VERSION)  # type: ignore[no-any-return]


@functools.cache
def _ocsf_lib_schema() -> OcsfSchema:
    path = Path(ocsf_json_schema.__file__).parent / "ocsf" / f"{OCSF_VERSION}.json"
    return get_schema(str(path))


@functools.cache
def _ocsf_validator(class_name: str) -> jsonschema.Draft202012Validator:
    gen = ocsf_json_schema.OcsfJsonSchemaEmbedded(_ocsf_export())
    schema = gen.get_class_schema(class_name, profiles=list(OCSF_PROFILES))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _ocsf_errors(record: dict[str, Any]) -> list[str]:
    cls = next(k for k, c in OCSF_CLASSES.items() if c.uid == record["class_uid"])
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in _ocsf_validator(cls).iter_errors(record)
    ]


def test_ocsf_schema_is_the_official_export() -> None:
    export = _ocsf_export()
    assert export["version"] == OCSF_VERSION
    assert _ocsf_lib_schema().version == OCSF_VERSION
    # Our class table (uids, captions, category) is the schema's.
    lib = _ocsf_lib_schema()
    for name, c in OCSF_CLASSES.items():
        event = lib.classes[name]
        assert (event.uid, event.caption) == (c.uid, c.caption), name
        activity = event.attributes["activity_id"].enum
        assert activity is not None
        for uid, caption in c.activities.items():
            assert activity[str(uid)].caption == caption, (name, uid)
        category = event.attributes["category_uid"].enum
        assert category is not None and category[str(c.category_uid)].caption == c.category_name, name


def test_ocsf_records_of_every_hook_validate() -> None:
    counts: Counter[str] = Counter()
    failures: list[str] = []
    lib = _ocsf_lib_schema()
    for hook, events in EVENTS.items():
        for event, rec in zip(events, _line_records("ocsf", events)):
            target = target_of(hook, event.values)
            assert rec["class_uid"] == target.ocsf.uid
            assert rec["type_uid"] == rec["class_uid"] * 100 + rec["activity_id"]
            klass = lib.classes[target.ocsf_class]
            enums = {k: klass.attributes[k].enum for k in ("action_id", "disposition_id", "severity_id", "status_id")}
            for k, caption_key in (
                ("action_id", "action"),
                ("disposition_id", "disposition"),
                ("severity_id", "severity"),
                ("status_id", "status"),
            ):
                member = (enums[k] or {}).get(str(rec[k]))
                assert member is not None and member.caption == rec[caption_key], (hook, k, rec[k])
            type_enum = klass.attributes["type_uid"].enum or {}
            assert type_enum[str(rec["type_uid"])].caption.endswith(rec["activity_name"]) or rec["activity_id"] == 99
            errors = _ocsf_errors(rec)
            if errors:
                failures.append(f"{hook} seq={rec['metadata']['sequence']}: {errors}")
            counts[hook] += 1
    assert not failures, "\n".join(failures[:20])
    assert set(counts) == set(CATALOG.hooks)
    for hook in CATALOG.hooks:
        assert counts[hook] == 3 * (1 + len(SAMPLES.get(hook, []))), hook
    print("OCSF records validated per hook:", dict(sorted(counts.items())), "total", sum(counts.values()))


def test_ocsf_validator_rejects_a_broken_record() -> None:
    """The validation above can fail: a wrong type, an unknown attribute, a missing
    required one and an enum value outside the schema are each reported."""
    rec = _line_records("ocsf", EVENTS["bprm_check_security"][:1])[0]
    assert _ocsf_errors(rec) == []
    for broken in (
        {**rec, "time": "yesterday"},
        {**rec, "krsid_extra": 1},
        {k: v for k, v in rec.items() if k != "actor"},
        {**rec, "activity_id": 42},
        {**rec, "actor": {**rec["actor"], "process": {**rec["actor"]["process"], "pid": "4242"}}},
        {**rec, "actor": {**rec["actor"], "process": {**rec["actor"]["process"], "ppid": 1}}},  # no such attribute
        {**rec, "process": {**rec["process"], "file": {"path": "/bin/x"}}},  # file.name and type_id are required
    ):
        assert _ocsf_errors(broken), broken


def test_ocsf_verdicts_are_action_and_disposition() -> None:
    recs = _line_records("ocsf", EVENTS["file_open"][:3])
    audit, deny, would_deny = ((r["action"], r["disposition"], r["status"], r["is_alert"]) for r in recs)
    assert audit == ("Allowed", "Allowed", "Success", False)
    assert deny == ("Denied", "Blocked", "Failure", True)
    assert would_deny == ("Allowed", "Detected", "Success", True)
    assert recs[1]["status_code"] == "-EPERM" and recs[1]["status_detail"] == "rule no-x"


def test_ocsf_exec_record_names_the_new_image_and_the_caller() -> None:
    rec = _line_records("ocsf", [events_of(CATALOG["bprm_check_security"])[3]])[0]
    assert rec["type_name"] == "Process Activity: Launch" and rec["launch_type"] == "Exec"
    assert rec["process"]["file"]["path"] == "/home/u/tool" and rec["process"]["cmd_line"] == "./tool -x "
    assert rec["actor"]["process"]["file"]["path"] == "/usr/bin/bash"
    assert rec["actor"]["process"]["parent_process"]["pid"] == 4200
    assert (rec["actor"]["process"]["pid"], rec["actor"]["process"]["tid"]) == (4242, 4243)
    assert rec["actor"]["session"] == {"uid": "3", "terminal": "pts/0"}
    assert rec["severity"] == "Informational" and rec["metadata"]["product"]["name"] == "krsid"
    assert rec["device"]["hostname"] == "node-1" and rec["device"]["os"]["type"] == "Linux"
    assert rec["unmapped"]["argc"] == 3 and rec["unmapped"]["hook"] == "bprm_check_security"
    assert "uid" not in rec["process"]["file"]  # inode 0: the kernel sent no identity


def test_ocsf_exec_record_carries_the_executed_files_identity() -> None:
    events = [e for e in events_of(CATALOG["bprm_check_security"]) if e.values.get("ino")]
    assert events
    rec = _line_records("ocsf", events[:1])[0]
    f = rec["process"]["file"]
    assert (f["path"], f["uid"], f["size"], f["modified_time"]) == ("/usr/bin/curl", "1835117", 313992, 1733400000123)
    assert rec["unmapped"]["ctime_ns"] == 1_764_900_000_987_654_321  # OCSF has no change time: kept, lossless


# --- ECS --------------------------------------------------------------------------


@functools.cache
def _ecs_fields() -> dict[str, Any]:
    raw = gzip.decompress(ECS_FLAT.read_bytes())
    assert hashlib.sha1(b"blob %d\0" % len(raw) + raw).hexdigest() == ECS_FLAT_GIT_BLOB
    fields: dict[str, Any] = yaml.safe_load(raw)
    return fields


def _flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in doc.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and name not in ("labels",):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def _ecs_type_ok(ecs_type: str, value: Any) -> bool:
    if ecs_type in ("keyword", "wildcard", "match_only_text", "text", "constant_keyword"):
        return isinstance(value, str)
    if ecs_type in ("long", "integer", "short", "byte", "unsigned_long"):
        return isinstance(value, int) and not isinstance(value, bool)
    if ecs_type in ("float", "double", "scaled_float"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ecs_type == "boolean":
        return isinstance(value, bool)
    if ecs_type == "date":
        return isinstance(value, str) and bool(_DATE.match(value))
    if ecs_type == "ip":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return False
        return True
    if ecs_type in ("object", "flattened"):
        return isinstance(value, dict)
    return False


def _ecs_errors(doc: dict[str, Any]) -> list[str]:
    fields = _ecs_fields()
    errors: list[str] = []
    for name, value in _flatten(doc).items():
        if name == "krsid" or name.startswith("krsid."):
            continue  # the custom namespace
        spec = fields.get(name)
        if spec is None:
            errors.append(f"{name}: not an ECS {ECS_VERSION} field")
            continue
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and "array" not in spec.get("normalize", []):
            errors.append(f"{name}: ECS does not expect an array")
        for one in values:
            if not _ecs_type_ok(spec["type"], one):
                errors.append(f"{name}: {one!r} is not of ECS type {spec['type']}")
        allowed = spec.get("allowed_values")
        if allowed:
            names = {a["name"] for a in allowed}
            errors.extend(f"{name}: {one!r} is not an allowed value" for one in values if one not in names)
    ev = doc.get("event", {})
    categories = {a["name"]: a for a in fields["event.category"]["allowed_values"]}
    expected = {t for c in ev.get("category", []) if c in categories for t in categories[c]["expected_event_types"]}
    errors.extend(
        f"event.type {t!r} is expected by none of {ev.get('category')}" for t in ev.get("type", []) if t not in expected
    )
    if doc.get("ecs", {}).get("version") != ECS_VERSION:
        errors.append("ecs.version")
    return errors


def test_ecs_field_definitions_are_the_published_ones() -> None:
    fields = _ecs_fields()
    assert fields["process.pid"]["type"] == "long"
    assert {a["name"] for a in fields["event.outcome"]["allowed_values"]} == {"success", "failure", "unknown"}


def test_ecs_records_of_every_hook_check_out() -> None:
    counts: Counter[str] = Counter()
    failures: list[str] = []
    for hook, events in EVENTS.items():
        for event, doc in zip(events, _line_records("ecs", events)):
            target = target_of(hook, event.values)
            assert doc["event"]["category"][: len(target.ecs_category)] == list(target.ecs_category)
            assert doc["event"]["action"] == (target.ecs_action or hook)
            errors = _ecs_errors(doc)
            if errors:
                failures.append(f"{hook} seq={doc['event']['sequence']}: {errors}")
            counts[hook] += 1
    assert not failures, "\n".join(failures[:20])
    assert set(counts) == set(CATALOG.hooks)
    print("ECS documents checked per hook:", dict(sorted(counts.items())), "total", sum(counts.values()))


def test_ecs_check_rejects_a_broken_document() -> None:
    doc = _line_records("ecs", EVENTS["socket_connect"][3:4])[0]
    assert _ecs_errors(doc) == []
    assert _ecs_errors({**doc, "process": {**doc["process"], "pid": "4242"}})
    assert _ecs_errors({**doc, "proces": {"pid": 1}})
    assert _ecs_errors({**doc, "event": {**doc["event"], "outcome": "ok"}})
    assert _ecs_errors({**doc, "event": {**doc["event"], "type": ["deletion"]}})  # not a network type
    assert _ecs_errors({**doc, "destination": {**doc["destination"], "ip": "not-an-ip"}})


def test_ecs_verdicts_and_connect_fields() -> None:
    audit, deny, would_deny = _line_records("ecs", EVENTS["socket_connect"][3:6])
    assert audit["destination"] == {"ip": "203.0.113.7", "port": 443, "address": "203.0.113.7"}
    assert audit["network"]["transport"] == "tcp" and audit["network"]["type"] == "ipv4"
    assert (audit["event"]["outcome"], audit["event"]["kind"]) == ("success", "event")
    assert deny["event"]["outcome"] == "failure" and deny["event"]["type"][-1] == "denied"
    assert deny["rule"] == {"name": "no-x"} and deny["event"]["kind"] == "alert"
    assert would_deny["event"]["outcome"] == "success" and would_deny["event"]["type"][-1] == "allowed"
    assert would_deny["container"] == {"id": "ab" * 32}


def test_record_builder_reads_the_host_once() -> None:
    build = record_builder("ecs", HOST)
    assert build is not None and build(EVENTS["bpf"][0])["host"]["boot"] == {"id": "b" * 32}
    assert record_builder("krsid") is None
