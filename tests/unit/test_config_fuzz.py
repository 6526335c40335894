"""Fuzzing the config loader: every input is a Config or a ConfigError, never a
traceback; the error is one line, and no input takes long (see also
test_hostile_config.py, the fixed corpus)."""

from __future__ import annotations

import time
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from krsid.catalog import load_catalog
from krsid.config import Config, parse_config
from krsid.errors import ConfigError
from tests.support.records import PROGRAMS

CATALOG = load_catalog(PROGRAMS)
KEYS = [
    "hooks",
    "sinks",
    "buffer",
    "headers",
    "cache_dir",
    "state_dir",
    "programs_dir",
    "poll_timeout_ms",
    "journald",
    "jsonl",
    "prometheus",
    "enabled",
    "path",
    "listen",
    "kind",
    "pages",
    "wakeup_events",
    "exec_only",
    # Lanes and fair sharing, identity, output formats (the keys added since the corpus).
    "priority_pages",
    "fair_share",
    "priority",
    "bulk",
    "process_rate",
    "process_burst",
    "uid_rate",
    "uid_burst",
    "summary_interval_ms",
    "identity",
    "process_table_size",
    "ancestors_depth",
    "hash_max_mb",
    "hash_queue",
    "format",
    "ld_values",
    "policy",
    "rules",
    *CATALOG.hooks,
    "nope",
    "",
    "<<",
    "0",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["auto", "btf", "127.0.0.1:9477", "[::1]:1", "-", "yes", "0x10", "ocsf", "ecs", "krsid"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.integers(0, 3)), children, max_size=5),
    ),
    max_leaves=25,
)


TIME_LIMIT_S = 5.0


def check(text: str) -> None:
    t0 = time.monotonic()
    try:
        result = parse_config(text, "fuzz.yaml", catalog=CATALOG)
    except ConfigError as e:
        assert str(e).startswith("fuzz.yaml"), str(e)
        assert "\n" not in str(e), str(e)
        return
    finally:
        assert time.monotonic() - t0 < TIME_LIMIT_S
    assert isinstance(result, Config)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_structured_documents(doc: Any) -> None:
    try:
        text = yaml.safe_dump(doc)
    except yaml.YAMLError:
        return
    check(text)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("hoks:{}[]-,\n '\"&*!|>#@%`\t\\x0aé")), max_size=80))
def test_raw_yaml_text(text: str) -> None:
    check(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(raw.decode("utf-8", "replace"))


# Pieces of hostile YAML (aliases and anchors, merges, tags, deep nesting, odd numbers
# and digits) glued together at random, so they meet each other and the real keys.
HOSTILE_PIECES = [
    "&a [*a]",
    "&a {k: *a}",
    "&b [x, x, x]",
    "[*b, *b, *b, *b]",
    "*a",
    "*b",
    "{<<: *b}",
    "{<<: [*b, *b]}",
    "<<: ",
    "[" * 60,
    "]" * 60,
    "{a: " * 60,
    "- " * 60,
    "9" * 5000,
    "0x" + "f" * 5000,
    "0b" + "1" * 200,
    "1:2:3:4:5",
    "1e99999",
    ".nan",
    "2024-13-45",
    "!!int ''",
    "!!bool maybe",
    "!!timestamp x",
    "!!binary '@'",
    "!!python/object:os.system",
    "!!set",
    "!!omap",
    "'127.0.0.1:9\u00b2'",
    '"\\ud800"',
    '"\\0"',
    "'\u0669\u0660'",
    "\u202e",
    "? ",
    ": ",
    ", ",
    "\n  ",
    "\n- ",
    "hooks: ",
    "file_open: ",
    "sensitive_paths: ",
    "file_mprotect: {}",
    "sinks: {prometheus: {listen: ",
    "policy: {rules: [{name: r, hook: file_mprotect, action: audit, match: ",
    "%YAML 1.1\n---\n",
    "---\n",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(HOSTILE_PIECES), max_size=12))
def test_hostile_pieces(pieces: list[str]) -> None:
    check("".join(pieces))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 12), st.integers(2, 12), st.booleans())
def test_alias_bombs_of_any_shape_fail_fast(levels: int, width: int, merge: bool) -> None:
    if merge:
        lines = ["l0: &l0 {a: 1}"]
        lines += [f"l{i}: &l{i} {{<<: [{', '.join([f'*l{i - 1}'] * width)}]}}" for i in range(1, levels)]
    else:
        lines = ["l0: &l0 [lol]"]
        lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    t0 = time.monotonic()
    check("hooks:\n  file_mprotect: {}\n" + "\n".join(lines) + "\n")
    assert time.monotonic() - t0 < 1.0
