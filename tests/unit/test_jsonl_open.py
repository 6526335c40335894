"""The JSON lines file at start: its directory is made when missing (a foreground run
on the shipped config, without systemd's LogsDirectory=), and an unwritable path is a
clean error naming the key, not a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from krsid.catalog import load_catalog
from krsid.config import parse_config
from krsid.daemon import build_sinks
from krsid.errors import SinkError
from krsid.sinks.jsonl import JsonlSink
from tests.support.records import PROGRAMS

CATALOG = load_catalog(PROGRAMS)


def test_a_missing_log_directory_is_made(tmp_path: Path) -> None:
    path = tmp_path / "var" / "log" / "krsid" / "events.jsonl"
    sink = JsonlSink(str(path))
    try:
        assert path.parent.is_dir()
        assert path.exists()
    finally:
        sink.close()


def test_an_unopenable_path_is_a_clean_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the directory should be
    text = (
        f"state_dir: {tmp_path}\nhooks:\n  bprm_check_security: {{}}\n"
        f"sinks:\n  journald: {{enabled: false}}\n  jsonl: {{path: {blocker / 'events.jsonl'}}}\n"
    )
    config = parse_config(text, "t.yaml", catalog=CATALOG)
    with pytest.raises(SinkError, match=r"sinks.jsonl.path: cannot open .*events.jsonl"):
        build_sinks(config)
    assert os.listdir(tmp_path) == ["file"]
