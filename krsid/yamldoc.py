"""YAML with source positions, so every configuration error names file:line:column.

PyYAML's safe loader forgets where a value came from and silently keeps the last
of two duplicate keys. For a security daemon's policy both are wrong: a typo'd or
doubled key must be an error that points at the line. This module composes the
node tree itself, builds plain Python values (dict/list/str/int/float/bool/None)
and remembers each value's position by its path of keys and indexes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import yaml

from krsid.errors import ConfigError

PathKey = tuple[object, ...]
T = TypeVar("T")


@dataclass(frozen=True)
class YamlDoc:
    """A parsed document: the data, and where each path of it was written."""

    data: Any
    origin: str
    marks: Mapping[PathKey, tuple[int, int]] = field(default_factory=dict)  # values
    key_marks: Mapping[PathKey, tuple[int, int]] = field(default_factory=dict)  # their keys

    def where(self, path: PathKey, *, at_key: bool = False) -> str:
        """``origin:line:col`` of the value at ``path`` (or of its key), else of its parent."""
        p = tuple(path)
        if at_key and p in self.key_marks:
            line, col = self.key_marks[p]
            return f"{self.origin}:{line}:{col}"
        while p and p not in self.marks:
            p = p[:-1]
        line, col = self.marks.get(p, (1, 1))
        return f"{self.origin}:{line}:{col}"

    def fail(self, path: PathKey, message: str, *, at_key: bool = False) -> NoReturn:
        dotted = ".".join(str(k) for k in path) or "(top level)"
        raise ConfigError(f"{self.where(path, at_key=at_key)}: {dotted}: {message}")


def load_yaml(text: str, origin: str) -> YamlDoc:
    """Parse one YAML document; ConfigError (with position) on any problem."""
    try:
        # The constructor already reads the stream: a NUL or other unacceptable
        # character raises here (found by tests/unit/test_config_fuzz.py).
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{origin}: invalid YAML: {e}") from None
    try:
        node = loader.get_single_node()
        marks: dict[PathKey, tuple[int, int]] = {}
        key_marks: dict[PathKey, tuple[int, int]] = {}
        data = _build(loader, node, (), marks, key_marks, origin) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        pos = f"{mark.line + 1}:{mark.column + 1}" if mark else "1:1"
        raise ConfigError(f"{origin}:{pos}: invalid YAML: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{origin}: invalid YAML: {e}") from None
    finally:
        loader.dispose()
    return YamlDoc(data, origin, marks, key_marks)


def _build(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: PathKey,
    marks: dict[PathKey, tuple[int, int]],
    key_marks: dict[PathKey, tuple[int, int]],
    origin: str,
) -> Any:
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
        out: dict[object, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, bool)) or key is None:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"{origin}:{line}: keys must be plain scalars, got {key!r}")
            if key in out:
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                first = marks.get((*path, key), (0, 0))[0]
                raise ConfigError(f"{origin}:{line}:{col}: duplicate key {key!r} (first on line {first})")
            key_marks[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _build(loader, value_node, (*path, key), marks, key_marks, origin)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, n, (*path, i), marks, key_marks, origin) for i, n in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


# -- small typed accessors used by config.py and catalog.py ---------------------------------


def expect_mapping(doc: YamlDoc, value: Any, path: PathKey, allowed: set[str] | None = None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        doc.fail(path, f"expected a mapping, got {_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            doc.fail((*path, key), f"keys must be strings, got {key!r}")
        if allowed is not None and key not in allowed:
            doc.fail((*path, key), f"unknown key {key!r}; allowed: {', '.join(sorted(allowed))}", at_key=True)
    return value


def expect(doc: YamlDoc, value: Any, path: PathKey, kind: type[T], what: str) -> T:
    # bool is an int subclass in Python; YAML 'yes'/'true' must not pass as a number.
    if isinstance(value, bool) and kind is not bool:
        doc.fail(path, f"expected {what}, got a boolean")
    if not isinstance(value, kind):
        doc.fail(path, f"expected {what}, got {_kind(value)} {value!r}")
    return value


def _kind(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "nothing",
    }.get(type(value), type(value).__name__)
