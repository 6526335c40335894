"""krsid.yamldoc reads YAML through libyaml's parser where PyYAML has it, else through
PyYAML's own: both give the same values, positions and errors for every YAML file the
project ships, and the same places for unacceptable characters."""

from __future__ import annotations

import builtins
import importlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import krsid.yamldoc
from krsid.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted([*ROOT.glob("programs/*.yaml"), *ROOT.glob("etc/*.yaml"), *ROOT.glob("etc/policies/*.yaml")])
BAD = [
    "a: x\x00\n",  # a NUL: the readers refuse it
    "é: [1, 2]\nbé: \x01\n",  # a control character after non-ASCII text (libyaml counts bytes)
    "a: \udcff\n",  # a lone surrogate in the str itself
    "a: [1, 2\n",  # unclosed flow sequence
    "a: 1\na: 2\n",  # duplicate key (krsid's own check)
    "[" * 60 + "]" * 60,  # nested deeper than MAX_DEPTH
]


@pytest.fixture(scope="module")
def python_parser() -> Iterator[SimpleNamespace]:
    """krsid.yamldoc as it is built without libyaml (yaml._yaml hidden)."""
    real_import = builtins.__import__

    def no_libyaml(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "yaml._yaml":
            raise ImportError("hidden by the test")
        return real_import(name, *args, **kwargs)

    builtins.__import__ = no_libyaml
    try:
        module = importlib.reload(krsid.yamldoc)
    finally:
        builtins.__import__ = real_import
    without = SimpleNamespace(loader=module._BoundedLoader, load_yaml=module.load_yaml)
    importlib.reload(krsid.yamldoc)  # the module as the rest of krsid uses it
    yield without


def outcome(load: Any, text: str) -> tuple[str, Any, Any, Any]:
    try:
        doc = load(text, "t.yaml")
    except ConfigError as e:
        return ("error", str(e), None, None)
    return ("ok", doc.data, dict(doc.marks), dict(doc.key_marks))


def test_libyaml_is_used_where_pyyaml_has_it() -> None:
    from yaml._yaml import CParser

    assert CParser in krsid.yamldoc._BoundedLoader.__mro__, "this machine's PyYAML has libyaml: it is used"


def test_python_parser_is_pyyamls_own(python_parser: SimpleNamespace) -> None:
    import yaml

    assert yaml.parser.Parser in python_parser.loader.__mro__


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_yaml_reads_the_same_with_either_parser(python_parser: SimpleNamespace, path: Path) -> None:
    text = path.read_text()
    assert outcome(krsid.yamldoc.load_yaml, text) == outcome(python_parser.load_yaml, text)


@pytest.mark.parametrize("text", BAD, ids=range(len(BAD)))
def test_bad_yaml_is_refused_at_the_same_place_by_either_parser(python_parser: SimpleNamespace, text: str) -> None:
    with_c, with_python = outcome(krsid.yamldoc.load_yaml, text), outcome(python_parser.load_yaml, text)
    assert with_c[0] == with_python[0] == "error"
    # The place (file:line:column) is the same; libyaml words some syntax errors its own way.
    assert with_c[1].split(": ")[0] == with_python[1].split(": ")[0], (with_c[1], with_python[1])
