"""Fuzzing the config loader: every input is a Config or a ConfigError, never a traceback."""

from __future__ import annotations

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
    st.sampled_from(["auto", "btf", "127.0.0.1:9477", "[::1]:1", "-", "yes", "0x10"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.integers(0, 3)), children, max_size=5),
    ),
    max_leaves=25,
)


def check(text: str) -> None:
    try:
        result = parse_config(text, "fuzz.yaml", catalog=CATALOG)
    except ConfigError as e:
        assert str(e).startswith("fuzz.yaml"), str(e)
        return
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
